/**
 * A small etcd v3 client over etcd's HTTP/JSON gateway (`/v3/...`, base64 keys), enough for membership
 * and Patroni's keys without a native gRPC dependency. Each call tries the endpoints in turn, so one dead
 * member does not stop the updater.
 */

/** One member of the etcd cluster. `name` is empty until an added member has started. */
export interface EtcdMember {
  /** The member id: a uint64, kept as the decimal string the gateway gives. */
  id: string;
  name: string;
  peerUrls: string[];
  clientUrls: string[];
}

const enc = new TextEncoder();
const b64 = (s: string) => btoa(String.fromCharCode(...enc.encode(s)));
const unb64 = (s: string) => new TextDecoder().decode(Uint8Array.from(atob(s), (c) => c.charCodeAt(0)));

/** The smallest key greater than every key starting with `prefix` (etcd's range end for a prefix). */
export function prefixEnd(prefix: string): string {
  const bytes = enc.encode(prefix);
  for (let i = bytes.length - 1; i >= 0; i--) {
    if (bytes[i] < 0xff) {
      const out = bytes.slice(0, i + 1);
      out[i]++;
      return new TextDecoder().decode(out);
    }
  }
  return "\0";
}

/** An etcd client over a list of client URLs (`http://10.0.0.1:2379`). */
export class EtcdClient {
  readonly endpoints: string[];
  readonly timeoutMs: number;

  constructor(endpoints: string[], timeoutMs = 3_000) {
    if (!endpoints.length) throw new Error("Cannot create an etcd client without endpoints");
    this.endpoints = endpoints.map((e) => e.replace(/\/+$/, ""));
    this.timeoutMs = timeoutMs;
  }

  async #post<T>(path: string, body: unknown): Promise<T> {
    let last: unknown;
    for (const ep of this.endpoints) {
      try {
        const res = await fetch(`${ep}${path}`, {
          method: "POST",
          body: JSON.stringify(body),
          headers: { "content-type": "application/json" },
          signal: AbortSignal.timeout(this.timeoutMs),
        });
        const json = await res.json().catch(() => ({}));
        if (!res.ok) {
          last = new Error(`etcd ${path} answered HTTP ${res.status}: ${json.error ?? json.message ?? ""}`);
          // A definite answer from the cluster (not found, bad request): no point asking another member.
          if (res.status < 500 && res.status !== 408) throw last;
          continue;
        }
        return json as T;
      } catch (e) {
        last = e;
        if (e instanceof Error && /answered HTTP [34]\d\d/.test(e.message)) throw e;
      }
    }
    throw new Error(`Cannot reach etcd for ${path}: ${(last as Error)?.message ?? "no endpoint answered"}`);
  }

  /** The cluster's members. */
  async members(): Promise<EtcdMember[]> {
    const r = await this.#post<{ members?: Record<string, unknown>[] }>("/v3/cluster/member/list", {});
    return (r.members ?? []).map((m) => ({
      id: String(m.ID ?? ""),
      name: String(m.name ?? ""),
      peerUrls: (m.peerURLs as string[] | undefined) ?? [],
      clientUrls: (m.clientURLs as string[] | undefined) ?? [],
    }));
  }

  /** Adds a member by its peer URL (it must then start with `--initial-cluster-state existing`). */
  async addMember(peerUrl: string): Promise<{ id: string; members: EtcdMember[] }> {
    const r = await this.#post<{ member?: { ID?: unknown } }>("/v3/cluster/member/add", {
      peerURLs: [peerUrl],
    });
    return { id: String(r.member?.ID ?? ""), members: await this.members() };
  }

  /** Removes a member by id. */
  async removeMember(id: string): Promise<void> {
    await this.#post("/v3/cluster/member/remove", { ID: id });
  }

  /** Keys and values under `prefix`. */
  async getPrefix(prefix: string): Promise<Map<string, string>> {
    const r = await this.#post<{ kvs?: { key: string; value?: string }[] }>("/v3/kv/range", {
      key: b64(prefix),
      range_end: b64(prefixEnd(prefix)),
    });
    return new Map((r.kvs ?? []).map((kv) => [unb64(kv.key), kv.value ? unb64(kv.value) : ""]));
  }

  /** Deletes one key; resolves to the number deleted. */
  async delete(key: string): Promise<number> {
    const r = await this.#post<{ deleted?: string }>("/v3/kv/deleterange", { key: b64(key) });
    return Number(r.deleted ?? 0);
  }

  /** True when the given endpoint answers `/health` with a healthy cluster behind it. */
  static async healthy(endpoint: string, timeoutMs = 2_000): Promise<boolean> {
    try {
      const res = await fetch(`${endpoint.replace(/\/+$/, "")}/health`, {
        signal: AbortSignal.timeout(timeoutMs),
      });
      const j = await res.json();
      return res.ok && (j.health === "true" || j.health === true);
    } catch {
      return false;
    }
  }
}
