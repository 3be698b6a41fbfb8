import { deepStrictEqual as assertEquals, throws } from "node:assert";
import { nextRun, parseCron } from "./cron.ts";

const next = (expr: string, iso: string) => nextRun(parseCron(expr), new Date(iso))?.toISOString();

Deno.test("every minute runs at the next whole minute", () => {
  assertEquals(next("* * * * *", "2026-01-01T10:00:30Z"), "2026-01-01T10:01:00.000Z");
  assertEquals(next("* * * * *", "2026-01-01T10:00:00Z"), "2026-01-01T10:01:00.000Z");
});

Deno.test("steps, ranges and lists select the right minutes and hours", () => {
  assertEquals(next("*/15 * * * *", "2026-01-01T10:01:00Z"), "2026-01-01T10:15:00.000Z");
  assertEquals(next("5,40 9-17/4 * * *", "2026-01-01T10:00:00Z"), "2026-01-01T13:05:00.000Z");
  assertEquals(next("0 0 * * *", "2026-12-31T23:59:00Z"), "2027-01-01T00:00:00.000Z");
});

Deno.test("day of week and day of month match either when both are restricted", () => {
  // 2026-01-01 is a Thursday.
  assertEquals(next("0 12 * * 1", "2026-01-01T00:00:00Z"), "2026-01-05T12:00:00.000Z");
  assertEquals(next("0 12 * * 7", "2026-01-01T00:00:00Z"), "2026-01-04T12:00:00.000Z");
  assertEquals(next("0 12 15 * 1", "2026-01-01T00:00:00Z"), "2026-01-05T12:00:00.000Z");
  assertEquals(next("0 0 29 2 *", "2026-01-01T00:00:00Z"), "2028-02-29T00:00:00.000Z");
});

Deno.test("bad expressions are refused with the field named", () => {
  throws(() => parseCron("* * * *"), (e: Error) => e.message.includes("five fields"));
  throws(() => parseCron("60 * * * *"), (e: Error) => e.message.includes("minute"));
  throws(() => parseCron("* * * 13 *"), (e: Error) => e.message.includes("month"));
  throws(() => parseCron("x * * * *"), (e: Error) => e.message.includes("minute"));
});
