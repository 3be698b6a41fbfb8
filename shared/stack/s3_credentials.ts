/**
 * The local S3 server's one access key. A fixed pair, so every local client (tests, `deno task dev`,
 * benches) signs with it without configuration; it opens nothing but a loopback server and is never a
 * real secret.
 */
export const LOCAL_S3_CREDENTIALS = {
  accessKeyId: "WHARFLOCALS3KEY",
  secretAccessKey: "wharf-local-s3-secret",
} as const;
