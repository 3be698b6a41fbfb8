/**
 * `deno task bench`: runs every `bench:*` task of deno.json in turn and prints each one's result line.
 */
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../", import.meta.url));
const config = JSON.parse(await Deno.readTextFile(`${root}deno.json`));
const names = Object.keys(config.tasks ?? {}).filter((t) => t.startsWith("bench:")).sort();
if (!names.length) {
  console.log("no bench:* tasks yet");
  Deno.exit(0);
}
const results: string[] = [];
let failed = 0;
for (const name of names) {
  console.log(`\n=== ${name}`);
  const child = new Deno.Command(Deno.execPath(), { args: ["task", name], cwd: root, stdout: "piped" })
    .spawn();
  let out = "";
  const dec = new TextDecoder();
  for await (const chunk of child.stdout) {
    out += dec.decode(chunk, { stream: true });
    await Deno.stdout.write(chunk);
  }
  const status = await child.status;
  const last = out.trim().split("\n").pop() ?? "";
  if (!status.success) failed++;
  results.push(
    status.success ? last : JSON.stringify({ bench: name.slice(6), error: `exit ${status.code}` }),
  );
}
console.log("\n=== results");
for (const r of results) console.log(r);
Deno.exit(failed ? 1 : 0);
