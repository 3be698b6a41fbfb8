import assert from "node:assert/strict";
import { testEnv } from "../testing/mod.ts";
import { AwsChunkedDecoder, checkKey, compareKeys, S3Store, validBucketName } from "./s3_store.ts";

const enc = new TextEncoder();

function decodeAll(parts: string[]): { body: string; trailers: Map<string, string> } {
  const d = new AwsChunkedDecoder();
  let body = "";
  for (const p of parts) for (const piece of d.push(enc.encode(p))) body += new TextDecoder().decode(piece);
  d.end();
  return { body, trailers: d.trailers };
}

Deno.test("aws-chunked bodies decode however the network cuts them, trailer included", () => {
  const wire = "5\r\nhello\r\n6;chunk-signature=abc\r\n world\r\n0\r\nx-amz-checksum-crc32:DaA=\r\n\r\n";
  for (const cut of [1, 2, 3, 7, 13, wire.length]) {
    const parts: string[] = [];
    for (let i = 0; i < wire.length; i += cut) parts.push(wire.slice(i, i + cut));
    const { body, trailers } = decodeAll(parts);
    assert.equal(body, "hello world");
    assert.equal(trailers.get("x-amz-checksum-crc32"), "DaA=");
  }
  assert.throws(() => decodeAll(["5\r\nhel"]), { code: "IncompleteBody" });
  assert.throws(() => decodeAll(["zz\r\n"]), { code: "IncompleteBody" });
  assert.throws(() => decodeAll(["2\r\nabX\r\n"]), { code: "IncompleteBody" });
});

Deno.test("keys sort in UTF-8 byte order, and keys and bucket names follow S3's limits", () => {
  const keys = ["b", "a/b", "a", "\u{FFFD}", "\u{1F600}", "a b", "A"];
  assert.deepEqual([...keys].sort(compareKeys), ["A", "a", "a b", "a/b", "b", "\u{FFFD}", "\u{1F600}"]);
  checkKey("é".repeat(512));
  assert.throws(() => checkKey("é".repeat(512) + "x"), { code: "KeyTooLongError" });
  for (const ok of ["abc", "media-1", "a.b.c", "x".repeat(63)]) assert.ok(validBucketName(ok), ok);
  for (const bad of ["ab", "Abc", "a_b", "-ab", "ab-", "a..b", "192.168.1.1", "x".repeat(64), "_wharf"]) {
    assert.ok(!validBucketName(bad), bad);
  }
});

Deno.test("the store lists pages with common prefixes and keeps objects across a reopen", async () => {
  const dir = await Deno.makeTempDir({ dir: testEnv.tmp, prefix: "s3store-" });
  const store = await S3Store.open(dir);
  store.createBucket("bkt");
  const put = async (key: string) => {
    const body = ReadableStream.from([enc.encode(key)]);
    store.commit("bkt", await store.writeObject(key, { headers: {}, metadata: {} }, body));
  };
  for (const k of ["p/a", "p/b/1", "p/b/2", "p/c", "q"]) await put(k);
  const page1 = store.list("bkt", { prefix: "p/", delimiter: "/", after: "", maxKeys: 2 });
  assert.deepEqual([page1.contents.map((m) => m.key), page1.commonPrefixes, page1.truncated], [["p/a"], [
    "p/b/",
  ], true]);
  const page2 = store.list("bkt", { prefix: "p/", delimiter: "/", after: page1.last!, maxKeys: 2 });
  assert.deepEqual([page2.contents.map((m) => m.key), page2.commonPrefixes, page2.truncated], [
    ["p/c"],
    [],
    false,
  ]);
  assert.ok(store.delete("bkt", "q"));
  assert.ok(!store.delete("bkt", "q"));

  const again = await S3Store.open(dir);
  const all = again.list("bkt", { prefix: "", delimiter: "", after: "", maxKeys: 1000 });
  assert.deepEqual(all.contents.map((m) => [m.key, m.size]), [["p/a", 3], ["p/b/1", 5], ["p/b/2", 5], [
    "p/c",
    3,
  ]]);
  assert.equal(new TextDecoder().decode(again.readWhole("bkt", again.head("bkt", "p/b/2")!)), "p/b/2");
});
