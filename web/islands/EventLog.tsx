import { duration, stamp } from "../components/format.ts";
import { ApiAction } from "./ApiAction.tsx";
import { usePoll } from "./_api.ts";

/** One dispatch event as the event log shows it. */
export interface EventRow {
  id: string;
  function_name: string;
  source: string;
  table_schema: string | null;
  table_name: string | null;
  op: string | null;
  row_id: string | null;
  state: string;
  attempts: number;
  created_at: string;
  run_at: string;
  started_at: string | null;
  finished_at: string | null;
  claimed_by: string | null;
  last_error: string | null;
}

/** Props of {@linkcode EventLog}. */
export interface EventLogProps {
  initial: EventRow[];
  /** The JSON endpoint with the page's filters, polled for updates. */
  url: string;
  intervalMs: number;
}

/**
 * The dispatch event log: newest first, with state, attempts, timing and the last error; a dead event
 * can be retried from its row. Refreshed by short polling with the page's filters.
 */
export function EventLog(p: EventLogProps) {
  const poll = usePoll<EventRow[]>(p.url, p.intervalMs, p.initial);
  if (!poll.data.length) {
    return (
      <p class="empty" data-testid="events-empty">
        No event matches these filters. Events appear when a table with a trigger changes, a schedule is due,
        or a function is test-run.
      </p>
    );
  }
  return (
    <div>
      {poll.error && (
        <p class="error" role="alert">Live update failed: {poll.error} (showing the last data)</p>
      )}
      <div class="table-wrap">
        <table class="events" data-testid="events">
          <thead>
            <tr>
              <th>#</th>
              <th>Function</th>
              <th>Cause</th>
              <th>State</th>
              <th>Attempts</th>
              <th>Created (UTC)</th>
              <th>Took</th>
              <th>Last error</th>
              <th></th>
            </tr>
          </thead>
          <tbody>
            {poll.data.map((e) => (
              <tr key={e.id} data-event={e.id} data-state={e.state}>
                <td data-label="#">{e.id}</td>
                <td data-label="Function">
                  <a href={`/console/functions/${encodeURIComponent(e.function_name)}`}>{e.function_name}</a>
                </td>
                <td data-label="Cause">
                  {e.source === "trigger"
                    ? `${e.op} ${e.table_schema}.${e.table_name}${e.row_id ? ` #${e.row_id}` : ""}`
                    : e.source}
                </td>
                <td data-label="State">
                  <span class={`badge ${e.state}`}>{e.state}</span>
                  {e.state === "pending" && e.last_error && <span class="muted">retrying</span>}
                </td>
                <td data-label="Attempts">{e.attempts}</td>
                <td data-label="Created">{stamp(e.created_at)}</td>
                <td data-label="Took">{duration(e.started_at, e.finished_at)}</td>
                <td data-label="Last error" class="small">
                  {e.last_error ? <code class="bad">{e.last_error.split("\n")[0].slice(0, 200)}</code> : ""}
                </td>
                <td>
                  {e.state === "dead" && (
                    <ApiAction
                      label="Retry"
                      method="POST"
                      url={`/api/admin/events/${e.id}/retry`}
                      testid={`retry-${e.id}`}
                      variant="quiet"
                    />
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </div>
  );
}
