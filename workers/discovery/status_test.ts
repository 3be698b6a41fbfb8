import assert from "node:assert/strict";
import { createTestDatabase } from "../../shared/testing/mod.ts";
import { formatLsn } from "./patroni_api.ts";
import { diffSnapshot, type MemberStatus, recordHistory, writeSnapshot } from "./status.ts";

const member = (name: string, role: string, timeline = 1): MemberStatus => ({
  name,
  role,
  state: "running",
  host: "10.0.0.1",
  port: 5432,
  timeline,
  lag: role === "leader" ? undefined : 0,
  lsn: "0/3000060",
});

Deno.test("diffSnapshot() records a failover only once a new leader is seen", () => {
  const before = { names: ["a", "b", "c"], leader: "a" };
  const election = diffSnapshot(before, [member("b", "replica"), member("c", "replica")]);
  assert.deepEqual(election.changes.map((c) => c.kind), ["leave"]);
  const after = diffSnapshot(before, [member("b", "leader", 2), member("c", "replica", 2)]);
  assert.deepEqual(after.changes.map((c) => [c.kind, c.member]), [["leave", "a"], ["failover", "b"]]);
  assert.deepEqual(after.changes[1].detail, { from: "a", to: "b", timeline: 2 });
});

Deno.test("snapshots written by several workers record each change once", async () => {
  await using db = await createTestDatabase();
  const snap1 = [member("a", "leader"), member("b", "replica"), member("c", "replica")];
  const at = (s: number) => new Date(Date.UTC(2030, 0, 1, 0, 0, s));
  const results = await Promise.all([1, 2, 3].map((i) => writeSnapshot(db.sql, "s1", snap1, at(i))));
  assert.equal(results.flat().length, 3);
  const snap2 = [member("b", "replica"), member("c", "replica")];
  await writeSnapshot(db.sql, "s1", snap2, at(10));
  // A slower worker's snapshot from before the member left arrives late: it is skipped, not a rejoin.
  assert.deepEqual(await writeSnapshot(db.sql, "s1", snap1, at(9)), []);
  const snap3 = [member("b", "leader", 2), member("c", "replica", 2)];
  await Promise.all([writeSnapshot(db.sql, "s1", snap3, at(11)), writeSnapshot(db.sql, "s1", snap3, at(12))]);
  await recordHistory(db.sql, { scope: "s1", kind: "removal", member: "a", detail: { misses: 3 } });
  const h = await db
    .sql`select kind, member, detail from control.cluster_history where scope = 's1' order by id`;
  assert.deepEqual(h.map((r) => `${r.kind}:${r.member}`), [
    "join:a",
    "join:b",
    "join:c",
    "leave:a",
    "failover:b",
    "removal:a",
  ]);
  assert.deepEqual(h[4].detail, { from: "a", to: "b", timeline: 2, planned: false });
  const rows = await db
    .sql`select name, role, timeline, lag_bytes, lsn from control.cluster_members where scope = 's1' order by name`;
  assert.deepEqual(rows.map((r) => [r.name, r.role, r.timeline]), [["b", "leader", 2], ["c", "replica", 2]]);
  assert.equal(rows[1].lsn, "0/3000060");
  assert.equal(formatLsn(0x16b374d848), "16/B374D848");
  await recordHistory(db.sql, { scope: "s1", kind: "switchover_requested", member: "c", actor: "admin" });
  const [planned] = await writeSnapshot(
    db.sql,
    "s1",
    [member("b", "replica", 3), member("c", "leader", 3)],
    at(13),
  );
  assert.deepEqual(planned.detail, { from: "b", to: "c", timeline: 3, planned: true });
});

Deno.test("a member missing from one answer but listed again soon records neither a leave nor a second join", async () => {
  await using db = await createTestDatabase();
  const all = [member("a", "leader"), member("b", "replica"), member("c", "replica")];
  const withoutB = [member("a", "leader"), member("c", "replica")];
  const at = (s: number) => new Date(Date.UTC(2030, 0, 1, 0, 0, s));
  await writeSnapshot(db.sql, "s2", all, at(1), 60_000);
  // One Patroni's copy of the cluster lags behind another's: b is missing from one answer.
  assert.deepEqual(await writeSnapshot(db.sql, "s2", withoutB, at(2), 60_000), []);
  const kept = await db.sql`select name from control.cluster_members where scope = 's2' order by name`;
  assert.deepEqual(kept.map((r) => r.name), ["a", "b", "c"]);
  assert.deepEqual(await writeSnapshot(db.sql, "s2", all, at(3), 60_000), []);
  // Missing for longer than the grace: gone.
  await db.sql`update control.cluster_members set seen_at = now() - interval '2 minutes' where name = 'b'`;
  const gone = await writeSnapshot(db.sql, "s2", withoutB, at(4), 60_000);
  assert.deepEqual(gone.map((c) => `${c.kind}:${c.member}`), ["leave:b"]);
  const h = await db.sql`select kind, member from control.cluster_history where scope = 's2' order by id`;
  assert.deepEqual(h.map((r) => `${r.kind}:${r.member}`), ["join:a", "join:b", "join:c", "leave:b"]);
});
