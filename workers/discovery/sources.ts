/**
 * Discovery sources: where the addresses of a cluster's members come from. Every source answers the same
 * way (a sorted, de-duplicated list of addresses without ports) or throws a {@linkcode DiscoveryError};
 * a bad answer (an HTTP error, a body that is not the expected JSON, an empty list) is always an error,
 * never an empty membership, so that a flaky API cannot make the updater remove anyone. The conformance
 * suite in `sources_test.ts` holds every source to that.
 */
import { z } from "zod";

/** A bad or missing answer from a discovery source. The message never includes credentials. */
export class DiscoveryError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "DiscoveryError";
  }
}

/** Where members come from. */
export interface DiscoverySource {
  /** `flux`, `http`, `static`, `dns`: for logs. */
  readonly kind: string;
  /** The members' addresses, sorted and de-duplicated, never empty. Throws {@linkcode DiscoveryError}. */
  discover(signal?: AbortSignal): Promise<string[]>;
}

const HOSTNAME =
  /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const IPV6 = /^[0-9A-Fa-f:.]{2,45}$/;

/**
 * An address as a source gives it, without its port: `1.2.3.4:16127` → `1.2.3.4` (the Flux API's port is
 * the Flux node's own, not PostgreSQL's), `[::1]:80` → `::1`. Returns undefined for anything that is not
 * an IPv4 or IPv6 address or a host name.
 */
export function normalizeAddress(raw: unknown): string | undefined {
  if (typeof raw !== "string") return undefined;
  let a = raw.trim();
  const bracket = /^\[([^\]]+)\](?::\d{1,5})?$/.exec(a);
  if (bracket) a = bracket[1];
  else if ((a.match(/:/g) ?? []).length === 1) a = a.replace(/:\d{1,5}$/, "");
  if (IPV4.test(a)) return a;
  if (a.includes(":") && IPV6.test(a) && (a.match(/::/g) ?? []).length <= 1) return a.toLowerCase();
  if (HOSTNAME.test(a) && !/^[\d.]+$/.test(a)) return a.toLowerCase();
  return undefined;
}

/** Sorted, unique, validated addresses; throws when any is invalid or none is left. */
export function addressList(raw: unknown[], what: string): string[] {
  const out = new Set<string>();
  for (const r of raw) {
    const a = normalizeAddress(r);
    if (!a) throw new DiscoveryError(`Cannot use the answer of ${what}: an entry is not an address`);
    out.add(a);
  }
  if (!out.size) throw new DiscoveryError(`Cannot use the answer of ${what}: the member list is empty`);
  return [...out].sort();
}

/** Reads a JSON body, turning any failure into a {@linkcode DiscoveryError}. */
async function fetchJson(
  url: string,
  what: string,
  signal?: AbortSignal,
  timeoutMs = 10_000,
): Promise<unknown> {
  const timeout = AbortSignal.timeout(timeoutMs);
  const s = signal ? AbortSignal.any([signal, timeout]) : timeout;
  let res: Response;
  try {
    res = await fetch(url, { signal: s, headers: { accept: "application/json" } });
  } catch (e) {
    throw new DiscoveryError(`Cannot reach ${what}: ${(e as Error).name}`, { cause: e });
  }
  if (!res.ok) {
    await res.body?.cancel();
    throw new DiscoveryError(`Cannot use the answer of ${what}: HTTP ${res.status}`);
  }
  try {
    return await res.json();
  } catch (e) {
    throw new DiscoveryError(`Cannot use the answer of ${what}: the body is not JSON`, { cause: e });
  }
}

/** Where a URL points, without credentials or query (for messages). */
function describe(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return "the discovery URL";
  }
}

const FluxAnswer = z.object({
  status: z.literal("success"),
  data: z.array(z.object({ ip: z.string() }).passthrough()),
});

/**
 * The Flux API: `GET {base}/apps/location/{app}` answers `{"status":"success","data":[{"ip":"1.2.3.4:16127",
 * ...}]}`.
 */
export function fluxSource(
  options: { baseUrl: string; appName: string; timeoutMs?: number },
): DiscoverySource {
  const url = `${options.baseUrl.replace(/\/+$/, "")}/apps/location/${encodeURIComponent(options.appName)}`;
  const what = `the Flux API (${describe(url)})`;
  return {
    kind: "flux",
    async discover(signal) {
      const body = FluxAnswer.safeParse(await fetchJson(url, what, signal, options.timeoutMs));
      if (!body.success) {
        throw new DiscoveryError(`Cannot use the answer of ${what}: not a success with data`);
      }
      return addressList(body.data.data.map((d) => d.ip), what);
    },
  };
}

/**
 * Any HTTP endpoint answering a JSON list: `["10.0.0.1", ...]`, `[{"ip": ...}]` (`ip`, `address` or `host`),
 * or an object holding such a list under `data` or `members`.
 */
export function httpListSource(options: { url: string; timeoutMs?: number }): DiscoverySource {
  const what = `the discovery URL (${describe(options.url)})`;
  return {
    kind: "http",
    async discover(signal) {
      let body = await fetchJson(options.url, what, signal, options.timeoutMs);
      if (body && typeof body === "object" && !Array.isArray(body)) {
        const o = body as Record<string, unknown>;
        body = Array.isArray(o.data) ? o.data : o.members;
      }
      if (!Array.isArray(body)) throw new DiscoveryError(`Cannot use the answer of ${what}: not a list`);
      return addressList(
        body.map((e) =>
          e && typeof e === "object"
            ? (e as Record<string, unknown>).ip ?? (e as Record<string, unknown>).address ??
              (e as Record<string, unknown>).host
            : e
        ),
        what,
      );
    },
  };
}

/** A fixed list (`DISCOVERY_STATIC=10.0.0.1,10.0.0.2`): for clusters whose members never move. */
export function staticSource(list: string | string[]): DiscoverySource {
  const raw = typeof list === "string" ? list.split(",").map((s) => s.trim()).filter(Boolean) : list;
  return {
    kind: "static",
    discover() {
      return Promise.resolve().then(() => addressList(raw, "the static member list"));
    },
  };
}

/** Looks up records of one type; `Deno.resolveDns` by default. */
export type Resolver = (name: string, type: "A" | "AAAA") => Promise<string[]>;

/** The A and AAAA records of a name (a headless service, a round-robin record). */
export function dnsSource(options: { name: string; resolver?: Resolver }): DiscoverySource {
  const resolve: Resolver = options.resolver ?? ((n, t) => Deno.resolveDns(n, t));
  const what = `DNS (${options.name})`;
  return {
    kind: "dns",
    async discover() {
      const results = await Promise.allSettled([resolve(options.name, "A"), resolve(options.name, "AAAA")]);
      const found = results.flatMap((r) => (r.status === "fulfilled" ? r.value : []));
      if (!found.length && results.every((r) => r.status === "rejected")) {
        throw new DiscoveryError(`Cannot resolve ${what}`, {
          cause: (results[0] as PromiseRejectedResult).reason,
        });
      }
      return addressList(found, what);
    },
  };
}

/** The source the settings name. */
export function sourceFromSettings(s: {
  DISCOVERY_SOURCE: "flux" | "http" | "static" | "dns";
  FLUX_API_URL: string;
  APP_NAME: string;
  DISCOVERY_URL?: string;
  DISCOVERY_STATIC?: string;
  DISCOVERY_DNS_NAME?: string;
}): DiscoverySource {
  switch (s.DISCOVERY_SOURCE) {
    case "flux":
      return fluxSource({ baseUrl: s.FLUX_API_URL, appName: s.APP_NAME });
    case "http":
      return httpListSource({ url: s.DISCOVERY_URL ?? "" });
    case "static":
      return staticSource(s.DISCOVERY_STATIC ?? "");
    case "dns":
      return dnsSource({ name: s.DISCOVERY_DNS_NAME ?? "" });
  }
}
