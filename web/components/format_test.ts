import assert from "node:assert/strict";
import { ago, count, duration, stamp } from "./format.ts";
import { averageRate, health, type WorkerRow } from "../islands/WorkersLive.tsx";

Deno.test("ago() speaks in seconds, minutes, hours and days, past and future", () => {
  const now = Date.parse("2026-01-01T12:00:00Z");
  assert.equal(ago(new Date(now - 5_000), now), "5 s ago");
  assert.equal(ago(new Date(now - 10 * 60_000), now), "10 min ago");
  assert.equal(ago(new Date(now - 5 * 3600_000), now), "5 h ago");
  assert.equal(ago(new Date(now - 3 * 86400_000), now), "3 d ago");
  assert.equal(ago(new Date(now + 40_000), now), "in 40 s");
  assert.equal(ago(null, now), "never");
});

Deno.test("stamp(), duration() and count() format for tables", () => {
  assert.equal(stamp("2026-01-01T12:34:56.789Z"), "2026-01-01 12:34:56");
  assert.equal(duration("2026-01-01T00:00:00Z", "2026-01-01T00:00:00.120Z"), "120 ms");
  assert.equal(duration("2026-01-01T00:00:00Z", "2026-01-01T00:00:03.2Z"), "3.2 s");
  assert.equal(duration(null, "2026-01-01T00:00:00Z"), "");
  assert.equal(count(1234567), "1,234,567");
  assert.equal(count(undefined), "–");
});

const worker = (over: Partial<WorkerRow>): WorkerRow => ({
  instance_id: "w",
  worker: "dispatch",
  host: "h",
  pid: 1,
  state: "running",
  healthy: true,
  status: {},
  started_at: "2026-01-01T00:00:00Z",
  heartbeat_at: "2026-01-01T00:02:00Z",
  heartbeat_age_s: 1,
  ...over,
});

Deno.test("health() tells ok, unhealthy, stale, stopped and failed apart", () => {
  assert.equal(health(worker({}), 20), "ok");
  assert.equal(health(worker({ healthy: false }), 20), "unhealthy");
  assert.equal(health(worker({ heartbeat_age_s: 21 }), 20), "stale");
  assert.equal(health(worker({ state: "stopped", heartbeat_age_s: 999 }), 20), "stopped");
  assert.equal(health(worker({ state: "failed" }), 20), "failed");
});

Deno.test("averageRate() is done per minute since start, undefined without a done counter", () => {
  assert.equal(averageRate(worker({ status: { done: 60 } })), 30);
  assert.equal(averageRate(worker({ status: {} })), undefined);
});
