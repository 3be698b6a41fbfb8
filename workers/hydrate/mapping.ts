/**
 * Mappings as data: what a mapping is, how its key template reads, how it is checked against the real
 * database before it is stored, and the default mapping merflow users rely on.
 *
 * A mapping is stored only after {@linkcode validateMapping} has looked at the live source: the table or
 * query must exist, every column the template and the value name must be there, and a query must be a
 * single read-only SELECT. A bad mapping is a 400 with the reason, and nothing is written.
 */
import type postgres from "postgres";
import { z } from "zod";
import { quoteIdent, type Sql } from "../../shared/db.ts";
import { WharfError } from "../../shared/errors.ts";

const Ident = z.string().min(1).max(63).refine((v) => !v.includes("\u0000") && !v.includes('"'), {
  message: "must be a column or table name",
});

/** The body of a mapping as the admin API and mapping files accept it. */
export const MappingInput = z.object({
  name: z.string().regex(/^[a-z][a-z0-9_]{0,62}$/, "must be lower case letters, digits and _"),
  source: z.union([
    z.object({ table: Ident, schema: Ident.optional() }).strict(),
    z.object({ query: z.string().min(1).max(100_000) }).strict(),
  ]),
  key_template: z.string().min(1).max(1_000),
  value: z.union([
    z.object({ shape: z.literal("string"), column: Ident }).strict(),
    z.object({ shape: z.literal("hash"), columns: z.array(Ident).min(1).max(1_000).optional() }).strict(),
    z.object({ shape: z.literal("json") }).strict(),
  ]),
  key_prefix: z.string().max(200).default(""),
  ttl_seconds: z.number().int().min(1).max(31_536_000).nullable().optional(),
  period_seconds: z.number().int().min(1).max(86_400).nullable().optional(),
  enabled: z.boolean().default(true),
}).strict();
/** A pool or a transaction: the checks run in either. */
export type Db = Sql | postgres.TransactionSql<Record<string, unknown>>;

/** A mapping as given (before validation against the database). */
export type MappingInput = z.input<typeof MappingInput>;

/** A mapping as the worker uses it: validated, with the table's schema resolved. */
export interface Mapping {
  name: string;
  source: { schema: string; table: string } | { query: string };
  keyTemplate: string;
  value: { shape: "string"; column: string } | { shape: "hash"; columns?: string[] } | { shape: "json" };
  keyPrefix: string;
  ttlSeconds: number | null;
  periodSeconds: number | null;
  enabled: boolean;
  resyncRequestedAt: Date | null;
}

/** One piece of a parsed key template: literal text or a column. */
export type TemplatePart = { text: string } | { column: string };

/**
 * Parses `user:{id}:email` into literal and column parts. `{{` and `}}` stand for literal braces. A
 * template needs at least one column, or every row would write the same key.
 */
export function parseTemplate(template: string): TemplatePart[] {
  const parts: TemplatePart[] = [];
  let text = "";
  for (let i = 0; i < template.length; i++) {
    const ch = template[i];
    if (ch === "{" && template[i + 1] === "{") {
      text += "{";
      i++;
    } else if (ch === "}" && template[i + 1] === "}") {
      text += "}";
      i++;
    } else if (ch === "{") {
      const end = template.indexOf("}", i);
      if (end < 0) throw badTemplate("a { is not closed");
      const column = template.slice(i + 1, end);
      if (!column || column.includes("{") || column.includes('"') || column.includes("\u0000")) {
        throw badTemplate(`{${column}} is not a column name`);
      }
      if (text) parts.push({ text });
      text = "";
      parts.push({ column });
      i = end;
    } else if (ch === "}") {
      throw badTemplate("a } has no matching {");
    } else text += ch;
  }
  if (text) parts.push({ text });
  if (!parts.some((p) => "column" in p)) throw badTemplate("it names no {column}");
  return parts;
}

function badTemplate(why: string): WharfError {
  return new WharfError(400, `Cannot use the key template as ${why}`, { code: "invalid_key_template" });
}

/** The columns a mapping reads (template columns and value columns), without duplicates. */
export function mappingColumns(m: Pick<Mapping, "keyTemplate" | "value">): string[] {
  const cols = parseTemplate(m.keyTemplate).flatMap((p) => "column" in p ? [p.column] : []);
  if (m.value.shape === "string") cols.push(m.value.column);
  if (m.value.shape === "hash" && m.value.columns) cols.push(...m.value.columns);
  return [...new Set(cols)];
}

/** The columns of a source as Postgres describes it (table or query), in order. */
export async function sourceColumns(sql: Db, source: Mapping["source"]): Promise<string[]> {
  if ("query" in source) {
    // Wrapping the text as a subquery admits one SELECT (or VALUES / WITH … SELECT) only: a second
    // statement, an INSERT … RETURNING or a data-modifying WITH are syntax errors there, and the
    // read-only transaction refuses anything that would write (a volatile function, say).
    // One row is really fetched (not `limit 0`), so that a volatile function that writes (nextval, say)
    // runs and is refused by the read-only transaction; the sync runs the query read-only too.
    const probe = async (q: Db) => {
      await q`set local statement_timeout = 10000`;
      const rows = await q.unsafe(`select * from (${source.query}\n) as wharf_q limit 1`);
      return rows.columns.map((c) => c.name);
    };
    try {
      if ("begin" in sql) return await sql.begin("read only", probe);
      // Inside a transaction: a savepoint that turns read-only on and is always rolled back.
      let columns: string[] = [];
      const done = new Error("probe done");
      await sql.savepoint(async (sp) => {
        await sp`set local transaction_read_only = on`;
        columns = await probe(sp);
        throw done;
      }).catch((e) => {
        if (e !== done) throw e;
      });
      return columns;
    } catch (e) {
      if (e instanceof WharfError) throw e;
      throw new WharfError(400, `Cannot use the query as a read-only source: ${(e as Error).message}`, {
        code: "invalid_source_query",
      });
    }
  }
  const rows = await sql<{ name: string }[]>`
    select a.attname as name from pg_attribute a
     where a.attrelid = to_regclass(${quoteIdent(source.schema) + "." + quoteIdent(source.table)})
       and a.attnum > 0 and not a.attisdropped
     order by a.attnum`;
  const [rel] = await sql`select to_regclass(${
    quoteIdent(source.schema) + "." + quoteIdent(source.table)
  }) as r`;
  if (!rel.r) {
    throw new WharfError(400, `Cannot map table ${source.schema}.${source.table} as it does not exist`, {
      code: "unknown_source_table",
    });
  }
  return rows.map((r) => r.name);
}

/**
 * Where the unqualified table `users` lives, resolved as merflow users expect: `app.users` when it
 * exists (wharf's own feed users), else `public.users`, else undefined.
 */
export async function resolveUsersTable(sql: Db): Promise<{ schema: string; table: string } | undefined> {
  const [r] = await sql<{ app: string | null; pub: string | null }[]>`
    select to_regclass('app.users')::text as app, to_regclass('public.users')::text as pub`;
  if (r.app) return { schema: "app", table: "users" };
  if (r.pub) return { schema: "public", table: "users" };
  return undefined;
}

/**
 * Turns an input into a mapping and checks it against the live database. Throws a 400
 * {@linkcode WharfError} naming what is wrong; never writes anything.
 */
export async function validateMapping(sql: Db, raw: unknown): Promise<Mapping> {
  const parsed = MappingInput.safeParse(raw);
  if (!parsed.success) throw parsed.error;
  const input = parsed.data;
  let source: Mapping["source"];
  if ("query" in input.source) source = { query: input.source.query };
  else if (input.source.schema) source = { schema: input.source.schema, table: input.source.table };
  else {
    const found = input.source.table === "users" ? await resolveUsersTable(sql) : undefined;
    source = found ?? { schema: "public", table: input.source.table };
  }
  const m: Mapping = {
    name: input.name,
    source,
    keyTemplate: input.key_template,
    value: input.value,
    keyPrefix: input.key_prefix,
    ttlSeconds: input.ttl_seconds ?? null,
    periodSeconds: input.period_seconds ?? null,
    enabled: input.enabled,
    resyncRequestedAt: null,
  };
  const wanted = mappingColumns(m); // also parses the template
  const have = new Set(await sourceColumns(sql, source));
  const missing = wanted.filter((c) => !have.has(c));
  if (missing.length) {
    throw new WharfError(400, `Cannot map the source as it has no column ${missing.join(", ")}`, {
      code: "unknown_column",
      details: { missing, columns: [...have] },
    });
  }
  return m;
}

/** A stored row of `control.hydrate_mappings`. */
export interface MappingRow {
  name: string;
  source_schema: string | null;
  source_table: string | null;
  source_query: string | null;
  key_template: string;
  value_shape: "string" | "hash" | "json";
  value_column: string | null;
  value_columns: string[] | null;
  key_prefix: string;
  ttl_seconds: number | null;
  period_seconds: number | null;
  enabled: boolean;
  resync_requested_at: Date | null;
}

/** A stored row as a mapping. */
export function fromRow(r: MappingRow): Mapping {
  const value: Mapping["value"] = r.value_shape === "string"
    ? { shape: "string", column: r.value_column! }
    : r.value_shape === "hash"
    ? { shape: "hash", ...(r.value_columns ? { columns: r.value_columns } : {}) }
    : { shape: "json" };
  return {
    name: r.name,
    source: r.source_query !== null
      ? { query: r.source_query }
      : { schema: r.source_schema!, table: r.source_table! },
    keyTemplate: r.key_template,
    value,
    keyPrefix: r.key_prefix,
    ttlSeconds: r.ttl_seconds,
    periodSeconds: r.period_seconds,
    enabled: r.enabled,
    resyncRequestedAt: r.resync_requested_at,
  };
}

/** A mapping in the input shape (what the admin API returns). */
export function toInput(m: Mapping): z.output<typeof MappingInput> & { resync_requested_at: Date | null } {
  return {
    name: m.name,
    source: "query" in m.source
      ? { query: m.source.query }
      : { schema: m.source.schema, table: m.source.table },
    key_template: m.keyTemplate,
    value: m.value,
    key_prefix: m.keyPrefix,
    ttl_seconds: m.ttlSeconds,
    period_seconds: m.periodSeconds,
    enabled: m.enabled,
    resync_requested_at: m.resyncRequestedAt,
  };
}

/**
 * Stores a validated mapping (insert, or replace when `replace`), installs the capture trigger on its
 * table, and nudges the worker. Runs in the caller's transaction.
 */
export async function saveMapping(tx: Db, m: Mapping, replace: boolean): Promise<void> {
  const s = "query" in m.source ? null : m.source;
  const q = "query" in m.source ? m.source.query : null;
  const cols = m.value.shape === "hash" ? m.value.columns ?? null : null;
  const col = m.value.shape === "string" ? m.value.column : null;
  const previous = await tx<{ source_schema: string | null; source_table: string | null }[]>`
    select source_schema, source_table from control.hydrate_mappings where name = ${m.name} for update`;
  if (previous.length && !replace) {
    throw new WharfError(409, `Cannot create mapping ${m.name} as it exists`, { code: "mapping_exists" });
  }
  if (!previous.length && replace) {
    throw new WharfError(404, `Cannot update mapping ${m.name} as it does not exist`);
  }
  await tx`
    insert into control.hydrate_mappings (name, source_schema, source_table, source_query, key_template,
      value_shape, value_column, value_columns, key_prefix, ttl_seconds, period_seconds, enabled)
    values (${m.name}, ${s?.schema ?? null}, ${s?.table ?? null}, ${q}, ${m.keyTemplate}, ${m.value.shape},
      ${col}, ${cols}, ${m.keyPrefix}, ${m.ttlSeconds}, ${m.periodSeconds}, ${m.enabled})
    on conflict (name) do update set source_schema = excluded.source_schema,
      source_table = excluded.source_table, source_query = excluded.source_query,
      key_template = excluded.key_template, value_shape = excluded.value_shape,
      value_column = excluded.value_column, value_columns = excluded.value_columns,
      key_prefix = excluded.key_prefix, ttl_seconds = excluded.ttl_seconds,
      period_seconds = excluded.period_seconds, enabled = excluded.enabled,
      resync_requested_at = now(), updated_at = now()`;
  if (s) await tx`select control.hydrate_install(${s.schema}, ${s.table})`;
  const old = previous[0];
  if (old?.source_table && (old.source_schema !== s?.schema || old.source_table !== s?.table)) {
    await uninstallIfUnused(tx, old.source_schema!, old.source_table);
  }
  await tx`select pg_notify('wharf_hydrate', 'mappings')`;
}

/** Deletes a mapping; detaches the capture trigger when no other mapping reads its table. */
export async function deleteMapping(tx: Db, name: string): Promise<boolean> {
  const rows = await tx<{ source_schema: string | null; source_table: string | null }[]>`
    delete from control.hydrate_mappings where name = ${name} returning source_schema, source_table`;
  if (!rows.length) return false;
  if (rows[0].source_table) await uninstallIfUnused(tx, rows[0].source_schema!, rows[0].source_table);
  await tx`select pg_notify('wharf_hydrate', 'mappings')`;
  return true;
}

async function uninstallIfUnused(tx: Db, schema: string, table: string): Promise<void> {
  const [used] = await tx`select 1 from control.hydrate_mappings
                           where source_schema = ${schema} and source_table = ${table} limit 1`;
  if (!used) await tx`select control.hydrate_uninstall(${schema}, ${table})`;
}

/** Loads every stored mapping. */
export async function loadMappings(sql: Sql): Promise<Mapping[]> {
  const rows = await sql<MappingRow[]>`select * from control.hydrate_mappings order by name`;
  return rows.map(fromRow);
}

/**
 * merflow's default, with no configuration: from `users`, key `{id}` → the email, and key `{username}` →
 * the password hash, as plain strings.
 */
export const DEFAULT_MAPPINGS: MappingInput[] = [
  {
    name: "users_email",
    source: { table: "users" },
    key_template: "{id}",
    value: { shape: "string", column: "email" },
  },
  {
    name: "users_password",
    source: { table: "users" },
    key_template: "{username}",
    value: { shape: "string", column: "password" },
  },
];

/**
 * Stores the default mappings when no mapping exists and a `users` table does. Returns how many were
 * added (0 when there are mappings already or there is no users table yet).
 */
export async function ensureDefaultMappings(sql: Sql): Promise<number> {
  return await sql.begin(async (tx) => {
    await tx`lock table control.hydrate_mappings in share row exclusive mode`;
    const [any] = await tx`select 1 from control.hydrate_mappings limit 1`;
    if (any || !(await resolveUsersTable(tx))) return 0;
    for (const d of DEFAULT_MAPPINGS) await saveMapping(tx, await validateMapping(tx, d), false);
    return DEFAULT_MAPPINGS.length;
  });
}

/**
 * Reads a JSON file holding an array of mappings, validates each against the database and stores them
 * (replacing mappings of the same name). Nothing is stored when one is bad.
 */
export async function loadMappingsFile(sql: Sql, path: string): Promise<number> {
  let data: unknown;
  try {
    data = JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    throw new WharfError(400, `Cannot read the mappings file: ${(e as Error).message}`);
  }
  if (!Array.isArray(data)) {
    throw new WharfError(400, "Cannot read the mappings file as it is not a JSON array");
  }
  // Validate every entry first (a query is checked in its own read-only transaction), then store all
  // of them in one transaction.
  const mappings: Mapping[] = [];
  for (const [i, raw] of data.entries()) {
    try {
      mappings.push(await validateMapping(sql, raw));
    } catch (e) {
      const why = e instanceof z.ZodError
        ? e.issues.map((x) => `${x.path.join(".")}: ${x.message}`).join("; ")
        : (e as Error).message;
      throw new WharfError(400, `Cannot load mapping ${i} of the mappings file: ${why}`);
    }
  }
  return await sql.begin(async (tx) => {
    for (const m of mappings) {
      const [exists] = await tx`select 1 from control.hydrate_mappings where name = ${m.name}`;
      await saveMapping(tx, m, !!exists);
    }
    return mappings.length;
  });
}
