/**
 * AWS Signature Version 4 as S3 checks it, for the local S3 server: the canonical request, the string
 * to sign and the signing key, and the verification of both forms a client sends (the
 * `Authorization: AWS4-HMAC-SHA256 …` header and the presigned query string). The local server checks
 * signatures for real, so a client that signs wrongly fails here as it would on AWS rather than later.
 *
 * Pure functions over plain values (method, raw path, raw query, headers, clock), so they are tested
 * against AWS's published example signatures.
 */
import { createHash, createHmac, timingSafeEqual } from "node:crypto";

/** The payload hash of a request whose body is not signed (presigned URLs, streamed uploads). */
export const UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD";

/** A refusal, in S3's terms (the server turns it into S3's XML error). */
export class SigV4Error extends Error {
  constructor(readonly code: string, message: string, readonly status = 403) {
    super(message);
    this.name = "SigV4Error";
  }
}

/** What the verifier needs of a request. */
export interface SignedRequest {
  method: string;
  /** The path as sent (percent-encoded), without the query. */
  path: string;
  /** The query as sent, without the leading `?` (may be empty). */
  query: string;
  headers: Headers;
}

/** A verified request: who signed it, and how its body is to be checked. */
export interface Verified {
  accessKeyId: string;
  /** A hex SHA-256 to check the body against, `UNSIGNED-PAYLOAD`, or a `STREAMING-…` form. */
  payloadHash: string;
  presigned: boolean;
}

/** S3's URI encoding (RFC 3986 unreserved characters kept, the rest `%XX` upper-case). */
export function uriEncode(s: string, keepSlash = false): string {
  const e = encodeURIComponent(s).replace(
    /[!'()*]/g,
    (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase(),
  );
  return keepSlash ? e.replace(/%2F/g, "/") : e;
}

function decode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** The canonical URI of an S3 request: each path segment decoded, then encoded once. */
export function canonicalUri(rawPath: string): string {
  return rawPath.split("/").map((seg) => uriEncode(decode(seg))).join("/") || "/";
}

/** The canonical query string: names and values re-encoded, sorted by name then value. */
export function canonicalQuery(rawQuery: string, skip?: string): string {
  if (!rawQuery) return "";
  const pairs: [string, string][] = [];
  for (const part of rawQuery.split("&")) {
    if (!part) continue;
    const i = part.indexOf("=");
    const name = uriEncode(decode(i < 0 ? part : part.slice(0, i)));
    if (name === skip) continue;
    pairs.push([name, i < 0 ? "" : uriEncode(decode(part.slice(i + 1)))]);
  }
  pairs.sort((a, b) => a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0);
  return pairs.map(([k, v]) => `${k}=${v}`).join("&");
}

/** The canonical request (the text whose hash is signed). */
export function canonicalRequest(
  req: SignedRequest,
  signedHeaders: string[],
  payloadHash: string,
  skipQuery?: string,
): string {
  const headers = signedHeaders.map((h) => {
    const v = (req.headers.get(h) ?? "").trim().replace(/\s+/g, " ");
    return `${h}:${v}\n`;
  }).join("");
  return [
    req.method,
    canonicalUri(req.path),
    canonicalQuery(req.query, skipQuery),
    headers,
    signedHeaders.join(";"),
    payloadHash,
  ].join("\n");
}

/** The string to sign for `canonical` at `amzDate` (`YYYYMMDDTHHMMSSZ`) in `scope`. */
export function stringToSign(amzDate: string, scope: string, canonical: string): string {
  return ["AWS4-HMAC-SHA256", amzDate, scope, createHash("sha256").update(canonical).digest("hex")].join(
    "\n",
  );
}

/** The signing key of `secret` for a day, region and service. */
export function signingKey(secret: string, date: string, region: string, service: string): Buffer {
  const kDate = createHmac("sha256", "AWS4" + secret).update(date).digest();
  const kRegion = createHmac("sha256", kDate).update(region).digest();
  const kService = createHmac("sha256", kRegion).update(service).digest();
  return createHmac("sha256", kService).update("aws4_request").digest();
}

/** The hex signature of `toSign` with `key`. */
export function sign(key: Buffer, toSign: string): string {
  return createHmac("sha256", key).update(toSign).digest("hex");
}

/** `YYYYMMDDTHHMMSSZ` → milliseconds since the epoch, or NaN. */
export function parseAmzDate(s: string): number {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s);
  return m ? Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]) : NaN;
}

/** Largest clock difference S3 accepts between a signed request and the server. */
export const MAX_SKEW_MS = 15 * 60_000;

interface Scope {
  accessKeyId: string;
  secret: string;
  date: string;
  region: string;
  service: string;
}

/** Verifies requests against a fixed set of credentials (access key id → secret). */
export class SigV4Verifier {
  readonly #secrets: Map<string, string>;
  readonly #keys = new Map<string, Buffer>();

  constructor(credentials: Record<string, string>) {
    this.#secrets = new Map(Object.entries(credentials));
  }

  #key(accessKeyId: string, secret: string, date: string, region: string, service: string): Buffer {
    const id = `${accessKeyId}/${date}/${region}/${service}`;
    let k = this.#keys.get(id);
    if (!k) {
      if (this.#keys.size > 64) this.#keys.clear();
      k = signingKey(secret, date, region, service);
      this.#keys.set(id, k);
    }
    return k;
  }

  /** Checks `req`'s signature (header or presigned form) at time `now`; throws {@linkcode SigV4Error}. */
  verify(req: SignedRequest, now = Date.now()): Verified {
    const auth = req.headers.get("authorization");
    if (auth) return this.#verifyHeader(req, auth, now);
    if (/(^|&)X-Amz-Signature=/.test(req.query)) return this.#verifyQuery(req, now);
    throw new SigV4Error("AccessDenied", "Access Denied");
  }

  #scope(credential: string): Scope {
    const parts = credential.split("/");
    if (parts.length !== 5 || parts[4] !== "aws4_request" || !/^\d{8}$/.test(parts[1])) {
      throw new SigV4Error("AuthorizationQueryParametersError", "The credential is malformed", 400);
    }
    const [accessKeyId, date, region, service] = parts;
    const secret = this.#secrets.get(accessKeyId);
    if (secret === undefined) {
      throw new SigV4Error(
        "InvalidAccessKeyId",
        "The AWS Access Key Id you provided does not exist in our records.",
      );
    }
    if (service !== "s3") {
      throw new SigV4Error(
        "AuthorizationHeaderMalformed",
        `The credential names service ${service}, not s3`,
        400,
      );
    }
    return { accessKeyId, secret, date, region, service };
  }

  #check(
    req: SignedRequest,
    s: Scope,
    amzDate: string,
    signedHeaders: string[],
    payloadHash: string,
    signature: string,
    skipQuery?: string,
  ): void {
    if (!signedHeaders.includes("host")) {
      throw new SigV4Error("AccessDenied", "The host header must be signed", 403);
    }
    if (signedHeaders.includes("content-length") && !req.headers.has("content-length")) {
      // A streamed body sent chunked after the length was signed (fetch drops the header): as on S3.
      throw new SigV4Error("MissingContentLength", "You must provide the Content-Length HTTP header.", 411);
    }
    if (amzDate.slice(0, 8) !== s.date) {
      throw new SigV4Error("SignatureDoesNotMatch", "The credential date does not match the request date");
    }
    const canonical = canonicalRequest(req, signedHeaders, payloadHash, skipQuery);
    const scope = `${s.date}/${s.region}/${s.service}/aws4_request`;
    const expected = sign(
      this.#key(s.accessKeyId, s.secret, s.date, s.region, s.service),
      stringToSign(amzDate, scope, canonical),
    );
    const a = new TextEncoder().encode(expected), b = new TextEncoder().encode(signature.toLowerCase());
    if (a.length !== b.length || !timingSafeEqual(a, b)) {
      throw new SigV4Error(
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
      );
    }
  }

  #verifyHeader(req: SignedRequest, auth: string, now: number): Verified {
    const m = /^AWS4-HMAC-SHA256\s+(.*)$/.exec(auth.trim());
    if (!m) throw new SigV4Error("InvalidArgument", "Only AWS4-HMAC-SHA256 authorization is supported", 400);
    const fields = new Map<string, string>();
    for (const part of m[1].split(",")) {
      const i = part.indexOf("=");
      if (i > 0) fields.set(part.slice(0, i).trim(), part.slice(i + 1).trim());
    }
    const credential = fields.get("Credential"),
      signed = fields.get("SignedHeaders"),
      sig = fields.get("Signature");
    if (!credential || !signed || !sig) {
      throw new SigV4Error("AuthorizationHeaderMalformed", "The authorization header is malformed", 400);
    }
    const s = this.#scope(credential);
    const amzDate = req.headers.get("x-amz-date") ?? "";
    const t = parseAmzDate(amzDate);
    if (Number.isNaN(t)) {
      throw new SigV4Error("AccessDenied", "AWS authentication requires a valid x-amz-date header");
    }
    if (Math.abs(now - t) > MAX_SKEW_MS) {
      throw new SigV4Error(
        "RequestTimeTooSkewed",
        "The difference between the request time and the current time is too large.",
      );
    }
    const payloadHash = req.headers.get("x-amz-content-sha256");
    if (!payloadHash) {
      throw new SigV4Error(
        "InvalidRequest",
        "Missing required header for this request: x-amz-content-sha256",
        400,
      );
    }
    this.#check(req, s, amzDate, signed.split(";"), payloadHash, sig);
    return { accessKeyId: s.accessKeyId, payloadHash, presigned: false };
  }

  #verifyQuery(req: SignedRequest, now: number): Verified {
    const q = new URLSearchParams(req.query);
    const get = (name: string) => {
      const v = q.get(name);
      if (!v) {
        throw new SigV4Error(
          "AuthorizationQueryParametersError",
          `Query-string authentication version 4 requires the ${name} parameter`,
          400,
        );
      }
      return v;
    };
    if (get("X-Amz-Algorithm") !== "AWS4-HMAC-SHA256") {
      throw new SigV4Error(
        "AuthorizationQueryParametersError",
        "X-Amz-Algorithm only supports AWS4-HMAC-SHA256",
        400,
      );
    }
    const s = this.#scope(get("X-Amz-Credential"));
    const amzDate = get("X-Amz-Date");
    const t = parseAmzDate(amzDate);
    const expires = Number(get("X-Amz-Expires"));
    if (Number.isNaN(t) || !Number.isInteger(expires) || expires < 1 || expires > 604_800) {
      throw new SigV4Error(
        "AuthorizationQueryParametersError",
        "X-Amz-Date or X-Amz-Expires is invalid",
        400,
      );
    }
    if (t - now > MAX_SKEW_MS) throw new SigV4Error("AccessDenied", "Request is not valid yet");
    const signature = get("X-Amz-Signature");
    const payloadHash = q.get("X-Amz-Content-Sha256") ?? UNSIGNED_PAYLOAD;
    this.#check(
      req,
      s,
      amzDate,
      get("X-Amz-SignedHeaders").split(";"),
      payloadHash,
      signature,
      "X-Amz-Signature",
    );
    // S3 checks the signature first, so a tampered URL is a signature error even when expired.
    if (now > t + expires * 1000) throw new SigV4Error("AccessDenied", "Request has expired");
    return { accessKeyId: s.accessKeyId, payloadHash, presigned: true };
  }
}
