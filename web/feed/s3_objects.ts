/**
 * Whole-object reads and writes for imgproc's hot path (one GET of the upload, one PUT of the thumbnail
 * per image), sent with Deno's fetch and signed with the SDK's own SigV4 signer.
 *
 * Why not `S3Client.send`: its middleware stack (endpoint rules, retries, body mixins, response
 * parsing) costs about 3 ms of CPU per GET of a 3 MiB image and 1 ms per small PUT, a tenth of what the
 * thumbnail itself costs. Everything the stack decides that matters here is still the SDK's: the bucket's
 * URL (path-style for a local endpoint, virtual-hosted on AWS, any partition) is taken once per bucket
 * from a URL the SDK presigns, and the credentials and region are the client's own providers (so the
 * default chain, instance roles and their refresh work as for every other call). What this leaves out:
 * the SDK's own retries (imgproc retries the whole event with backoff) and its clock-skew correction.
 */
import { GetObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { HttpRequest } from "@smithy/protocol-http";
import { SignatureV4 } from "@smithy/signature-v4";
import { createHash, createHmac, type Hash, type Hmac } from "node:crypto";

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

/** Reads and writes whole objects with `client`'s endpoint, credentials and region. */
export class S3Objects {
  readonly #client: S3Client;
  readonly #signer: SignatureV4;
  readonly #bases = new Map<string, Promise<URL>>();

  constructor(client: S3Client) {
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

  async #send(
    method: "GET" | "PUT",
    bucket: string,
    key: string,
    headers: Record<string, string>,
    body?: Uint8Array,
  ): Promise<Response> {
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
    const res = await fetch(url, {
      method,
      headers: send,
      body: body as BodyInit | undefined,
    });
    if (res.ok) return res;
    const text = await res.text().catch(() => "");
    const code = /<Code>([^<]+)<\/Code>/.exec(text)?.[1] ?? `HTTP${res.status}`;
    const message = /<Message>([^<]*)<\/Message>/.exec(text)?.[1] ?? res.statusText;
    throw new S3ObjectError(
      code,
      res.status,
      `Cannot ${method === "GET" ? "read" : "write"} s3://${bucket}/${key}: ${code}: ${message}`,
    );
  }

  /** The bytes of an object; throws {@linkcode S3ObjectError} (`NoSuchKey` when it is not there). */
  async get(bucket: string, key: string): Promise<Uint8Array> {
    const res = await this.#send("GET", bucket, key, { "x-amz-content-sha256": "UNSIGNED-PAYLOAD" });
    // Collected from the stream: cheaper under Deno than `arrayBuffer()` for large bodies.
    const chunks: Uint8Array[] = [];
    let size = 0;
    for await (const c of res.body!) {
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

  /** Writes an object (its bytes signed: a body changed on the way is refused). */
  async put(
    bucket: string,
    key: string,
    body: Uint8Array,
    meta: { contentType?: string; cacheControl?: string } = {},
  ): Promise<void> {
    const headers: Record<string, string> = {
      "content-length": String(body.byteLength),
      "x-amz-content-sha256": createHash("sha256").update(body).digest("hex"),
    };
    if (meta.contentType) headers["content-type"] = meta.contentType;
    if (meta.cacheControl) headers["cache-control"] = meta.cacheControl;
    const res = await this.#send("PUT", bucket, key, headers, body);
    await res.body?.cancel();
  }
}
