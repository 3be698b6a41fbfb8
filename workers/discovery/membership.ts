/**
 * The membership updater's decisions, kept pure. The Flux image removed a member from etcd the first time
 * the API did not list it, so one slow or partial answer could shrink the cluster. Here a member is removed
 * only after `removeAfter` consecutive good reads omitted it, one change at a time, and never when the
 * members left would be fewer than `minMembers` or could not form a quorum among the healthy ones.
 */
import type { EtcdMember } from "./etcd.ts";

/** The host of a member's first peer URL (`http://10.0.0.1:2380` → `10.0.0.1`). */
export function memberAddress(m: Pick<EtcdMember, "peerUrls">): string | undefined {
  const u = m.peerUrls[0];
  if (!u) return undefined;
  try {
    return new URL(u).hostname.replace(/^\[|\]$/g, "").toLowerCase();
  } catch {
    return undefined;
  }
}

/** Counts, per member id, the consecutive good reads that did not list it. */
export class OmissionCounter {
  readonly #misses = new Map<string, number>();

  /** Takes one good read: listed members reset to 0, others go up by one; gone members are forgotten. */
  observe(listed: Iterable<string>, current: EtcdMember[]): void {
    const set = new Set(listed);
    const ids = new Set(current.map((m) => m.id));
    for (const id of [...this.#misses.keys()]) if (!ids.has(id)) this.#misses.delete(id);
    for (const m of current) {
      const addr = memberAddress(m);
      if (addr && set.has(addr)) this.#misses.set(m.id, 0);
      else this.#misses.set(m.id, (this.#misses.get(m.id) ?? 0) + 1);
    }
  }

  /** Consecutive omissions of a member. */
  get(id: string): number {
    return this.#misses.get(id) ?? 0;
  }

  /** Forgets a member (after it was removed). */
  forget(id: string): void {
    this.#misses.delete(id);
  }
}

/** What the updater should do now. */
export type Decision =
  | { action: "none" }
  | { action: "hold"; member?: EtcdMember; reason: string }
  | { action: "remove"; member: EtcdMember; misses: number };

/** The votes that make a quorum among `n` members. */
export function quorum(n: number): number {
  return Math.floor(n / 2) + 1;
}

/**
 * Decides at most one removal. `healthy` holds the ids of members whose `/health` answered; `self` is this
 * node's member id (never removed by itself: the others do it).
 */
export function decide(input: {
  current: EtcdMember[];
  misses: (id: string) => number;
  healthy: Set<string>;
  removeAfter: number;
  minMembers: number;
  self?: string;
}): Decision {
  const due = input.current
    .filter((m) => m.id !== input.self && input.misses(m.id) >= input.removeAfter)
    .sort((a, b) => input.misses(b.id) - input.misses(a.id) || a.name.localeCompare(b.name));
  if (!due.length) return { action: "none" };
  const member = due[0];
  if (input.current.some((m) => !m.name)) {
    return {
      action: "hold",
      member,
      reason: "a member was added and has not started yet (one change at a time)",
    };
  }
  const remaining = input.current.filter((m) => m.id !== member.id);
  if (remaining.length < input.minMembers) {
    return {
      action: "hold",
      member,
      reason: `removing it would leave ${remaining.length} < ${input.minMembers} members`,
    };
  }
  const healthyLeft = remaining.filter((m) => input.healthy.has(m.id)).length;
  if (healthyLeft < quorum(remaining.length)) {
    return {
      action: "hold",
      member,
      reason: `only ${healthyLeft} of the ${remaining.length} members left are healthy (quorum ${
        quorum(remaining.length)
      })`,
    };
  }
  return { action: "remove", member, misses: input.misses(member.id) };
}
