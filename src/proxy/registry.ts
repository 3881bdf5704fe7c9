/**
 * The server's session registry: live sessions by session id, the session limits (in all and per source
 * address), whether new sessions are taken at all (not while the proxy shuts down), and the ids of
 * sessions that ended recently. Pure bookkeeping, no sockets, the clock passed in: admission
 * (handshake.ts) reads it through `SessionLookup`, the server adds and removes sessions. With worker
 * processes (issue 14), each worker holds one.
 *
 * Ended sessions stay ended: an id is remembered for ENDED_MEMORY_MS after its session was removed (at
 * least the replay window of docs/protocol.md §3.10, ±30 s), and stripes for it are refused, so a late
 * OPEN cannot start the stream over against the target. The memory is bounded (MAX_ENDED ids, the oldest
 * forgotten first).
 */

import { StriperError } from "../errors.ts";

/** Default limit of sessions one source address (IPv6: one /64) may hold at once. */
export const DEFAULT_MAX_SESSIONS_PER_SOURCE = 256;
/** How long an ended session's id is refused, ms: beyond the ±30 s replay window. */
export const ENDED_MEMORY_MS = 60_000;
/** Ended ids remembered at most (about 100 bytes each); beyond, the oldest are forgotten first. */
export const MAX_ENDED = 65_536;

/** What the registry needs to know of a session: whether it has ended. */
export interface RegisteredSession {
  readonly closed: boolean;
}

/** Why a new session cannot be opened now. */
export interface OpenBlocker {
  /** Stable code: E_SHUTDOWN, E_SESSION_LIMIT or E_SOURCE_LIMIT. */
  readonly code: string;
  /** For the log line: "shutting down", "session limit 1024". */
  readonly reason: string;
}

/** The registry as admission sees it: lookups and the open limits, nothing that changes it. */
export interface SessionLookup<S> {
  /** The live session with this key; a session that has ended counts as unknown. */
  live(key: string): S | undefined;
  /** The session with this key has ended (within ENDED_MEMORY_MS, or is ending): its stripes are refused. */
  ended(key: string): boolean;
  /** Why a new session from `source` cannot be opened now; undefined when it can. */
  openBlocker(source?: string): OpenBlocker | undefined;
}

/** Options of a SessionRegistry. */
export interface RegistryOptions {
  /** Sessions one source may hold at once (default DEFAULT_MAX_SESSIONS_PER_SOURCE, at most maxSessions). */
  maxPerSource?: number;
  /** How long ended ids are refused, ms (default ENDED_MEMORY_MS). */
  endedMs?: number;
  /** Ended ids remembered at most (default MAX_ENDED). */
  maxEnded?: number;
  /** Monotonic clock, ms (default performance.now). */
  now?: () => number;
}

/** The registry key of a session id: its hex form (16 bytes → 32 characters). */
export function sessionKey(id: Uint8Array): string {
  return Buffer.from(id).toString("hex");
}

function wholeAtLeast1(name: string, n: number): number {
  if (!Number.isInteger(n) || n < 1) throw new StriperError("E_CONFIG", `${name} must be a whole number ≥ 1, not ${n}`);
  return n;
}

/** Live sessions of one server by key, at most `maxSessions` of them; see the module comment. */
export class SessionRegistry<S extends RegisteredSession> implements SessionLookup<S> {
  readonly maxPerSource: number;
  private readonly byKey = new Map<string, S>();
  /** The source each registered session counts against. */
  private readonly sourceOf = new Map<string, string>();
  private readonly perSource = new Map<string, number>();
  /** Ended ids and when they ended, oldest first (Map keeps insertion order). */
  private readonly endedAt = new Map<string, number>();
  private readonly endedMs: number;
  private readonly maxEnded: number;
  private readonly now: () => number;
  /** Why new sessions are refused from now on (draining, shutting down); undefined while opening. */
  private closedBy: OpenBlocker | undefined;

  constructor(
    readonly maxSessions: number,
    opts: RegistryOptions = {},
  ) {
    wholeAtLeast1("maxSessions", maxSessions);
    this.maxPerSource = Math.min(maxSessions, wholeAtLeast1("maxSessionsPerSource", opts.maxPerSource ?? DEFAULT_MAX_SESSIONS_PER_SOURCE));
    this.endedMs = opts.endedMs ?? ENDED_MEMORY_MS;
    this.maxEnded = opts.maxEnded ?? MAX_ENDED;
    this.now = opts.now ?? (() => performance.now());
  }

  /** Every registered session by key, ended ones included until the server removes them. */
  get sessions(): ReadonlyMap<string, S> {
    return this.byKey;
  }

  /** Registered sessions; they count against the limit until removed, ended or not. */
  get size(): number {
    return this.byKey.size;
  }

  /** Sessions registered for `source` now. */
  sourceCount(source: string): number {
    return this.perSource.get(source) ?? 0;
  }

  /** Ended ids remembered now (for tests and statistics). */
  get endedCount(): number {
    this.forget(this.now());
    return this.endedAt.size;
  }

  live(key: string): S | undefined {
    const s = this.byKey.get(key);
    return s === undefined || s.closed ? undefined : s;
  }

  ended(key: string): boolean {
    if (this.byKey.get(key)?.closed === true) return true;
    const at = this.endedAt.get(key);
    return at !== undefined && this.now() - at < this.endedMs;
  }

  openBlocker(source?: string): OpenBlocker | undefined {
    if (this.closedBy !== undefined) return this.closedBy;
    if (this.byKey.size >= this.maxSessions) return { code: "E_SESSION_LIMIT", reason: `session limit ${this.maxSessions}` };
    if (source !== undefined && this.sourceCount(source) >= this.maxPerSource) {
      return { code: "E_SOURCE_LIMIT", reason: `limit of ${this.maxPerSource} sessions per source address` };
    }
    return undefined;
  }

  /**
   * Registers a new session under `key`, counted against `source`. Admission has checked the limits and
   * the key first; breaking them here is a bug, reported as E_INTERNAL.
   */
  add(key: string, session: S, source = ""): void {
    if (this.byKey.has(key)) throw new StriperError("E_INTERNAL", `session ${key.slice(0, 12)} is already registered`);
    const blocker = this.openBlocker(source);
    if (blocker !== undefined) throw new StriperError("E_INTERNAL", `session registered against the rules: ${blocker.reason}`);
    this.byKey.set(key, session);
    this.sourceOf.set(key, source);
    this.perSource.set(source, this.sourceCount(source) + 1);
  }

  /**
   * Forgets `session` once it has finished, and remembers its id as ended. Only that session: a key
   * registered to another session is left alone. Returns whether it was registered.
   */
  remove(key: string, session: S): boolean {
    if (this.byKey.get(key) !== session) return false;
    this.byKey.delete(key);
    const source = this.sourceOf.get(key) ?? "";
    this.sourceOf.delete(key);
    const n = this.sourceCount(source) - 1;
    if (n > 0) this.perSource.set(source, n);
    else this.perSource.delete(source);
    const now = this.now();
    this.endedAt.delete(key); // re-inserted at the end: the newest
    this.endedAt.set(key, now);
    this.forget(now);
    return true;
  }

  /**
   * No new sessions from now on, refused for `why` (the first reason given stays: a drain that ends in a
   * stop still says "draining"); live ones carry on until closed, and their stripes may still join.
   */
  stopOpening(why: OpenBlocker = { code: "E_SHUTDOWN", reason: "shutting down" }): void {
    this.closedBy ??= why;
  }

  /** Drops ended ids older than endedMs, and the oldest beyond maxEnded. */
  private forget(now: number): void {
    for (const [key, at] of this.endedAt) {
      if (this.endedAt.size <= this.maxEnded && now - at < this.endedMs) break;
      this.endedAt.delete(key);
    }
  }
}
