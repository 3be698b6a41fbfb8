import { useState } from "preact/hooks";
import { api, errorText, useHydrated } from "./_api.ts";

/** A hydrate mapping in the admin API's shape. */
export interface MappingValue {
  name: string;
  source: { schema?: string; table: string } | { query: string };
  key_template: string;
  value: { shape: "string"; column: string } | { shape: "hash"; columns?: string[] } | { shape: "json" };
  key_prefix?: string;
  ttl_seconds?: number | null;
  period_seconds?: number | null;
  enabled?: boolean;
}

/** Props of {@linkcode MappingForm}. */
export interface MappingFormProps {
  /** The stored mapping when editing; a new mapping otherwise. */
  initial?: MappingValue;
  /** Checks a mapping against the live database without storing it. */
  validateUrl: string;
  testid?: string;
}

/** Reads the form into the admin API's body. */
export function mappingFromForm(data: FormData): MappingValue {
  const s = (k: string) => String(data.get(k) ?? "").trim();
  const n = (k: string) => (s(k) === "" ? null : Number(s(k)));
  const kind = s("source_kind");
  const table = s("table");
  const dot = table.indexOf(".");
  const source = kind === "query"
    ? { query: s("query") }
    : dot > 0
    ? { schema: table.slice(0, dot), table: table.slice(dot + 1) }
    : { table };
  const shape = s("shape");
  const columns = s("columns").split(",").map((c) => c.trim()).filter(Boolean);
  const value = shape === "string"
    ? { shape: "string" as const, column: s("column") }
    : shape === "hash"
    ? { shape: "hash" as const, ...(columns.length ? { columns } : {}) }
    : { shape: "json" as const };
  return {
    name: s("name"),
    source,
    key_template: s("key_template"),
    value,
    key_prefix: s("key_prefix"),
    ttl_seconds: n("ttl_seconds"),
    period_seconds: n("period_seconds"),
    enabled: data.get("enabled") === "on",
  };
}

/**
 * Creates or edits a hydrate mapping. "Validate" asks the server to check it against the live table or
 * query (nothing stored); "Save" sends it to the admin API, which checks it the same way. Either way the
 * server's 400 message (a missing column, a bad template, a query that writes) shows inline.
 */
export function MappingForm(p: MappingFormProps) {
  const hydrated = useHydrated();
  const m = p.initial;
  const [kind, setKind] = useState<"table" | "query">(m && "query" in m.source ? "query" : "table");
  const [shape, setShape] = useState(m?.value.shape ?? "json");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  const [ok, setOk] = useState<string>();

  const send = async (form: HTMLFormElement, validateOnly: boolean) => {
    const body = mappingFromForm(new FormData(form));
    setBusy(true);
    setError(undefined);
    setOk(undefined);
    const r = validateOnly
      ? await api<{ columns: string[] }>("POST", p.validateUrl, body)
      : m
      ? await api("PUT", `/api/admin/hydration/mappings/${encodeURIComponent(m.name)}`, body)
      : await api("POST", "/api/admin/hydration/mappings", body);
    setBusy(false);
    if (!r.ok) return setError(errorText(r));
    if (validateOnly) {
      const cols = (r.data as { columns?: string[] })?.columns ?? [];
      return setOk(`Valid. The source has the columns ${cols.join(", ")}.`);
    }
    location.href = `/console/hydration/${encodeURIComponent(body.name)}`;
  };

  const table = m && !("query" in m.source)
    ? `${m.source.schema ? m.source.schema + "." : ""}${m.source.table}`
    : "";
  const query = m && "query" in m.source ? m.source.query : "";
  return (
    <form
      class="api-form mapping-form"
      data-testid={p.testid}
      onSubmit={(e) => {
        e.preventDefault();
        send(e.currentTarget as HTMLFormElement, false);
      }}
    >
      <label class="field">
        <span>Name</span>
        <input name="name" defaultValue={m?.name ?? ""} readOnly={!!m} required placeholder="user_emails" />
      </label>
      <label class="field">
        <span>Source</span>
        <select name="source_kind" onChange={(e) => setKind(e.currentTarget.value as "table" | "query")}>
          <option value="table" selected={kind === "table"}>table</option>
          <option value="query" selected={kind === "query"}>read-only query</option>
        </select>
      </label>
      {kind === "table"
        ? (
          <label class="field">
            <span>Table (schema.table)</span>
            <input name="table" defaultValue={table} required placeholder="app.users" />
          </label>
        )
        : (
          <label class="field field-json">
            <span>Query</span>
            <textarea name="query" rows={4} spellcheck={false} placeholder="select id, email from app.users">
              {query}
            </textarea>
          </label>
        )}
      <label class="field">
        <span>Key template</span>
        <input
          name="key_template"
          defaultValue={m?.key_template ?? ""}
          required
          placeholder="user:{id}:email"
        />
      </label>
      <label class="field">
        <span>Key prefix</span>
        <input name="key_prefix" defaultValue={m?.key_prefix ?? ""} placeholder="app:" />
      </label>
      <label class="field">
        <span>Value</span>
        <select name="shape" onChange={(e) => setShape(e.currentTarget.value as typeof shape)}>
          {(["json", "hash", "string"] as const).map((s) => (
            <option value={s} selected={shape === s}>{s}</option>
          ))}
        </select>
      </label>
      {shape === "string" && (
        <label class="field">
          <span>Value column</span>
          <input name="column" defaultValue={m?.value.shape === "string" ? m.value.column : ""} required />
        </label>
      )}
      {shape === "hash" && (
        <label class="field">
          <span>Hash fields (columns, comma-separated; empty for all)</span>
          <input
            name="columns"
            defaultValue={m?.value.shape === "hash" ? (m.value.columns ?? []).join(", ") : ""}
            placeholder="email, username"
          />
        </label>
      )}
      <label class="field">
        <span>TTL (s, empty for none)</span>
        <input type="number" name="ttl_seconds" min={1} defaultValue={m?.ttl_seconds ?? ""} />
      </label>
      <label class="field">
        <span>Full sync period (s, empty for the worker's)</span>
        <input type="number" name="period_seconds" min={1} defaultValue={m?.period_seconds ?? ""} />
      </label>
      <label class="field field-checkbox">
        <span>Enabled</span>
        <input type="checkbox" name="enabled" defaultChecked={m ? m.enabled !== false : true} />
      </label>
      <div class="actions">
        <button
          type="button"
          class="quiet"
          disabled={!hydrated || busy}
          data-testid="validate-mapping"
          onClick={(e) => send((e.currentTarget as HTMLButtonElement).form!, true)}
        >
          Validate
        </button>
        <button type="submit" disabled={!hydrated || busy} data-testid="save-mapping">
          {busy ? "…" : m ? "Save" : "Create mapping"}
        </button>
        {!hydrated && <span class="muted">needs JavaScript</span>}
      </div>
      {error && <p class="error" role="alert" data-testid="mapping-error">{error}</p>}
      {ok && <p class="ok" role="status" data-testid="mapping-ok">{ok}</p>}
    </form>
  );
}
