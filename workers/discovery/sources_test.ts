import assert from "node:assert/strict";
import {
  addressList,
  DiscoveryError,
  type DiscoverySource,
  dnsSource,
  fluxSource,
  httpListSource,
  normalizeAddress,
  staticSource,
} from "./sources.ts";

/** What a source is made to answer in the conformance suite. */
type Answer =
  | { kind: "list"; entries: string[] }
  | { kind: "error" }
  | { kind: "garbage" }
  | { kind: "empty" };

/** How one source implementation is driven: `make` returns a source whose next read gives `answer`. */
interface Harness {
  name: string;
  make(answer: Answer): Promise<{ source: DiscoverySource; close(): Promise<void> }>;
}

function serve(handler: (req: Request) => Response) {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, handler);
  return { url: `http://127.0.0.1:${server.addr.port}`, close: () => server.shutdown() };
}

const harnesses: Harness[] = [
  {
    name: "flux",
    make(answer) {
      const s = serve((req) => {
        if (new URL(req.url).pathname !== "/apps/location/myapp") return new Response("no", { status: 404 });
        if (answer.kind === "error") return new Response("boom", { status: 500 });
        if (answer.kind === "garbage") return new Response("{<html>", { status: 200 });
        const data = answer.kind === "empty" ? [] : answer.entries.map((ip) => ({ ip, name: "myapp" }));
        return Response.json({ status: "success", data });
      });
      return Promise.resolve({
        source: fluxSource({ baseUrl: s.url + "/", appName: "myapp" }),
        close: s.close,
      });
    },
  },
  {
    name: "http",
    make(answer) {
      const s = serve(() => {
        if (answer.kind === "error") return new Response("boom", { status: 503 });
        if (answer.kind === "garbage") return Response.json({ hello: "world" });
        return Response.json(
          answer.kind === "empty" ? [] : answer.entries.map((address, i) => i % 2 ? { address } : address),
        );
      });
      return Promise.resolve({ source: httpListSource({ url: s.url + "/members" }), close: s.close });
    },
  },
  {
    name: "static",
    make(answer) {
      const list = answer.kind === "list"
        ? answer.entries.join(", ")
        : answer.kind === "empty"
        ? " , "
        : "10.0.0.1, not an address!";
      return Promise.resolve({ source: staticSource(list), close: () => Promise.resolve() });
    },
  },
  {
    name: "dns",
    make(answer) {
      const source = dnsSource({
        name: "db.example.test",
        resolver: (_name, type) => {
          if (answer.kind === "error") return Promise.reject(new Error("SERVFAIL"));
          if (answer.kind === "garbage") return Promise.resolve(type === "A" ? ["300.1.1.1 x"] : []);
          if (answer.kind === "empty") return Promise.resolve([]);
          return Promise.resolve(
            answer.entries.filter((e) => (type === "A") === !e.includes("::")).map((e) =>
              e.replace(/:\d+$/, "")
            ),
          );
        },
      });
      return Promise.resolve({ source, close: () => Promise.resolve() });
    },
  },
];

for (const h of harnesses) {
  Deno.test(`the ${h.name} source gives sorted unique addresses without ports and refuses every bad answer`, async () => {
    const good = await h.make({
      kind: "list",
      entries: ["10.0.0.3:16127", "10.0.0.1:16127", "10.0.0.3:16127", "10.0.0.2"],
    });
    try {
      assert.deepEqual(await good.source.discover(), ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
      assert.equal(typeof good.source.kind, "string");
    } finally {
      await good.close();
    }
    for (const kind of ["error", "garbage", "empty"] as const) {
      const bad = await h.make({ kind });
      try {
        await assert.rejects(
          () => bad.source.discover(),
          DiscoveryError,
          `${h.name} ${kind} must be refused`,
        );
      } finally {
        await bad.close();
      }
    }
  });
}

Deno.test("the flux source refuses an answer whose status is not success", async () => {
  const s = serve(() => Response.json({ status: "error", data: { message: "no app" } }));
  try {
    await assert.rejects(() => fluxSource({ baseUrl: s.url, appName: "x" }).discover(), /not a success/);
  } finally {
    await s.close();
  }
});

Deno.test("an unreachable source is an error that does not show credentials of its URL", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  const err = await httpListSource({ url: `http://user:s3cret@127.0.0.1:${port}/x?token=abc` }).discover()
    .catch((e) => e);
  assert.ok(err instanceof DiscoveryError);
  assert.doesNotMatch(err.message, /s3cret|abc/);
});

Deno.test("normalizeAddress() strips the Flux node port and refuses what is not an address", () => {
  assert.equal(normalizeAddress("1.2.3.4:16127"), "1.2.3.4");
  assert.equal(normalizeAddress("[2001:db8::1]:80"), "2001:db8::1");
  assert.equal(normalizeAddress("2001:DB8::1"), "2001:db8::1");
  assert.equal(normalizeAddress("Node-1.example.com:5432"), "node-1.example.com");
  assert.equal(normalizeAddress("999.1.1.1"), undefined);
  assert.equal(normalizeAddress("a b"), undefined);
  assert.equal(normalizeAddress(42), undefined);
  assert.throws(() => addressList([], "x"), /empty/);
});
