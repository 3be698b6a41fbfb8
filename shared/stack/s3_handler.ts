/**
 * The local S3 server's HTTP handler: S3's REST protocol (path-style addressing) over {@link S3Store},
 * with Signature V4 checked on every request and object events appended to {@link S3EventLog} before
 * the response leaves. A plain `Request → Response` function on `Deno.serve`, so a GET streams the file
 * straight from disk (`FsFile.readable`) and a PUT streams to disk: the server costs a fraction of the
 * CPU of a general-purpose emulator, and it shares the machine with the workloads being measured.
 *
 * Covered: buckets (list, create, head, delete), objects (put, get with ranges and conditions, head,
 * delete, copy), DeleteObjects, ListObjects v1/v2, multipart uploads (UploadPartCopy included).
 * Anything else answers S3's `NotImplemented` (501).
 *
 * Bodies as the AWS SDK for JavaScript v3 sends them: with `requestChecksumCalculation: "WHEN_REQUIRED"`
 * (wharf's clients) a buffer is signed (hex SHA-256, checked while streaming) and a Node stream goes
 * `UNSIGNED-PAYLOAD`; with the SDK's defaults a buffer also carries `x-amz-checksum-crc32` and a stream
 * goes `aws-chunked` (`STREAMING-UNSIGNED-PAYLOAD-TRAILER`, the CRC32 in the trailer), decoded here.
 * A web stream through Deno's fetch loses the signed Content-Length: 411 MissingContentLength, as on S3.
 * Signed chunks (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`) are not taken (501).
 */
import { createHash } from "node:crypto";
import {
  AwsChunkedDecoder,
  type BodyChecks,
  Checksummer,
  type ObjectAttributes,
  type ObjectMeta,
  S3Error,
  type S3Store,
  STORED_HEADERS,
  type TempObject,
} from "./s3_store.ts";
import { type SigV4Verifier, UNSIGNED_PAYLOAD, type Verified } from "./s3_sigv4.ts";
import { errorXml, parseCompleteMultipart, parseDelete, xmlDocument, type XmlNode } from "./s3_xml.ts";
import { EVENTS_PATH, eventsHandler, type S3EventLog } from "./s3_events.ts";

/** What the handler works with. */
export interface S3HandlerOptions {
  store: S3Store;
  events: S3EventLog;
  verifier: SigV4Verifier;
  /** The region named in event records and bucket locations. */
  region: string;
}

/** S3's encoding of keys in event records and `encoding-type=url` listings (form style, `/` kept). */
export function s3UrlEncode(key: string): string {
  return encodeURIComponent(key).replace(/%20/g, "+").replace(/%2F/g, "/")
    .replace(/[!'()*]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase());
}

const OWNER: XmlNode[] = [["ID", "wharf-local"], ["DisplayName", "wharf"]];
/** Query names that never select an operation. */
const NEUTRAL = /^(x-id|x-amz-[a-z0-9-]+|response-[a-z-]+)$/i;
const SMALL_BODY_LIMIT = 4 * 1024 * 1024;
/**
 * Objects up to this size are read whole (one synchronous read) and sent as one buffer; larger ones are
 * streamed. A file's stream reads 64 KiB at a time, each read handed to a blocking thread and back (a
 * thread wake-up per piece), and its body goes out in as many writes, each waking the reader: for a 3.4
 * MiB photo that cost about 5 ms of the server's CPU and 2.5 of the client's, against 3.5 and 1.7 read whole
 * (`bench:s3`). 16 MiB bounds the memory of one GET (a phone photo is 2–10 MiB).
 */
const WHOLE_READ = 16 * 1024 * 1024;

function decodePath(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new S3Error("InvalidURI", "Couldn't parse the specified URI.", 400);
  }
}

function requestId(): string {
  return crypto.randomUUID().replace(/-/g, "").slice(0, 16).toUpperCase();
}

function quote(etag: string): string {
  return `"${etag}"`;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function etagMatches(header: string, etag: string): boolean {
  return header.split(",").some((t) => {
    const v = t.trim().replace(/^W\//, "").replace(/^"|"$/g, "");
    return v === "*" || v === etag;
  });
}

function int(value: string | null, fallback: number, name: string, max = Infinity): number {
  if (value === null) return fallback;
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n)) {
    throw new S3Error("InvalidArgument", `${name} must be a non-negative integer`, 400);
  }
  return Math.min(n, max);
}

/** The stored headers and `x-amz-meta-*` of a PUT / copy / multipart start. */
function attributesOf(h: Headers): ObjectAttributes {
  const headers: Record<string, string> = {};
  for (const name of STORED_HEADERS) {
    let v = h.get(name);
    if (name === "content-encoding" && v) {
      v = v.split(",").map((s) => s.trim()).filter((s) => s && s !== "aws-chunked").join(", ");
    }
    if (v) headers[name] = v;
  }
  const metadata: Record<string, string> = {};
  let size = 0;
  for (const [name, value] of h) {
    if (!name.startsWith("x-amz-meta-")) continue;
    metadata[name.slice(11)] = value;
    size += name.length - 11 + value.length;
  }
  if (size > 2048) {
    throw new S3Error(
      "MetadataTooLarge",
      "Your metadata headers exceed the maximum allowed metadata size.",
      400,
    );
  }
  return { headers, metadata };
}

/** Parses `bytes=a-b` against `size`: the inclusive range, null for none (or several), or 416. */
function parseRange(header: string | null, size: number): [number, number] | null {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (!m[1] && !m[2])) return null; // several ranges or garbage: S3 sends the whole object
  let start: number, end: number;
  if (!m[1]) {
    const n = Number(m[2]);
    if (n === 0) throw new S3Error("InvalidRange", "The requested range is not satisfiable", 416);
    start = Math.max(0, size - n);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] ? Math.min(Number(m[2]), size - 1) : size - 1;
    if (m[2] && Number(m[2]) < start) return null;
  }
  if (start >= size) throw new S3Error("InvalidRange", "The requested range is not satisfiable", 416);
  return [start, end];
}

/** A stream of `length` bytes of `file` from its current position, closing it at the end. */
function limitedStream(file: Deno.FsFile, length: number): ReadableStream<Uint8Array> {
  let left = length;
  return new ReadableStream({
    type: "bytes",
    async pull(ctl) {
      if (left <= 0) {
        file.close();
        ctl.close();
        ctl.byobRequest?.respond(0);
        return;
      }
      const buf = new Uint8Array(Math.min(left, 256 * 1024));
      const n = await file.read(buf);
      if (n === null) {
        file.close();
        ctl.error(new Error("The object ended early"));
        return;
      }
      left -= n;
      ctl.enqueue(buf.subarray(0, n));
    },
    cancel() {
      file.close();
    },
  });
}

/** How a request's body is to be read and checked, from its payload hash. */
function bodyChecks(req: Request, v: Verified): BodyChecks {
  const p = v.payloadHash;
  const checksum = checksumOf(req.headers);
  const lengthHeader = (name: string) => {
    const s = req.headers.get(name);
    return s === null ? undefined : int(s, 0, name);
  };
  if (/^[0-9a-fA-F]{64}$/.test(p)) return { sha256: p, length: lengthHeader("content-length"), checksum };
  if (p === UNSIGNED_PAYLOAD) return { length: lengthHeader("content-length"), checksum };
  if (p === "STREAMING-UNSIGNED-PAYLOAD-TRAILER") {
    return { awsChunked: true, length: lengthHeader("x-amz-decoded-content-length"), checksum };
  }
  if (p.startsWith("STREAMING-")) {
    throw new S3Error(
      "NotImplemented",
      `The local S3 server does not take ${p} bodies; sign the payload or send it unsigned`,
      501,
    );
  }
  throw new S3Error(
    "InvalidArgument",
    "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-… or a SHA-256",
    400,
  );
}

const CHECKSUM = /^x-amz-checksum-(crc32|crc32c|crc64nvme|sha1|sha256)$/;

/** The flexible checksum a request announces: in a header, or (aws-chunked) named by `x-amz-trailer`. */
function checksumOf(h: Headers): BodyChecks["checksum"] {
  const trailer = h.get("x-amz-trailer")?.trim().toLowerCase();
  const inTrailer = trailer ? CHECKSUM.exec(trailer) : null;
  if (inTrailer) return { algorithm: inTrailer[1] };
  for (const [name, value] of h) {
    const m = CHECKSUM.exec(name);
    if (m) return { algorithm: m[1], expected: value };
  }
  return undefined;
}

function xmlResponse(body: string, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(body, { status, headers: { "content-type": "application/xml", ...headers } });
}

/** Creates the handler of one server. */
export function createS3Handler(
  o: S3HandlerOptions,
): (req: Request, info?: Deno.ServeHandlerInfo) => Promise<Response> {
  const { store, events, verifier, region } = o;
  const serveEvents = eventsHandler(events);
  /** Whole reads of GETs go here (see `getObject`); grown on demand, up to {@linkcode WHOLE_READ}. */
  let scratch = new Uint8Array(0);

  function record(
    eventName: string,
    bucket: string,
    object: Record<string, unknown>,
    reqId: string,
    sourceIp: string,
  ) {
    events.append({
      Records: [{
        eventVersion: "2.1",
        eventSource: "aws:s3",
        awsRegion: region,
        eventTime: new Date().toISOString(),
        eventName,
        userIdentity: { principalId: "wharf-local" },
        requestParameters: { sourceIPAddress: sourceIp },
        responseElements: { "x-amz-request-id": reqId },
        s3: {
          s3SchemaVersion: "1.0",
          configurationId: "wharf-local-events",
          bucket: {
            name: bucket,
            ownerIdentity: { principalId: "wharf-local" },
            arn: `arn:aws:s3:::${bucket}`,
          },
          object,
        },
      }],
    });
  }

  function created(eventName: string, bucket: string, meta: ObjectMeta, reqId: string, ip: string) {
    record(eventName, bucket, { key: s3UrlEncode(meta.key), size: meta.size, eTag: meta.etag }, reqId, ip);
  }

  async function readSmallBody(req: Request, v: Verified): Promise<string> {
    const checks = bodyChecks(req, v);
    if (!req.body) return "";
    const chunks: Uint8Array[] = [];
    let size = 0;
    const decoder = checks.awsChunked ? new AwsChunkedDecoder() : undefined;
    for await (const chunk of req.body) {
      for (const piece of decoder ? decoder.push(chunk) : [chunk]) {
        size += piece.length;
        if (size > SMALL_BODY_LIMIT) {
          throw new S3Error("MaxMessageLengthExceeded", "Your request was too big.", 400);
        }
        chunks.push(piece);
      }
    }
    decoder?.end();
    const body = new Uint8Array(size);
    let off = 0;
    for (const c of chunks) {
      body.set(c, off);
      off += c.length;
    }
    const md5 = req.headers.get("content-md5");
    if (md5 !== null && createHash("md5").update(body).digest("base64") !== md5.trim()) {
      throw new S3Error("BadDigest", "The Content-MD5 you specified did not match what we received.", 400);
    }
    const summer = checks.checksum ? Checksummer.for(checks.checksum.algorithm) : undefined;
    if (summer) {
      summer.update(body);
      const expected = checks.checksum!.expected ??
        decoder?.trailers.get(`x-amz-checksum-${summer.algorithm}`);
      if (expected?.trim() !== summer.digest()) {
        throw new S3Error(
          "BadDigest",
          `The ${summer.algorithm.toUpperCase()} you specified did not match the calculated checksum.`,
          400,
        );
      }
    }
    if (checks.sha256) {
      if (createHash("sha256").update(body).digest("hex") !== checks.sha256.toLowerCase()) {
        throw new S3Error(
          "XAmzContentSHA256Mismatch",
          "The provided 'x-amz-content-sha256' header does not match what was computed.",
          400,
        );
      }
    }
    return new TextDecoder().decode(body);
  }

  function checksOf(req: Request, v: Verified) {
    return { ...bodyChecks(req, v), md5Base64: req.headers.get("content-md5") ?? undefined };
  }

  function objectHeaders(meta: ObjectMeta, q: URLSearchParams): Headers {
    const h = new Headers({
      "content-type": meta.headers["content-type"] ?? "binary/octet-stream",
      etag: quote(meta.etag),
      "last-modified": new Date(meta.lastModified).toUTCString(),
      "accept-ranges": "bytes",
    });
    for (const [k, v] of Object.entries(meta.headers)) h.set(k, v);
    for (const [k, v] of Object.entries(meta.metadata)) h.set(`x-amz-meta-${k}`, v);
    for (
      const name of [
        "content-type",
        "content-language",
        "expires",
        "cache-control",
        "content-disposition",
        "content-encoding",
      ]
    ) {
      const v = q.get(`response-${name}`);
      if (v !== null) h.set(name, v);
    }
    return h;
  }

  /** 304 / 412 for a conditional GET or HEAD, or undefined to go on. */
  function conditional(req: Request, meta: ObjectMeta): Response | undefined {
    const h = req.headers;
    const ifMatch = h.get("if-match"), ifNoneMatch = h.get("if-none-match");
    const ims = h.get("if-modified-since"), ius = h.get("if-unmodified-since");
    if (ifMatch !== null) {
      if (!etagMatches(ifMatch, meta.etag)) {
        throw new S3Error(
          "PreconditionFailed",
          "At least one of the pre-conditions you specified did not hold",
          412,
        );
      }
    } else if (ius !== null && meta.lastModified > Date.parse(ius)) {
      throw new S3Error(
        "PreconditionFailed",
        "At least one of the pre-conditions you specified did not hold",
        412,
      );
    }
    const notModified = () =>
      new Response(null, {
        status: 304,
        headers: { etag: quote(meta.etag), "last-modified": new Date(meta.lastModified).toUTCString() },
      });
    if (ifNoneMatch !== null) {
      if (etagMatches(ifNoneMatch, meta.etag)) return notModified();
    } else if (ims !== null && meta.lastModified <= Date.parse(ims)) return notModified();
    return undefined;
  }

  function getObject(req: Request, bucket: string, key: string, q: URLSearchParams): Response {
    const meta = store.head(bucket, key);
    if (!meta) throw new S3Error("NoSuchKey", "The specified key does not exist.", 404);
    const early = conditional(req, meta);
    if (early) return early;
    const headers = objectHeaders(meta, q);
    const head = req.method === "HEAD";
    const range = head ? null : parseRangeFor(req, meta);
    if (!range) {
      headers.set("content-length", String(meta.size));
      if (head) return new Response(null, { headers });
      if (meta.size <= WHOLE_READ) {
        // Read into the handler's one scratch buffer: the Response takes a copy of a byte body when it is
        // made (the Fetch standard's "extract a body"), and nothing runs in between, so the buffer is free
        // again at once. A fresh multi-MiB array per GET cost its zeroing and, as external memory, made V8
        // collect more often (together about a tenth of the server's CPU in `bench:thumbs`).
        if (scratch.length < meta.size) scratch = new Uint8Array(Math.min(WHOLE_READ, meta.size * 2));
        return new Response(store.readWhole(bucket, meta, scratch), { headers });
      }
      const file = store.openBody(bucket, meta);
      return new Response(file.readable, { headers });
    }
    const [start, end] = range;
    headers.set("content-range", `bytes ${start}-${end}/${meta.size}`);
    headers.set("content-length", String(end - start + 1));
    const file = store.openBody(bucket, meta, start);
    return new Response(limitedStream(file, end - start + 1), { status: 206, headers });
  }

  function parseRangeFor(req: Request, meta: ObjectMeta): [number, number] | null {
    try {
      return parseRange(req.headers.get("range"), meta.size);
    } catch (e) {
      if (e instanceof S3Error && e.status === 416) {
        throw Object.assign(e, { extraHeaders: { "content-range": `bytes */${meta.size}` } });
      }
      throw e;
    }
  }

  function checkPutPreconditions(req: Request, bucket: string, key: string): void {
    if (req.headers.get("if-none-match")?.trim() === "*" && store.head(bucket, key)) {
      throw new S3Error(
        "PreconditionFailed",
        "At least one of the pre-conditions you specified did not hold",
        412,
      );
    }
    const ifMatch = req.headers.get("if-match");
    if (ifMatch !== null) {
      const meta = store.head(bucket, key);
      if (!meta) throw new S3Error("NoSuchKey", "The specified key does not exist.", 404);
      if (!etagMatches(ifMatch, meta.etag)) {
        throw new S3Error(
          "PreconditionFailed",
          "At least one of the pre-conditions you specified did not hold",
          412,
        );
      }
    }
  }

  async function putObject(
    req: Request,
    v: Verified,
    bucket: string,
    key: string,
    reqId: string,
    ip: string,
  ) {
    if (!store.hasBucket(bucket)) {
      throw new S3Error("NoSuchBucket", "The specified bucket does not exist", 404);
    }
    const attrs = attributesOf(req.headers);
    checkPutPreconditions(req, bucket, key);
    const tmp = await store.writeObject(key, attrs, req.body, checksOf(req, v));
    let meta: ObjectMeta;
    try {
      checkPutPreconditions(req, bucket, key);
      meta = store.commit(bucket, tmp);
    } catch (e) {
      await store.discard(tmp);
      throw e;
    }
    created("ObjectCreated:Put", bucket, meta, reqId, ip);
    const headers: Record<string, string> = { etag: quote(meta.etag) };
    if (tmp.checksum) headers[tmp.checksum.name] = tmp.checksum.value;
    return new Response(null, { headers });
  }

  /**
   * The object `x-amz-copy-source` names (`bucket/key`, URL-encoded, optionally with a leading `/`), once
   * its `x-amz-copy-source-if-match` / `-if-none-match` conditions hold: for CopyObject and UploadPartCopy.
   */
  function copySource(req: Request): { srcBucket: string; srcKey: string; src: ObjectMeta } {
    const raw = req.headers.get("x-amz-copy-source")!.split("?")[0];
    const source = decodePath(raw.replace(/^\//, ""));
    const slash = source.indexOf("/");
    if (slash < 1 || slash === source.length - 1) {
      throw new S3Error(
        "InvalidArgument",
        "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
        400,
      );
    }
    const srcBucket = source.slice(0, slash), srcKey = source.slice(slash + 1);
    const src = store.head(srcBucket, srcKey);
    if (!src) throw new S3Error("NoSuchKey", "The specified key does not exist.", 404);
    const ifMatch = req.headers.get("x-amz-copy-source-if-match");
    const ifNoneMatch = req.headers.get("x-amz-copy-source-if-none-match");
    if (
      (ifMatch !== null && !etagMatches(ifMatch, src.etag)) ||
      (ifNoneMatch !== null && etagMatches(ifNoneMatch, src.etag))
    ) {
      throw new S3Error(
        "PreconditionFailed",
        "At least one of the pre-conditions you specified did not hold",
        412,
      );
    }
    return { srcBucket, srcKey, src };
  }

  /**
   * UploadPartCopy: part `n` of upload `id` made from the copy source, or from the byte range
   * `x-amz-copy-source-range: bytes=first-last` of it (both ends given and inside the object, as S3 asks).
   */
  async function uploadPartCopy(req: Request, id: string, n: number): Promise<Response> {
    const { srcBucket, src } = copySource(req);
    const header = req.headers.get("x-amz-copy-source-range");
    let start = 0, end = src.size - 1;
    if (header !== null) {
      const m = /^bytes=(\d+)-(\d+)$/.exec(header.trim());
      if (!m || Number(m[1]) > Number(m[2]) || Number(m[2]) >= src.size) {
        throw new S3Error(
          "InvalidArgument",
          `Range specified is not valid for source object of size: ${src.size}`,
          400,
        );
      }
      [start, end] = [Number(m[1]), Number(m[2])];
    }
    const length = end - start + 1;
    const body = length > 0 ? limitedStream(store.openBody(srcBucket, src, start), length) : null;
    const etag = await store.putPart(id, n, body, {});
    return xmlResponse(
      xmlDocument("CopyPartResult", [["LastModified", iso(Date.now())], ["ETag", quote(etag)]]),
    );
  }

  async function copyObject(req: Request, bucket: string, key: string, reqId: string, ip: string) {
    if (!store.hasBucket(bucket)) {
      throw new S3Error("NoSuchBucket", "The specified bucket does not exist", 404);
    }
    const { srcBucket, srcKey, src } = copySource(req);
    const directive = (req.headers.get("x-amz-metadata-directive") ?? "COPY").toUpperCase();
    if (directive !== "COPY" && directive !== "REPLACE") {
      throw new S3Error("InvalidArgument", "Unknown metadata directive.", 400);
    }
    if (directive === "COPY" && srcBucket === bucket && srcKey === key) {
      throw new S3Error(
        "InvalidRequest",
        "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.",
        400,
      );
    }
    const attrs = directive === "COPY"
      ? { headers: src.headers, metadata: src.metadata }
      : attributesOf(req.headers);
    const tmp: TempObject = await store.writeObject(
      key,
      attrs,
      store.readBody(srcBucket, src),
      {},
      src.etag,
    );
    let meta: ObjectMeta;
    try {
      meta = store.commit(bucket, tmp);
    } catch (e) {
      await store.discard(tmp);
      throw e;
    }
    created("ObjectCreated:Copy", bucket, meta, reqId, ip);
    return xmlResponse(
      xmlDocument("CopyObjectResult", [["LastModified", iso(meta.lastModified)], ["ETag", quote(meta.etag)]]),
    );
  }

  function deleteObject(bucket: string, key: string, reqId: string, ip: string): Response {
    if (store.delete(bucket, key)) {
      record("ObjectRemoved:Delete", bucket, { key: s3UrlEncode(key) }, reqId, ip);
    }
    return new Response(null, { status: 204 });
  }

  async function deleteObjects(req: Request, v: Verified, bucket: string, reqId: string, ip: string) {
    if (!store.hasBucket(bucket)) {
      throw new S3Error("NoSuchBucket", "The specified bucket does not exist", 404);
    }
    const parsed = parseDelete(await readSmallBody(req, v));
    if (!parsed || parsed.keys.length > 1000) {
      throw new S3Error(
        "MalformedXML",
        "The XML you provided was not well-formed or did not validate against our published schema",
        400,
      );
    }
    const out: XmlNode[] = [];
    for (const key of parsed.keys) {
      try {
        deleteObject(bucket, key, reqId, ip);
        if (!parsed.quiet) out.push(["Deleted", [["Key", key]]]);
      } catch (e) {
        const code = e instanceof S3Error ? e.code : "InternalError";
        out.push(["Error", [["Key", key], ["Code", code], ["Message", (e as Error).message]]]);
      }
    }
    return xmlResponse(xmlDocument("DeleteResult", out));
  }

  function listObjects(bucket: string, q: URLSearchParams): Response {
    const v2 = q.get("list-type") === "2";
    if (q.has("list-type") && !v2) throw new S3Error("InvalidArgument", "Invalid list-type", 400);
    const prefix = q.get("prefix") ?? "", delimiter = q.get("delimiter") ?? "";
    const maxKeys = int(q.get("max-keys"), 1000, "max-keys", 1000);
    const encodingType = q.get("encoding-type");
    if (encodingType !== null && encodingType !== "url") {
      throw new S3Error("InvalidArgument", "Invalid Encoding Method specified in Request", 400);
    }
    const enc = (s: string) => encodingType ? s3UrlEncode(s) : s;
    let after: string;
    const token = q.get("continuation-token");
    if (v2) {
      if (token !== null) {
        try {
          after = new TextDecoder("utf-8", { fatal: true }).decode(
            Uint8Array.from(atob(token), (c) => c.charCodeAt(0)),
          );
        } catch {
          throw new S3Error("InvalidArgument", "The continuation token provided is incorrect", 400);
        }
      } else after = q.get("start-after") ?? "";
    } else after = q.get("marker") ?? "";
    const page = maxKeys === 0
      ? { contents: [], commonPrefixes: [], truncated: false, last: undefined }
      : store.list(bucket, { prefix, delimiter, after, maxKeys });
    const contents: XmlNode[] = page.contents.map((m) => [
      "Contents",
      [
        ["Key", enc(m.key)],
        ["LastModified", iso(m.lastModified)],
        ["ETag", quote(m.etag)],
        ["Size", m.size],
        ...(v2 ? [] : [["Owner", OWNER] as XmlNode]),
        ["StorageClass", "STANDARD"],
      ],
    ]);
    const prefixes: XmlNode[] = page.commonPrefixes.map((p) => ["CommonPrefixes", [["Prefix", enc(p)]]]);
    const next = page.truncated && page.last !== undefined ? page.last : undefined;
    const body: XmlNode[] = v2
      ? [
        ["Name", bucket],
        ["Prefix", enc(prefix)],
        ["Delimiter", delimiter ? enc(delimiter) : undefined],
        ["MaxKeys", maxKeys],
        ["EncodingType", encodingType ?? undefined],
        ["KeyCount", page.contents.length + page.commonPrefixes.length],
        ["IsTruncated", page.truncated],
        ["ContinuationToken", token ?? undefined],
        [
          "NextContinuationToken",
          next === undefined ? undefined : btoa(String.fromCharCode(...new TextEncoder().encode(next))),
        ],
        ["StartAfter", q.has("start-after") ? enc(q.get("start-after")!) : undefined],
        ...contents,
        ...prefixes,
      ]
      : [
        ["Name", bucket],
        ["Prefix", enc(prefix)],
        ["Marker", enc(after)],
        ["NextMarker", next === undefined ? undefined : enc(next)],
        ["MaxKeys", maxKeys],
        ["Delimiter", delimiter ? enc(delimiter) : undefined],
        ["EncodingType", encodingType ?? undefined],
        ["IsTruncated", page.truncated],
        ...contents,
        ...prefixes,
      ];
    return xmlResponse(xmlDocument("ListBucketResult", body));
  }

  function partNumberOf(q: URLSearchParams): number {
    const n = int(q.get("partNumber"), 0, "partNumber");
    if (n < 1 || n > 10_000) {
      throw new S3Error(
        "InvalidArgument",
        "Part number must be an integer between 1 and 10000, inclusive",
        400,
      );
    }
    return n;
  }

  async function multipart(
    req: Request,
    v: Verified,
    bucket: string,
    key: string,
    q: URLSearchParams,
    reqId: string,
    ip: string,
  ) {
    const id = q.get("uploadId");
    if (req.method === "POST" && q.has("uploads")) {
      if (!store.hasBucket(bucket)) {
        throw new S3Error("NoSuchBucket", "The specified bucket does not exist", 404);
      }
      const uploadId = await store.createUpload(bucket, key, attributesOf(req.headers));
      return xmlResponse(
        xmlDocument("InitiateMultipartUploadResult", [["Bucket", bucket], ["Key", key], [
          "UploadId",
          uploadId,
        ]]),
      );
    }
    if (id === null) return undefined;
    if (req.method === "PUT") {
      const n = partNumberOf(q);
      await store.upload(bucket, key, id);
      if (req.headers.has("x-amz-copy-source")) return await uploadPartCopy(req, id, n);
      const etag = await store.putPart(id, n, req.body, checksOf(req, v));
      return new Response(null, { headers: { etag: quote(etag) } });
    }
    if (req.method === "POST") {
      const parts = parseCompleteMultipart(await readSmallBody(req, v));
      if (!parts) {
        throw new S3Error(
          "MalformedXML",
          "The XML you provided was not well-formed or did not validate against our published schema",
          400,
        );
      }
      const meta = await store.completeUpload(bucket, key, id, parts);
      created("ObjectCreated:CompleteMultipartUpload", bucket, meta, reqId, ip);
      return xmlResponse(xmlDocument("CompleteMultipartUploadResult", [
        ["Location", `/${bucket}/${key}`],
        ["Bucket", bucket],
        ["Key", key],
        ["ETag", quote(meta.etag)],
      ]));
    }
    if (req.method === "DELETE") {
      await store.abortUpload(bucket, key, id);
      return new Response(null, { status: 204 });
    }
    if (req.method === "GET") {
      await store.upload(bucket, key, id);
      const maxParts = int(q.get("max-parts"), 1000, "max-parts", 1000);
      const marker = int(q.get("part-number-marker"), 0, "part-number-marker");
      const all = (await store.parts(id)).filter((p) => p.partNumber > marker);
      const page = all.slice(0, maxParts);
      return xmlResponse(xmlDocument("ListPartsResult", [
        ["Bucket", bucket],
        ["Key", key],
        ["UploadId", id],
        ["PartNumberMarker", marker],
        ["NextPartNumberMarker", page.at(-1)?.partNumber ?? 0],
        ["MaxParts", maxParts],
        ["IsTruncated", all.length > page.length],
        ...page.map((p): XmlNode => [
          "Part",
          [["PartNumber", p.partNumber], ["LastModified", iso(p.lastModified)], ["ETag", quote(p.etag)], [
            "Size",
            p.size,
          ]],
        ]),
      ]));
    }
    return undefined;
  }

  async function route(req: Request, url: RawUrl, v: Verified, reqId: string, ip: string): Promise<Response> {
    const q = url.searchParams;
    const subresources = [...q.keys()].filter((k) => !NEUTRAL.test(k));
    const only = (...allowed: string[]) => {
      const other = subresources.find((k) => !allowed.includes(k));
      if (other !== undefined) {
        throw new S3Error(
          "NotImplemented",
          `The local S3 server does not implement ?${other} for ${req.method}`,
          501,
        );
      }
    };
    const path = url.pathname;
    const slash = path.indexOf("/", 1);
    const bucket = decodePath(slash < 0 ? path.slice(1) : path.slice(1, slash));
    const key = slash < 0 ? "" : decodePath(path.slice(slash + 1));
    const m = req.method;
    if (!bucket) {
      only();
      if (m !== "GET") {
        throw new S3Error(
          "MethodNotAllowed",
          "The specified method is not allowed against this resource.",
          405,
        );
      }
      return xmlResponse(xmlDocument("ListAllMyBucketsResult", [
        ["Owner", OWNER],
        [
          "Buckets",
          store.listBuckets().map((
            b,
          ): XmlNode => ["Bucket", [["Name", b.name], ["CreationDate", iso(b.created)]]]),
        ],
      ]));
    }
    if (!key) {
      if (m === "GET" && q.has("location")) {
        only("location");
        if (!store.hasBucket(bucket)) {
          throw new S3Error("NoSuchBucket", "The specified bucket does not exist", 404);
        }
        return xmlResponse(
          xmlDocument("LocationConstraint", []).replace(
            "</LocationConstraint>",
            `${region === "us-east-1" ? "" : region}</LocationConstraint>`,
          ),
        );
      }
      if (m === "GET") {
        only(
          "list-type",
          "prefix",
          "delimiter",
          "max-keys",
          "continuation-token",
          "start-after",
          "encoding-type",
          "marker",
          "fetch-owner",
        );
        return listObjects(bucket, q);
      }
      if (m === "POST" && q.has("delete")) {
        only("delete");
        return await deleteObjects(req, v, bucket, reqId, ip);
      }
      only();
      if (m === "PUT") {
        await req.body?.cancel();
        if (!store.createBucket(bucket)) {
          throw new S3Error(
            "BucketAlreadyOwnedByYou",
            "Your previous request to create the named bucket succeeded and you already own it.",
            409,
          );
        }
        return new Response(null, { headers: { location: `/${bucket}` } });
      }
      if (m === "HEAD") {
        if (!store.hasBucket(bucket)) {
          throw new S3Error("NoSuchBucket", "The specified bucket does not exist", 404);
        }
        return new Response(null, { headers: { "x-amz-bucket-region": region } });
      }
      if (m === "DELETE") {
        store.deleteBucket(bucket);
        return new Response(null, { status: 204 });
      }
      throw new S3Error(
        "MethodNotAllowed",
        "The specified method is not allowed against this resource.",
        405,
      );
    }
    if (q.has("uploads") || q.has("uploadId")) {
      only("uploads", "uploadId", "partNumber", "max-parts", "part-number-marker");
      const res = await multipart(req, v, bucket, key, q, reqId, ip);
      if (res) return res;
      throw new S3Error(
        "MethodNotAllowed",
        "The specified method is not allowed against this resource.",
        405,
      );
    }
    only();
    if (m === "GET" || m === "HEAD") return getObject(req, bucket, key, q);
    if (m === "PUT") {
      return req.headers.has("x-amz-copy-source")
        ? await copyObject(req, bucket, key, reqId, ip)
        : await putObject(req, v, bucket, key, reqId, ip);
    }
    if (m === "DELETE") {
      if (!store.hasBucket(bucket)) {
        throw new S3Error("NoSuchBucket", "The specified bucket does not exist", 404);
      }
      return deleteObject(bucket, key, reqId, ip);
    }
    throw new S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.", 405);
  }

  return async function handle(req: Request, info?: Deno.ServeHandlerInfo): Promise<Response> {
    const url = rawUrl(req.url);
    if (url.pathname === EVENTS_PATH) return await serveEvents(req);
    const reqId = requestId();
    let res: Response;
    try {
      const v = verifier.verify({
        method: req.method,
        path: url.pathname,
        query: url.search.slice(1),
        headers: req.headers,
      });
      const ip = info && "hostname" in info.remoteAddr ? info.remoteAddr.hostname : "127.0.0.1";
      res = await route(req, url, v, reqId, ip);
    } catch (e) {
      const known = e instanceof S3Error || (e instanceof Error && "code" in e && "status" in e);
      const err = e as S3Error;
      if (!known) {
        console.error(
          JSON.stringify({ msg: "S3 request failed", error: String((e as Error)?.message ?? e) }),
        );
      }
      const code = known ? err.code : "InternalError";
      const status = known ? err.status : 500;
      const message = known ? err.message : "We encountered an internal error. Please try again.";
      await req.body?.cancel().catch(() => {});
      const extra = (e as { extraHeaders?: Record<string, string> }).extraHeaders ?? {};
      res = req.method === "HEAD"
        ? new Response(null, { status, headers: extra })
        : xmlResponse(errorXml(code, message, decodeURIComponentSafe(url.pathname), reqId), status, extra);
    }
    res.headers.set("x-amz-request-id", reqId);
    return res;
  };
}

/** The parts of a request URL as sent, which `new URL` would change (it resolves `.` and `..` segments). */
interface RawUrl {
  pathname: string;
  search: string;
  searchParams: URLSearchParams;
}

function rawUrl(href: string): RawUrl {
  const start = href.indexOf("/", href.indexOf("//") + 2);
  const rest = start < 0 ? "/" : href.slice(start);
  const q = rest.indexOf("?");
  const pathname = q < 0 ? rest : rest.slice(0, q);
  const search = q < 0 ? "" : rest.slice(q).replace(/#.*$/, "");
  // URLSearchParams reads `+` as a space; SigV4 clients send a space as %20 and `+` as %2B.
  return { pathname, search, searchParams: new URLSearchParams(search.replace(/\+/g, "%2B")) };
}

function decodeURIComponentSafe(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
