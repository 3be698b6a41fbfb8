/**
 * Whole-object reads and writes for the hot paths that move many objects: imgproc (one GET of the upload,
 * one PUT of the thumbnail per image) and replicate (one PUT per batch file kept in memory). Sent over
 * wharf's keep-alive HTTP/1.1 client ({@linkcode Http1Client}: the body of a GET is read by the socket
 * straight into a pooled buffer) and signed with the SDK's own SigV4 signer. With a proxy configured
 * (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`), Deno's `fetch` carries them instead, since it knows proxies.
 *
 * Why not `S3Client.send`: its middleware stack (endpoint rules, retries, body mixins, response
 * parsing) costs about 3 ms of CPU per GET of a 3 MiB image and 1 ms per small PUT, a tenth of what the
 * thumbnail itself costs, and about 1.3 ms more than this per PUT of an 830 KiB batch file (SHA-256 of the
 * body included); `fetch` costs about 2.5 ms more than the socket read per 3.4 MiB GET. Everything
 * the stack decides that matters here is still the SDK's: the bucket's URL (path-style for a local
 * endpoint, virtual-hosted on AWS, any partition) is taken once per bucket from a URL the SDK presigns, and
 * the credentials and region are the client's own providers (so the default chain, instance roles and
 * their refresh work as for every other call). What this leaves out: the SDK's own retries (callers retry
 * the whole event or batch with backoff) and its clock-skew correction. An object's bytes are returned as
 * stored (a stored `Content-Encoding` is not undone).
 */
import { GetObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { HttpRequest } from "@smithy/protocol-http";
import { SignatureV4 } from "@smithy/signature-v4";
import { Buffer } from "node:buffer";
import { createHash, createHmac, type Hash, type Hmac } from "node:crypto";
import { crc32 } from "node:zlib";
import { Http1Client } from "./http1.ts";

/** An object is larger than the reader accepts (see {@linkcode S3Objects.withObject}); nothing was read. */
export class ObjectTooLargeError extends Error {
  constructor(readonly size: number, readonly limit: number, where: string) {
    super(`Cannot read ${where}: it is ${size} bytes, over the limit of ${limit}`);
    this.name = "ObjectTooLargeError";
  }
}

/** An S3 error answer: `code` is S3's error code (`NoSuchKey`, `AccessDenied`…), `status` the HTTP status. */
export class S3ObjectError extends Error {
  constructor(readonly code: string, readonly status: number, message: string) {
    super(message);
    this.name = code;
  }
}

/** SHA-256 (or its HMAC when given a secret) in native code, in the shape the signer expects. */
class NativeSha256 {
  readonly #h: Hash | Hmac;
  constructor(secret?: string | ArrayBuffer | ArrayBufferView) {
    this.#h = secret === undefined
      ? createHash("sha256")
      : createHmac("sha256", typeof secret === "string" ? secret : toBytes(secret));
  }
  update(data: string | ArrayBuffer | ArrayBufferView): void {
    this.#h.update(typeof data === "string" ? data : toBytes(data));
  }
  digest(): Promise<Uint8Array> {
    return Promise.resolve(new Uint8Array(this.#h.digest()));
  }
}

function toBytes(d: ArrayBuffer | ArrayBufferView): Uint8Array {
  return d instanceof ArrayBuffer ? new Uint8Array(d) : new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
}

/** A key as S3 paths carry it: every character but unreserved ones and `/` percent-encoded (RFC 3986). */
export function encodeKey(key: string): string {
  return key.split("/").map((s) =>
    encodeURIComponent(s).replace(/[!'()*]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase())
  ).join("/");
}

/**
 * A body of known length, read straight into `into` (a byte stream's BYOB reader: no chunk is allocated
 * or copied on the way, about half the CPU of collecting chunks for a 3 MiB body). Returns the bytes,
 * over the buffer the reads handed back (the one passed in is detached by the first read).
 */
async function readExactly(
  body: ReadableStream<Uint8Array>,
  length: number,
  into: ArrayBuffer,
  where: string,
): Promise<Uint8Array<ArrayBuffer>> {
  const reader = body.getReader({ mode: "byob" });
  let buf = new Uint8Array(into, 0, length);
  let at = 0;
  try {
    while (at < length) {
      const { value, done } = await reader.read(buf.subarray(at));
      if (done || !value) break;
      buf = new Uint8Array(value.buffer as ArrayBuffer, 0, length);
      at += value.byteLength;
    }
    if (at < length) {
      throw new S3ObjectError(
        "IncompleteBody",
        502,
        `Cannot read ${where}: the body ended after ${at} of ${length} bytes`,
      );
    }
    return buf;
  } finally {
    if (at < length) await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}

/** A body of unknown length (chunked), collected. */
async function readAll(body: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const c of body) {
    chunks.push(c);
    size += c.byteLength;
  }
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

const UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD";
const GET_HEADERS = { "x-amz-content-sha256": UNSIGNED_PAYLOAD };

/** A URL host name that names this machine (`localhost`, 127.0.0.0/8, `[::1]`). */
export function isLoopback(hostname: string): boolean {
  const h = hostname.toLowerCase();
  return h === "localhost" || h.endsWith(".localhost") || h === "[::1]" || /^127(\.\d{1,3}){3}$/.test(h);
}

/** An AWS host name (`….amazonaws.com`, `….amazonaws.com.cn`). */
export function isAwsHost(hostname: string): boolean {
  const h = hostname.toLowerCase();
  return h.endsWith(".amazonaws.com") || h.endsWith(".amazonaws.com.cn");
}

/**
 * The headers that protect a PUT's body to `base`. To an endpoint on this machine (nothing between the two
 * ends could change it) the body goes unsigned. To AWS over HTTPS it goes unsigned with its CRC32 in a
 * signed header, which S3 checks and refuses a body that does not match, as the SDK's own uploads do. To any
 * other endpoint (an S3-compatible store, whose support of the flexible checksums varies, or plain HTTP,
 * where a CRC could be forged along with the body) its SHA-256 is signed, which every store checks. Unsigned
 * is a fraction of the CPU of hashing the body with SHA-256 on both ends.
 */
export function payloadHeaders(base: URL, body: Uint8Array): Record<string, string> {
  if (isLoopback(base.hostname)) return { "x-amz-content-sha256": UNSIGNED_PAYLOAD };
  if (base.protocol === "https:" && isAwsHost(base.hostname)) {
    return { "x-amz-content-sha256": UNSIGNED_PAYLOAD, "x-amz-checksum-crc32": crc32Base64(body) };
  }
  return { "x-amz-content-sha256": createHash("sha256").update(body).digest("hex") };
}

/**
 * The deadline of a PUT of `bytes`: a minute, plus a second per 256 KiB, so that a large body on a slow link
 * does not run into the deadline of a small request (a 64 MiB batch file may take 2 Mbit/s).
 */
export function putTimeoutMs(bytes: number): number {
  return 60_000 + Math.ceil(bytes / 262.144);
}

/** The CRC32 of `body` as S3's `x-amz-checksum-crc32` carries it: four big-endian bytes in base64. */
export function crc32Base64(body: Uint8Array): string {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(crc32(body) >>> 0);
  return b.toString("base64");
}

function verb(method: string): string {
  return method === "GET" ? "read" : "write";
}

/** Whether the environment names a proxy (which `fetch` honours and the HTTP/1.1 client does not). */
function proxyConfigured(): boolean {
  try {
    return ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"].some((n) =>
      Deno.env.get(n) || Deno.env.get(n.toLowerCase())
    );
  } catch {
    return false; // no env permission: no proxy settings can be read, so none apply
  }
}

/** Pool buffers are sized in steps of 1 MiB, kept up to 64 MiB each, 8 at most. */
const POOL_GRAIN = 1024 * 1024;
const POOL_MAX_BUFFER = 64 * 1024 * 1024;
const POOL_MAX_IDLE = 8;

/** Reads and writes whole objects with `client`'s endpoint, credentials and region. */
export class S3Objects {
  readonly #client: S3Client;
  readonly #signer: SignatureV4;
  readonly #bases = new Map<string, Promise<URL>>();
  /** Buffers lent by {@linkcode withObject}, idle. */
  readonly #idle: ArrayBuffer[] = [];
  /** The connections, unless requests go through `fetch`. */
  readonly #http: Http1Client | undefined;

  /**
   * `transport`: `"auto"` (default) is the HTTP/1.1 client unless a proxy is configured, then `fetch`;
   * `"http1"` and `"fetch"` choose one whatever the environment.
   */
  constructor(client: S3Client, o: { transport?: "auto" | "http1" | "fetch" } = {}) {
    const transport = o.transport ?? "auto";
    this.#http = transport === "fetch" || (transport === "auto" && proxyConfigured())
      ? undefined
      : new Http1Client();
    this.#client = client;
    this.#signer = new SignatureV4({
      credentials: client.config.credentials,
      region: client.config.region,
      service: "s3",
      sha256: NativeSha256,
      // The path is encoded once, by encodeKey: S3 signs it as sent.
      uriEscapePath: false,
      applyChecksum: false,
    });
  }

  /** The URL of `bucket`'s root (ending in `/`), as the SDK addresses it. */
  #base(bucket: string): Promise<URL> {
    let base = this.#bases.get(bucket);
    if (!base) {
      const probe = "wharf-probe";
      base = getSignedUrl(this.#client, new GetObjectCommand({ Bucket: bucket, Key: probe }), {
        expiresIn: 60,
      })
        .then((signed) => {
          const u = new URL(signed);
          if (!u.pathname.endsWith("/" + probe)) {
            throw new Error(`Cannot address bucket ${bucket}: unexpected object URL path ${u.pathname}`);
          }
          return new URL(u.origin + u.pathname.slice(0, -probe.length));
        });
      base.catch(() => this.#bases.delete(bucket));
      this.#bases.set(bucket, base);
    }
    return base;
  }

  /**
   * Signs and sends a request; returns the answer of a 2xx, its whole body read (into `bodyBuffer(length)`
   * when given and the length is known), and throws {@linkcode S3ObjectError} for any other. `timeoutMs`:
   * the exchange's deadline over the HTTP/1.1 client (else the client's).
   */
  async #send(
    method: "GET" | "PUT",
    bucket: string,
    key: string,
    headers: Record<string, string>,
    body?: Uint8Array,
    bodyBuffer?: (length: number) => ArrayBuffer,
    timeoutMs?: number,
  ): Promise<Uint8Array> {
    const base = await this.#base(bucket);
    // Appended, not resolved against the base: a key may start with `/`.
    const url = new URL(base.href + encodeKey(key));
    const signed = await this.#signer.sign(
      new HttpRequest({
        method,
        protocol: url.protocol,
        hostname: url.hostname,
        port: url.port ? Number(url.port) : undefined,
        path: url.pathname,
        headers: { ...headers, host: url.host },
        body,
      }),
    );
    const { host: _host, ...send } = signed.headers;
    const where = `s3://${bucket}/${key}`;
    let status: number, statusText: string, answer: Uint8Array;
    if (this.#http) {
      const res = await this.#http.request({ method, url, headers: send, body, bodyBuffer, timeoutMs }).catch(
        (e) => {
          if (e instanceof ObjectTooLargeError) throw e;
          throw new S3ObjectError(
            "NetworkError",
            502,
            `Cannot ${verb(method)} ${where}: ${(e as Error).message}`,
          );
        },
      );
      ({ status, statusText, body: answer } = res);
    } else {
      const res = await fetch(url, { method, headers: send, body: body as BodyInit | undefined });
      ({ status, statusText } = res);
      const header = res.headers.get("content-length");
      // A stored Content-Encoding is undone by fetch, so the length on the wire is not the body's.
      const length = header === null || res.headers.has("content-encoding") ? NaN : Number(header);
      if (!res.ok || !Number.isSafeInteger(length) || length < 0) answer = await readAll(res.body!);
      else {
        let into: ArrayBuffer;
        try {
          into = bodyBuffer ? bodyBuffer(length) : new ArrayBuffer(length);
        } catch (e) {
          await res.body?.cancel().catch(() => {});
          throw e;
        }
        answer = await readExactly(res.body!, length, into, where);
      }
    }
    if (status >= 200 && status < 300) return answer;
    const text = new TextDecoder().decode(answer);
    const code = /<Code>([^<]+)<\/Code>/.exec(text)?.[1] ?? `HTTP${status}`;
    const message = /<Message>([^<]*)<\/Message>/.exec(text)?.[1] ?? statusText;
    throw new S3ObjectError(code, status, `Cannot ${verb(method)} ${where}: ${code}: ${message}`);
  }

  /** The bytes of an object; throws {@linkcode S3ObjectError} (`NoSuchKey` when it is not there). */
  async get(bucket: string, key: string): Promise<Uint8Array> {
    return await this.#send("GET", bucket, key, GET_HEADERS);
  }

  /**
   * Runs `use` on the bytes of an object, read into a buffer lent from a small pool, and takes the buffer
   * back when `use` settles: `use` must not keep the bytes (or a view of them) after that. For a worker
   * reading one large object after another this spares a fresh multi-MiB allocation per object, whose
   * page faults and collection cost about as much as reading it. Throws like {@linkcode get}, and
   * {@linkcode ObjectTooLargeError} (before reading the body) for an object over `o.maxBytes`.
   */
  async withObject<T>(
    bucket: string,
    key: string,
    use: (bytes: Uint8Array) => Promise<T>,
    o: { maxBytes?: number } = {},
  ): Promise<T> {
    let lent = false;
    const bytes = await this.#send("GET", bucket, key, GET_HEADERS, undefined, (length) => {
      if (o.maxBytes !== undefined && length > o.maxBytes) {
        throw new ObjectTooLargeError(length, o.maxBytes, `s3://${bucket}/${key}`);
      }
      lent = true;
      return this.#borrow(length);
    });
    try {
      return await use(bytes);
    } finally {
      // Over the lent buffer (or the one a stream read handed back for it).
      if (lent) this.#giveBack(bytes.buffer as ArrayBuffer);
    }
  }

  /** Closes the kept connections. */
  close(): void {
    this.#http?.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #borrow(length: number): ArrayBuffer {
    let best = -1;
    for (let i = 0; i < this.#idle.length; i++) {
      const size = this.#idle[i].byteLength;
      if (size >= length && (best < 0 || size < this.#idle[best].byteLength)) best = i;
    }
    if (best >= 0) return this.#idle.splice(best, 1)[0];
    // Rounded up, so that objects of about the same size share buffers.
    return new ArrayBuffer(Math.ceil(Math.max(length, 1) / POOL_GRAIN) * POOL_GRAIN);
  }

  #giveBack(buffer: ArrayBuffer): void {
    if (buffer.byteLength > POOL_MAX_BUFFER) return;
    this.#idle.push(buffer);
    if (this.#idle.length > POOL_MAX_IDLE) {
      // Drop the smallest: the large ones are the ones worth keeping.
      let smallest = 0;
      for (let i = 1; i < this.#idle.length; i++) {
        if (this.#idle[i].byteLength < this.#idle[smallest].byteLength) smallest = i;
      }
      this.#idle.splice(smallest, 1);
    }
  }

  /** Writes an object; S3 refuses a body changed on the way (see {@linkcode payloadHeaders}). */
  async put(
    bucket: string,
    key: string,
    body: Uint8Array,
    meta: { contentType?: string; cacheControl?: string } = {},
  ): Promise<void> {
    const headers: Record<string, string> = {
      "content-length": String(body.byteLength),
      ...payloadHeaders(await this.#base(bucket), body),
    };
    if (meta.contentType) headers["content-type"] = meta.contentType;
    if (meta.cacheControl) headers["cache-control"] = meta.cacheControl;
    await this.#send("PUT", bucket, key, headers, body, undefined, putTimeoutMs(body.byteLength));
  }
}
