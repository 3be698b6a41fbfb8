import assert from "node:assert/strict";
import { testEnv } from "../../shared/testing/mod.ts";
import { parseArgs, parseConfigText, resolveSettings } from "./config.ts";

Deno.test("arguments are recognised in any order", () => {
  assert.deepEqual(parseArgs(["0.0.0.0:9000", "myschema", "postgres://h/db"]), {
    bind: "0.0.0.0:9000",
    schema: "myschema",
    url: "postgres://h/db",
  });
  assert.throws(() => parseArgs(["not a thing"]));
});

Deno.test("a config file in key = value or JSON form is read", () => {
  assert.deepEqual(parseConfigText('# c\nschema = s1\nurl: postgres://f/db\nbind="h:1"\n'), {
    schema: "s1",
    url: "postgres://f/db",
    bind: "h:1",
  });
  assert.deepEqual(parseConfigText('{"schema":"j","user":"u"}'), { schema: "j", user: "u" });
});

Deno.test("priority is env, then args, then file, then default", async () => {
  const dir = await Deno.makeTempDir({ dir: testEnv.tmp });
  await Deno.writeTextFile(
    `${dir}/dispatch.conf`,
    "schema = fileschema\nurl = postgres://filehost/filedb\nbind = file:1\nuser = fileuser\npassword = filepw\n",
  );
  // File only (a folder holding dispatch.conf).
  let s = resolveSettings({ DISPATCH_CONFIG: dir }, []);
  assert.equal(s.schema, "fileschema");
  assert.equal(s.bind, "file:1");
  assert.equal(new URL(s.url).username, "fileuser");
  assert.equal(new URL(s.url).host, "filehost");
  // Args beat the file.
  s = resolveSettings({ DISPATCH_CONFIG: dir }, ["argschema", "postgres://arghost/db", "arg:2"]);
  assert.equal(s.schema, "argschema");
  assert.equal(new URL(s.url).host, "arghost");
  assert.equal(s.bind, "arg:2");
  assert.equal(new URL(s.url).password, "filepw");
  // Env beats args.
  s = resolveSettings(
    { DISPATCH_CONFIG: dir, DISPATCH_SCHEMA: "envschema", PGUSER: "envuser", PGPASSWORD: "envpw" },
    ["argschema", "postgres://arghost/db"],
  );
  assert.equal(s.schema, "envschema");
  assert.equal(new URL(s.url).username, "envuser");
  assert.equal(new URL(s.url).password, "envpw");
  assert.equal(new URL(s.url).host, "arghost");
  assert.deepEqual(s.sources, { schema: "env", url: "args", bind: "file", user: "env", password: "env" });
  // Defaults last.
  s = resolveSettings({}, []);
  assert.equal(s.schema, "control");
  assert.equal(s.bind, "localhost:8881");
  assert.equal(s.sources.url, "default");
});
