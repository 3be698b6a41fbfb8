/**
 * The object store of the local S3 server: buckets as folders, each object as one file (a small JSON
 * header with its key and metadata, then its bytes), and an index of every object kept in memory for
 * GETs and listings (rebuilt from the headers at start).
 *
 * Why this layout: keys are arbitrary UTF-8 up to 1024 bytes (`a` and `a/b` coexist, any character),
 * which no file name can hold, so files are named by the SHA-256 of the key and the key lives in the
 * header. One file per object makes a write atomic with one rename: the body is streamed to a
 * temporary file after a header of reserved size (hashed on the way), the header is filled in, and the
 * file is renamed over the object's. The rename and the index update run synchronously, so two
 * concurrent PUTs of one key leave one of them, whole; a crash or a failed upload leaves only a
 * temporary file, never visible and removed at the next start. One file rather than data + metadata
 * files halves the file creations per PUT, which are the dearest part of a small PUT. Readers that
 * opened the old file keep reading it (POSIX rename semantics).
 */
import { createHash, type Hash } from "node:crypto";
import { join } from "node:path";
import { crc32 } from "node:zlib";

/** An S3 error the server answers with (code, message, HTTP status). */
export class S3Error extends Error {
  constructor(readonly code: string, message: string, readonly status: number) {
    super(message);
    this.name = "S3Error";
  }
}

/** The response headers S3 stores with an object and returns on GET/HEAD. */
export const STORED_HEADERS = [
  "content-type",
  "cache-control",
  "content-disposition",
  "content-encoding",
  "content-language",
  "expires",
] as const;

/** One stored object's metadata. */
export interface ObjectMeta {
  key: string;
  size: number;
  /** Hex MD5 of the body, or `md5-of-md5s-N` for a multipart upload; without quotes. */
  etag: string;
  lastModified: number;
  /** Where the bytes start in the object's file (after the header). */
  offset: number;
  headers: Record<string, string>;
  /** `x-amz-meta-*` values, by lower-case name without the prefix. */
  metadata: Record<string, string>;
}

/** What a new object carries besides its body. */
export interface ObjectAttributes {
  headers: Record<string, string>;
  metadata: Record<string, string>;
}

interface Bucket {
  name: string;
  created: number;
  objects: Map<string, ObjectMeta>;
  sorted: string[] | null;
}

/** An object written to a temporary file, not yet visible. */
export interface TempObject {
  path: string;
  meta: ObjectMeta;
  /** The flexible checksum header to answer with, when the client sent one. */
  checksum?: { name: string; value: string };
}

/** A body as written: its file, size, MD5, header (objects) and the flexible checksum it was checked against. */
interface WrittenBody {
  path: string;
  size: number;
  md5: Buffer;
  meta?: ObjectMeta;
  checksum?: { name: string; value: string };
}

/** How to read and check an incoming body. */
export interface BodyChecks {
  /** Hex SHA-256 the body must have. */
  sha256?: string;
  /** Base64 MD5 the body must have (Content-MD5). */
  md5Base64?: string;
  /** The body is `aws-chunked` (unsigned chunks, optional trailer): decode it. */
  awsChunked?: boolean;
  /** The length the (decoded) body must have. */
  length?: number;
  /**
   * A flexible checksum the client sent (`x-amz-checksum-<algorithm>`, lower-case algorithm), with its
   * base64 value, or without one when it comes in the aws-chunked trailer.
   */
  checksum?: { algorithm: string; expected?: string };
}

/** A checksum of a body, computed while it streams (CRC32, SHA-1, SHA-256: what S3 and the SDKs use). */
export class Checksummer {
  #crc = 0;
  #hash?: Hash;
  constructor(readonly algorithm: "crc32" | "sha1" | "sha256") {
    if (algorithm !== "crc32") this.#hash = createHash(algorithm);
  }
  /** The checksummer of `algorithm` (lower-case), or undefined for one not computed here. */
  static for(algorithm: string): Checksummer | undefined {
    return algorithm === "crc32" || algorithm === "sha1" || algorithm === "sha256"
      ? new Checksummer(algorithm)
      : undefined; // CRC32C and CRC64NVME have no native implementation here: taken unchecked
  }
  /** Adds `data`. */
  update(data: Uint8Array): void {
    if (this.#hash) this.#hash.update(data);
    else this.#crc = crc32(data, this.#crc);
  }
  /** The checksum, base64 (as in `x-amz-checksum-*`). */
  digest(): string {
    if (this.#hash) return this.#hash.digest("base64");
    const b = Buffer.alloc(4);
    b.writeUInt32BE(this.#crc >>> 0);
    return b.toString("base64");
  }
}

/** Listing options (ListObjects v1 and v2 share them). */
export interface ListOptions {
  prefix: string;
  delimiter: string;
  /** Keys after this one only (start-after, marker or a continuation). */
  after: string;
  maxKeys: number;
}

/** One page of a listing. */
export interface ListPage {
  contents: ObjectMeta[];
  commonPrefixes: string[];
  truncated: boolean;
  /** The last key or common prefix of the page (where the next page starts). */
  last?: string;
}

/** One uploaded part of a multipart upload. */
export interface UploadedPart {
  partNumber: number;
  etag: string;
  size: number;
  lastModified: number;
}

/** A multipart upload in progress. */
export interface MultipartUpload extends ObjectAttributes {
  bucket: string;
  key: string;
  initiated: number;
}

/** S3's smallest part (all but the last part of a multipart upload). */
export const MIN_PART_SIZE = 5 * 1024 * 1024;

/** Compares two keys in UTF-8 byte order (S3's listing order), which differs from UTF-16 order above U+FFFF. */
export function compareKeys(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i), y = b.charCodeAt(i);
    if (x === y) continue;
    if (x >= 0xd800 && x <= 0xdfff) x += 0x10000;
    if (y >= 0xd800 && y <= 0xdfff) y += 0x10000;
    return x - y;
  }
  return a.length - b.length;
}

/** S3's bucket naming rules (3–63 of a-z 0-9 . -, starting and ending with a letter or digit, not an IP). */
export function validBucketName(name: string): boolean {
  return /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(name) && !/\.\.|\.-|-\./.test(name) &&
    !/^\d+\.\d+\.\d+\.\d+$/.test(name);
}

const encoder = new TextEncoder();

/** Throws S3's KeyTooLongError for a key over 1024 UTF-8 bytes. */
export function checkKey(key: string): void {
  if (key.length > 1024 || (key.length > 341 && encoder.encode(key).length > 1024)) {
    throw new S3Error("KeyTooLongError", "Your key is too long", 400);
  }
}

const CR = 13, LF = 10;

/**
 * Decodes an `aws-chunked` body (`hex-size[;chunk-signature=…]\r\n` data `\r\n` …, a 0-size chunk, then
 * trailer headers and an empty line), one network chunk at a time.
 */
export class AwsChunkedDecoder {
  #state: "size" | "data" | "crlf" | "trailer" | "done" = "size";
  #line: number[] = [];
  #left = 0;
  /** Trailer headers (lower-case names), e.g. `x-amz-checksum-crc32`. */
  readonly trailers = new Map<string, string>();

  /** The data bytes in `chunk`. */
  push(chunk: Uint8Array): Uint8Array[] {
    const out: Uint8Array[] = [];
    let i = 0;
    while (i < chunk.length) {
      if (this.#state === "data") {
        const n = Math.min(this.#left, chunk.length - i);
        out.push(chunk.subarray(i, i + n));
        i += n;
        this.#left -= n;
        if (this.#left === 0) this.#state = "crlf";
        continue;
      }
      if (this.#state === "done") {
        throw new S3Error("IncompleteBody", "Data after the end of the aws-chunked body", 400);
      }
      const b = chunk[i++];
      if (b !== LF) {
        if (this.#line.length > 4096) throw new S3Error("IncompleteBody", "Malformed aws-chunked body", 400);
        this.#line.push(b);
        continue;
      }
      const line = String.fromCharCode(...this.#line).replace(/\r$/, "");
      this.#line = [];
      if (this.#state === "crlf") {
        if (line !== "") throw new S3Error("IncompleteBody", "Malformed aws-chunked body", 400);
        this.#state = "size";
      } else if (this.#state === "size") {
        const size = parseInt(line.split(";")[0], 16);
        if (!/^[0-9a-fA-F]+$/.test(line.split(";")[0]) || !Number.isSafeInteger(size)) {
          throw new S3Error("IncompleteBody", "Malformed aws-chunked body", 400);
        }
        if (size === 0) this.#state = "trailer";
        else {
          this.#left = size;
          this.#state = "data";
        }
      } else if (this.#state === "trailer") {
        if (line === "") this.#state = "done";
        else {
          const c = line.indexOf(":");
          if (c > 0) this.trailers.set(line.slice(0, c).trim().toLowerCase(), line.slice(c + 1).trim());
        }
      }
    }
    return out;
  }

  /** Throws unless the body ended where the format says it ends. */
  end(): void {
    // A body may stop right after the trailer without the final empty line.
    if (this.#state === "trailer" && this.#line.length === 0) this.#state = "done";
    if (this.#state !== "done" || (this.#line.length && !(this.#line.length === 1 && this.#line[0] === CR))) {
      throw new S3Error("IncompleteBody", "The aws-chunked body ended early", 400);
    }
  }
}

/** Bytes gathered before a hash update and a write. */
const WRITE_BUFFER = 256 * 1024;
const MAGIC = new TextEncoder().encode("WS3\x01");
/** Placeholders as wide as the widest real values, so the header's reserved size holds the final one. */
const ETAG_WIDTH = "x".repeat(48);
const SIZE_WIDTH = Number.MAX_SAFE_INTEGER;

function sha256Key(key: string): string {
  return createHash("sha256").update(key).digest("hex");
}

function writeAllSync(file: Deno.FsFile, data: Uint8Array): void {
  let off = 0;
  while (off < data.length) off += file.writeSync(data.subarray(off));
}

/** The header bytes of `meta`: magic, JSON length (4 bytes), JSON padded with spaces to `reserve`. */
function headerBytes(meta: ObjectMeta, reserve?: number): Uint8Array {
  const json = encoder.encode(JSON.stringify(meta));
  const size = reserve ?? 8 + json.length;
  if (8 + json.length > size) throw new Error("The object header outgrew its reserved size");
  const out = new Uint8Array(size).fill(0x20);
  out.set(MAGIC, 0);
  new DataView(out.buffer).setUint32(4, json.length);
  out.set(json, 8);
  return out;
}

/** Reads the header of an object file, or undefined when it is not one. */
function readHeader(path: string): ObjectMeta | undefined {
  using file = Deno.openSync(path);
  const head = new Uint8Array(8);
  if (file.readSync(head) !== 8 || !MAGIC.every((b, i) => head[i] === b)) return undefined;
  const len = new DataView(head.buffer).getUint32(4);
  const json = new Uint8Array(len);
  let got = 0;
  while (got < len) {
    const n = file.readSync(json.subarray(got));
    if (n === null) return undefined;
    got += n;
  }
  return JSON.parse(new TextDecoder().decode(json)) as ObjectMeta;
}

/** The store of one server (one folder). */
export class S3Store {
  readonly #dir: string;
  readonly #tmp: string;
  readonly #uploads: string;
  readonly #buckets = new Map<string, Bucket>();

  private constructor(dir: string) {
    this.#dir = dir;
    this.#tmp = join(dir, ".tmp");
    this.#uploads = join(dir, ".multipart");
  }

  /** Opens the store in `dir`: loads every bucket's index and removes what a crash left behind. */
  static async open(dir: string): Promise<S3Store> {
    const s = new S3Store(dir);
    await Deno.mkdir(dir, { recursive: true });
    await Deno.remove(s.#tmp, { recursive: true }).catch(() => {});
    await Deno.mkdir(s.#tmp, { recursive: true });
    await Deno.mkdir(s.#uploads, { recursive: true });
    let foreign = false;
    for await (const e of Deno.readDir(dir)) {
      if (!e.isDirectory || e.name.startsWith(".")) continue;
      const path = join(dir, e.name);
      const st = await Deno.stat(path);
      const bucket: Bucket = {
        name: e.name,
        created: (st.birthtime ?? st.mtime)?.getTime() ?? Date.now(),
        objects: new Map(),
        sorted: null,
      };
      for await (const f of Deno.readDir(path)) {
        if (f.name.endsWith("._S3rver_object")) foreign = true;
        if (!f.name.endsWith(".obj")) continue;
        try {
          const meta = readHeader(join(path, f.name));
          if (meta) bucket.objects.set(meta.key, meta);
        } catch {
          // Cannot happen with atomic renames; a damaged file is skipped rather than fatal.
        }
      }
      s.#buckets.set(e.name, bucket);
    }
    if (foreign) {
      console.error(
        "The local S3 folder holds objects in s3rver's layout, which this server does not read: " +
          "remove the folder to start afresh.",
      );
    }
    return s;
  }

  #bucket(name: string): Bucket {
    const b = this.#buckets.get(name);
    if (!b) throw new S3Error("NoSuchBucket", "The specified bucket does not exist", 404);
    return b;
  }

  #path(bucket: string, key: string): string {
    return join(this.#dir, bucket, `${sha256Key(key)}.obj`);
  }

  /** Every bucket, by name. */
  listBuckets(): { name: string; created: number }[] {
    return [...this.#buckets.values()].map((b) => ({ name: b.name, created: b.created }))
      .sort((a, b) => compareKeys(a.name, b.name));
  }

  /** Whether bucket `name` exists. */
  hasBucket(name: string): boolean {
    return this.#buckets.has(name);
  }

  /** Creates bucket `name`; false when it exists already. */
  createBucket(name: string): boolean {
    if (!validBucketName(name)) {
      throw new S3Error("InvalidBucketName", "The specified bucket is not valid.", 400);
    }
    if (this.#buckets.has(name)) return false;
    Deno.mkdirSync(join(this.#dir, name), { recursive: true });
    this.#buckets.set(name, { name, created: Date.now(), objects: new Map(), sorted: null });
    return true;
  }

  /** Deletes an empty bucket. */
  deleteBucket(name: string): void {
    const b = this.#bucket(name);
    if (b.objects.size) {
      throw new S3Error("BucketNotEmpty", "The bucket you tried to delete is not empty", 409);
    }
    this.#buckets.delete(name);
    Deno.removeSync(join(this.#dir, name), { recursive: true });
  }

  /** The object `key` of `bucket` (NoSuchBucket when the bucket is missing). */
  head(bucket: string, key: string): ObjectMeta | undefined {
    return this.#bucket(bucket).objects.get(key);
  }

  /**
   * Opens the bytes of `meta`, positioned at byte `start`; the caller closes the file. Synchronous: an
   * open and a seek take microseconds, less than handing them to a thread.
   */
  openBody(bucket: string, meta: ObjectMeta, start = 0): Deno.FsFile {
    const file = Deno.openSync(this.#path(bucket, meta.key));
    try {
      file.seekSync(meta.offset + start, Deno.SeekMode.Start);
      return file;
    } catch (e) {
      file.close();
      throw e;
    }
  }

  /**
   * The bytes of `meta`'s object, in one synchronous read (for objects of bounded size): into `into` when
   * it is large enough (the result is then a view of it, valid until `into` is written again), else into
   * a new array.
   */
  readWhole(bucket: string, meta: ObjectMeta, into?: Uint8Array<ArrayBuffer>): Uint8Array<ArrayBuffer> {
    using file = this.openBody(bucket, meta);
    const out = into && into.length >= meta.size ? into.subarray(0, meta.size) : new Uint8Array(meta.size);
    let got = 0;
    while (got < out.length) {
      const n = file.readSync(out.subarray(got));
      if (n === null) throw new Error("The object ended early");
      got += n;
    }
    return out;
  }

  /**
   * Streams `body` to a temporary file, computing its MD5 (and SHA-256 when it must be checked) on the
   * way. With `key`, the file is an object (header first); without, a bare multipart part. Throws
   * (leaving nothing) when a check fails or the body ends early. Writes are synchronous: on a page-cache
   * file they take microseconds, less than handing each chunk to a thread.
   */
  async #write(
    body: AsyncIterable<Uint8Array> | null,
    checks: BodyChecks,
    object?: { key: string; attrs: ObjectAttributes; etag?: string },
  ): Promise<WrittenBody> {
    if (object) checkKey(object.key);
    const path = join(this.#tmp, crypto.randomUUID());
    const file = Deno.openSync(path, { write: true, createNew: true });
    const md5 = createHash("md5");
    const sha: Hash | undefined = checks.sha256 ? createHash("sha256") : undefined;
    const decoder = checks.awsChunked ? new AwsChunkedDecoder() : undefined;
    const summer = checks.checksum ? Checksummer.for(checks.checksum.algorithm) : undefined;
    let size = 0;
    try {
      let reserve = 0;
      const metaOf = (etag: string, bytes: number, offset = reserve): ObjectMeta => ({
        key: object!.key,
        size: bytes,
        etag,
        lastModified: Math.floor(Date.now() / 1000) * 1000,
        offset,
        headers: object!.attrs.headers,
        metadata: object!.attrs.metadata,
      });
      if (object) {
        reserve = headerBytes(metaOf(ETAG_WIDTH, SIZE_WIDTH, 99_999_999)).length;
        file.seekSync(reserve, Deno.SeekMode.Start);
      }
      try {
        // Network chunks are small (tens of KiB): gathered into a larger buffer, they cost one hash
        // update and one write per buffer rather than per chunk.
        // The buffer is no larger than the body announced, so a small PUT allocates little.
        const cap = Math.max(1024, Math.min(WRITE_BUFFER, checks.length ?? WRITE_BUFFER));
        let buf: Uint8Array | undefined, used = 0;
        const flush = () => {
          if (!used) return;
          const data = buf!.subarray(0, used);
          md5.update(data);
          sha?.update(data);
          summer?.update(data);
          writeAllSync(file, data);
          used = 0;
        };
        if (body) {
          for await (const chunk of body) {
            for (const piece of decoder ? decoder.push(chunk) : [chunk]) {
              size += piece.length;
              if (piece.length >= cap / 2) {
                flush();
                md5.update(piece);
                sha?.update(piece);
                summer?.update(piece);
                writeAllSync(file, piece);
                continue;
              }
              buf ??= new Uint8Array(cap);
              if (used + piece.length > cap) flush();
              buf.set(piece, used);
              used += piece.length;
            }
          }
        }
        flush();
        decoder?.end();
        if (checks.length !== undefined && size !== checks.length) {
          throw new S3Error(
            "IncompleteBody",
            "You did not provide the number of bytes specified by the Content-Length HTTP header",
            400,
          );
        }
        if (sha && sha.digest("hex") !== checks.sha256!.toLowerCase()) {
          throw new S3Error(
            "XAmzContentSHA256Mismatch",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
            400,
          );
        }
        const digest = md5.digest();
        if (checks.md5Base64 !== undefined && digest.toString("base64") !== checks.md5Base64.trim()) {
          throw new S3Error(
            "BadDigest",
            "The Content-MD5 you specified did not match what we received.",
            400,
          );
        }
        let checksum: WrittenBody["checksum"];
        if (summer) {
          const name = `x-amz-checksum-${summer.algorithm}`;
          const expected = checks.checksum!.expected ?? decoder?.trailers.get(name);
          const value = summer.digest();
          if (expected === undefined) {
            throw new S3Error("InvalidRequest", `The ${name} trailer is missing`, 400);
          }
          if (expected.trim() !== value) {
            throw new S3Error(
              "BadDigest",
              `The ${summer.algorithm.toUpperCase()} you specified did not match the calculated checksum.`,
              400,
            );
          }
          checksum = { name, value };
        }
        let meta: ObjectMeta | undefined;
        if (object) {
          meta = metaOf(object.etag ?? digest.toString("hex"), size);
          file.seekSync(0, Deno.SeekMode.Start);
          writeAllSync(file, headerBytes(meta, reserve));
        }
        return { path, size, md5: digest, meta, checksum };
      } finally {
        file.close();
      }
    } catch (e) {
      await Deno.remove(path).catch(() => {});
      throw e;
    }
  }

  /** Writes a new object's file (not yet visible: see {@linkcode commit}). */
  async writeObject(
    key: string,
    attrs: ObjectAttributes,
    body: AsyncIterable<Uint8Array> | null,
    checks: BodyChecks = {},
    etag?: string,
  ): Promise<TempObject> {
    const r = await this.#write(body, checks, { key, attrs, etag });
    return { path: r.path, meta: r.meta!, checksum: r.checksum };
  }

  /** Drops a temporary file that will not be committed. */
  async discard(tmp: { path: string }): Promise<void> {
    await Deno.remove(tmp.path).catch(() => {});
  }

  /**
   * Makes `tmp` the object of `bucket`, atomically (see the module doc). Synchronous on purpose:
   * nothing else runs between the rename and the index update.
   */
  commit(bucket: string, tmp: TempObject): ObjectMeta {
    const b = this.#bucket(bucket);
    Deno.renameSync(tmp.path, this.#path(bucket, tmp.meta.key));
    if (!b.objects.has(tmp.meta.key)) b.sorted = null;
    b.objects.set(tmp.meta.key, tmp.meta);
    return tmp.meta;
  }

  /** Deletes object `key`; false when there was none. */
  delete(bucket: string, key: string): boolean {
    const b = this.#bucket(bucket);
    if (!b.objects.has(key)) return false;
    Deno.removeSync(this.#path(bucket, key));
    b.objects.delete(key);
    b.sorted = null;
    return true;
  }

  /** The bytes of `meta`, as a stream (for CopyObject). */
  readBody(bucket: string, meta: ObjectMeta): ReadableStream<Uint8Array> {
    return this.openBody(bucket, meta).readable;
  }

  /** One page of the keys of `bucket` in S3's order, rolled up at `delimiter` after `prefix`. */
  list(bucket: string, o: ListOptions): ListPage {
    const b = this.#bucket(bucket);
    const sorted = b.sorted ??= [...b.objects.keys()].sort(compareKeys);
    const start = o.after && compareKeys(o.after, o.prefix) >= 0 ? o.after : o.prefix;
    // First key past `start` (strictly, when it is a marker).
    let lo = 0, hi = sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const c = compareKeys(sorted[mid], start);
      if (c < 0 || (c === 0 && start === o.after)) lo = mid + 1;
      else hi = mid;
    }
    const page: ListPage = { contents: [], commonPrefixes: [], truncated: false };
    let skipPrefix = o.delimiter && o.after.startsWith(o.prefix) && o.after.endsWith(o.delimiter)
      ? o.after
      : "";
    for (let i = lo; i < sorted.length; i++) {
      const key = sorted[i];
      if (!key.startsWith(o.prefix)) break;
      if (skipPrefix && key.startsWith(skipPrefix)) continue;
      let common: string | undefined;
      if (o.delimiter) {
        const d = key.indexOf(o.delimiter, o.prefix.length);
        if (d >= 0) common = key.slice(0, d + o.delimiter.length);
      }
      if (page.contents.length + page.commonPrefixes.length >= o.maxKeys) {
        page.truncated = true;
        break;
      }
      if (common !== undefined) {
        page.commonPrefixes.push(common);
        page.last = common;
        skipPrefix = common;
      } else {
        page.contents.push(b.objects.get(key)!);
        page.last = key;
      }
    }
    return page;
  }

  // --- Multipart uploads: `.multipart/<id>/upload.json` and one file per part, `<n>.<md5>`. ---

  #uploadDir(id: string): string {
    if (!/^[0-9a-f]{32}$/.test(id)) {
      throw new S3Error("NoSuchUpload", "The specified multipart upload does not exist.", 404);
    }
    return join(this.#uploads, id);
  }

  /** The upload `id` of `bucket`/`key`, or NoSuchUpload. */
  async upload(bucket: string, key: string, id: string): Promise<MultipartUpload> {
    try {
      const u = JSON.parse(
        await Deno.readTextFile(join(this.#uploadDir(id), "upload.json")),
      ) as MultipartUpload;
      if (u.bucket === bucket && u.key === key) return u;
    } catch (e) {
      if (e instanceof S3Error) throw e;
    }
    throw new S3Error("NoSuchUpload", "The specified multipart upload does not exist.", 404);
  }

  /** Starts a multipart upload; returns its id. */
  async createUpload(bucket: string, key: string, attrs: ObjectAttributes): Promise<string> {
    this.#bucket(bucket);
    checkKey(key);
    const id = crypto.randomUUID().replace(/-/g, "");
    const dir = this.#uploadDir(id);
    await Deno.mkdir(dir);
    const u: MultipartUpload = { bucket, key, initiated: Date.now(), ...attrs };
    await Deno.writeTextFile(join(dir, "upload.json"), JSON.stringify(u));
    return id;
  }

  /** Streams part `n` of upload `id` (replacing an earlier upload of that part); returns its ETag. */
  async putPart(
    id: string,
    n: number,
    body: AsyncIterable<Uint8Array> | null,
    checks: BodyChecks,
  ): Promise<string> {
    const dir = this.#uploadDir(id);
    const tmp = await this.#write(body, checks);
    const etag = tmp.md5.toString("hex");
    const name = `${n}.${etag}`;
    try {
      Deno.renameSync(tmp.path, join(dir, name));
    } catch (e) {
      await this.discard(tmp);
      throw e;
    }
    for await (const f of Deno.readDir(dir)) {
      if (f.name.startsWith(`${n}.`) && f.name !== name) await Deno.remove(join(dir, f.name)).catch(() => {});
    }
    return etag;
  }

  /** The parts of upload `id`, by number. */
  async parts(id: string): Promise<UploadedPart[]> {
    const dir = this.#uploadDir(id);
    const out: UploadedPart[] = [];
    for await (const f of Deno.readDir(dir)) {
      const m = /^(\d+)\.([0-9a-f]{32})$/.exec(f.name);
      if (!m) continue;
      const st = await Deno.stat(join(dir, f.name)).catch(() => undefined);
      if (!st) continue;
      out.push({
        partNumber: Number(m[1]),
        etag: m[2],
        size: st.size,
        lastModified: st.mtime?.getTime() ?? 0,
      });
    }
    return out.sort((a, b) => a.partNumber - b.partNumber);
  }

  /** Joins the listed parts of upload `id` into its object (S3's rules on order, ETags and sizes). */
  async completeUpload(
    bucket: string,
    key: string,
    id: string,
    wanted: { partNumber: number; etag: string }[],
  ): Promise<ObjectMeta> {
    const u = await this.upload(bucket, key, id);
    if (!wanted.length) throw new S3Error("MalformedXML", "The XML you provided was not well-formed", 400);
    const have = new Map((await this.parts(id)).map((p) => [p.partNumber, p]));
    const chosen: UploadedPart[] = [];
    for (const [i, w] of wanted.entries()) {
      if (i && w.partNumber <= wanted[i - 1].partNumber) {
        throw new S3Error("InvalidPartOrder", "The list of parts was not in ascending order.", 400);
      }
      const p = have.get(w.partNumber);
      if (!p || p.etag !== w.etag.toLowerCase()) {
        throw new S3Error("InvalidPart", "One or more of the specified parts could not be found.", 400);
      }
      if (i < wanted.length - 1 && p.size < MIN_PART_SIZE) {
        throw new S3Error(
          "EntityTooSmall",
          "Your proposed upload is smaller than the minimum allowed object size.",
          400,
        );
      }
      chosen.push(p);
    }
    const dir = this.#uploadDir(id);
    const md5s = createHash("md5");
    for (const p of chosen) md5s.update(Buffer.from(p.etag, "hex"));
    const etag = `${md5s.digest("hex")}-${chosen.length}`;
    async function* concat() {
      for (const p of chosen) {
        const file = await Deno.open(join(dir, `${p.partNumber}.${p.etag}`));
        yield* file.readable; // the stream closes the file at its end
      }
    }
    const tmp = await this.writeObject(key, { headers: u.headers, metadata: u.metadata }, concat(), {}, etag);
    const meta = this.commit(bucket, tmp);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    return meta;
  }

  /** Abandons upload `id` and its parts. */
  async abortUpload(bucket: string, key: string, id: string): Promise<void> {
    await this.upload(bucket, key, id);
    await Deno.remove(this.#uploadDir(id), { recursive: true });
  }
}
