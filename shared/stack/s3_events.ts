/**
 * The local S3 server's event log: every S3 event record the server makes (object created, object
 * removed) is numbered, appended to a JSON-lines file and kept in memory, and served on
 * `GET /_wharf/events?bucket=B&after=N&limit=L&wait_ms=W` (a long poll: it answers as soon as a record
 * of bucket B past N exists, or after W ms with none). Consumers (imgproc's bridge) move the records into
 * their own queue and remember N, so nothing is lost when either side restarts.
 *
 * The log has an `epoch` (a random id made with the file): a consumer that sees another epoch knows
 * the log was wiped and starts again from 0. Bucket names cannot start with `_`, so the path cannot
 * shadow a bucket.
 */
import { join } from "node:path";

/** One logged record: the bucket, its number, and the message body (`{"Records":[record]}`). */
export interface LoggedEvent {
  seq: number;
  bucket: string;
  body: string;
}

/** An S3 event notification (S3's record format; only the fields the log reads are typed). */
export interface S3EventNotification {
  Records: {
    eventName: string;
    s3: {
      bucket: { name: string; [field: string]: unknown };
      object: Record<string, unknown>;
      [field: string]: unknown;
    };
    [field: string]: unknown;
  }[];
}

/** The path the log is served on. */
export const EVENTS_PATH = "/_wharf/events";

/** At most this many records are kept in memory (the file keeps all). */
const MEMORY_LIMIT = 100_000;

/** The event log of one server. */
export class S3EventLog {
  readonly epoch: string;
  readonly #file: string;
  #handle?: Deno.FsFile;
  #events: LoggedEvent[] = [];
  #seq = 0;
  #lastStamp = 0;
  #counter = 0;
  #waiters = new Set<() => void>();
  #closed = false;

  private constructor(dir: string, epoch: string, events: LoggedEvent[]) {
    this.#file = join(dir, "events.jsonl");
    this.epoch = epoch;
    this.#events = events.slice(-MEMORY_LIMIT);
    this.#seq = events.at(-1)?.seq ?? 0;
  }

  /** Opens (or starts) the log kept in `dir`. */
  static async open(dir: string): Promise<S3EventLog> {
    await Deno.mkdir(dir, { recursive: true });
    const epochFile = join(dir, "events.epoch");
    let epoch: string;
    let events: LoggedEvent[] = [];
    try {
      epoch = (await Deno.readTextFile(epochFile)).trim();
      const text = await Deno.readTextFile(join(dir, "events.jsonl")).catch(() => "");
      events = text.split("\n").filter(Boolean).flatMap((l) => {
        try {
          return [JSON.parse(l) as LoggedEvent];
        } catch {
          return []; // a line cut short by a crash
        }
      });
    } catch {
      epoch = crypto.randomUUID();
      await Deno.writeTextFile(join(dir, "events.jsonl"), "");
      await Deno.writeTextFile(epochFile, epoch);
    }
    return new S3EventLog(dir, epoch, events);
  }

  /**
   * A sequencer that grows strictly per server: milliseconds alone would let two writes of one key in the
   * same millisecond tie; a counter breaks the tie, the way S3's own sequencers order events.
   */
  #sequencer(): string {
    const now = Date.now();
    if (now > this.#lastStamp) {
      this.#lastStamp = now;
      this.#counter = 0;
    } else this.#counter++;
    return this.#lastStamp.toString(16).toUpperCase().padStart(12, "0") +
      this.#counter.toString(16).toUpperCase().padStart(6, "0");
  }

  /** Logs every record of `event` (one entry per record, like S3 sends them). */
  append(event: S3EventNotification): void {
    const lines: string[] = [];
    for (const record of event.Records ?? []) {
      record.s3.object.sequencer = this.#sequencer();
      const e = {
        seq: ++this.#seq,
        bucket: record.s3.bucket.name,
        body: JSON.stringify({ Records: [record] }),
      };
      this.#events.push(e);
      lines.push(JSON.stringify(e));
    }
    if (this.#events.length > MEMORY_LIMIT) this.#events = this.#events.slice(-MEMORY_LIMIT);
    // Synchronous append: the record is in the file before the S3 response that caused it is sent. The
    // file stays open (opening it per record cost more than the write).
    this.#handle ??= Deno.openSync(this.#file, { append: true, create: true });
    const data = new TextEncoder().encode(lines.join("\n") + "\n");
    let off = 0;
    while (off < data.length) off += this.#handle.writeSync(data.subarray(off));
    for (const w of this.#waiters) w();
  }

  /** Records of `bucket` after `after`, at most `limit`. */
  read(bucket: string, after: number, limit: number): LoggedEvent[] {
    const out: LoggedEvent[] = [];
    // Binary search for the first entry past `after`.
    let lo = 0, hi = this.#events.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.#events[mid].seq <= after) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < this.#events.length && out.length < limit; i++) {
      if (this.#events[i].bucket === bucket) out.push(this.#events[i]);
    }
    return out;
  }

  /** {@linkcode read}, waiting up to `waitMs` for a record when there is none yet. */
  async poll(bucket: string, after: number, limit: number, waitMs: number): Promise<LoggedEvent[]> {
    const deadline = performance.now() + waitMs;
    for (;;) {
      const found = this.read(bucket, after, limit);
      const left = deadline - performance.now();
      if (found.length || left <= 0 || this.#closed) return found;
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.#waiters.delete(done);
          resolve();
        };
        const timer = setTimeout(done, left);
        this.#waiters.add(done);
      });
    }
  }

  /** Ends every long poll at once (at shutdown), so the server's close does not wait for them. */
  wakeAll(): void {
    this.#closed = true;
    for (const w of this.#waiters) w();
  }
}

/**
 * The handler of {@linkcode EVENTS_PATH}: a long poll over `log`. Unsigned on purpose, like the rest of
 * the local stand-in for S3 → SQS: it serves only on loopback and carries no object bytes.
 */
export function eventsHandler(log: S3EventLog): (req: Request) => Promise<Response> {
  return async function serveEvents(req: Request): Promise<Response> {
    const q = new URL(req.url).searchParams;
    const bucket = q.get("bucket") ?? "";
    const after = Number(q.get("after") ?? 0);
    const limit = Math.min(1000, Math.max(1, Number(q.get("limit") ?? 100)));
    const waitMs = Math.min(30_000, Math.max(0, Number(q.get("wait_ms") ?? 0)));
    if (
      req.method !== "GET" || !bucket || !Number.isInteger(after) || after < 0 || Number.isNaN(limit) ||
      Number.isNaN(waitMs)
    ) {
      return Response.json({
        error: { code: "bad_request", message: "Cannot read events: give bucket and a whole after" },
      }, { status: 400 });
    }
    const events = await log.poll(bucket, after, limit, waitMs);
    return Response.json({ epoch: log.epoch, events });
  };
}
