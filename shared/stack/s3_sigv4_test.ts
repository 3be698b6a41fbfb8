import assert from "node:assert/strict";
import {
  canonicalQuery,
  canonicalRequest,
  canonicalUri,
  parseAmzDate,
  SigV4Error,
  SigV4Verifier,
  stringToSign,
} from "./s3_sigv4.ts";

// AWS's documented example pair (Signature Version 4 examples of the S3 API reference).
const AKID = "AKIAIOSFODNN7EXAMPLE";
const SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const EMPTY_SHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const AT = parseAmzDate("20130524T000000Z");

function getObjectExample(
  signature: string,
  secretOk = true,
): { v: SigV4Verifier; req: Parameters<SigV4Verifier["verify"]>[0] } {
  const headers = new Headers({
    host: "examplebucket.s3.amazonaws.com",
    range: "bytes=0-9",
    "x-amz-content-sha256": EMPTY_SHA,
    "x-amz-date": "20130524T000000Z",
    authorization: `AWS4-HMAC-SHA256 Credential=${AKID}/20130524/us-east-1/s3/aws4_request,` +
      `SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=${signature}`,
  });
  return {
    v: new SigV4Verifier({ [AKID]: secretOk ? SECRET : "other" }),
    req: { method: "GET", path: "/test.txt", query: "", headers },
  };
}

Deno.test("the canonical request and string to sign of AWS's GET Object example match the documented ones", () => {
  const { req } = getObjectExample("x");
  const canonical = canonicalRequest(req, ["host", "range", "x-amz-content-sha256", "x-amz-date"], EMPTY_SHA);
  assert.equal(
    canonical,
    "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n" +
      `x-amz-content-sha256:${EMPTY_SHA}\nx-amz-date:20130524T000000Z\n\n` +
      `host;range;x-amz-content-sha256;x-amz-date\n${EMPTY_SHA}`,
  );
  assert.equal(
    stringToSign("20130524T000000Z", "20130524/us-east-1/s3/aws4_request", canonical).split("\n")[3],
    "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972",
  );
});

Deno.test("AWS's GET Object example signature verifies, and a wrong secret or signature does not", () => {
  const good = "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41";
  const ok = getObjectExample(good);
  assert.deepEqual(ok.v.verify(ok.req, AT), { accessKeyId: AKID, payloadHash: EMPTY_SHA, presigned: false });
  const wrongSecret = getObjectExample(good, false);
  assert.throws(() => wrongSecret.v.verify(wrongSecret.req, AT), { code: "SignatureDoesNotMatch" });
  const tampered = getObjectExample(good.replace(/^f/, "0"));
  assert.throws(() => tampered.v.verify(tampered.req, AT), { code: "SignatureDoesNotMatch" });
  assert.throws(() => ok.v.verify(ok.req, AT + 16 * 60_000), { code: "RequestTimeTooSkewed" });
  const unknown = new SigV4Verifier({ OTHER: SECRET });
  assert.throws(
    () => unknown.verify(ok.req, AT),
    (e) => e instanceof SigV4Error && e.code === "InvalidAccessKeyId",
  );
});

Deno.test("AWS's presigned URL example verifies until it expires", () => {
  const query = "X-Amz-Algorithm=AWS4-HMAC-SHA256" +
    `&X-Amz-Credential=${AKID}%2F20130524%2Fus-east-1%2Fs3%2Faws4_request` +
    "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host" +
    "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";
  const v = new SigV4Verifier({ [AKID]: SECRET });
  const req = {
    method: "GET",
    path: "/test.txt",
    query,
    headers: new Headers({ host: "examplebucket.s3.amazonaws.com" }),
  };
  assert.equal(v.verify(req, AT + 3600_000).presigned, true);
  assert.throws(() => v.verify(req, AT + 86_401_000), {
    code: "AccessDenied",
    message: "Request has expired",
  });
  assert.throws(() => v.verify({ ...req, path: "/test2.txt" }, AT), { code: "SignatureDoesNotMatch" });
  assert.throws(() => v.verify({ ...req, query: "" }, AT), { code: "AccessDenied" });
});

Deno.test("paths are encoded once per segment and queries are sorted with their values re-encoded", () => {
  assert.equal(canonicalUri("/b/a%20b/c%2Bd/%E2%82%AC~x"), "/b/a%20b/c%2Bd/%E2%82%AC~x");
  assert.equal(canonicalUri("/b/it's(1)*"), "/b/it%27s%281%29%2A");
  assert.equal(canonicalUri("/b/a b+c"), "/b/a%20b%2Bc");
  assert.equal(canonicalUri(""), "/");
  assert.equal(canonicalQuery("prefix=a%2Fb&list-type=2&delete"), "delete=&list-type=2&prefix=a%2Fb");
  assert.equal(canonicalQuery("b=2&a=z&a=y&X-Amz-Signature=s", "X-Amz-Signature"), "a=y&a=z&b=2");
  assert.equal(canonicalQuery("k=a b"), "k=a%20b");
});
