/**
 * Handshake admission limits of protocol v2 (server check 2), both answered before a byte is read:
 *
 * - SourceLimiter: a token bucket per source (an IPv4 address, an IPv6 /64, as WireGuard does), taken
 *   at accept and refunded when the hello authenticates, so only failures count against a source.
 *   The table is bounded: a new source evicts a full (idle) bucket among the least recently used, or
 *   else the least recently used one. Evicting a bucket only gives its source a fresh burst; the global
 *   gate below still bounds what that buys.
 * - UnauthGate: a global bound on connections that have not authenticated yet, which makes room by
 *   dropping the oldest stale one before it refuses a newcomer.
 *
 * Over either limit the server closes the connection at once, silently. Clocks are passed in (ms).
 */

/** Options of a SourceLimiter. */
export interface RateLimitOptions {
  /** Tokens added per second (default 20). */
  ratePerSec?: number;
  /** Bucket size: attempts a quiet source may make at once (default 80: a client dials up to 64 stripes). */
  burst?: number;
  /** Most sources tracked (default 65 536). */
  maxSources?: number;
}

/** Buckets examined from the least recently used end when the table is full. */
const EVICT_SCAN = 8;

interface Bucket {
  tokens: number;
  at: number; // ms of the last refill
}

/** Per-source token buckets over a bounded table. */
export class SourceLimiter {
  readonly ratePerSec: number;
  readonly burst: number;
  readonly maxSources: number;
  // Insertion order is recency order: take() re-inserts, so the first entries are the least recent.
  private readonly buckets = new Map<string, Bucket>();

  constructor(opts: RateLimitOptions = {}) {
    this.ratePerSec = opts.ratePerSec ?? 20;
    this.burst = opts.burst ?? 80;
    this.maxSources = opts.maxSources ?? 65_536;
    if (!(this.ratePerSec > 0) || !(this.burst >= 1) || !Number.isInteger(this.maxSources) || this.maxSources < 1) {
      throw new RangeError(`rate limiter: bad options ${this.ratePerSec}/s, burst ${this.burst}, ${this.maxSources} sources`);
    }
  }

  /** Sources tracked. */
  get size(): number {
    return this.buckets.size;
  }

  /** Takes one token for a connection from `address`; false means over the limit (close silently). */
  take(address: string, nowMs: number): boolean {
    const key = sourceKey(address);
    let b = this.buckets.get(key);
    if (b !== undefined) {
      this.refill(b, nowMs);
      this.buckets.delete(key); // re-inserted below: now the most recent
    } else {
      if (this.buckets.size >= this.maxSources) this.evict(nowMs);
      b = { tokens: this.burst, at: nowMs };
    }
    this.buckets.set(key, b);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  /** Gives back the token of a connection whose hello authenticated (at most up to the burst). */
  refund(address: string): void {
    const b = this.buckets.get(sourceKey(address));
    if (b !== undefined) b.tokens = Math.min(this.burst, b.tokens + 1);
  }

  private refill(b: Bucket, nowMs: number): void {
    const elapsed = Math.max(0, nowMs - b.at); // a clock stepping back adds nothing
    b.tokens = Math.min(this.burst, b.tokens + (elapsed * this.ratePerSec) / 1000);
    b.at = Math.max(b.at, nowMs);
  }

  /** Frees one slot: a full bucket among the least recent few, else the least recent. */
  private evict(nowMs: number): void {
    let first: string | undefined;
    let n = 0;
    for (const [key, b] of this.buckets) {
      first ??= key;
      this.refill(b, nowMs);
      if (b.tokens >= this.burst) {
        this.buckets.delete(key);
        return;
      }
      if (++n >= EVICT_SCAN) break;
    }
    if (first !== undefined) this.buckets.delete(first);
  }
}

/**
 * The rate-limit key of a remote address: an IPv4 address as is (also when IPv4-mapped in IPv6), an
 * IPv6 address as its /64 prefix (`2001:db8:0:1::/64`). Brackets and a zone (`%eth0`) are ignored;
 * anything unparsable is its own key.
 */
export function sourceKey(address: string): string {
  let a = address;
  if (a.startsWith("[") && a.endsWith("]")) a = a.slice(1, -1);
  const zone = a.indexOf("%");
  if (zone >= 0) a = a.slice(0, zone);
  if (!a.includes(":")) return a;
  const g = ipv6Groups(a.toLowerCase());
  if (g === undefined) return address;
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    return `${g[6]! >>> 8}.${g[6]! & 0xff}.${g[7]! >>> 8}.${g[7]! & 0xff}`;
  }
  return `${g[0]!.toString(16)}:${g[1]!.toString(16)}:${g[2]!.toString(16)}:${g[3]!.toString(16)}::/64`;
}

/** The eight 16-bit groups of an IPv6 address, or undefined when it is not one. */
function ipv6Groups(s: string): number[] | undefined {
  // A dotted IPv4 tail (::ffff:1.2.3.4) stands for the last two groups.
  let tail: number[] = [];
  const lastColon = s.lastIndexOf(":");
  if (s.indexOf(".", lastColon) >= 0) {
    const parts = s.slice(lastColon + 1).split(".");
    if (parts.length !== 4 || !parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255)) return undefined;
    const [a, b, c, d] = parts.map(Number) as [number, number, number, number];
    tail = [(a << 8) | b, (c << 8) | d];
    // Keep what precedes the tail: "::ffff:" → "::ffff", "1:2:3:4:5:6:" → "1:2:3:4:5:6", "::" stays.
    s = s.slice(0, lastColon + 1);
    if (!s.endsWith("::")) s = s.slice(0, -1);
  }
  const halves = s.split("::");
  if (halves.length > 2) return undefined;
  const parse = (h: string): number[] | undefined => {
    if (h === "") return [];
    const out: number[] = [];
    for (const p of h.split(":")) {
      if (!/^[0-9a-f]{1,4}$/.test(p)) return undefined;
      out.push(parseInt(p, 16));
    }
    return out;
  };
  const left = parse(halves[0]!);
  const right = halves.length === 2 ? parse(halves[1]!) : [];
  if (left === undefined || right === undefined) return undefined;
  const have = left.length + right.length + tail.length;
  if (halves.length === 1 ? have !== 8 : have > 7) return undefined;
  return [...left, ...new Array<number>(8 - have).fill(0), ...right, ...tail];
}

/** What UnauthGate.enter() decided. */
export type GateResult<T> =
  /** Admitted; when `evicted` is set, that older connection was dropped to make room: close it silently. */
  | { admitted: true; evicted?: T }
  /** Refused: close the new connection at once, silently. */
  | { admitted: false };

/**
 * The global bound on connections that have not authenticated yet. Every failed handshake is held
 * (silently) until its deadline, so a plain counter would let a few sources fill it for up to 10 s each
 * and lock every honest client out. When full, a newcomer therefore replaces the OLDEST waiting
 * connection if that one has waited at least `minEvictAgeMs` (an honest handshake takes one round trip);
 * only when every waiting connection is younger is the newcomer refused. An attacker must then open
 * `max` connections per `minEvictAgeMs` to keep honest clients out, which the per-source buckets make
 * expensive. Bounded: at most `max` entries.
 */
export class UnauthGate<T> {
  // Insertion order is age order: the first entry is the oldest.
  private readonly waiting = new Map<T, number>();

  constructor(
    readonly max = 1024,
    readonly minEvictAgeMs = 1000,
  ) {
    if (!Number.isInteger(max) || max < 0 || !(minEvictAgeMs >= 0)) {
      throw new RangeError(`unauthenticated gate: bad options max ${max}, evict age ${minEvictAgeMs} ms`);
    }
  }

  /** Connections waiting to authenticate. */
  get active(): number {
    return this.waiting.size;
  }

  /** A new connection at `nowMs` (accept time). */
  enter(conn: T, nowMs: number): GateResult<T> {
    if (this.waiting.has(conn)) return { admitted: true };
    if (this.waiting.size < this.max) {
      this.waiting.set(conn, nowMs);
      return { admitted: true };
    }
    for (const [oldest, since] of this.waiting) {
      if (nowMs - since < this.minEvictAgeMs) break;
      this.waiting.delete(oldest);
      this.waiting.set(conn, nowMs);
      return { admitted: true, evicted: oldest };
    }
    return { admitted: false };
  }

  /** The connection authenticated, failed for good, or closed. Harmless if it was evicted or never entered. */
  leave(conn: T): void {
    this.waiting.delete(conn);
  }
}
