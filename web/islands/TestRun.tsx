import { useState } from "preact/hooks";
import { duration } from "../components/format.ts";
import { api, errorText, useHydrated } from "./_api.ts";

/** Props of {@linkcode TestRun}. */
export interface TestRunProps {
  functionName: string;
  /** The sample event shown to start from (JSON text). */
  sample: string;
}

interface EventRow {
  id: string;
  state: string;
  attempts: number;
  started_at: string | null;
  finished_at: string | null;
  last_error: string | null;
}

/**
 * Runs the function once against a sample event: the admin API enqueues a manual event, a dispatch
 * node runs it like any other, and this island follows the event until it is done or dead.
 */
export function TestRun({ functionName, sample }: TestRunProps) {
  const hydrated = useHydrated();
  const [text, setText] = useState(sample);
  const [ev, setEv] = useState<EventRow>();
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);

  const run = async () => {
    let event: unknown;
    try {
      event = JSON.parse(text);
    } catch (e) {
      setError(`The sample event is not valid JSON: ${(e as Error).message}`);
      return;
    }
    setBusy(true);
    setError(undefined);
    setEv(undefined);
    const r = await api<EventRow>("POST", `/api/admin/functions/${encodeURIComponent(functionName)}/test`, {
      event,
    });
    if (!r.ok) {
      setBusy(false);
      setError(errorText(r));
      return;
    }
    setEv(r.data);
    const end = Date.now() + 60_000;
    while (Date.now() < end) {
      await new Promise((res) => setTimeout(res, 400));
      const s = await api<EventRow>("GET", `/api/admin/events/${r.data.id}`);
      if (!s.ok) {
        setError(errorText(s));
        break;
      }
      setEv(s.data);
      if (s.data.state === "done" || s.data.state === "dead" || (s.data.last_error && s.data.attempts > 0)) {
        break;
      }
    }
    setBusy(false);
  };

  return (
    <div class="test-run" data-testid="test-run">
      <label class="field">
        <span>
          Sample event (the function receives it as its event; fields: op, table_schema, table_name, new)
        </span>
        <textarea
          rows={6}
          spellcheck={false}
          value={text}
          onInput={(e) => setText((e.currentTarget as HTMLTextAreaElement).value)}
        />
      </label>
      <div class="actions">
        <button type="button" onClick={run} disabled={!hydrated || busy} data-testid="test-run-button">
          {busy ? "Running…" : "Run once"}
        </button>
      </div>
      {error && <p class="error" role="alert">{error}</p>}
      {ev && (
        <p data-testid="test-run-result" class={ev.state === "done" ? "ok" : ev.last_error ? "error" : ""}>
          Event <a href={`/console/events?id=${ev.id}`}>#{ev.id}</a>: <strong>{ev.state}</strong>
          {ev.attempts ? ` after ${ev.attempts} attempt${ev.attempts > 1 ? "s" : ""}` : ""}
          {ev.finished_at ? ` in ${duration(ev.started_at, ev.finished_at)}` : ""}
          {ev.last_error && <pre>{ev.last_error}</pre>}
        </p>
      )}
    </div>
  );
}
