/**
 * One pipeline: a logical slot on the source, read with pgoutput, cut into batches at transaction
 * boundaries, spooled to batch files (CSV, or Postgres's binary COPY format for a Postgres target: see
 * `format`; held in memory within `spoolMemoryBytes`, else on disk), uploaded to S3, and loaded into the
 * target table by table.
 *
 * Exactly-once effect: each table's load commits with the table's applied LSN in the target; the slot is
 * acknowledged only after every table of the batch has committed. After a crash the stream resumes at
 * the slot's confirmed position, and transactions whose commit LSN the target already holds for a table
 * are skipped for that table (and a replayed load is refused by the LSN check inside its transaction).
 *
 * Failures never drop data: a failed upload or load is retried with backoff (the stream waits, the slot
 * keeps the WAL); a broken stream ends the session, its unloaded batch is thrown away, and a new session
 * replays from the slot.
 */
import type { S3Client } from "@aws-sdk/client-s3";
import { join } from "node:path";
import { LogicalReplicationService } from "pg-logical-replication";
import { connectPostgres, type Sql } from "../../shared/db.ts";
import type { Logger } from "../../shared/log.ts";
import type { Registry } from "../../shared/metrics.ts";
import { abortableSleep, backoffMs } from "../../shared/worker.ts";
import { takeOverCopyData } from "./copy_frames.ts";
import { formatLsn, parseLsn } from "./lsn.ts";
import {
  decodeChange,
  type DecodedChange,
  keyChanged,
  type MessageRelation,
  type MessageTruncate,
  OP_DELETE,
  OP_INSERT,
  type RawChange,
  type StreamMessage,
  TextFallback,
  textPgoutputPlugin,
  Tuple,
} from "./pgoutput.ts";
import { BatchUploads } from "./s3.ts";
import {
  binaryTypeOids,
  type Column,
  describeTable,
  publishedTables,
  tableId,
  type TableInfo,
  waitVisible,
} from "./schema.ts";
import { openSnapshot, progressBar, runSnapshot, type SnapshotOptions } from "./snapshot.ts";
import { BatchSpool, type FileFormat, type MemoryBudget, SPOOL_MEMORY_BYTES, TableSpool } from "./spool.ts";
import type { Segment, Target } from "./targets/target.ts";

/** One batch's part for one table, waiting on the table's lane. */
interface LaneItem {
  b: BatchSpool;
  spool: TableSpool;
  /** With their local files or their bytes in memory. */
  segments: Segment[];
  eager: Promise<unknown>;
  settle(error?: unknown): void;
}

/** Queued stream bytes past which the socket is paused (see the message queue in `runSession`). */
const QUEUE_PAUSE_BYTES = 4 * 1024 * 1024;
/**
 * Silence (ms) after a commit, with every message handled, that makes the stream count as caught up, so
 * the batch is cut at once. The stream comes in reads at least READ_COALESCE_MS apart.
 */
const QUIET_CUT_MS = 5;
/**
 * Caught-up cuts (above, and the tick's) come at most this often: under a steady trickle of transactions a
 * few milliseconds apart, each would otherwise be a batch of its own (an S3 PUT and a load per table). A cut
 * for size or time does not count: the end of a busy stream is cut 5 ms after it.
 */
const QUIET_CUT_MIN_GAP_MS = 50;
/** The batch timer's tick (batchMs, and the quiet cut's fallback). */
const BATCH_TICK_MS = 20;
/**
 * After a read of the stream shorter than READ_COALESCE_BELOW bytes, the socket rests READ_COALESCE_MS so
 * that the server's messages gather in the kernel and come in one read. Read as they arrive, the stream came
 * in reads of about 5 KiB (40 messages), each a wakeup, an op and a chunk for the parser: 35,000 reads in the
 * bench, about a fifth of the worker's CPU. Resting 1 ms, about 3,500 reads of 40 KiB. A longer read means
 * the worker is behind, and it reads on at once.
 */
const READ_COALESCE_MS = 1;
const READ_COALESCE_BELOW = 32 * 1024;

/** A pipeline's settings. */
export interface PipelineOptions {
  name: string;
  sourceUrl: string;
  slot: string;
  publication: string;
  target: Target;
  s3: S3Client;
  bucket: string;
  /** Where batch files are written before upload (those that do not fit `spoolMemoryBytes`). */
  spoolDir: string;
  /**
   * Bytes of batch files the pipeline keeps in memory instead of on disk, all batches together (default
   * 64 MiB; 0: every file on disk).
   */
  spoolMemoryBytes?: number;
  /** A batch is cut at the first commit after this many rows… */
  batchRows: number;
  /** …or this long after its first transaction. */
  batchMs: number;
  /**
   * The batch files' format. `csv` (the default) for any target. `binary`: Postgres's binary COPY format,
   * for a Postgres target: the source sends values with their types' send functions and the target reads
   * them with the receive functions, which costs both less than text. A session whose tables have a
   * column of a type without a binary form (user-defined, or without binary send and receive functions)
   * writes CSV; the snapshot's files are always CSV.
   */
  format?: FileFormat;
  /** Retained WAL above this logs a warning and shows on the console. */
  walWarnBytes: number;
  /** Where the control tables are (the wharf database); no control rows when absent. */
  control?: Sql;
  log: Logger;
  metrics?: Registry;
  /** Draw a progress bar on the terminal during the snapshot. */
  progress?: boolean;
  /** Seconds between status refreshes (lag, retained WAL, pause flag). Default 2. */
  statusIntervalMs?: number;
  instanceId?: string;
}

/** What the pipeline exposes to its process (`reportTo`) and to tests. */
export interface PipelineStatus {
  state: string;
  batches: number;
  rowsApplied: number;
  ackedLsn?: string;
  lagBytes?: number;
  lagSeconds?: number;
  retainedWalBytes?: number;
  lastError?: string;
  /** Batch files that went to disk because they did not fit the memory budget (`spoolMemoryBytes`). */
  spilledFiles?: number;
}

/** Runs one serialised async job at a time (stream messages and timer flushes). */
class Lock {
  #tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#tail.then(fn, fn);
    this.#tail = next.catch(() => {});
    return next;
  }
}

function pipelineMetrics(r: Registry | undefined) {
  if (!r) return undefined;
  return {
    lagBytes: r.gauge("wharf_replicate_lag_bytes", "Source WAL position minus the slot's confirmed flush"),
    lagSeconds: r.gauge("wharf_replicate_lag_seconds", "Age of the oldest change not yet in the target"),
    retained: r.gauge("wharf_replicate_retained_wal_bytes", "WAL the slot makes the source keep"),
    rows: r.counter("wharf_replicate_rows_total", "Change rows loaded, by table"),
    batches: r.counter("wharf_replicate_batches_total", "Batches loaded, by table"),
    batchRows: r.histogram("wharf_replicate_batch_rows", "Rows per table batch", [
      1,
      10,
      100,
      1_000,
      10_000,
      100_000,
      1_000_000,
    ]),
    batchSeconds: r.histogram("wharf_replicate_batch_duration_seconds", "Upload + load time per table batch"),
    paused: r.gauge("wharf_replicate_paused", "1 while the pipeline is paused"),
    spoolMemory: r.gauge("wharf_replicate_spool_memory_bytes", "Bytes of batch files held in memory"),
    spilled: r.gauge(
      "wharf_replicate_spilled_files",
      "Batch files that went to disk because they did not fit in memory, since the worker started",
    ),
  };
}

/** Runs the pipeline until `signal` aborts. Never throws for a failure it can retry. */
export async function runPipeline(
  o: PipelineOptions,
  signal: AbortSignal,
  status: PipelineStatus,
): Promise<void> {
  const m = pipelineMetrics(o.metrics);
  const log = o.log.child({ pipeline: o.name });
  const control = o.control;
  const setState = async (state: string, error?: string) => {
    status.state = state;
    if (error !== undefined) status.lastError = error;
    if (control) {
      await control`update control.replicate_pipelines set state = ${state},
        last_error = ${error ?? null}, updated_at = now() where name = ${o.name}`.catch(() => {});
    }
  };
  if (control) {
    await control`
      insert into control.replicate_pipelines (name, slot_name, publication, target_kind, bucket, wal_warn_bytes,
                                               instance_id)
      values (${o.name}, ${o.slot}, ${o.publication}, ${o.target.kind}, ${o.bucket}, ${o.walWarnBytes},
              ${o.instanceId ?? null})
      on conflict (name) do update set slot_name = excluded.slot_name, publication = excluded.publication,
        target_kind = excluded.target_kind, bucket = excluded.bucket, wal_warn_bytes = excluded.wal_warn_bytes,
        instance_id = excluded.instance_id, updated_at = now()`;
  }
  let attempt = 0;
  const spoolMemory = o.spoolMemoryBytes ?? SPOOL_MEMORY_BYTES;
  const memory: SessionMemory = { size: spoolMemory, left: spoolMemory };
  const session = {
    /** Set when a binary session met a type it cannot carry: later sessions of this run are text. */
    textOnly: false,
    /** What batch files may hold in memory, all of the run's batches together, of `size` in all. */
    memory,
  };
  while (!signal.aborted) {
    if (control) {
      const [p] = await control<{ paused: boolean }[]>`
        select paused from control.replicate_pipelines where name = ${o.name}`.catch(() => []);
      m?.paused.set(p?.paused ? 1 : 0);
      if (p?.paused) {
        if (status.state !== "paused") await setState("paused");
        await abortableSleep(500, signal);
        continue;
      }
    }
    try {
      await runSession(o, signal, status, log, m, setState, session);
      attempt = 0;
    } catch (e) {
      if (signal.aborted) break;
      if (e instanceof TextFallback && !session.textOnly) {
        // Not a failure: the next session reads the same changes again, in text.
        log.info("batch files in CSV from now on", { reason: e.message });
        session.textOnly = true;
        continue;
      }
      const message = (e as Error).message ?? String(e);
      log.warn("session ended with an error; retrying", { error: e, attempt });
      await setState("retrying", message);
      await abortableSleep(backoffMs(attempt++, 250, 5_000), signal);
    }
  }
  await setState("stopped");
}

type Metrics = ReturnType<typeof pipelineMetrics>;

/** The run's memory budget for batch files, with its whole size (for the metric of what is held). */
type SessionMemory = MemoryBudget & { readonly size: number };

async function runSession(
  o: PipelineOptions,
  signal: AbortSignal,
  status: PipelineStatus,
  log: Logger,
  m: Metrics,
  setState: (s: string, e?: string) => Promise<void>,
  session: { textOnly: boolean; memory: SessionMemory },
): Promise<void> {
  const source = connectPostgres(o.sourceUrl, {
    max: 3,
    applicationName: "wharf-replicate",
    connectTimeout: 5,
  });
  const control = o.control;
  const sessionAbort = new AbortController();
  const onAbort = () => sessionAbort.abort();
  signal.addEventListener("abort", onAbort, { once: true });
  if (signal.aborted) sessionAbort.abort();
  let service: LogicalReplicationService | undefined;
  const timers: ReturnType<typeof setInterval>[] = [];
  let inflight: Promise<void> = Promise.resolve();
  let batch: BatchSpool | undefined;
  /** Copies of tables that joined the publication while streaming, awaited when the session ends. */
  const copies = new Set<Promise<unknown>>();
  const uploads = new BatchUploads(o.s3);
  try {
    await o.target.prepare();
    const names = await publishedTables(source, o.publication);
    if (!names.length) throw new Error(`Cannot replicate: publication ${o.publication} has no tables`);
    const tables = new Map<string, TableInfo>();
    for (const n of names) tables.set(tableId(n), await describeTable(source, n.schema, n.name));
    let applied = await o.target.applied(o.name);
    const [slot] = await source`select confirmed_flush_lsn::text as lsn from pg_replication_slots
                                 where slot_name = ${o.slot}`;
    if (control) {
      for (const id of tables.keys()) {
        await control`insert into control.replicate_tables (pipeline, table_name) values (${o.name}, ${id})
                      on conflict do nothing`;
      }
    }
    const isTty = o.progress && Deno.stderr.isTerminal();
    const enc = new TextEncoder();
    const snapshotOptions = (slotName: string, temporary: boolean): Omit<SnapshotOptions, "tables"> => ({
      pipeline: o.name,
      sourceUrl: o.sourceUrl,
      source,
      slot: slotName,
      temporary,
      target: o.target,
      uploads,
      bucket: o.bucket,
      spoolDir: join(o.spoolDir, "snapshot"),
      log,
      signal: sessionAbort.signal,
      onProgress: async (id, rows, total, done) => {
        if (isTty) {
          Deno.stderr.writeSync(enc.encode("\r" + progressBar(id, rows, total) + (done ? "\n" : "")));
        }
        if (control) {
          await control`update control.replicate_tables set snapshot_rows = ${rows}, snapshot_total = ${total},
                            snapshot_state = ${done ? "done" : "copying"}
                          where pipeline = ${o.name} and table_name = ${id}`.catch(() => {});
        }
      },
    });
    const snapshot = (list: TableInfo[], slotName: string, temporary: boolean) =>
      runSnapshot({ ...snapshotOptions(slotName, temporary), tables: list });
    const syncSlotName = () => `wharf_sync_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
    const addControlRows = async (list: TableInfo[]) => {
      if (!control) return;
      for (const t of list) {
        await control`insert into control.replicate_tables (pipeline, table_name)
                      values (${o.name}, ${tableId(t)}) on conflict do nothing`;
      }
    };
    /**
     * Copies tables the target has never received while the slot exists (they joined the publication
     * since): alone, in a temporary slot's snapshot; the stream then skips their transactions up to it.
     */
    const snapshotJoined = async (list: TableInfo[]) => {
      log.info("copying tables that joined the publication", { tables: list.map(tableId) });
      await addControlRows(list);
      const point = await snapshot(list, syncSlotName(), true);
      for (const t of list) applied.set(tableId(t), point - 1n);
    };
    if (!slot) {
      // No slot: start over from a fresh snapshot of everything.
      await o.target.reset(o.name);
      await setState("snapshot");
      await snapshot([...tables.values()], o.slot, false);
      applied = await o.target.applied(o.name);
    } else {
      const missing = [...tables.values()].filter((t) => !applied.has(tableId(t)));
      if (missing.length) {
        await setState("snapshot");
        await snapshotJoined(missing);
      }
    }
    for (const t of tables.values()) await o.target.ensureTable(t);
    // Binary batch files when asked for and every published column's type has a binary form here (and
    // the source's pgoutput has the option: PostgreSQL 14 and later).
    const wantBinary = o.format === "binary" && o.target.kind === "postgres" && !session.textOnly;
    const [{ version }] = wantBinary
      ? await source<{ version: number }[]>`select current_setting('server_version_num')::int as version`
      : [{ version: 0 }];
    if (wantBinary && version < 140000) {
      log.info(
        "batch files in CSV: the source is older than PostgreSQL 14, whose pgoutput has no binary option",
      );
    }
    const binaryOids = wantBinary && version >= 140000 ? await binaryTypeOids(source) : undefined;
    const noBinary = binaryOids
      ? [...tables.values()].flatMap((t) =>
        t.columns.filter((c) => c.oid === undefined || !binaryOids.has(c.oid)).map((c) =>
          `${tableId(t)}.${c.name}`
        )
      )
      : [];
    const binary = binaryOids !== undefined && noBinary.length === 0;
    if (noBinary.length) {
      log.info("batch files in CSV: a published column's type has no binary form", { columns: noBinary });
    }
    /** Per relation oid, the wire types of its columns (binary sessions): a new array when they change. */
    const wireTypes = new Map<number, number[]>();
    // A stop asked for while the session was being set up ends it here, before the stream starts.
    sessionAbort.signal.throwIfAborted();

    // ---- streaming ----
    await setState("streaming", undefined);
    status.lastError = undefined;
    let acked = slot ? parseLsn(slot.lsn) : 0n;
    const ack = (lsn: bigint) => {
      if (lsn > acked) acked = lsn;
      status.ackedLsn = formatLsn(acked);
      // The library reports `lsn + 1` as flushed; hand it `lsn - 1` so the server gets exactly `lsn`.
      if (acked > 0n) void service?.acknowledge(formatLsn(acked - 1n)).catch(() => {});
    };
    const lock = new Lock();
    let batchNo = 0;
    /** When the last batch was cut because the stream had caught up (`performance.now()`). */
    let lastQuietCutAt = -Infinity;
    let tx: { commitLsn: bigint; commitMs: number; xid: number } | undefined;
    // The batch's folder is made when a file of it does not fit in memory.
    const newBatch = () => {
      const dir = join(o.spoolDir, `batch-${Date.now()}-${++batchNo}`);
      return new BatchSpool(dir, batch?.seq ?? 0, {
        format: binary ? "binary" : "csv",
        memory: session.memory,
      });
    };
    batch = newBatch();
    let failure: ((e: unknown) => void) | undefined;
    let finish: (() => void) | undefined;
    /**
     * Set by the session's first failure: from then on no message is handled and no batch is cut, since a
     * message skipped by the failure followed by a later commit loaded would move the stored LSN past it.
     * The next session starts from what was loaded.
     */
    let failed = false;
    const ended = new Promise<void>((resolve, reject) => {
      failure = (e) => {
        failed = true;
        reject(e);
      };
      finish = resolve;
    });
    sessionAbort.signal.addEventListener("abort", () => finish?.(), { once: true });
    // An abort during the awaits since the check above fired before this listener existed.
    if (sessionAbort.signal.aborted) finish?.();
    let flushError: unknown;
    /** Batches handed to the loader and not finished yet. */
    let loading = 0;
    /** Pending source commit times (ms) of batches spooled or in flight, for lag in seconds. */
    const pendingSince: number[] = [];

    /**
     * Tables load in lanes, one per table, as re_dms did: a table's batches load in order, but a slow
     * table does not hold the others back, and a batch's files upload while the lane is still loading
     * the previous batch. The slot is acknowledged in batch order, once every lane has committed the
     * batch. At most {@linkcode MAX_BATCHES_IN_FLIGHT} batches are spooled or loading at once, so memory
     * and disk stay bounded; the cap is not low, because reaching it stops reading the stream (and so
     * the server's sending) until a batch is done.
     */
    const laneQueues = new Map<string, LaneItem[]>();
    const busyLanes = new Set<string>();
    /** Per table, the copy its loads must follow (a table that joined the publication while streaming). */
    const laneGates = new Map<string, Promise<void>>();

    /**
     * Queues a table's part of a batch on its lane. When the lane is free it takes everything queued and
     * loads it as one: under a backlog, several batches of a table cost one merge. A truncate in a later
     * batch makes the earlier ones' rows moot.
     */
    const enqueue = (id: string, item: Omit<LaneItem, "settle">): Promise<void> =>
      new Promise<void>((resolve, reject) => {
        const q = laneQueues.get(id) ?? [];
        laneQueues.set(id, q);
        q.push({ ...item, settle: (e) => (e === undefined ? resolve() : reject(e)) });
        if (!busyLanes.has(id)) void runLane(id);
      });
    const runLane = async (id: string) => {
      busyLanes.add(id);
      try {
        for (;;) {
          const gate = laneGates.get(id);
          if (gate) {
            const failed = await gate.then(() => undefined, (e) => e ?? new Error(`Cannot copy ${id}`));
            if (failed !== undefined) {
              for (const it of laneQueues.get(id)?.splice(0) ?? []) it.settle(failed);
              break;
            }
          }
          const items = laneQueues.get(id)?.splice(0) ?? [];
          if (!items.length) break;
          let from = 0;
          items.forEach((it, i) => {
            if (it.spool.truncate) from = i;
          });
          const used = items.slice(from);
          const last = items[items.length - 1];
          try {
            await loadTable(
              id,
              {
                table: last.spool.table,
                truncate: used[0].spool.truncate,
                distinctKeys: TableSpool.distinctAcross(used.map((it) => it.spool)),
                insertsOnly: used.every((it) => it.spool.insertsOnly),
                lsn: last.b.lastCommitLsn,
              },
              used.flatMap((it) => it.segments),
              Promise.all(used.map((it) => it.eager)),
            );
            for (const it of items) it.settle();
          } catch (e) {
            for (const it of items) it.settle(e);
            for (const it of laneQueues.get(id)?.splice(0) ?? []) it.settle(e);
            break;
          }
        }
      } finally {
        busyLanes.delete(id);
      }
    };
    const inFlight = new Set<Promise<void>>();
    const MAX_BATCHES_IN_FLIGHT = 6;

    const loadTable = async (
      id: string,
      job: { table: TableInfo; truncate: boolean; distinctKeys: boolean; insertsOnly: boolean; lsn: bigint },
      segments: Segment[],
      eager: Promise<unknown>,
    ) => {
      const t0 = performance.now();
      const upload = () => Promise.all(segments.map((s) => uploads.segment(o.bucket, s.key, s)));
      let uploaded: Promise<unknown> = eager;
      // Awaited later (by the load, before its commit): mark it handled so that an upload failing first
      // is not an unhandled rejection.
      uploaded.catch(() => {});
      let attempt = 0;
      for (;;) {
        try {
          // The Postgres target reads the local files while the upload runs; it commits only once the
          // files are on S3. Other targets read from S3, so they wait for the upload first.
          if (o.target.kind !== "postgres") await uploaded;
          // The table as it is now (every file of the batch was written before): the target is brought in
          // line with this description and the load uses the same one, while the stream may describe the
          // table anew meanwhile. The mark is taken before the target's change, so a change the stream
          // marks while it runs is not lost: the next load brings the target in line with that one.
          const table = tables.get(id) ?? job.table;
          if (dirty.delete(id)) {
            try {
              await o.target.ensureTable(table);
            } catch (e) {
              dirty.add(id);
              throw e;
            }
          }
          await o.target.load({
            pipeline: o.name,
            bucket: o.bucket,
            // Files written before a column change load by column number (see `Segment.columns`).
            table,
            kind: "changes",
            truncate: job.truncate,
            segments,
            distinctKeys: job.distinctKeys,
            insertsOnly: job.insertsOnly,
            stored: uploaded,
            lsn: job.lsn,
          });
          break;
        } catch (e) {
          if (sessionAbort.signal.aborted) throw e;
          log.warn("batch load failed; retrying", { table: id, error: e, attempt });
          await setState("retrying", (e as Error).message);
          await abortableSleep(backoffMs(attempt++, 250, 5_000), sessionAbort.signal);
          uploaded = uploaded.then(() => undefined, () => upload());
          uploaded.catch(() => {});
        }
      }
      if (status.state === "retrying") await setState("streaming");
      const rows = segments.reduce((a, s) => a + s.rows, 0);
      const bytes = segments.reduce((a, s) => a + s.bytes, 0);
      const ms = performance.now() - t0;
      status.rowsApplied += rows;
      m?.rows.inc({ pipeline: o.name, table: id }, rows);
      m?.batches.inc({ pipeline: o.name, table: id });
      m?.batchRows.observe(rows, { pipeline: o.name });
      m?.batchSeconds.observe(ms / 1000, { pipeline: o.name });
      if (control) {
        await control`insert into control.replicate_batches (pipeline, table_name, rows, bytes, duration_ms, lsn, s3_key)
                      values (${o.name}, ${id}, ${rows}, ${bytes}, ${ms}, ${formatLsn(job.lsn)},
                              ${segments[0]?.key ?? ""})`.catch(() => {});
        await control`update control.replicate_tables set rows_applied = rows_applied + ${rows},
                        batches = batches + 1, last_lsn = ${formatLsn(job.lsn)}, last_batch_at = now()
                      where pipeline = ${o.name} and table_name = ${id}`.catch(() => {});
      }
    };

    /** The spool's figures: files that went to disk, bytes held in memory. */
    const spoolStats = () => {
      status.spilledFiles = session.memory.spilled ?? 0;
      m?.spilled.set(status.spilledFiles, { pipeline: o.name });
      m?.spoolMemory.set(session.memory.size - session.memory.left, { pipeline: o.name });
    };

    /** Closes the current batch, starts its uploads and queues its loads. */
    const cut = async () => {
      const b = batch!;
      batch = newBatch();
      if (b.firstCommitMs !== undefined) pendingSince.push(b.firstCommitMs);
      loading++;
      const tableLoads: Promise<unknown>[] = [];
      for (const [id, spool] of b.tables) {
        const segments = await spool.close();
        if (!segments.length && !spool.truncate) continue;
        for (const [i, s] of segments.entries()) {
          const ext = s.format === "binary" ? "pgcopy" : "csv";
          s.key = `${o.name}/${id}/${formatLsn(b.endLsn).replace("/", "-")}-${i + 1}.${ext}`;
        }
        const eager = Promise.all(segments.map((s) => uploads.segment(o.bucket, s.key, s)));
        eager.catch(() => {});
        tableLoads.push(enqueue(id, { b, spool, segments, eager }));
      }
      spoolStats();
      const previous = inflight;
      const self: { p?: Promise<void> } = {};
      const done: Promise<void> = (async () => {
        try {
          await Promise.all(tableLoads);
          await previous;
          status.batches++;
          if (b.endLsn) ack(b.endLsn);
          if (b.firstCommitMs !== undefined) pendingSince.shift();
        } finally {
          loading--;
          await Promise.allSettled(tableLoads);
          await b.discard();
          if (self.p) inFlight.delete(self.p);
          spoolStats();
        }
      })();
      self.p = done;
      inflight = done;
      inFlight.add(done);
      done.catch((e) => {
        flushError = e;
        failure?.(e);
      });
      while (inFlight.size >= MAX_BATCHES_IN_FLIGHT) await Promise.race(inFlight).catch(() => {});
    };

    /** Per table, the replica identity and columns (name, type, modifier, key flag) last seen in the stream. */
    const relationSigs = new Map<string, string>();
    /**
     * The table as a relation message describes it. Types and column numbers come from the catalog (the
     * stream carries type oids only), looked up when the message's columns differ from the last ones seen:
     * a column added, dropped, renamed, given another type, or the key changed. A name the catalog no
     * longer has (the stream is behind a later rename or drop: changes made before it, or a restart that
     * replays them) is the column of that name as last known, else the one at its place as last known
     * when the message lacks that one's name.
     */
    const relationTable = async (rel: MessageRelation): Promise<TableInfo | undefined> => {
      const id = `${rel.schema}.${rel.name}`;
      const known = tables.get(id);
      /** The catalog is read once the transaction being decoded is visible (see `waitVisible`). */
      const visible = async () => {
        if (tx && !(await waitVisible(source, tx.xid))) {
          log.warn("reading the catalog before the transaction being decoded is visible", { table: id });
        }
      };
      if (!known) {
        await visible();
        const published = await publishedTables(source, o.publication);
        if (!published.some((t) => tableId(t) === id)) return undefined;
        // Joined the publication since the session started. A temporary slot fixes the point the copy
        // holds (the stream waits only for that); the stream skips the table's transactions up to it, and
        // the copy runs beside the stream, its loads first in the table's lane. Acknowledging the other
        // tables' batches meanwhile loses nothing: a session that ends before the copy is loaded finds the
        // table without an applied LSN and copies it again.
        const info = await describeTable(source, rel.schema, rel.name);
        log.info("copying a table that joined the publication", { table: id });
        await addControlRows([info]);
        const snap = await openSnapshot(snapshotOptions(syncSlotName(), true));
        applied.set(id, snap.point - 1n);
        tables.set(id, info);
        const copy = (async () => {
          try {
            await snap.copy([info]); // makes the table in the target first
          } finally {
            await snap.close();
          }
        })();
        laneGates.set(id, copy);
        const watched = copy.then(() => void laneGates.delete(id), (e) => failure?.(e));
        copies.add(watched);
        void watched.finally(() => copies.delete(watched));
        return info;
      }
      const names = rel.columns.map((c) => c.name);
      const sig = rel.replicaIdentity + "\u0002" +
        rel.columns.map((c) => `${c.name}\u0000${c.typeOid}\u0000${c.typeMod}\u0000${c.flags}`).join(
          "\u0001",
        );
      const seen = relationSigs.get(id);
      relationSigs.set(id, sig);
      const sameNames = names.length === known.columns.length &&
        names.every((n, i) => n === known.columns[i].name);
      // The first message of a session with the known names: the description just read is current.
      if (seen === sig || (seen === undefined && sameNames)) return known;
      await visible();
      const fresh = await describeTable(source, rel.schema, rel.name);
      const columns = names.map((n, i): Column => {
        const c = fresh.columns.find((f) => f.name === n);
        if (c) return c;
        // Not in the catalog any more: the column of that name as last known (dropped or renamed later in
        // the same transaction), else the one at its place whose name the message lacks (renamed since).
        let was = known.columns.find((k) => k.name === n);
        const at = known.columns[i];
        if (!was && at && !names.includes(at.name)) was = at;
        if (!was) return { name: n, type: "text", num: -(i + 1) }; // unknown: kept as text
        const now = was.num === undefined ? undefined : fresh.columns.find((f) => f.num === was.num);
        return { name: n, type: now?.type ?? was.type, num: was.num };
      });
      const have = new Set(names);
      const byNum = (k: string) => {
        const num = known.columns.find((c) => c.name === k)?.num;
        return num === undefined ? k : columns.find((c) => c.num === num)?.name ?? k;
      };
      const info: TableInfo = fresh.keyIsAllColumns
        ? { ...known, columns, key: names, keyIsAllColumns: true }
        : fresh.key.every((k) => have.has(k))
        ? { ...known, columns, key: fresh.key, keyIsAllColumns: false }
        : { ...known, columns, key: known.key.map(byNum) };
      if (
        info.columns.length === known.columns.length &&
        info.columns.every((c, i) => c.name === known.columns[i].name && c.type === known.columns[i].type) &&
        info.key.join("\u0000") === known.key.join("\u0000")
      ) return known;
      tables.set(id, info);
      log.info("table columns changed", {
        table: id,
        columns: info.columns.map((c) => `${c.name} ${c.type}`),
      });
      return info;
    };

    /** Table ids by the stream's relation oids. */
    const relationIds = new Map<number, string>();
    /** Merge key column indexes per table description. */
    const keyIndexes = new WeakMap<TableInfo, number[]>();
    /** The change being written (reused: a row allocates nothing). */
    const change: DecodedChange = { oldKind: 0, old: new Tuple(), new: new Tuple() };
    /** Tables whose columns changed: the target adds the new columns before their next load. */
    const dirty = new Set<string>();
    const skip = (id: string) => tx !== undefined && (applied.get(id) ?? -1n) >= tx.commitLsn;

    /** The key's column numbers in `info`'s columns. */
    const keyIndexesOf = (info: TableInfo): number[] => {
      let keyIdx = keyIndexes.get(info);
      if (!keyIdx) {
        keyIdx = info.key.map((k) => info.columns.findIndex((c) => c.name === k));
        keyIndexes.set(info, keyIdx);
      }
      return keyIdx;
    };
    /** The new row of an update that moved its row to another key, once its delete is written. */
    const writeMoved = async (w: Promise<void>, spool: TableSpool, b: BatchSpool, msg: RawChange) => {
      await w;
      await spool.writeTuple(++b.seq, "U", msg.buf, change.new, msg.len);
    };
    /**
     * A row change. Nothing in here makes a closure: this runs for every row, and a closure would cost each
     * call a context for the variables it captures.
     */
    const handleRow = (msg: RawChange, b: BatchSpool): Promise<void> | undefined => {
      const id = relationIds.get(msg.relationOid);
      const info = id === undefined ? undefined : tables.get(id);
      if (!info || skip(id!)) return;
      const spool = b.spool(id!, info);
      if (spool.table !== info) spool.table = info;
      if (binary) {
        const wire = wireTypes.get(msg.relationOid);
        if (!wire) throw new Error(`Cannot write a change of ${id}: no relation message came before it`);
        spool.wire = wire;
      }
      b.rows++;
      decodeChange(msg, change);
      if (msg.op === OP_INSERT) return spool.writeTuple(++b.seq, "I", msg.buf, change.new, msg.len);
      if (msg.op === OP_DELETE) return spool.writeTuple(++b.seq, "D", msg.buf, change.old, msg.len);
      // An update that moved its row to another key: a delete of the old key, then the new row.
      if (keyChanged(msg, change, keyIndexesOf(info))) {
        const w = spool.writeTuple(++b.seq, "D", msg.buf, change.old, msg.len);
        if (w) return writeMoved(w, spool, b, msg);
      }
      return spool.writeTuple(++b.seq, "U", msg.buf, change.new, msg.len);
    };
    const truncateTables = async (msg: MessageTruncate, b: BatchSpool) => {
      for (const rel of msg.relations) {
        const id = `${rel.schema}.${rel.name}`;
        const info = tables.get(id);
        if (!info || skip(id)) continue;
        await b.spool(id, info).truncateAll();
      }
    };

    /** Handles one message; returns a promise only when it has to wait (a file write, a batch cut). */
    const handle = (msg: StreamMessage): Promise<void> | undefined => {
      if (flushError) throw flushError;
      const b = batch!;
      switch (msg.tag) {
        case "begin":
          tx = {
            commitLsn: parseLsn(msg.commitLsn!),
            commitMs: Number((msg.commitTime as unknown as bigint) / 1000n),
            xid: msg.xid,
          };
          return;
        case "relation": {
          relationIds.set(msg.relationOid, `${msg.schema}.${msg.name}`);
          if (binary) {
            const bad = msg.columns.find((c) => !binaryOids!.has(c.typeOid));
            if (bad) {
              throw new TextFallback(
                `column ${bad.name} of ${msg.schema}.${msg.name} has a type without a binary form here`,
              );
            }
            const oids = msg.columns.map((c) => c.typeOid);
            const was = wireTypes.get(msg.relationOid);
            if (!was || was.length !== oids.length || was.some((x, i) => x !== oids[i])) {
              wireTypes.set(msg.relationOid, oids);
            }
          }
          const known = tables.get(`${msg.schema}.${msg.name}`);
          return relationTable(msg).then((info) => {
            if (info && info !== known) dirty.add(tableId(info));
          });
        }
        case "raw":
          return handleRow(msg, b);
        case "truncate":
          return truncateTables(msg, b);
        case "commit": {
          if (!tx) return;
          b.transactions++;
          b.lastCommitLsn = tx.commitLsn;
          b.endLsn = parseLsn(msg.commitEndLsn!);
          b.firstCommitMs ??= tx.commitMs;
          tx = undefined;
          if (b.rows >= o.batchRows) return cut();
          return;
        }
        default:
          return;
      }
    };

    service = new LogicalReplicationService(
      { connectionString: o.sourceUrl, connectionTimeoutMillis: 5_000 },
      { acknowledge: { auto: false, timeoutSeconds: 0 }, flowControl: { enabled: false } },
    );
    // Messages are queued as they arrive and handled in runs under the lock (one await per run, not per
    // message). Backpressure: past QUEUE_PAUSE_BYTES queued the socket is paused until the queue is down
    // to a quarter, so a slow disk or loader never lets memory grow. The threshold is large enough that a
    // short stall (a batch being cut, a file write) does not stop the server from sending.
    let queue: StreamMessage[] = [];
    /** Bytes in `queue`, and in the part of the run being handled that is not handled yet. */
    let queueBytes = 0;
    let runBytesLeft = 0;
    let draining = false;
    let socketPaused = false;
    /** Messages received, and as of the previous timer tick (the same number: the stream was silent). */
    let received = 0;
    let receivedAtTick = 0;
    const socket = () =>
      (service as unknown as { _connection?: { stream?: { pause(): void; resume(): void } } })._connection
        ?.stream;
    const drain = async () => {
      draining = true;
      try {
        while (queue.length) {
          const run = queue;
          runBytesLeft = queueBytes;
          const perMessage = queueBytes / run.length;
          queue = [];
          queueBytes = 0;
          await lock.run(async () => {
            for (let i = 0; i < run.length; i++) {
              if (failed) return;
              const r = handle(run[i]);
              if (r) await r;
              runBytesLeft -= perMessage;
              if (socketPaused && runBytesLeft + queueBytes < QUEUE_PAUSE_BYTES / 4) {
                socketPaused = false;
                socket()?.resume();
              }
            }
          });
          runBytesLeft = 0;
        }
      } catch (e) {
        failure?.(e);
      } finally {
        draining = false;
        armQuietCut();
      }
    };
    /**
     * Between transactions with every message handled, a timer: if nothing arrives for QUIET_CUT_MS (and
     * until QUIET_CUT_MIN_GAP_MS after the last such cut), the stream has caught up and the batch is cut now
     * rather than at batchMs (unless half the batches allowed in flight are already there: then the loaders
     * are the bottleneck, and larger batches cost less).
     */
    let quietTimer: ReturnType<typeof setTimeout> | undefined;
    /** Between transactions, every message handled, and a commit in the batch: a batch could be cut. */
    const betweenTransactions = () => !tx && !draining && !queue.length && !!batch && batch.endLsn !== 0n;
    /**
     * Cuts the batch under the lock, unless a transaction began or `still` says otherwise meanwhile; a
     * `quiet` cut counts toward QUIET_CUT_MIN_GAP_MS.
     */
    const cutSoon = (quiet: boolean, still: () => boolean = () => true) =>
      void lock.run(async () => {
        if (tx || failed || sessionAbort.signal.aborted || batch!.endLsn === 0n || !still()) return;
        if (quiet) lastQuietCutAt = performance.now();
        await cut();
      }).catch((e) => failure?.(e));
    const armQuietCut = () => {
      if (quietTimer !== undefined || failed || !betweenTransactions()) return;
      const at = received;
      // Quiet for QUIET_CUT_MS, and until QUIET_CUT_MIN_GAP_MS after the last cut.
      const wait = Math.max(QUIET_CUT_MS, lastQuietCutAt + QUIET_CUT_MIN_GAP_MS - performance.now());
      quietTimer = setTimeout(() => {
        quietTimer = undefined;
        // Messages came meanwhile, and were all handled: quiet since then?
        if (received !== at) return draining ? undefined : armQuietCut();
        if (!betweenTransactions() || inFlight.size >= MAX_BATCHES_IN_FLIGHT / 2) return;
        cutSoon(true, () => received === at);
      }, wait);
    };
    sessionAbort.signal.addEventListener("abort", () => clearTimeout(quietTimer), { once: true });
    /** Queues a message; `size` is its length on the wire (a queued row costs that plus a few objects). */
    const onData = (msg: StreamMessage, size: number) => {
      if (failed) return;
      queue.push(msg);
      queueBytes += size + 200;
      received++;
      if (runBytesLeft + queueBytes >= QUEUE_PAUSE_BYTES && !socketPaused) {
        socketPaused = true;
        socket()?.pause();
      }
      if (!draining) void drain();
    };
    const onHeartbeat = (lsn: bigint, reply: boolean) => {
      // After a failure the messages since it were dropped: the server's position says nothing of them.
      if (failed) return;
      // Idle and caught up (nothing queued, spooled or loading, no transaction open): the server's WAL
      // position can be acknowledged, so that writes to unpublished tables do not show up as lag.
      const idle = !tx && !loading && batch?.rows === 0 && batch.endLsn === 0n && !queue.length &&
        !draining &&
        ![...batch.tables.values()].some((t) => t.truncate);
      if (idle) ack(lsn);
      else if (reply) ack(acked);
    };
    const plugin = textPgoutputPlugin([o.publication], { binary });
    service.on("data", (_lsn: string, msg: StreamMessage) => onData(msg, 200));
    service.on("heartbeat", (lsn: string, _ts: number, reply: boolean) => onHeartbeat(parseLsn(lsn), reply));
    service.on("error", (e: Error) => failure?.(e));
    // Once the stream has started, its messages are read here rather than by the library's handler,
    // which formats an LSN string and emits an event for every message: at a million rows that is
    // real CPU. The client's own listener goes too (a no-op for this query, but each extra listener
    // costs a copy of the listener list per message).
    service.once("start", () => {
      type Listener = (m: { chunk: Uint8Array }) => void;
      const conn = (service as unknown as {
        _connection?: { removeAllListeners(e: string): void; on(e: string, f: Listener): void };
      })._connection;
      if (!conn) return;
      const stream = socket() as
        | { on(e: "data", f: (b: Uint8Array) => void): void; pause(): void; resume(): void }
        | undefined;
      let resting: ReturnType<typeof setTimeout> | undefined;
      stream?.on("data", (b) => {
        if (resting !== undefined || b.length >= READ_COALESCE_BELOW || sessionAbort.signal.aborted) return;
        stream.pause();
        resting = setTimeout(() => {
          resting = undefined;
          // Unless the queue's backpressure paused it meanwhile (it resumes the socket itself).
          if (!socketPaused) stream.resume();
        }, READ_COALESCE_MS);
      });
      sessionAbort.signal.addEventListener("abort", () => clearTimeout(resting), { once: true });
      /** One CopyData frame, `buf[off, off + len)`. */
      const frame = (buf: Uint8Array, off: number, len: number) => {
        // Called from the socket's data event: a throw here would end the process rather than the session.
        try {
          const tag = buf[off];
          if (tag === 0x77 /* w: XLogData */) onData(plugin.parseStream(buf, off + 25, len - 25), len);
          else if (tag === 0x6b /* k: keepalive */) {
            const view = new DataView(buf.buffer, buf.byteOffset + off, len);
            onHeartbeat(view.getBigUint64(1), view.getUint8(17) !== 0);
          }
        } catch (e) {
          failure?.(e);
        }
      };
      conn.removeAllListeners("copyData");
      // Frames the connection's parser has already made into messages (the rest of the chunk it is reading
      // now, or all of them where the parser cannot be taken over).
      conn.on("copyData", ({ chunk }) => frame(chunk, 0, chunk.byteLength));
      takeOverCopyData(frame);
    });
    // Cut a batch on time when the stream is quiet between transactions; an empty batch still moves the
    // acknowledged position (transactions on unpublished tables advance it). A batch is also cut when the
    // stream has been silent for a whole tick after a commit and the quiet cut above did not (half the
    // batches allowed in flight were there then).
    timers.push(setInterval(() => {
      const silent = received === receivedAtTick;
      receivedAtTick = received;
      if (!betweenTransactions()) return;
      const now = performance.now();
      const timely = now - batch!.createdAt >= o.batchMs;
      const quiet = silent && inFlight.size < MAX_BATCHES_IN_FLIGHT / 2 &&
        now - lastQuietCutAt >= QUIET_CUT_MIN_GAP_MS;
      if (timely || quiet) cutSoon(!timely);
    }, BATCH_TICK_MS));
    timers.push(setInterval(() => ack(acked), 5_000));
    // Status: lag, retained WAL, pause flag.
    const refresh = async () => {
      const [s] = await source<{ lag: string | null; retained: string | null; lsn: string | null }[]>`
        select (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint::text as lag,
               (pg_current_wal_lsn() - restart_lsn)::bigint::text as retained,
               confirmed_flush_lsn::text as lsn
          from pg_replication_slots where slot_name = ${o.slot}`;
      const lagBytes = s?.lag ? Number(s.lag) : undefined;
      const retained = s?.retained ? Number(s.retained) : undefined;
      const oldest = pendingSince[0] ?? batch?.firstCommitMs;
      const lagSeconds = oldest !== undefined ? Math.max(0, (Date.now() - oldest) / 1000) : 0;
      status.lagBytes = lagBytes;
      status.lagSeconds = lagSeconds;
      status.retainedWalBytes = retained;
      if (lagBytes !== undefined) m?.lagBytes.set(lagBytes, { pipeline: o.name });
      m?.lagSeconds.set(lagSeconds, { pipeline: o.name });
      if (retained !== undefined) m?.retained.set(retained, { pipeline: o.name });
      if (retained !== undefined && retained > o.walWarnBytes) {
        log.warn("the slot retains more WAL than the warning threshold", {
          retained_bytes: retained,
          threshold_bytes: o.walWarnBytes,
        });
      }
      if (control) {
        const [p] = await control<{ paused: boolean }[]>`
          update control.replicate_pipelines set lag_bytes = ${lagBytes ?? null}, lag_seconds = ${lagSeconds},
                 retained_wal_bytes = ${retained ?? null}, confirmed_lsn = ${
          s?.lsn ?? null
        }, updated_at = now()
           where name = ${o.name} returning paused`;
        await control`insert into control.replicate_lag_history (pipeline, at, lag_bytes, lag_seconds, retained_wal_bytes)
                      values (${o.name}, clock_timestamp(), ${lagBytes ?? null}, ${lagSeconds}, ${
          retained ?? null
        })
                      on conflict do nothing`;
        if (Math.random() < 0.02) {
          await control`delete from control.replicate_lag_history where at < now() - interval '1 day'`;
          await control`delete from control.replicate_batches where loaded_at < now() - interval '1 day'`;
        }
        if (p?.paused) {
          log.info("paused by an operator");
          sessionAbort.abort();
        }
      }
    };
    timers.push(setInterval(() => {
      refresh().catch((e) => log.debug("status refresh failed", { error: e }));
    }, o.statusIntervalMs ?? 2_000));
    void refresh().catch(() => {});

    service.subscribe(plugin, o.slot).then(
      () => failure?.(new Error("The replication stream ended")),
      (e) => failure?.(e),
    );
    log.info("streaming", { slot: o.slot, from: formatLsn(acked) });
    await ended;
  } finally {
    signal.removeEventListener("abort", onAbort);
    sessionAbort.abort();
    for (const t of timers) clearInterval(t);
    // stop() removes the library's listeners from the pg client; a late error from the dying connection
    // (the server shutting down, say) must not become an uncaught exception.
    type Emitter = { on(e: string, f: () => void): void };
    const internals = service as unknown as { _client?: Emitter; _connection?: Emitter } | undefined;
    const emitters = [internals?._client, internals?._connection];
    for (const e of emitters) e?.on("error", () => {});
    await service?.stop().catch(() => {});
    for (const e of emitters) e?.on("error", () => {});
    await inflight.catch(() => {});
    await Promise.allSettled(copies);
    await batch?.discard();
    uploads.close();
    await source.end({ timeout: 2 }).catch(() => {});
  }
}
