import { useRef } from "preact/hooks";
import { ago, count, stamp } from "../components/format.ts";
import { usePoll } from "./_api.ts";

/** One worker instance as the overview shows it (from `control.worker_instances`). */
export interface WorkerRow {
  instance_id: string;
  worker: string;
  host: string;
  pid: number;
  state: string;
  healthy: boolean;
  status: Record<string, unknown>;
  started_at: string;
  heartbeat_at: string;
  /** Seconds since the heartbeat, by the database's clock. */
  heartbeat_age_s: number;
}

/** Props of {@linkcode WorkersLive}. */
export interface WorkersLiveProps {
  initial: WorkerRow[];
  url: string;
  intervalMs: number;
  /** A heartbeat older than this (seconds) makes an instance stale. */
  staleAfterS: number;
  /** When the server rendered the rows (ms), for "ago" texts that match the server's. */
  renderedAt: number;
}

/** The health word of an instance: ok, unhealthy, stale (no recent heartbeat), or its end state. */
export function health(
  w: WorkerRow,
  staleAfterS: number,
): "ok" | "unhealthy" | "stale" | "stopped" | "failed" {
  if (w.state === "stopped") return "stopped";
  if (w.state === "failed") return "failed";
  if (w.heartbeat_age_s > staleAfterS) return "stale";
  return w.healthy ? "ok" : "unhealthy";
}

function num(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}

/** Completed units per minute since start, from the conventional `done` counter of `status`. */
export function averageRate(w: WorkerRow): number | undefined {
  const done = num(w.status.done);
  const s = (new Date(w.heartbeat_at).getTime() - new Date(w.started_at).getTime()) / 1000;
  return done === undefined || s <= 0 ? undefined : done / s * 60;
}

const COUNTERS = new Set(["done", "failed", "errors"]);

/**
 * Every worker instance with its health, last heartbeat, throughput and errors, refreshed by short
 * polling. Throughput is per minute: since start on the server's render, and over the last poll
 * interval once live (from the change of the `done` counter).
 */
export function WorkersLive(p: WorkersLiveProps) {
  const poll = usePoll<WorkerRow[]>(p.url, p.intervalMs, p.initial);
  const last = useRef({ at: 0, done: new Map<string, number>(), rates: new Map<string, number>() });
  if (poll.updatedAt && poll.updatedAt !== last.current.at) {
    const was = last.current;
    const rates = new Map<string, number>();
    const done = new Map<string, number>();
    for (const w of poll.data) {
      const d = num(w.status.done);
      if (d === undefined) continue;
      done.set(w.instance_id, d);
      const b = was.done.get(w.instance_id);
      if (b !== undefined && was.at) rates.set(w.instance_id, (d - b) / ((poll.updatedAt - was.at) / 60_000));
    }
    last.current = { at: poll.updatedAt, done, rates };
  }
  const rates = last.current.rates;
  const now = poll.updatedAt || p.renderedAt;
  if (!poll.data.length) {
    return (
      <div class="empty" data-testid="workers-empty">
        No worker has reported yet. Workers write their heartbeat to <code>control.worker_instances</code>
        {" "}
        every few seconds once they run (<code>deno task dev</code> starts them all).
        {poll.error && <p class="error">Live update failed: {poll.error}</p>}
      </div>
    );
  }
  return (
    <div>
      {poll.error && (
        <p class="error" role="alert">Live update failed: {poll.error} (showing the last data)</p>
      )}
      <div class="table-wrap">
        <table class="workers" data-testid="workers">
          <thead>
            <tr>
              <th>Worker</th>
              <th>Health</th>
              <th>Last heartbeat</th>
              <th>Throughput</th>
              <th>Errors</th>
              <th>Status</th>
              <th>Instance</th>
            </tr>
          </thead>
          <tbody>
            {poll.data.map((w) => {
              const h = health(w, p.staleAfterS);
              const live = rates.get(w.instance_id);
              const avg = averageRate(w);
              const errors = num(w.status.failed) ?? num(w.status.errors);
              const rest = Object.entries(w.status).filter(([k]) => !COUNTERS.has(k));
              return (
                <tr key={w.instance_id} data-worker={w.worker} data-health={h}>
                  <td data-label="Worker">
                    <strong>{w.worker}</strong>
                  </td>
                  <td data-label="Health">
                    <span class={`badge ${h}`}>{h}</span> <span class="muted">{w.state}</span>
                  </td>
                  <td data-label="Last heartbeat" title={stamp(w.heartbeat_at)}>
                    {ago(new Date(now - w.heartbeat_age_s * 1000), now)}
                  </td>
                  <td data-label="Throughput">
                    {live !== undefined
                      ? `${count(live)}/min now`
                      : avg !== undefined
                      ? `${count(avg)}/min avg`
                      : "–"}
                    {num(w.status.done) !== undefined && (
                      <span class="muted">{` · ${count(num(w.status.done))} done`}</span>
                    )}
                  </td>
                  <td data-label="Errors" class={errors ? "bad" : ""}>{count(errors)}</td>
                  <td data-label="Status" class="small">
                    {rest.length ? rest.map(([k, v]) => `${k}: ${JSON.stringify(v)}`).join(" · ") : "–"}
                  </td>
                  <td data-label="Instance" class="small muted">
                    {w.host} · pid {w.pid} · up since {stamp(w.started_at)}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </div>
    </div>
  );
}
