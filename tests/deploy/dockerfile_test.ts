/**
 * The Dockerfiles cannot be built here (no container engine, and `deno compile` needs its runtime
 * download), so their shape is checked instead: multi-stage, dependencies from the lock file, a final
 * stage without a shell that runs as non-root with a health check, and images that carry what the
 * manifests run.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { k8sContainers, loadCompose, loadK8s, ROOT } from "../../deploy/manifests.ts";

/** One instruction: keyword and its text, continuation lines joined. */
interface Instruction {
  op: string;
  args: string;
}

/** The stages of a Dockerfile, each a list of instructions (its FROM first). */
async function stages(path: string): Promise<Instruction[][]> {
  const text = (await Deno.readTextFile(path)).replace(/\\\n/g, " ");
  const out: Instruction[][] = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const [op, ...rest] = line.split(/\s+/);
    const ins = { op: op.toUpperCase(), args: rest.join(" ") };
    if (ins.op === "FROM") out.push([ins]);
    else if (out.length) out.at(-1)!.push(ins);
  }
  return out;
}

const all = (s: Instruction[], op: string) => s.filter((i) => i.op === op).map((i) => i.args);

Deno.test("the wharf image builds from the lock file in a build stage and ships only the binaries", async () => {
  const s = await stages(join(ROOT, "Dockerfile"));
  assert.ok(s.length >= 2, "multi-stage");
  const [build, final] = [s[0], s.at(-1)!];
  assert.match(build[0].args, / AS build$/);
  const runs = all(build, "RUN");
  const install = runs.findIndex((r) => /^deno install --frozen\b/.test(r));
  const copyAll = build.findIndex((i) => i.op === "COPY" && i.args === ". .");
  const copyLock = build.findIndex((i) => i.op === "COPY" && /deno\.json deno\.lock/.test(i.args));
  assert.ok(install >= 0, "deno install --frozen");
  assert.ok(copyLock >= 0 && copyLock < copyAll, "the lock file is copied before the sources (layer cache)");
  assert.ok(runs.some((r) => /^deno task compile --out \/out$/.test(r)), "deno task compile");
  assert.match(final[0].args, /^gcr\.io\/distroless\/cc-debian\d+(:nonroot)?$/, "distroless with glibc");
  assert.deepEqual(all(final, "RUN"), [], "no RUN in the final stage: it has no shell");
  assert.ok(all(final, "COPY").some((c) => /--from=build .*\/out\/ \/app\/$/.test(c)));
  const [user] = all(final, "USER");
  assert.match(user, /^[1-9]\d*(:\d+)?$/, "a numeric non-root user");
  const [health] = all(final, "HEALTHCHECK");
  assert.match(health, /CMD \["\/app\/wharf-healthcheck"\]$/, "exec-form health check (no shell)");
  assert.match(all(final, "CMD")[0], /^\["\/app\/wharf-[a-z]+"\]$/);
});

Deno.test("the Postgres member image runs the discovery worker as the postgres user with a health check", async () => {
  const s = await stages(join(ROOT, "deploy/postgres/Dockerfile"));
  const [build, final] = [s[0], s.at(-1)!];
  assert.ok(all(build, "RUN").some((r) => /^deno install --frozen\b/.test(r)));
  assert.ok(all(build, "RUN").some((r) => /^deno task compile --only discovery --out \/out$/.test(r)));
  const install = all(final, "RUN").join(" ");
  for (const pkg of ["postgresql-15", "patroni", "etcd-server"]) {
    assert.match(install, new RegExp(`\\b${pkg}\\b`));
  }
  assert.match(install, /useradd .*--uid 999/);
  assert.equal(all(final, "USER")[0], "999:999");
  assert.deepEqual(all(final, "ENTRYPOINT"), ['["/app/wharf-discovery"]']);
  assert.match(all(final, "HEALTHCHECK")[0], /CMD \["\/app\/wharf-healthcheck"\]$/);
  assert.ok(
    all(final, "COPY").some((c) => /\/out\/wharf-discovery \/out\/wharf-healthcheck \/app\/$/.test(c)),
  );
});

Deno.test("the manifests run the discovery worker from the Postgres image and every other process from the wharf image", async () => {
  const docs = await loadK8s();
  for (const { container: c } of k8sContainers(docs)) {
    const cmd = c.command?.[0] ?? "";
    if (!cmd.startsWith("/app/wharf-")) continue;
    const image = cmd === "/app/wharf-discovery" ? /^wharf-postgres:/ : /^wharf:/;
    assert.match(c.image, image, `${c.name} runs ${cmd}`);
  }
  const compose = await loadCompose();
  for (
    const [name, s] of Object.entries(compose.services) as [string, { image: string; command?: string[] }][]
  ) {
    const cmd = s.command?.[0] ?? "";
    if (!cmd.startsWith("/app/wharf-")) continue;
    const image = cmd === "/app/wharf-discovery" ? /WHARF_POSTGRES_IMAGE/ : /WHARF_IMAGE/;
    assert.match(s.image, image, `compose service ${name}`);
  }
});

Deno.test(".dockerignore keeps local state, dependencies and credentials out of the build context", async () => {
  const lines = (await Deno.readTextFile(join(ROOT, ".dockerignore"))).split("\n").map((l) => l.trim());
  for (const p of [".git", "node_modules", ".wharf", "dist", "deploy/.env"]) assert.ok(lines.includes(p), p);
});
