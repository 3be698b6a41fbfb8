/**
 * Moves the local S3 server's event records (its `/_wharf/events` log) into the Postgres queue, for one
 * bucket. Every copy of imgproc may run it: a record's dedupe key (`epoch:seq`) makes a second insert a
 * no-op, and the position only moves forward. The server writes S3's own record format (keys encoded
 * as S3 encodes them in events), so records are queued as they are and the consumer reads one format
 * whatever the source.
 */
import type { Sql } from "../../shared/db.ts";
import type { Logger } from "../../shared/log.ts";
import { abortableSleep, backoffMs } from "../../shared/worker.ts";

/** Options for {@linkcode runBridge}. */
export interface BridgeOptions {
  sql: Sql;
  /** `http://host:port/_wharf/events` */
  eventsUrl: string;
  bucket: string;
  /** Long-poll time per request (default 5 s). */
  waitMs?: number;
  log: Logger;
  signal: AbortSignal;
}

/** The S3 endpoint has no event log (a real S3 service rather than wharf's local server). */
export class NoEventLogError extends Error {
  constructor(url: string) {
    super(`Cannot bridge S3 events: ${url} has no event log (use SQS with a real S3 service)`);
    this.name = "NoEventLogError";
  }
}

interface EventsPage {
  epoch: string;
  events: { seq: number; bucket: string; body: string }[];
}

/** Moves one page; returns how many records were new. */
export async function bridgeOnce(o: Omit<BridgeOptions, "log">): Promise<number> {
  const [pos] = await o.sql`select epoch, position from control.imgproc_bridge where bucket = ${o.bucket}`;
  const url = new URL(o.eventsUrl);
  url.searchParams.set("bucket", o.bucket);
  url.searchParams.set("after", String(pos?.position ?? 0));
  url.searchParams.set("limit", "500");
  url.searchParams.set("wait_ms", String(o.waitMs ?? 5_000));
  const res = await fetch(url, { signal: o.signal });
  if (res.status === 404 || res.status === 403) {
    await res.body?.cancel();
    throw new NoEventLogError(new URL(o.eventsUrl).origin);
  }
  if (!res.ok) {
    await res.body?.cancel();
    throw new Error(`Cannot read the S3 event log: HTTP ${res.status}`);
  }
  const page = await res.json() as EventsPage;
  if (pos && pos.epoch !== page.epoch) {
    // A new log (the local server's data was wiped): start over from its beginning.
    await o
      .sql`update control.imgproc_bridge set epoch = ${page.epoch}, position = 0 where bucket = ${o.bucket}`;
    return 0;
  }
  if (!page.events.length) return 0;
  const rows = page.events.map((e) => ({ dedupe_key: `${page.epoch}:${e.seq}`, body: e.body }));
  const last = page.events[page.events.length - 1].seq;
  return await o.sql.begin(async (tx) => {
    const r = await tx`
      insert into control.imgproc_messages ${tx(rows, "dedupe_key", "body")}
      on conflict (dedupe_key) do nothing`;
    await tx`
      insert into control.imgproc_bridge (bucket, epoch, position) values (${o.bucket}, ${page.epoch}, ${last})
      on conflict (bucket) do update
        set position = greatest(control.imgproc_bridge.position, excluded.position), updated_at = now()
        where control.imgproc_bridge.epoch = excluded.epoch`;
    return r.count;
  });
}

/** Runs {@linkcode bridgeOnce} until `signal` aborts; never throws. */
export async function runBridge(o: BridgeOptions): Promise<void> {
  let errors = 0;
  while (!o.signal.aborted) {
    try {
      await bridgeOnce(o);
      errors = 0;
    } catch (e) {
      if (o.signal.aborted) break;
      if (e instanceof NoEventLogError) {
        o.log.error("event bridge off", { reason: e.message });
        return;
      }
      o.log.warn("event bridge failed", { error: e, attempt: errors });
      await abortableSleep(backoffMs(errors++, 200, 10_000), o.signal);
    }
  }
}
