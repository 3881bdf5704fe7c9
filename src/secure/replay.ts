/**
 * The exact replay set of protocol v2 (server check 7): every client salt seen within the timestamp
 * window, no Bloom filter (no false positives, so no honest client is ever refused by chance).
 *
 * An entry is kept until its hello's timestamp + window + slack. The time check (step 6) runs first and
 * refuses any hello whose timestamp is more than `window` from now, so a salt is remembered for as long
 * as a replay of it could pass the time check. Bounded: when full, new salts are refused ("full"), and
 * live entries are never evicted (evicting one would re-open its replay). Only hellos that authenticated
 * reach this set, so only key holders can fill it.
 *
 * Expiry is by one-second buckets: purging is O(entries expired), at most once per second of the clock.
 * The clock is passed in (ms), so tests drive it by hand.
 */

import { REPLAY_SLACK_MS, TIME_WINDOW_MS } from "./constants.ts";

/** Options of a ReplaySet. */
export interface ReplayOptions {
  /** Half-width of the accepted timestamp window, ms (default 30 000). */
  windowMs?: number;
  /** Most salts held (default 262 144: ~8 000 hellos/s sustained over a 31 s window, ~30 MB). */
  maxEntries?: number;
  /**
   * When the set started remembering (ms, the server's start). The set cannot vouch for salts of hellos
   * made before then — a first flight recorded before a restart and replayed after it — so checkFresh()
   * refuses timestamps older than this. Unset: no such check.
   */
  sinceMs?: number;
}

/** Default capacity of the replay set. */
export const DEFAULT_REPLAY_ENTRIES = 1 << 18;

/** What admit() decided: a new salt (now remembered), a salt seen before, or no room to remember it. */
export type ReplayVerdict = "fresh" | "replay" | "full";

/** An exact set of recently seen salts with timestamp-based expiry. */
export class ReplaySet {
  readonly windowMs: number;
  readonly maxEntries: number;
  readonly sinceMs: number | undefined;
  // salt (as a latin1 string) → expiry in ms.
  private readonly entries = new Map<string, number>();
  // second (floor(expiry / 1000)) → salts expiring in it.
  private readonly buckets = new Map<number, string[]>();
  private purgedSecond = -Infinity;

  constructor(opts: ReplayOptions = {}) {
    this.windowMs = opts.windowMs ?? TIME_WINDOW_MS;
    this.maxEntries = opts.maxEntries ?? DEFAULT_REPLAY_ENTRIES;
    this.sinceMs = opts.sinceMs;
    if (!(this.windowMs >= 0) || !Number.isInteger(this.maxEntries) || this.maxEntries < 1) {
      throw new RangeError(`replay set: bad options window ${this.windowMs} ms, ${this.maxEntries} entries`);
    }
  }

  /** Salts held (expired ones may linger up to one second). */
  get size(): number {
    return this.entries.size;
  }

  /**
   * Checks `salt` and, when new, remembers it until `timestampMs` + window + 1 s. Call only after the
   * time check passed for `timestampMs`.
   */
  admit(salt: Uint8Array, timestampMs: number, nowMs: number): ReplayVerdict {
    this.purge(nowMs);
    const key = Buffer.from(salt.buffer, salt.byteOffset, salt.byteLength).toString("latin1");
    const seen = this.entries.get(key);
    if (seen !== undefined && seen >= nowMs) return "replay";
    if (seen === undefined && this.entries.size >= this.maxEntries) return "full";
    const expiry = timestampMs + this.windowMs + REPLAY_SLACK_MS;
    this.entries.set(key, expiry); // (an expired entry of the same salt is overwritten)
    const second = Math.floor(expiry / 1000);
    let bucket = this.buckets.get(second);
    if (bucket === undefined) this.buckets.set(second, (bucket = []));
    bucket.push(key);
    return "fresh";
  }

  /** Drops every bucket whose whole second lies before `nowMs`; runs at most once per clock second. */
  private purge(nowMs: number): void {
    const second = Math.floor(nowMs / 1000);
    if (second === this.purgedSecond) return;
    this.purgedSecond = second;
    for (const [s, keys] of this.buckets) {
      const end = (s + 1) * 1000; // every expiry in this bucket is below `end`
      if (end > nowMs) continue;
      for (const k of keys) {
        // The salt may have been re-admitted since (after expiring) with a later expiry: keep that one.
        const e = this.entries.get(k);
        if (e !== undefined && e < end) this.entries.delete(k);
      }
      this.buckets.delete(s);
    }
  }
}
