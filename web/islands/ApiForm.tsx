import { useState } from "preact/hooks";
import { api, errorText, useHydrated } from "./_api.ts";

/** One field of an {@linkcode ApiForm}. */
export interface ApiFormField {
  name: string;
  label: string;
  type: "text" | "number" | "select" | "checkboxes" | "json" | "checkbox";
  options?: string[];
  /** Initial value: a string, number, boolean or (for checkboxes) the checked options. */
  value?: string | number | boolean | string[];
  placeholder?: string;
  required?: boolean;
  /** Sends a `schema.table` value as two fields instead (split at the first dot). */
  splitInto?: [string, string];
}

/** Props of {@linkcode ApiForm}. */
export interface ApiFormProps {
  method: "POST" | "PUT" | "PATCH";
  url: string;
  fields: ApiFormField[];
  submitLabel: string;
  /** Where to go on success (default: reload). `{id}` is replaced by the answer's `id`. */
  then?: string;
  testid?: string;
}

/**
 * A form whose fields become a JSON body sent to the admin API. Errors from the server (validation
 * issues with their field paths) show under the form; the page reloads on success.
 */
export function ApiForm(p: ApiFormProps) {
  const hydrated = useHydrated();
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  const submit = async (e: Event) => {
    e.preventDefault();
    const form = e.currentTarget as HTMLFormElement;
    const data = new FormData(form);
    const body: Record<string, unknown> = {};
    for (const f of p.fields) {
      if (f.type === "checkboxes") body[f.name] = data.getAll(f.name);
      else if (f.type === "checkbox") body[f.name] = data.get(f.name) === "on";
      else if (f.type === "number") {
        const v = String(data.get(f.name) ?? "");
        if (v !== "") body[f.name] = Number(v);
      } else if (f.type === "json") {
        const v = String(data.get(f.name) ?? "").trim();
        if (!v) continue;
        try {
          body[f.name] = JSON.parse(v);
        } catch (err) {
          setError(`${f.label}: not valid JSON (${(err as Error).message})`);
          return;
        }
      } else if (f.splitInto) {
        const v = String(data.get(f.name) ?? "");
        const i = v.indexOf(".");
        body[f.splitInto[0]] = v.slice(0, i);
        body[f.splitInto[1]] = v.slice(i + 1);
      } else body[f.name] = String(data.get(f.name) ?? "");
    }
    setBusy(true);
    setError(undefined);
    const r = await api<{ id?: unknown }>(p.method, p.url, body);
    if (r.ok) {
      if (p.then) location.href = p.then.replace("{id}", String(r.data?.id ?? ""));
      else location.reload();
      return;
    }
    setBusy(false);
    setError(errorText(r));
  };
  return (
    <form class="api-form" onSubmit={submit} data-testid={p.testid}>
      {p.fields.map((f) => (
        <label class={`field field-${f.type}`}>
          <span>{f.label}</span>
          {f.type === "select"
            ? (
              <select name={f.name} required={f.required}>
                {(f.options ?? []).map((o) => <option key={o} value={o} selected={o === f.value}>{o}
                </option>)}
              </select>
            )
            : f.type === "checkboxes"
            ? (
              <span class="checks">
                {(f.options ?? []).map((o) => (
                  <label>
                    <input
                      type="checkbox"
                      name={f.name}
                      value={o}
                      checked={Array.isArray(f.value) ? f.value.includes(o) : true}
                    />{" "}
                    {o}
                  </label>
                ))}
              </span>
            )
            : f.type === "checkbox"
            ? <input type="checkbox" name={f.name} checked={f.value === true} />
            : f.type === "json"
            ? (
              <textarea name={f.name} rows={4} placeholder={f.placeholder} spellcheck={false}>
                {String(f.value ?? "")}
              </textarea>
            )
            : (
              <input
                type={f.type}
                name={f.name}
                value={f.value === undefined ? "" : String(f.value)}
                placeholder={f.placeholder}
                required={f.required}
              />
            )}
        </label>
      ))}
      <div class="actions">
        <button type="submit" disabled={!hydrated || busy}>{busy ? "…" : p.submitLabel}</button>
        {!hydrated && <span class="muted">needs JavaScript</span>}
      </div>
      {error && <p class="error" role="alert">{error}</p>}
    </form>
  );
}
