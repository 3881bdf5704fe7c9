/**
 * The client's stripe dialer for one session: which stripe index to dial, with which generation and
 * header kind, when to dial it again after a failure (jittered exponential backoff), and when to give up.
 * docs/protocol.md §3.12, §7.4.
 *
 * A session opens on stripe 0 alone (OPEN, carrying the app's first bytes); once the server's reply to it
 * authenticated, stripes 1 … N−1 are dialled as JOINs. Opening on several stripes at once would split a
 * session across server workers behind SO_REUSEPORT. If the opening dial is lost on the way (the
 * connection broke before the reply: a reset path), stripe 0 is dialled again as an OPEN of the same
 * session, up to OPEN_ATTEMPTS dials — the server attaches a second OPEN that proves the session's secret
 * to the session the first one may have opened; any other failure of it fails the session. Every later
 * dial of any index is a JOIN.
 *
 * It does no I/O itself: `dial` starts one attempt (connect, first message, reply — the client's glue) and
 * the glue reports the outcome with `succeeded` / `failed`. The clock and the jitter are injected, so
 * tests drive it without sockets or real time.
 */

import type { StriperError } from "../errors.ts";
import { KIND_JOIN, KIND_OPEN } from "../secure/constants.ts";
import { guardedTimeout } from "../util/guard.ts";

/** First re-dial delay, before jitter. */
export const BACKOFF_BASE_MS = 50;
/** Longest re-dial delay, before jitter. */
export const BACKOFF_MAX_MS = 2000;
/** Dials of the opening stripe (the first included) before a session whose OPEN keeps being lost fails. */
export const OPEN_ATTEMPTS = 3;

/** One dial of one stripe index. */
export interface DialAttempt {
  readonly index: number;
  /** 1 on the index's first dial, +1 on each re-dial, mod 2^16. */
  readonly generation: number;
  /** OPEN for the session's first dial (stripe 0), JOIN for every other. */
  readonly kind: typeof KIND_OPEN | typeof KIND_JOIN;
}

/** Timers as the dialer uses them; the default is the real clock (unref'd: a pending re-dial keeps no process alive). */
export interface DialTimers {
  set(fn: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

/** What the dialer needs from its session. */
export interface DialerOptions {
  /** Stripes per session: indices 0 … stripes−1. */
  stripes: number;
  /**
   * Stripes dialled as soon as the session is accepted (stripe 0 included); the rest wait for grow().
   * Default: all of them.
   */
  initial?: number;
  /** Starts one attempt; its outcome must come back through succeeded() or failed(). */
  dial(attempt: DialAttempt): void;
  /** The opening dial (stripe 0) failed: the session cannot open. `last` says why. */
  unreachable(last: StriperError): void;
  /** Uniform in [0, 1), for the jitter (default Math.random). */
  random?: () => number;
  timers?: DialTimers;
}

const realTimers: DialTimers = {
  set: (fn, ms) => guardedTimeout("re-dial", fn, ms).unref(),
  clear: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

/**
 * The delay before re-dialling an index that has failed `failures` times in a row:
 * min(BACKOFF_MAX_MS, BACKOFF_BASE_MS × 2^failures) × a factor in [0.5, 1.5) taken from `random`.
 */
export function backoffMs(failures: number, random: number): number {
  return Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** failures) * (0.5 + random);
}

/** Dials the stripes of one session and re-dials them as they fail or die. */
export class StripeDialer {
  private readonly generation: number[];
  /** Consecutive failures per index since its last success: the backoff exponent. */
  private readonly failures: number[];
  /** A pending re-dial per index: at most one each, so the table is bounded by the stripe count. */
  private readonly pending: (unknown | undefined)[];
  private accepted = false;
  private stopped = false;
  /** Indices below this have been dialled (or are due once accepted); grow() raises it to `stripes`. */
  private wanted: number;
  private readonly random: () => number;
  private readonly timers: DialTimers;

  constructor(private readonly opts: DialerOptions) {
    this.generation = new Array<number>(opts.stripes).fill(0);
    this.failures = new Array<number>(opts.stripes).fill(0);
    this.pending = new Array<unknown>(opts.stripes).fill(undefined);
    this.random = opts.random ?? Math.random;
    this.timers = opts.timers ?? realTimers;
    this.wanted = Math.max(1, Math.min(opts.stripes, opts.initial ?? opts.stripes));
  }

  /** True once a stripe of the session has been accepted: from then on dials are JOINs. */
  get everAccepted(): boolean {
    return this.accepted;
  }

  /** Dials stripe 0, the session's OPEN; the others follow once it has been accepted. */
  start(): void {
    this.dial(0);
  }

  /**
   * The session opened on a stripe dialled elsewhere (a pooled standby stripe: index 0 with its
   * generation), already accepted: counts as the opening dial, and the initial stripes follow.
   */
  adopt(index: number, generation: number): void {
    this.generation[index] = generation & 0xffff;
    this.succeeded(index);
  }

  /** The attempt on `index` was accepted (its reply authenticated and said OK). */
  succeeded(index: number): void {
    this.failures[index] = 0;
    if (this.accepted) return;
    this.accepted = true;
    for (let i = 1; i < this.wanted; i++) this.dial(i);
  }

  /**
   * Dials the stripes not dialled yet (the session's data turned out to be bulk). Before the session is
   * accepted, they are dialled as soon as it is. Once only.
   */
  grow(): void {
    if (this.wanted >= this.opts.stripes) return;
    const from = this.wanted;
    this.wanted = this.opts.stripes;
    if (!this.accepted || this.stopped) return;
    for (let i = Math.max(1, from); i < this.opts.stripes; i++) this.dial(i);
  }

  /**
   * The attempt on `index` failed (refused, unreachable, timed out, did not authenticate, lost). `lost`:
   * the connection broke before the reply, so the opening dial may be tried again (OPEN_ATTEMPTS in all).
   * Returns true when the index will be dialled again.
   */
  failed(index: number, err: StriperError, lost = false): boolean {
    if (this.stopped) return false;
    if (!this.accepted) {
      if (lost && this.generation[index]! < OPEN_ATTEMPTS) {
        this.schedule(index);
        return true;
      }
      // The opening dial failed for good: nothing to join, the session cannot open.
      this.stopped = true;
      this.opts.unreachable(err);
      return false;
    }
    this.redial(index);
    return true;
  }

  /** Dials of the opening stripe so far (1 on the first). */
  get openAttempts(): number {
    return this.generation[0]!;
  }

  /**
   * Dials `index` again after its backoff (a failed attempt, or an attached stripe that died). Before the
   * session was accepted there is nothing to re-dial: the opening attempt reports its end with failed().
   */
  redial(index: number): void {
    if (this.accepted) this.schedule(index);
  }

  /** Dials `index` after its backoff; at most one pending dial per index. */
  private schedule(index: number): void {
    if (this.stopped || this.pending[index] !== undefined) return;
    const delay = backoffMs(this.failures[index]!++, this.random());
    this.pending[index] = this.timers.set(() => {
      this.pending[index] = undefined;
      this.dial(index);
    }, delay);
  }

  /** No more dials: the session has ended. Pending re-dials are cancelled. */
  stop(): void {
    this.stopped = true;
    for (let i = 0; i < this.pending.length; i++) {
      if (this.pending[i] !== undefined) this.timers.clear(this.pending[i]);
      this.pending[i] = undefined;
    }
  }

  private dial(index: number): void {
    if (this.stopped) return;
    const generation = (this.generation[index] = (this.generation[index]! + 1) & 0xffff);
    this.opts.dial({ index, generation, kind: this.accepted ? KIND_JOIN : KIND_OPEN });
  }
}
