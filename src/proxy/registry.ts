/**
 * The server's session registry: live sessions by session id, the session limit, and whether new sessions
 * are taken at all (not while the proxy shuts down). Pure bookkeeping, no sockets: admission
 * (handshake.ts) reads it through `SessionLookup`, the server adds and removes sessions.
 *
 * This is where per-source session counts and the memory of recently ended session ids belong (issue 10),
 * and what each worker process holds for itself (issue 14).
 */

import { StriperError } from "../errors.ts";

/** What the registry needs to know of a session: whether it has ended. */
export interface RegisteredSession {
  readonly closed: boolean;
}

/** Why a new session cannot be opened now. */
export interface OpenBlocker {
  /** Stable code: E_SHUTDOWN or E_SESSION_LIMIT. */
  readonly code: string;
  /** For the log line: "shutting down", "session limit 1024". */
  readonly reason: string;
}

/** The registry as admission sees it: lookups and the open limit, nothing that changes it. */
export interface SessionLookup<S> {
  /** The live session with this key; a session that has ended counts as unknown. */
  live(key: string): S | undefined;
  /** Why a new session cannot be opened now; undefined when it can. */
  openBlocker(): OpenBlocker | undefined;
}

/** The registry key of a session id: its hex form (16 bytes → 32 characters). */
export function sessionKey(id: Uint8Array): string {
  return Buffer.from(id).toString("hex");
}

/** Live sessions of one server by key, at most `maxSessions` of them. */
export class SessionRegistry<S extends RegisteredSession> implements SessionLookup<S> {
  private readonly byKey = new Map<string, S>();
  /** Why new sessions are refused from now on (draining, shutting down); undefined while opening. */
  private closedBy: OpenBlocker | undefined;

  constructor(readonly maxSessions: number) {
    if (!Number.isInteger(maxSessions) || maxSessions < 1) {
      throw new StriperError("E_CONFIG", `maxSessions must be a whole number ≥ 1, not ${maxSessions}`);
    }
  }

  /** Every registered session by key, ended ones included until the server removes them. */
  get sessions(): ReadonlyMap<string, S> {
    return this.byKey;
  }

  /** Registered sessions; they count against the limit until removed, ended or not. */
  get size(): number {
    return this.byKey.size;
  }

  live(key: string): S | undefined {
    const s = this.byKey.get(key);
    return s === undefined || s.closed ? undefined : s;
  }

  openBlocker(): OpenBlocker | undefined {
    if (this.closedBy !== undefined) return this.closedBy;
    if (this.byKey.size >= this.maxSessions) return { code: "E_SESSION_LIMIT", reason: `session limit ${this.maxSessions}` };
    return undefined;
  }

  /**
   * Registers a new session under `key`, replacing an ended one with the same key. Admission has checked
   * the limit and the key first; breaking either here is a bug, reported as E_INTERNAL.
   */
  add(key: string, session: S): void {
    if (this.live(key) !== undefined) throw new StriperError("E_INTERNAL", `a live session already has key ${key.slice(0, 12)}`);
    // An ended session with this key gives its slot to the new one, so only a new key can break the limit.
    const blocker = this.byKey.has(key) && this.closedBy === undefined ? undefined : this.openBlocker();
    if (blocker !== undefined) throw new StriperError("E_INTERNAL", `session registered against the rules: ${blocker.reason}`);
    this.byKey.set(key, session);
  }

  /**
   * Forgets `session` once it has finished. Only that session: if an ended session's key was taken by a
   * newer one, the newer one stays. Returns whether it was registered.
   */
  remove(key: string, session: S): boolean {
    if (this.byKey.get(key) !== session) return false;
    this.byKey.delete(key);
    return true;
  }

  /**
   * No new sessions from now on, refused for `why` (the first reason given stays: a drain that ends in a
   * stop still says "draining"); live ones carry on until closed, and their stripes may still join.
   */
  stopOpening(why: OpenBlocker = { code: "E_SHUTDOWN", reason: "shutting down" }): void {
    this.closedBy ??= why;
  }
}
