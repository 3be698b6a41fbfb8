/**
 * A small in-memory cache of rendered feed pages, dropped whenever a feed changes anywhere: a statement
 * trigger on `app.feeds` sends `NOTIFY wharf_feeds_changed`, and every web process LISTENs. The list
 * endpoint is the hot read path; with the cache, a page costs a map lookup until the next change.
 *
 * Safety: nothing is served from the cache until the LISTEN is in place (and the cache is dropped on every
 * reconnect, when notifications may have been missed); a generation number keeps a query that started
 * before a change from storing its older result after it; and entries expire after `ttlMs` whatever
 * happens.
 */
import type { Sql } from "../../shared/db.ts";
import type { Logger } from "../../shared/log.ts";

/** The channel the trigger notifies. */
export const FEEDS_CHANGED_CHANNEL = "wharf_feeds_changed";

/** The page cache of one process. */
export class PageCache {
  readonly #entries = new Map<string, { body: string; at: number }>();
  readonly #ttlMs: number;
  readonly #max: number;
  #listening = false;
  #generation = 0;

  constructor(ttlMs: number, max = 1_000) {
    this.#ttlMs = ttlMs;
    this.#max = max;
  }

  /** Starts listening (does nothing when the cache is off). */
  listen(sql: Sql, log: Logger): void {
    if (this.#ttlMs <= 0) return;
    sql.listen(FEEDS_CHANGED_CHANNEL, () => this.clear(), () => {
      this.clear();
      this.#listening = true;
    }).catch((e) => log.warn("feed page cache off: cannot listen", { error: e }));
  }

  /** The current generation, taken before a query whose result will be stored. */
  generation(): number {
    return this.#generation;
  }

  get(key: string): string | undefined {
    if (!this.#listening) return undefined;
    const e = this.#entries.get(key);
    if (!e) return undefined;
    if (performance.now() - e.at > this.#ttlMs) {
      this.#entries.delete(key);
      return undefined;
    }
    return e.body;
  }

  /** Stores `body` unless a change happened since `generation` was taken. */
  set(key: string, body: string, generation: number): void {
    if (!this.#listening || generation !== this.#generation) return;
    if (this.#entries.size >= this.#max) this.#entries.clear();
    this.#entries.set(key, { body, at: performance.now() });
  }

  clear(): void {
    this.#generation++;
    this.#entries.clear();
  }
}
