/**
 * The few Patroni REST API calls wharf makes: `GET /cluster` and `GET /patroni` (safe, unauthenticated),
 * and `POST /switchover` / `POST /reload` (unsafe: Basic auth, as the worker configures Patroni to demand).
 */
import { z } from "zod";

/** One member as `GET /cluster` shows it. */
export interface ClusterMember {
  name: string;
  role: string;
  state: string;
  host?: string;
  port?: number;
  api_url?: string;
  timeline?: number;
  /** Bytes behind the leader; undefined for the leader or when Patroni does not know. */
  lag?: number;
}

const ClusterAnswer = z.object({
  members: z.array(
    z.object({
      name: z.string(),
      role: z.string(),
      state: z.string(),
      host: z.string().optional(),
      port: z.number().optional(),
      api_url: z.string().optional(),
      timeline: z.number().optional(),
      lag: z.union([z.number(), z.string()]).optional(),
    }).passthrough(),
  ),
  scope: z.string().optional(),
}).passthrough();

const timeout = (ms: number) => AbortSignal.timeout(ms);

/** How calls reach Patroni: a timeout and, for a REST API on TLS, a client that trusts the cluster's CA. */
export interface CallOptions {
  timeoutMs?: number;
  client?: Deno.HttpClient;
}

/** `GET {api}/cluster`. */
export async function getCluster(apiBase: string, o: CallOptions = {}): Promise<ClusterMember[]> {
  const res = await fetch(`${apiBase.replace(/\/+$/, "")}/cluster`, {
    signal: timeout(o.timeoutMs ?? 2_000),
    client: o.client,
  });
  if (!res.ok) {
    await res.body?.cancel();
    throw new Error(`Patroni GET /cluster answered HTTP ${res.status}`);
  }
  const body = ClusterAnswer.parse(await res.json());
  return body.members.map((m) => ({
    name: m.name,
    role: m.role === "master" ? "leader" : m.role,
    state: m.state,
    host: m.host,
    port: m.port,
    api_url: m.api_url,
    timeline: m.timeline,
    lag: typeof m.lag === "number" ? m.lag : undefined,
  }));
}

/** An LSN as PostgreSQL writes it (`16/B374D848`). */
export function formatLsn(n: number | bigint): string {
  const b = BigInt(n);
  return `${(b >> 32n).toString(16).toUpperCase()}/${(b & 0xffffffffn).toString(16).toUpperCase()}`;
}

/** The WAL position of a member from its `GET /patroni` (written on a leader, replayed on a replica). */
export async function getMemberLsn(apiUrl: string, o: CallOptions = {}): Promise<string | undefined> {
  try {
    const res = await fetch(apiUrl, { signal: timeout(o.timeoutMs ?? 1_500), client: o.client });
    const j = await res.json() as { xlog?: { location?: number; replayed_location?: number } };
    const n = j.xlog?.location ?? j.xlog?.replayed_location;
    return typeof n === "number" ? formatLsn(n) : undefined;
  } catch {
    return undefined;
  }
}

/** Basic credentials for Patroni's unsafe methods. */
export interface ApiAuth {
  username: string;
  password: string;
}

function basic(auth: ApiAuth): string {
  const bytes = new TextEncoder().encode(`${auth.username}:${auth.password}`);
  return "Basic " + btoa(String.fromCharCode(...bytes));
}

/** An unsafe call; resolves to Patroni's status and text answer. */
export async function postPatroni(
  apiBase: string,
  path: "/switchover" | "/failover" | "/reload",
  auth: ApiAuth | undefined,
  body?: unknown,
  o: CallOptions = {},
): Promise<{ status: number; text: string }> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (auth) headers.authorization = basic(auth);
  const res = await fetch(`${apiBase.replace(/\/+$/, "")}${path}`, {
    method: "POST",
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: timeout(o.timeoutMs ?? 30_000),
    client: o.client,
  });
  return { status: res.status, text: (await res.text()).slice(0, 500) };
}
