import assert from "node:assert/strict";
import type { EtcdMember } from "./etcd.ts";
import { decide, memberAddress, OmissionCounter, quorum } from "./membership.ts";

const m = (i: number, name = `m-${i}`): EtcdMember => ({
  id: String(1000 + i),
  name,
  peerUrls: [`http://10.0.0.${i}:2380`],
  clientUrls: [`http://10.0.0.${i}:2379`],
});

Deno.test("a member is due for removal only after the configured number of consecutive omissions", () => {
  const current = [m(1), m(2), m(3)];
  const c = new OmissionCounter();
  const healthy = new Set(current.map((x) => x.id));
  const run = () =>
    decide({ current, misses: (id) => c.get(id), healthy, removeAfter: 3, minMembers: 2, self: "1001" });
  c.observe(["10.0.0.1", "10.0.0.2"], current);
  c.observe(["10.0.0.1", "10.0.0.2"], current);
  assert.deepEqual(run(), { action: "none" });
  c.observe(["10.0.0.1", "10.0.0.2", "10.0.0.3"], current); // listed again: the count starts over
  assert.equal(c.get("1003"), 0);
  for (let i = 0; i < 3; i++) c.observe(["10.0.0.1", "10.0.0.2"], current);
  const d = run();
  assert.equal(d.action, "remove");
  assert.equal(d.action === "remove" && d.member.name, "m-3");
});

Deno.test("decide() removes one member at a time and never this node itself", () => {
  const current = [m(1), m(2), m(3), m(4), m(5)];
  const healthy = new Set(current.map((x) => x.id));
  const misses = (id: string) => (id === "1001" || id === "1004" || id === "1005" ? 5 : 0);
  const d = decide({ current, misses, healthy, removeAfter: 3, minMembers: 2, self: "1001" });
  assert.equal(d.action, "remove");
  assert.equal(d.action === "remove" && d.member.name, "m-4");
});

Deno.test("decide() holds a removal that would go below the minimum or lose the healthy quorum", () => {
  const three = [m(1), m(2), m(3)];
  const all = new Set(three.map((x) => x.id));
  const misses = (id: string) => (id === "1003" ? 3 : 0);
  const below = decide({ current: three, misses, healthy: all, removeAfter: 3, minMembers: 3 });
  assert.equal(below.action, "hold");
  assert.match(below.action === "hold" ? below.reason : "", /2 < 3/);
  const sick = decide({ current: three, misses, healthy: new Set(["1001"]), removeAfter: 3, minMembers: 1 });
  assert.equal(sick.action, "hold");
  assert.match(sick.action === "hold" ? sick.reason : "", /quorum 2/);
  const pending = decide({
    current: [...three, m(4, "")],
    misses,
    healthy: all,
    removeAfter: 3,
    minMembers: 1,
  });
  assert.equal(pending.action, "hold");
  assert.match(pending.action === "hold" ? pending.reason : "", /one change at a time/);
  assert.equal(
    decide({ current: three, misses, healthy: all, removeAfter: 3, minMembers: 2 }).action,
    "remove",
  );
});

Deno.test("quorum() and memberAddress() follow etcd's majority and peer URLs", () => {
  assert.deepEqual([1, 2, 3, 4, 5].map(quorum), [1, 2, 2, 3, 3]);
  assert.equal(memberAddress({ peerUrls: ["http://[2001:db8::1]:2380"] }), "2001:db8::1");
  assert.equal(memberAddress({ peerUrls: [] }), undefined);
});
