/**
 * The stream's decoder: pg-logical-replication's pgoutput parser, kept on Postgres's text output for
 * every value. The library would otherwise turn values into JavaScript types (a timestamp into a `Date`,
 * losing microseconds); text goes into the batch files as Postgres printed it, so it loads back
 * exactly. A value whose TOAST did not change is `undefined` in a tuple (NULL is `null`).
 */
import { type Pgoutput, PgoutputPlugin } from "pg-logical-replication";

/** A decoded pgoutput message (the library's shapes; values are text). */
export type Message = Pgoutput.Message;
/** A relation (table) description from the stream. */
export type MessageRelation = Pgoutput.MessageRelation;

const raw = (s: string) => s;

/** A pgoutput plugin for `publications` whose tuples hold text values. */
export function textPgoutputPlugin(publications: string[]): PgoutputPlugin {
  const plugin = new PgoutputPlugin({ protoVersion: 1, publicationNames: publications });
  const parser = (plugin as unknown as { parser: Record<string, unknown> }).parser;
  const readColumn = (parser.readRelationColumn as (r: unknown) => Record<string, unknown>).bind(parser);
  parser.readRelationColumn = (reader: unknown) => ({ ...readColumn(reader), parser: raw });
  return plugin;
}
