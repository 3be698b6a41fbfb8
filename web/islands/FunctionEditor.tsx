import { useRef, useState } from "preact/hooks";
import { api, errorText, useHydrated } from "./_api.ts";

/** Props of {@linkcode FunctionEditor}. */
export interface FunctionEditorProps {
  /** The function's name; undefined for a new function (the name is then a field). */
  name?: string;
  code: string;
  timeout_ms: number;
  max_attempts: number;
  backoff_ms: number;
  enabled: boolean;
}

/** Where the compiler placed an error, read from the `…:line:col` of its message. */
export interface CompileProblem {
  message: string;
  line?: number;
  col?: number;
  snippet?: string;
}

/** Splits the sandbox compiler's message into the error, its line and column, and the code excerpt. */
export function parseCompileError(text: string): CompileProblem {
  const body = text.replace(/^Cannot save function as its code does not compile:\s*/, "");
  const at = /:(\d+):(\d+)\)?\s*$/m.exec(body.split("\n").find((l) => /^\s*at /.test(l)) ?? "");
  const lines = body.split("\n");
  const message = lines[0].replace(/^(TypeError: )?/, "");
  const snippet = lines.slice(1).filter((l) => !/^\s*at /.test(l)).join("\n").replace(/^\n+|\s+$/g, "") ||
    undefined;
  return at ? { message, line: Number(at[1]), col: Number(at[2]), snippet } : { message, snippet };
}

/**
 * The function editor: the code in a monospace area with line numbers, the limits, and Save. Saving
 * sends the code to the admin API, which compiles it in the sandbox first; a compile error comes back
 * as a 400 and is shown inline at its line.
 */
export function FunctionEditor(p: FunctionEditorProps) {
  const hydrated = useHydrated();
  const [code, setCode] = useState(p.code);
  const [name, setName] = useState(p.name ?? "");
  const [busy, setBusy] = useState(false);
  const [problem, setProblem] = useState<CompileProblem>();
  const [saved, setSaved] = useState<string>();
  const gutter = useRef<HTMLPreElement>(null);
  const lines = code.split("\n").length;

  const save = async (e: Event) => {
    e.preventDefault();
    const form = new FormData(e.currentTarget as HTMLFormElement);
    setBusy(true);
    setProblem(undefined);
    setSaved(undefined);
    const target = p.name ?? name.trim();
    if (!p.name) {
      // PUT creates or replaces: make sure "new" does not overwrite a function of the same name.
      const list = await api<{ name: string }[]>("GET", "/api/admin/functions");
      if (list.ok && list.data.some((f) => f.name === target)) {
        setBusy(false);
        setProblem({
          message: `A function named ${target} exists already: open it from the list to edit it`,
        });
        return;
      }
    }
    const r = await api("PUT", `/api/admin/functions/${encodeURIComponent(target)}`, {
      code,
      timeout_ms: Number(form.get("timeout_ms")),
      max_attempts: Number(form.get("max_attempts")),
      backoff_ms: Number(form.get("backoff_ms")),
      enabled: form.get("enabled") === "on",
    });
    setBusy(false);
    if (r.ok) {
      if (!p.name) location.href = `/console/functions/${encodeURIComponent(target)}`;
      else setSaved(`Saved at ${new Date().toLocaleTimeString()}`);
      return;
    }
    setProblem(
      r.status === 400 && r.error.includes("does not compile")
        ? parseCompileError(r.error)
        : { message: errorText(r) },
    );
  };

  const onKey = (e: KeyboardEvent) => {
    if (e.key !== "Tab" || e.shiftKey) return;
    e.preventDefault();
    const t = e.currentTarget as HTMLTextAreaElement;
    const s = t.selectionStart;
    const next = code.slice(0, s) + "  " + code.slice(t.selectionEnd);
    setCode(next);
    requestAnimationFrame(() => t.setSelectionRange(s + 2, s + 2));
  };

  return (
    <form class="editor" onSubmit={save} data-testid="function-editor">
      {!p.name && (
        <label class="field">
          <span>Name</span>
          <input
            name="name"
            value={name}
            onInput={(e) => setName((e.currentTarget as HTMLInputElement).value)}
            placeholder="lower_case_name"
            pattern="[a-z][a-z0-9_]{0,62}"
            required
            data-testid="function-name"
          />
        </label>
      )}
      <div class="code" data-error-line={problem?.line}>
        <pre class="gutter" ref={gutter} aria-hidden="true">
          {Array.from({ length: lines }, (_, i) => (
            <span key={i} class={problem?.line === i + 1 ? "err" : ""}>{`${i + 1}\n`}</span>
          ))}
        </pre>
        <textarea
          name="code"
          value={code}
          spellcheck={false}
          rows={Math.min(30, Math.max(10, lines + 1))}
          onInput={(e) => setCode((e.currentTarget as HTMLTextAreaElement).value)}
          onScroll={(e) => {
            if (gutter.current) gutter.current.scrollTop = (e.currentTarget as HTMLTextAreaElement).scrollTop;
          }}
          onKeyDown={onKey}
          aria-label="Function code"
          data-testid="function-code"
        />
      </div>
      {problem && (
        <div class="compile-error" role="alert" data-testid="compile-error">
          <strong>
            {problem.line ? `Line ${problem.line}, column ${problem.col}: ` : ""}
            {problem.message}
          </strong>
          {problem.snippet && <pre>{problem.snippet}</pre>}
        </div>
      )}
      <div class="row">
        <label class="field">
          <span>Timeout (ms)</span>
          <input type="number" name="timeout_ms" min={10} max={600000} value={p.timeout_ms} />
        </label>
        <label class="field">
          <span>Max attempts</span>
          <input type="number" name="max_attempts" min={1} max={100} value={p.max_attempts} />
        </label>
        <label class="field">
          <span>Backoff (ms)</span>
          <input type="number" name="backoff_ms" min={1} max={3600000} value={p.backoff_ms} />
        </label>
        <label class="field field-checkbox">
          <span>Enabled</span>
          <input type="checkbox" name="enabled" checked={p.enabled} />
        </label>
      </div>
      <div class="actions">
        <button type="submit" disabled={!hydrated || busy} data-testid="function-save">
          {busy ? "Compiling…" : "Save"}
        </button>
        {saved && <span class="ok" data-testid="function-saved">{saved}</span>}
        {!hydrated && <span class="muted">editing needs JavaScript</span>}
      </div>
    </form>
  );
}
