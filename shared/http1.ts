/**
 * A small HTTP/1.1 client for whole-body exchanges with one kind of server (an S3 endpoint): keep-alive
 * connections per origin, and a body of known length read by the socket straight into a buffer the caller
 * lends. That last part is the point: a 3.4 MiB body read through `fetch` crosses a stream of chunks, each
 * an op, a promise and a copy, and costs about twice the client CPU of reading the socket into place.
 *
 * What it does: `http:` and `https:` (`Deno.connectTls`, the runtime's certificate checks), bodies by
 * `Content-Length`, `Transfer-Encoding: chunked` or up to the close, 1xx interim answers skipped,
 * `Connection: close` honoured, a request of an idempotent method whose kept connection turns out closed by
 * the server retried once on a fresh one (only when not one byte of the answer had come), and a deadline
 * per request (the connection is closed when it passes). What it leaves to `fetch`: proxies, redirects,
 * content decoding (a stored `Content-Encoding` arrives as stored), HTTP/2. Header names and values with a
 * line break are refused, so no caller can inject a header.
 */
import { writeAll } from "./io.ts";

/** A request. The body, when there is one, is sent with its `Content-Length`. */
export interface Http1Request {
  method: string;
  url: URL;
  headers?: Record<string, string>;
  body?: Uint8Array;
  /**
   * Where the body of a 2xx answer of known length goes: a buffer of at least `length` bytes, lent by the
   * caller (the answer's `body` is then a view of it). Other bodies get a fresh buffer. What it throws
   * (a body too large for the caller, say) is what the request throws, the body left unread.
   */
  bodyBuffer?: (length: number) => ArrayBuffer;
  /** Deadline for the whole exchange; defaults to the client's. */
  timeoutMs?: number;
}

/** An answer, its whole body read. */
export interface Http1Response {
  status: number;
  statusText: string;
  headers: Headers;
  body: Uint8Array<ArrayBuffer>;
}

/** Options of {@linkcode Http1Client}. */
export interface Http1ClientOptions {
  /** Idle connections kept per origin (8). */
  maxIdlePerOrigin?: number;
  /** An idle connection older than this is closed instead of reused (4,000 ms). */
  idleMs?: number;
  /** Deadline of a request (60,000 ms). */
  timeoutMs?: number;
  /** Largest status line plus headers (64 KiB). */
  maxHeaderBytes?: number;
  /** PEM certificates trusted for `https:` besides the runtime's store (a private CA). */
  caCerts?: string[];
}

/** The request failed on the way (connection, protocol or deadline): no status to report. */
export class Http1Error extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "Http1Error";
  }
}

interface Connection {
  conn: Deno.Conn;
  /** Reused buffer for status lines and headers. */
  head: Uint8Array;
  idleSince: number;
}

/** Methods a request may be repeated with (RFC 9110, 9.2.2). */
const IDEMPOTENT = new Set(["GET", "HEAD", "PUT", "DELETE", "OPTIONS"]);

const CR = 0x0d;
const LF = 0x0a;
const HEAD_START = 16 * 1024;
const encoder = new TextEncoder();
const latin1 = new TextDecoder("latin1");

/** Where the header block of `b[0..len)` ends (after the blank line), searching from `from`; -1 if not yet. */
function headerEnd(b: Uint8Array, from: number, len: number): number {
  for (let i = Math.max(0, from); i + 3 < len; i++) {
    if (b[i] === CR && b[i + 1] === LF && b[i + 2] === CR && b[i + 3] === LF) return i + 4;
  }
  return -1;
}

function checkHeader(name: string, value: string): void {
  if (/[\r\n]/.test(name) || /[\r\n]/.test(value) || !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) {
    throw new Http1Error(`Cannot send header ${JSON.stringify(name)}: not a valid header line`);
  }
}

/** Keep-alive HTTP/1.1 exchanges (see the module's documentation). */
export class Http1Client {
  readonly #idle = new Map<string, Connection[]>();
  readonly #maxIdle: number;
  readonly #idleMs: number;
  readonly #timeoutMs: number;
  readonly #maxHeader: number;
  readonly #caCerts: string[] | undefined;
  #closed = false;

  constructor(o: Http1ClientOptions = {}) {
    this.#maxIdle = o.maxIdlePerOrigin ?? 8;
    this.#idleMs = o.idleMs ?? 4_000;
    this.#timeoutMs = o.timeoutMs ?? 60_000;
    this.#maxHeader = o.maxHeaderBytes ?? 64 * 1024;
    this.#caCerts = o.caCerts;
  }

  /** Idle connections, all origins (for tests and metrics). */
  get idle(): number {
    let n = 0;
    for (const list of this.#idle.values()) n += list.length;
    return n;
  }

  /** Sends `req` and reads the whole answer; throws {@linkcode Http1Error} when there is none. */
  async request(req: Http1Request): Promise<Http1Response> {
    if (this.#closed) throw new Http1Error("Cannot send a request: the client is closed");
    const { url } = req;
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new Http1Error(`Cannot send a request to a ${url.protocol} URL`);
    }
    const wire = this.#encode(req);
    const origin = `${url.protocol}//${url.host}`;
    for (let attempt = 0;; attempt++) {
      const pooled = attempt === 0 ? this.#take(origin) : undefined;
      const c = pooled ?? await this.#connect(url, req.timeoutMs ?? this.#timeoutMs);
      try {
        return await this.#exchange(c, origin, req, wire);
      } catch (e) {
        // A kept connection the server had closed fails before any answer: most likely the request never
        // arrived. Sent again only when doing so twice is harmless.
        if (pooled && e instanceof StaleConnection && IDEMPOTENT.has(req.method)) continue;
        if (e instanceof StaleConnection) {
          throw new Http1Error(
            `Cannot ${req.method} ${origin}${url.pathname}: the server closed the connection`,
          );
        }
        throw e;
      }
    }
  }

  /** Closes every idle connection; requests after this fail. */
  close(): void {
    this.#closed = true;
    for (const list of this.#idle.values()) for (const c of list) closeQuietly(c.conn);
    this.#idle.clear();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #encode(req: Http1Request): Uint8Array {
    const { url } = req;
    let head = `${req.method} ${url.pathname}${url.search} HTTP/1.1\r\nhost: ${url.host}\r\n`;
    let hasLength = false;
    for (const [name, value] of Object.entries(req.headers ?? {})) {
      checkHeader(name, value);
      const lower = name.toLowerCase();
      if (lower === "host" || lower === "connection" || lower === "transfer-encoding") continue;
      if (lower === "content-length") {
        if (Number(value) !== (req.body?.byteLength ?? 0)) {
          throw new Http1Error(`Cannot send: content-length ${value} is not the body's length`);
        }
        hasLength = true;
      }
      head += `${name}: ${value}\r\n`;
    }
    if (req.body && !hasLength) head += `content-length: ${req.body.byteLength}\r\n`;
    head += "\r\n";
    const h = encoder.encode(head);
    // A small body goes in the same write (one segment, one wakeup of the server).
    if (!req.body?.byteLength || req.body.byteLength > 64 * 1024) return h;
    const out = new Uint8Array(h.length + req.body.byteLength);
    out.set(h);
    out.set(req.body, h.length);
    return out;
  }

  #take(origin: string): Connection | undefined {
    const list = this.#idle.get(origin);
    const now = performance.now();
    while (list?.length) {
      const c = list.pop()!;
      if (now - c.idleSince <= this.#idleMs) return c;
      closeQuietly(c.conn);
    }
    return undefined;
  }

  #giveBack(origin: string, c: Connection): void {
    if (this.#closed) return closeQuietly(c.conn);
    let list = this.#idle.get(origin);
    if (!list) this.#idle.set(origin, list = []);
    if (list.length >= this.#maxIdle) return closeQuietly(c.conn);
    c.idleSince = performance.now();
    list.push(c);
  }

  async #connect(url: URL, timeoutMs: number): Promise<Connection> {
    const hostname = url.hostname.replace(/^\[(.*)\]$/, "$1");
    const port = Number(url.port || (url.protocol === "https:" ? 443 : 80));
    // The TLS handshake is completed here, so that a refused certificate is reported as such (it would
    // otherwise surface at the first read as a closed connection).
    const connecting: Promise<Deno.Conn> = url.protocol === "https:"
      ? Deno.connectTls({ hostname, port, caCerts: this.#caCerts }).then(async (tls) => {
        try {
          await tls.handshake();
          return tls;
        } catch (e) {
          closeQuietly(tls);
          throw e;
        }
      })
      : Deno.connect({ hostname, port, transport: "tcp" });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Http1Error(`Cannot connect to ${url.host}: no connection within ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    try {
      const conn = await Promise.race([connecting, deadline]);
      if ("setNoDelay" in conn) (conn as Deno.TcpConn).setNoDelay(true);
      return { conn, head: new Uint8Array(HEAD_START), idleSince: 0 };
    } catch (e) {
      // A connection that arrives after the deadline is closed, not leaked.
      connecting.then(closeQuietly, () => {});
      if (e instanceof Http1Error) throw e;
      throw new Http1Error(`Cannot connect to ${url.host}: ${(e as Error).message}`, { cause: e });
    } finally {
      clearTimeout(timer);
    }
  }

  async #exchange(
    c: Connection,
    origin: string,
    req: Http1Request,
    wire: Uint8Array,
  ): Promise<Http1Response> {
    const what = `${req.method} ${origin}${req.url.pathname}`;
    const timeoutMs = req.timeoutMs ?? this.#timeoutMs;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      closeQuietly(c.conn);
    }, timeoutMs);
    let keep = false;
    let answered = false;
    try {
      try {
        await writeAll(c.conn, wire);
        if (req.body && wire.length < req.body.byteLength) await writeAll(c.conn, req.body);
      } catch (e) {
        throw new StaleConnection(e);
      }
      const res = await this.#read(c, req, what, () => (answered = true));
      keep = res.keep;
      return res.response;
    } catch (e) {
      if (e instanceof Refused) throw e.cause;
      if (timedOut) throw new Http1Error(`Cannot ${what}: no answer within ${timeoutMs} ms`, { cause: e });
      if (e instanceof StaleConnection && answered) {
        throw new Http1Error(`Cannot ${what}: the connection broke`, { cause: e.cause });
      }
      if (e instanceof Http1Error || e instanceof StaleConnection) throw e;
      throw new Http1Error(`Cannot ${what}: ${(e as Error).message}`, { cause: e });
    } finally {
      clearTimeout(timer);
      if (keep && !timedOut) this.#giveBack(origin, c);
      else closeQuietly(c.conn);
    }
  }

  async #read(
    c: Connection,
    req: Http1Request,
    what: string,
    onAnswer: () => void,
  ): Promise<{ response: Http1Response; keep: boolean }> {
    let len = 0;
    for (;;) {
      // Status line and headers (an interim answer may have left the next one's first bytes).
      let end = headerEnd(c.head, 0, len);
      let searched = len;
      while (end < 0) {
        if (len === c.head.length) {
          if (len >= this.#maxHeader) {
            throw new Http1Error(`Cannot ${what}: the answer's headers are too long`);
          }
          const grown = new Uint8Array(Math.min(this.#maxHeader, len * 2));
          grown.set(c.head);
          c.head = grown;
        }
        let n: number | null;
        try {
          n = await c.conn.read(c.head.subarray(len));
        } catch (e) {
          throw new StaleConnection(e);
        }
        if (n === null) throw new StaleConnection(new Error("closed before the answer"));
        if (len === 0) onAnswer();
        len += n;
        end = headerEnd(c.head, searched - 3, len);
        searched = len;
      }
      const lines = latin1.decode(c.head.subarray(0, end - 4)).split("\r\n");
      const m = /^HTTP\/1\.([01]) (\d{3})(?: (.*))?$/.exec(lines[0]);
      if (!m) throw new Http1Error(`Cannot ${what}: not an HTTP/1.x answer`);
      const status = Number(m[2]);
      const headers = new Headers();
      for (let i = 1; i < lines.length; i++) {
        const colon = lines[i].indexOf(":");
        if (colon <= 0) throw new Http1Error(`Cannot ${what}: malformed header line in the answer`);
        headers.append(lines[i].slice(0, colon).trim(), lines[i].slice(colon + 1).trim());
      }
      // Bytes read past the headers.
      const rest = c.head.subarray(end, len);
      if (status >= 100 && status < 200) {
        // An interim answer: the real one follows.
        c.head.copyWithin(0, end, len);
        len -= end;
        continue;
      }
      const connection = headers.get("connection")?.toLowerCase() ?? "";
      let keep = m[1] === "1" && !connection.split(/\s*,\s*/).includes("close");
      let body: Uint8Array<ArrayBuffer>;
      const te = headers.get("transfer-encoding");
      const cl = headers.get("content-length");
      if (req.method === "HEAD" || status === 204 || status === 304) {
        body = new Uint8Array(0);
        if (rest.length) keep = false;
      } else if (te !== null) {
        if (te.toLowerCase() !== "chunked") {
          throw new Http1Error(`Cannot ${what}: unsupported transfer-encoding`);
        }
        const r = await readChunked(c.conn, rest, what);
        body = r.body;
        if (r.extra) keep = false;
      } else if (cl !== null) {
        const length = Number(cl);
        if (!/^\d+$/.test(cl) || !Number.isSafeInteger(length)) {
          throw new Http1Error(`Cannot ${what}: bad content-length in the answer`);
        }
        let into: ArrayBuffer;
        if (req.bodyBuffer && status >= 200 && status < 300) {
          try {
            into = req.bodyBuffer(length);
          } catch (e) {
            throw new Refused(e); // the body stays unread: the connection is closed
          }
        } else into = new ArrayBuffer(length);
        body = new Uint8Array(into, 0, length);
        const first = Math.min(length, rest.length);
        body.set(rest.subarray(0, first));
        if (rest.length > length) keep = false;
        let at = first;
        while (at < length) {
          let n: number | null;
          try {
            n = await c.conn.read(body.subarray(at));
          } catch (e) {
            throw new Http1Error(`Cannot ${what}: the connection broke after ${at} of ${length} bytes`, {
              cause: e,
            });
          }
          if (n === null) {
            throw new Http1Error(`Cannot ${what}: the body ended after ${at} of ${length} bytes`);
          }
          at += n;
        }
      } else {
        body = await readToEnd(c.conn, rest);
        keep = false;
      }
      return {
        response: { status, statusText: m[3] ?? "", headers, body },
        keep,
      };
    }
  }
}

/** `bodyBuffer` threw: its error is the request's. */
class Refused extends Error {
  constructor(cause: unknown) {
    super("refused by the caller", { cause });
  }
}

/** A connection that failed before any byte of the answer came (see `request`). */
class StaleConnection extends Error {
  constructor(cause: unknown) {
    super("stale connection", { cause });
  }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

/** A growable byte buffer. */
class Bytes {
  buf: Uint8Array<ArrayBuffer>;
  len = 0;
  constructor(initial: Uint8Array) {
    this.buf = new Uint8Array(Math.max(4096, initial.length * 2));
    this.buf.set(initial);
    this.len = initial.length;
  }
  /** Room for at least `n` more bytes. */
  room(n: number): Uint8Array {
    if (this.len + n > this.buf.length) {
      const grown = new Uint8Array(Math.max(this.len + n, this.buf.length * 2));
      grown.set(this.buf.subarray(0, this.len));
      this.buf = grown;
    }
    return this.buf.subarray(this.len);
  }
}

async function readToEnd(conn: Deno.Conn, first: Uint8Array): Promise<Uint8Array<ArrayBuffer>> {
  const b = new Bytes(first);
  for (;;) {
    const n = await conn.read(b.room(64 * 1024));
    if (n === null) return b.buf.slice(0, b.len);
    b.len += n;
  }
}

/**
 * Decodes a chunked body whose first bytes are `first`; reads the rest from `conn`. `extra` tells whether
 * bytes followed the body's end (the connection is then not reused).
 */
async function readChunked(
  conn: Deno.Conn,
  first: Uint8Array,
  what: string,
): Promise<{ body: Uint8Array<ArrayBuffer>; extra: boolean }> {
  const input = new Bytes(first);
  let pos = 0;
  const out = new Bytes(new Uint8Array(0));
  const more = async () => {
    const n = await conn.read(input.room(64 * 1024));
    if (n === null) throw new Http1Error(`Cannot ${what}: the chunked body ended early`);
    input.len += n;
  };
  /** The next line (without CRLF), reading more as needed. */
  const line = async (): Promise<string> => {
    for (;;) {
      for (let i = pos; i + 1 < input.len; i++) {
        if (input.buf[i] === CR && input.buf[i + 1] === LF) {
          const s = latin1.decode(input.buf.subarray(pos, i));
          pos = i + 2;
          return s;
        }
      }
      if (input.len - pos > 8 * 1024) throw new Http1Error(`Cannot ${what}: malformed chunked body`);
      await more();
    }
  };
  for (;;) {
    const sizeLine = await line();
    const size = parseInt(sizeLine.split(";")[0].trim(), 16);
    if (!/^[0-9a-fA-F]+/.test(sizeLine.trim()) || !Number.isSafeInteger(size)) {
      throw new Http1Error(`Cannot ${what}: malformed chunk size`);
    }
    if (size === 0) {
      // Trailers, up to the blank line.
      while ((await line()) !== "");
      return { body: out.buf.slice(0, out.len), extra: pos < input.len };
    }
    while (input.len - pos < size + 2) await more();
    out.room(size).set(input.buf.subarray(pos, pos + size));
    out.len += size;
    pos += size;
    if (input.buf[pos] !== CR || input.buf[pos + 1] !== LF) {
      throw new Http1Error(`Cannot ${what}: malformed chunked body`);
    }
    pos += 2;
  }
}
