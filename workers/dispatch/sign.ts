/**
 * Ed25519 code signatures with WebCrypto. A node given trusted public keys refuses, at call time, any
 * function whose code does not carry a valid signature by one of them, so code changed in the table by
 * someone without the private key never runs.
 */

function fromBase64(b64: string): Uint8Array<ArrayBuffer> {
  const bin = atob(b64.trim());
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function toBase64(bytes: ArrayBuffer): string {
  let s = "";
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
  return btoa(s);
}

/** Imports raw 32-byte public keys given in base64 (comma separated in `DISPATCH_TRUSTED_KEYS`). */
export async function importTrustedKeys(list: string[]): Promise<CryptoKey[]> {
  return await Promise.all(
    list.filter((k) => k.trim()).map((k) =>
      crypto.subtle.importKey("raw", fromBase64(k), { name: "Ed25519" }, false, ["verify"])
    ),
  );
}

/** Signs code (for tools and tests); returns the base64 signature. */
export async function signCode(privateKey: CryptoKey, code: string): Promise<string> {
  return toBase64(await crypto.subtle.sign("Ed25519", privateKey, new TextEncoder().encode(code)));
}

/** Exports a public key as base64 raw bytes, the form `DISPATCH_TRUSTED_KEYS` takes. */
export async function exportPublicKey(key: CryptoKey): Promise<string> {
  return toBase64(await crypto.subtle.exportKey("raw", key));
}

/**
 * Why `code` may not run, or undefined when it may: no keys configured means signatures are not
 * required.
 */
export async function signatureProblem(
  keys: CryptoKey[],
  code: string,
  signature: string | null | undefined,
): Promise<string | undefined> {
  if (keys.length === 0) return undefined;
  if (!signature) return "Cannot run function as it is not signed";
  let sig: Uint8Array<ArrayBuffer>;
  try {
    sig = fromBase64(signature);
  } catch {
    return "Cannot run function as its signature is not base64";
  }
  const data = new TextEncoder().encode(code);
  for (const key of keys) {
    if (await crypto.subtle.verify("Ed25519", key, sig, data)) return undefined;
  }
  return "Cannot run function as its signature does not match a trusted key";
}
