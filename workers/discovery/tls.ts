/**
 * Deterministic TLS for a cluster: every member derives the same certificate authority from
 * `SSL_PASSPHRASE` (a P-256 key whose private scalar is HKDF-SHA-256 of the passphrase and the scope), so
 * members trust each other without copying files between machines, as the Flux image did. Each member then makes
 * its own server key and a certificate for its address signed by that authority.
 *
 * The authority's key never leaves the member's data folder (mode 0600); a different passphrase gives a
 * different authority, whose certificates the others reject.
 */
import { join } from "node:path";
import { run } from "../../shared/stack/process.ts";

/** Where a member's TLS files are. */
export interface TlsFiles {
  ca: string;
  cert: string;
  key: string;
}

const enc = new TextEncoder();

/**
 * The 32-byte private scalar of the cluster's authority. (A value at or above the curve order, with odds
 * of about 2^-32, is refused by OpenSSL at once rather than giving a weak key.)
 */
export async function authoritySeed(passphrase: string, scope: string): Promise<Uint8Array> {
  const ikm = await crypto.subtle.importKey("raw", enc.encode(passphrase), "HKDF", false, ["deriveBits"]);
  const bits = await crypto.subtle.deriveBits(
    {
      name: "HKDF",
      hash: "SHA-256",
      salt: enc.encode("wharf discovery tls"),
      info: enc.encode(`ca:${scope}`),
    },
    ikm,
    256,
  );
  return new Uint8Array(bits);
}

/**
 * A P-256 private key from its scalar as a SEC 1 PEM without the public point, which OpenSSL computes on
 * load. P-256 rather than Ed25519: libpq's SCRAM channel binding needs a certificate signature with a
 * digest, which Ed25519 signatures lack.
 */
export function p256Pem(scalar: Uint8Array): string {
  const head = [0x30, 0x31, 0x02, 0x01, 0x01, 0x04, 0x20];
  const oid = [0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
  const der = new Uint8Array([...head, ...scalar, ...oid]);
  return `-----BEGIN EC PRIVATE KEY-----\n${
    btoa(String.fromCharCode(...der))
  }\n-----END EC PRIVATE KEY-----\n`;
}

async function exists(p: string): Promise<boolean> {
  try {
    await Deno.stat(p);
    return true;
  } catch {
    return false;
  }
}

/**
 * Makes (once) the authority and this member's certificate in `dir`. The certificate names `address`,
 * 127.0.0.1 and localhost, and serves both as server and client certificate.
 */
export async function ensureTls(options: {
  dir: string;
  passphrase: string;
  scope: string;
  address: string;
  validityDays: number;
}): Promise<TlsFiles> {
  const { dir } = options;
  const files = { ca: join(dir, "ca.crt"), cert: join(dir, "server.crt"), key: join(dir, "server.key") };
  if (await exists(files.cert)) return files;
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  const caKey = join(dir, "ca.key"), raw = join(dir, "ca.raw.key");
  await Deno.writeTextFile(raw, p256Pem(await authoritySeed(options.passphrase, options.scope)), {
    mode: 0o600,
  });
  try {
    await run("openssl", ["pkey", "-in", raw, "-out", caKey]);
  } finally {
    await Deno.remove(raw).catch(() => {});
  }
  await Deno.chmod(caKey, 0o600);
  const days = String(options.validityDays);
  await run("openssl", [
    "req",
    "-x509",
    "-new",
    "-key",
    caKey,
    "-out",
    files.ca,
    "-days",
    days,
    "-set_serial",
    "1",
    "-subj",
    `/CN=wharf ${options.scope} CA`,
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  await run("openssl", [
    "req",
    "-new",
    "-nodes",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-keyout",
    files.key,
    "-out",
    join(dir, "server.csr"),
    "-subj",
    `/CN=${options.address}`,
  ]);
  const ip = /^[\d.]+$|:/.test(options.address);
  const ext = join(dir, "server.ext");
  await Deno.writeTextFile(
    ext,
    `subjectAltName=${ip ? "IP" : "DNS"}:${options.address},IP:127.0.0.1,DNS:localhost\n` +
      "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n",
  );
  await run("openssl", [
    "x509",
    "-req",
    "-in",
    join(dir, "server.csr"),
    "-CA",
    files.ca,
    "-CAkey",
    caKey,
    "-CAcreateserial",
    "-out",
    files.cert,
    "-days",
    days,
    "-extfile",
    ext,
  ]);
  await Deno.chmod(files.key, 0o600);
  return files;
}
