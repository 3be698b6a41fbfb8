import assert from "node:assert/strict";
import { compareSequencer, encodeEventKey, parseEvents, PoisonMessageError } from "./events.ts";

const record = (eventName: string, key: string, sequencer?: string) => ({
  eventName,
  s3: {
    bucket: { name: "media" },
    object: { key, size: 10, eTag: "abc", ...(sequencer ? { sequencer } : {}) },
  },
});

Deno.test("parseEvents reads created and removed records, decodes keys and skips other events", () => {
  const body = JSON.stringify({
    Records: [
      record("ObjectCreated:Put", "u/1/my+photo%C3%A9.jpg", "0a1b"),
      record("ObjectRemoved:Delete", "u/1/x.jpg", "0A1C"),
      record("ObjectTagging:Put", "u/1/x.jpg"),
    ],
  });
  const evs = parseEvents(body);
  assert.equal(evs.length, 2);
  assert.deepEqual(evs.map((e) => [e.kind, e.key, e.sequencer]), [
    ["created", "u/1/my photoé.jpg", "0A1B"],
    ["removed", "u/1/x.jpg", "0A1C"],
  ]);
  assert.deepEqual(parseEvents(JSON.stringify({ Event: "s3:TestEvent", Bucket: "media" })), []);
});

Deno.test("parseEvents calls bodies that are not S3 notifications poison", () => {
  for (const body of ["not json", "{}", '{"Records":[{"eventName":1}]}', '{"Records":"x"}']) {
    assert.throws(() => parseEvents(body), PoisonMessageError, body);
  }
});

Deno.test("encodeEventKey is the inverse of the decoding parseEvents does", () => {
  const key = "u/7/a b+c%d é.png";
  const [ev] = parseEvents(JSON.stringify({ Records: [record("ObjectCreated:Put", encodeEventKey(key))] }));
  assert.equal(ev.key, key);
});

Deno.test("compareSequencer orders hex strings and pads the shorter one", () => {
  assert.ok(compareSequencer("0055AED6DCD90281E5", "0055AED6DCD90281E6") < 0);
  assert.ok(compareSequencer("0055AED6DCD90281E6", "0055aed6dcd90281e5") > 0);
  assert.equal(compareSequencer("0A", "0a00"), 0);
  assert.ok(compareSequencer("0A", "0A01") < 0);
});
