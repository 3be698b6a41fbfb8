/**
 * The deployment files, read by the tools that will read them in production, where those tools run
 * without a server: systemd's own unit checker and kubectl's kustomize. Each test is skipped (and says
 * so) on a machine without the tool; the schema tests in manifests_test.ts run everywhere.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { DEPLOY, loadK8s } from "../../deploy/manifests.ts";
import { which } from "../../shared/stack/packages.ts";

const systemdAnalyze = which("systemd-analyze");
const kubectl = which("kubectl");

async function run(cmd: string, args: string[], cwd?: string) {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

/** Copies the units to `dir` with ExecStart on /usr/bin/true (the binaries are not installed here). */
async function stageUnits(dir: string, extra: (name: string, text: string) => string = (_, t) => t) {
  const names: string[] = [];
  for (const e of Deno.readDirSync(join(DEPLOY, "systemd"))) {
    if (!e.name.endsWith(".service")) continue;
    let text = await Deno.readTextFile(join(DEPLOY, "systemd", e.name));
    text = extra(e.name, text.replace(/^ExecStart=\/opt\/wharf\/bin\/\S+$/m, "ExecStart=/usr/bin/true"));
    // A template is verified through an instance of it.
    const name = e.name.replace("@.service", "@main.service");
    await Deno.writeTextFile(join(dir, name), text);
    names.push(`./${name}`);
  }
  return names.sort();
}

Deno.test({
  name: "systemd-analyze verify accepts every unit without a warning, and flags a misspelt key",
  ignore: systemdAnalyze === undefined,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "wharf-units-" });
    try {
      const units = await stageUnits(dir);
      assert.ok(units.length >= 8, units.join(" "));
      const ok = await run(systemdAnalyze!, ["verify", ...units], dir);
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(ok.stderr.trim(), "", "no warnings");
      const badDir = await Deno.makeTempDir({ dir, prefix: "bad-" });
      await stageUnits(
        badDir,
        (name, t) => name === "wharf-web.service" ? t.replace("ProtectHome=", "ProtectHom=") : t,
      );
      const bad = await run(systemdAnalyze!, ["verify", "./wharf-web.service"], badDir);
      assert.match(bad.stderr, /Unknown key 'ProtectHom' in section \[Service\]/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "kubectl kustomize renders deploy/k8s into every manifest, with the images renamed",
  ignore: kubectl === undefined,
  async fn() {
    const out = await run(kubectl!, ["kustomize", join(DEPLOY, "k8s")]);
    assert.equal(out.code, 0, out.stderr);
    const rendered = parseAllDocuments(out.stdout).map((d) => d.toJS());
    const expected = (await loadK8s()).filter((d) => d.file !== "secrets.example.yaml");
    const key = (d: { kind: string; metadata: { name: string } }) => `${d.kind}/${d.metadata.name}`;
    assert.deepEqual(rendered.map(key).sort(), expected.map((d) => key(d.doc)).sort());
    const images = new Set<string>();
    for (const d of rendered) {
      for (const c of d.spec?.template?.spec?.containers ?? []) images.add(c.image);
    }
    assert.ok(images.has("registry.example.com/wharf:latest"), [...images].join(" "));
    assert.ok(images.has("registry.example.com/wharf-postgres:latest"), [...images].join(" "));
  },
});
