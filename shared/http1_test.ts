import assert from "node:assert/strict";
import { Http1Client, Http1Error } from "./http1.ts";
import { ensureTls } from "./stack/postgres.ts";
import { writeAll } from "./io.ts";

const enc = new TextEncoder();

/**
 * A raw TCP server answering each request with what `answer` writes (it sees the request's head and body),
 * so that every shape of answer can be produced. Counts connections.
 */
function rawServer(
  answer: (conn: Deno.Conn, head: string, body: Uint8Array, n: number) => Promise<"keep" | "close">,
) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let connections = 0;
  let requests = 0;
  const open = new Set<Deno.Conn>();
  const serve = async (conn: Deno.Conn) => {
    open.add(conn);
    let buf: Uint8Array = new Uint8Array(0);
    try {
      for (;;) {
        let end = -1;
        while ((end = indexOfBlank(buf)) < 0) {
          const chunk = new Uint8Array(64 * 1024);
          const n = await conn.read(chunk);
          if (n === null) return;
          buf = concat(buf, chunk.subarray(0, n));
        }
        const head = new TextDecoder().decode(buf.subarray(0, end));
        const length = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0);
        while (buf.length < end + 4 + length) {
          const chunk = new Uint8Array(64 * 1024);
          const n = await conn.read(chunk);
          if (n === null) return;
          buf = concat(buf, chunk.subarray(0, n));
        }
        const body = buf.slice(end + 4, end + 4 + length);
        buf = buf.slice(end + 4 + length);
        if ((await answer(conn, head, body, ++requests)) === "close") return;
      }
    } catch {
      // the client went away
    } finally {
      open.delete(conn);
      try {
        conn.close();
      } catch { /* closed */ }
    }
  };
  const served: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const conn of listener) {
      connections++;
      served.push(serve(conn));
    }
  })();
  const { port } = listener.addr as Deno.NetAddr;
  return {
    url: (path = "/x") => new URL(`http://127.0.0.1:${port}${path}`),
    get connections() {
      return connections;
    },
    /** Closes the server side of every open connection (as a server's idle timeout does). */
    dropAll() {
      for (const c of open) c.close();
      open.clear();
    },
    async [Symbol.asyncDispose]() {
      listener.close();
      await accepting.catch(() => {});
      for (const c of open) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      await Promise.all(served);
    },
  };
}

function indexOfBlank(b: Uint8Array): number {
  for (let i = 0; i + 3 < b.length; i++) {
    if (b[i] === 13 && b[i + 1] === 10 && b[i + 2] === 13 && b[i + 3] === 10) return i;
  }
  return -1;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

async function write(conn: Deno.Conn, ...parts: (string | Uint8Array)[]) {
  for (const p of parts) await writeAll(conn, typeof p === "string" ? enc.encode(p) : p);
}

Deno.test("Http1Client reads a large body into the lent buffer and keeps the connection", async () => {
  const big = new Uint8Array(3 * 1024 * 1024 + 5).map((_, i) => (i * 7) % 253);
  await using srv = rawServer(async (conn, head, _body, n) => {
    if (n === 4) {
      await write(conn, "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nNoSuchKey");
      return "keep";
    }
    assert.match(head, /^GET \/obj\?a=1 HTTP\/1\.1\r\n/);
    assert.match(head, /\r\nx-test: yes/);
    // Headers and the first bytes of the body in one write, the rest in pieces.
    await write(
      conn,
      `HTTP/1.1 200 OK\r\nContent-Length: ${big.length}\r\nX-Seen: 1\r\n\r\n`,
      big.subarray(0, 1000),
    );
    for (let off = 1000; off < big.length; off += 300_000) {
      await write(conn, big.subarray(off, off + 300_000));
    }
    return "keep";
  });
  using client = new Http1Client();
  const lent = new ArrayBuffer(4 * 1024 * 1024);
  for (let i = 0; i < 3; i++) {
    const res = await client.request({
      method: "GET",
      url: srv.url("/obj?a=1"),
      headers: { "x-test": "yes" },
      bodyBuffer: (n) => {
        assert.equal(n, big.length);
        return lent;
      },
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("x-seen"), "1");
    assert.equal(res.body.buffer, lent);
    assert.deepEqual(res.body, big);
  }
  // An error's body is not read into the lent buffer.
  const missing = await client.request({
    method: "GET",
    url: srv.url("/obj?a=1"),
    bodyBuffer: () => {
      throw new Error("lent for an error");
    },
  });
  assert.equal(missing.status, 404);
  assert.equal(new TextDecoder().decode(missing.body), "NoSuchKey");
  assert.equal(srv.connections, 1, "one kept connection served the four requests");
  assert.equal(client.idle, 1);
});

Deno.test("Http1Client sends bodies with their length, decodes chunked answers and skips 100 Continue", async () => {
  const sizes = [0, 10, 200_000];
  const received: number[] = [];
  await using srv = rawServer(async (conn, head, body) => {
    received.push(body.length);
    assert.match(head, new RegExp(`content-length: ${body.length}`, "i"));
    const text = `<Error><Code>Got${body.length}</Code></Error>`;
    // Chunked, with an extension and a trailer, after an interim answer.
    await write(
      conn,
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n",
      `5;ext=1\r\n${text.slice(0, 5)}\r\n`,
      `${(text.length - 5).toString(16)}\r\n${text.slice(5)}\r\n0\r\nX-Trailer: t\r\n\r\n`,
    );
    return "keep";
  });
  using client = new Http1Client();
  for (const n of sizes) {
    const res = await client.request({ method: "PUT", url: srv.url(), body: new Uint8Array(n).fill(65) });
    assert.equal(res.status, 403);
    assert.equal(res.statusText, "Forbidden");
    assert.equal(new TextDecoder().decode(res.body), `<Error><Code>Got${n}</Code></Error>`);
  }
  assert.deepEqual(received, sizes);
  assert.equal(srv.connections, 1);
});

Deno.test("Http1Client retries once on a fresh connection when the kept one was closed while idle", async () => {
  await using srv = rawServer(async (conn) => {
    await write(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    return "keep";
  });
  using client = new Http1Client();
  assert.equal((await client.request({ method: "GET", url: srv.url() })).status, 200);
  srv.dropAll(); // the server's idle timeout
  await new Promise((r) => setTimeout(r, 20));
  const res = await client.request({ method: "GET", url: srv.url() });
  assert.equal(new TextDecoder().decode(res.body), "ok");
  assert.equal(srv.connections, 2);
  // A POST is not sent twice: the server may have acted on it before it closed.
  srv.dropAll();
  await new Promise((r) => setTimeout(r, 20));
  await assert.rejects(
    client.request({ method: "POST", url: srv.url(), body: new Uint8Array([1]) }),
    /the server closed the connection|the connection broke/,
  );
  assert.equal(srv.connections, 2);
});

Deno.test("Http1Client honours Connection: close and bodies read to the close", async () => {
  await using srv = rawServer(async (conn, _head, _body, n) => {
    if (n === 1) await write(conn, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\none");
    else await write(conn, "HTTP/1.0 200 OK\r\n\r\nuntil the end");
    return "close";
  });
  using client = new Http1Client();
  assert.equal(
    new TextDecoder().decode((await client.request({ method: "GET", url: srv.url() })).body),
    "one",
  );
  assert.equal(client.idle, 0);
  const res = await client.request({ method: "GET", url: srv.url() });
  assert.equal(new TextDecoder().decode(res.body), "until the end");
  assert.equal(client.idle, 0);
  assert.equal(srv.connections, 2);
});

Deno.test("Http1Client fails clearly: a cut body, a silent server, a refused port, a bad header", async () => {
  await using srv = rawServer(async (conn, head) => {
    if (head.includes("/cut")) {
      await write(conn, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..");
      return "close";
    }
    if (head.includes("/garbage")) {
      await write(conn, "SMTP ready\r\n\r\n");
      return "close";
    }
    await new Promise((r) => setTimeout(r, 500)); // /silent: answers too late
    return "close";
  });
  using client = new Http1Client({ timeoutMs: 150 });
  const cut = await client.request({ method: "GET", url: srv.url("/cut") }).catch((e) => e);
  assert.ok(cut instanceof Http1Error);
  assert.match(cut.message, /the body ended after 10 of 100 bytes/);
  const silent = await client.request({ method: "GET", url: srv.url("/silent") }).catch((e) => e);
  assert.ok(silent instanceof Http1Error);
  assert.match(silent.message, /no answer within 150 ms/);
  const garbage = await client.request({ method: "GET", url: srv.url("/garbage") }).catch((e) => e);
  assert.match(garbage.message, /not an HTTP\/1\.x answer/);
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const refused = await client.request({ method: "GET", url: new URL(`http://127.0.0.1:${port}/`) }).catch((
    e,
  ) => e);
  assert.ok(refused instanceof Http1Error);
  assert.match(refused.message, /^Cannot connect to 127\.0\.0\.1:\d+/);
  const injected = await client.request({
    method: "GET",
    url: srv.url(),
    headers: { "x-a": "1\r\nx-injected: 2" },
  }).catch((e) => e);
  assert.match(injected.message, /not a valid header line/);
  await new Promise((r) => setTimeout(r, 450)); // let the silent handler finish
  assert.equal(client.idle, 0, "no failed connection is kept");
  client.close();
  await assert.rejects(client.request({ method: "GET", url: srv.url() }), /client is closed/);
});

Deno.test("Http1Client speaks TLS to https: URLs and checks the server's certificate", async () => {
  const dir = await Deno.makeTempDir({ prefix: "wharf-http1-tls-" });
  const tls = await ensureTls(dir);
  const [ca, cert, key] = await Promise.all([tls.ca, tls.cert, tls.key].map((f) => Deno.readTextFile(f)));
  const body = new Uint8Array(1024 * 1024).map((_, i) => i % 251);
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, cert, key, onListen: () => {} },
    () => new Response(body),
  );
  try {
    const url = new URL(`https://localhost:${server.addr.port}/obj`);
    using trusting = new Http1Client({ caCerts: [ca] });
    for (let i = 0; i < 2; i++) {
      const res = await trusting.request({ method: "GET", url });
      assert.equal(res.status, 200);
      assert.deepEqual(res.body, body);
    }
    assert.equal(trusting.idle, 1);
    // Without the private CA the certificate is refused.
    using strict = new Http1Client();
    const refused = await strict.request({ method: "GET", url }).catch((e) => e);
    assert.ok(refused instanceof Http1Error, String(refused));
    assert.match(refused.message, /certificate|UnknownIssuer/i);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
