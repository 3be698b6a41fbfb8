import assert from "node:assert/strict";
import { Registry } from "./metrics.ts";

Deno.test("Registry.render() writes counters, gauges and histograms in Prometheus text format", () => {
  const r = new Registry();
  const c = r.counter("wharf_events_total", "Events");
  c.inc({ fn: "a" });
  c.inc({ fn: "a" }, 2);
  c.inc({ fn: 'we"ird\n' });
  r.gauge("wharf_lag_bytes", "Lag").set(42);
  const h = r.histogram("wharf_sync_seconds", "Sync", [0.1, 1]);
  h.observe(0.05);
  h.observe(0.5);
  h.observe(5);
  const text = r.render();
  assert.match(text, /# TYPE wharf_events_total counter\nwharf_events_total\{fn="a"\} 3\n/);
  assert.ok(text.includes('wharf_events_total{fn="we\\"ird\\n"} 1'));
  assert.ok(text.includes("wharf_lag_bytes 42"));
  assert.ok(text.includes('wharf_sync_seconds_bucket{le="0.1"} 1'));
  assert.ok(text.includes('wharf_sync_seconds_bucket{le="1"} 2'));
  assert.ok(text.includes('wharf_sync_seconds_bucket{le="+Inf"} 3'));
  assert.ok(text.includes("wharf_sync_seconds_sum 5.55"));
  assert.ok(text.includes("wharf_sync_seconds_count 3"));
});

Deno.test("Registry refuses bad names, type clashes, and counters going down", () => {
  const r = new Registry();
  assert.throws(() => r.counter("bad name", "x"), /not valid/);
  r.counter("x_total", "x");
  assert.throws(() => r.gauge("x_total", "x"), /another type/);
  assert.equal(r.counter("x_total", "x"), r.counter("x_total", "x"));
  assert.throws(() => r.counter("x_total", "x").inc({}, -1), /Cannot decrease/);
});
