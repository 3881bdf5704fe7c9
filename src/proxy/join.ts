/**
 * Keeping a session's stripes on the worker process that holds it (docs/protocol.md §3.16). A server
 * run with `--workers N` has N processes on one listening port (SO_REUSEPORT): the kernel spreads new
 * connections over them by a hash of the 4-tuple, so the stripes of one session would land on different
 * workers, and a worker cannot hand a socket to another (Bun cannot pass descriptors). Instead:
 *
 *   - each worker also listens on a join port of its own, and the OK reply to a session's OPEN carries
 *     the JOIN option: which worker holds the session, how many there are, and its join port (0 when
 *     the server does not advertise one, `--advertise-join off`, e.g. behind a load balancer);
 *   - the client dials the session's JOINs to that port, on the host it dialled the OPEN to;
 *   - a JOIN names its worker (the WORKER header option). A worker that gets a JOIN for a session it does
 *     not hold, naming another worker, answers STATUS_WRONG_WORKER (authenticated), and the client
 *     dials again at once: a new source port hashes afresh, so it reaches the owner with probability
 *     1/N per try. After 4 × N tries in a row (≈ e^-4 ≈ 2 % of the time) the stripe falls back to the
 *     dialer's backoff, and the session carries on over the stripes it has;
 *   - when the join port cannot be reached (a firewall that rejects, or one that drops: no connection
 *     within JOIN_CONNECT_MS), the session's JOINs go to the main address and take the route above.
 *     A dropped connect also makes the client prefer the main address for its other sessions for
 *     JOIN_AVOID_MS, so each does not pay the connect deadline again.
 *
 * This file holds the option codecs and the client's routing state; it does no I/O. The server side is
 * in server.ts (the join listener, the reply option) and handshake.ts (admit: WRONG_WORKER).
 */

import type { Address } from "../pipe/tcp.ts";
import { KIND_JOIN, OPT_JOIN, OPT_WORKER } from "../secure/constants.ts";
import type { Tlv } from "../secure/messages.ts";

/** How long a TCP connect to a join port may take before the client treats the port as unreachable. */
export const JOIN_CONNECT_MS = 2000;
/** After a join port dropped a connect, how long the client's new sessions dial JOINs to the main address. */
export const JOIN_AVOID_MS = 60_000;
/** Wrong-worker answers in a row, per worker, before a stripe waits for the dialer's backoff. */
export const WRONG_WORKER_TRIES_PER_WORKER = 4;
/** Most worker processes a server runs (the JOIN option's fields are u16; the CLI allows fewer). */
export const MAX_WORKERS = 256;

/** Where a session's later stripes go, from the OK reply to its OPEN. */
export interface JoinHint {
  /** The worker that holds the session: 0 … workers − 1. */
  readonly worker: number;
  /** How many workers the server runs. */
  readonly workers: number;
  /** The worker's join port; 0: dial the main address. */
  readonly port: number;
}

/** The reply's JOIN option. */
export function joinOption(h: JoinHint): Tlv {
  const value = new Uint8Array(6);
  const v = new DataView(value.buffer);
  v.setUint16(0, h.worker);
  v.setUint16(2, h.workers);
  v.setUint16(4, h.port);
  return { type: OPT_JOIN, value };
}

/**
 * The JOIN option of a reply's options, or undefined: none, or one that does not make sense (wrong
 * length, worker not below the count, more than MAX_WORKERS). A malformed hint is ignored rather than
 * fatal: the client then behaves as with a single-process server.
 */
export function joinHintOf(options: readonly Tlv[]): JoinHint | undefined {
  const o = options.find((x) => x.type === OPT_JOIN);
  if (o === undefined || o.value.byteLength !== 6) return undefined;
  const v = new DataView(o.value.buffer, o.value.byteOffset, 6);
  const h = { worker: v.getUint16(0), workers: v.getUint16(2), port: v.getUint16(4) };
  if (h.workers < 1 || h.workers > MAX_WORKERS || h.worker >= h.workers) return undefined;
  return h;
}

/** The JOIN header's WORKER option: the worker the client believes holds the session. */
export function workerOption(worker: number): Tlv {
  const value = new Uint8Array(2);
  new DataView(value.buffer).setUint16(0, worker);
  return { type: OPT_WORKER, value };
}

/** The worker a JOIN names, or undefined (none, or not 2 bytes). */
export function wantedWorker(options: readonly Tlv[]): number | undefined {
  const o = options.find((x) => x.type === OPT_WORKER);
  if (o === undefined || o.value.byteLength !== 2) return undefined;
  return (o.value[0]! << 8) | o.value[1]!;
}

// --- Client ------------------------------------------------------------------------------------------

/**
 * What a client proxy remembers across its sessions about reaching join ports: after a connect to one
 * timed out (a firewall that drops), new sessions dial JOINs to the main address for JOIN_AVOID_MS.
 * A refused connect is not remembered: it costs one round trip, not a timeout.
 */
export class JoinMemory {
  private avoidUntil = -Infinity;

  constructor(
    private readonly now: () => number = () => performance.now(),
    readonly avoidMs = JOIN_AVOID_MS,
  ) {}

  /** A join port dropped a connect. */
  blackholed(): void {
    this.avoidUntil = this.now() + this.avoidMs;
  }

  /** A join port answered: join ports work again. */
  reached(): void {
    this.avoidUntil = -Infinity;
  }

  /** Whether sessions should skip join ports now. */
  get avoiding(): boolean {
    return this.now() < this.avoidUntil;
  }
}

/** Where one dial goes. */
export interface DialTarget {
  readonly to: Address;
  /** True when `to` is a worker's join port (a failure to connect there is a reason to fall back). */
  readonly joinPort: boolean;
}

/** How a client's JOINs were routed (its statistics). */
export interface RouteCounts {
  /** JOINs dialled to the join port. */
  viaJoinPort: number;
  /** JOINs dialled to the main address. */
  viaMain: number;
  /** STATUS_WRONG_WORKER answers received. */
  wrongWorker: number;
}

/** One session's routing on the client: where its next dial goes, and what to do about a wrong worker. */
export class JoinRoute {
  /** What the OPEN's reply said (undefined: a single-process server, or no reply yet). */
  hint: JoinHint | undefined;
  /** The join port failed for this session: its JOINs go to the main address. */
  fallback = false;
  /** Wrong-worker answers in a row, per stripe index (at most one entry per index). */
  private readonly wrong = new Map<number, number>();

  constructor(
    private readonly main: Address,
    private readonly memory: JoinMemory,
  ) {}

  /** Takes the hint from the OK reply to the OPEN (its options). */
  learn(options: readonly Tlv[]): void {
    this.hint = joinHintOf(options);
  }

  /** Where a dial of `kind` goes: an OPEN always to the main address; a JOIN to the join port if it may. */
  target(kind: number): DialTarget {
    const h = this.hint;
    if (kind !== KIND_JOIN || h === undefined || h.port === 0 || this.fallback || this.memory.avoiding) {
      return { to: this.main, joinPort: false };
    }
    return { to: { host: this.main.host, port: h.port }, joinPort: true };
  }

  /** The header options of a dial of `kind`: a JOIN names the worker, when the server named one. */
  headerOptions(kind: number): Tlv[] {
    return kind === KIND_JOIN && this.hint !== undefined ? [workerOption(this.hint.worker)] : [];
  }

  /**
   * The join port could not be reached (refused, or no connection within JOIN_CONNECT_MS: `timedOut`).
   * From now on this session dials the main address; a timeout also steers the client's other sessions.
   */
  joinUnreachable(timedOut: boolean): void {
    this.fallback = true;
    if (timedOut) this.memory.blackholed();
  }

  /** A connection to the join port opened. */
  joinReached(): void {
    this.memory.reached();
  }

  /**
   * A JOIN on `index` was answered STATUS_WRONG_WORKER. True: dial it again at once (another source
   * port, another worker). False: this index has had 4 × workers such answers in a row; leave it to the
   * dialer's backoff (the count goes on, so every later answer also waits).
   */
  wrongWorker(index: number): boolean {
    const n = (this.wrong.get(index) ?? 0) + 1;
    this.wrong.set(index, n);
    const workers = this.hint?.workers ?? 1;
    return n < WRONG_WORKER_TRIES_PER_WORKER * workers;
  }

  /** A stripe on `index` attached: its wrong-worker count starts over. */
  attached(index: number): void {
    this.wrong.delete(index);
  }
}

// --- Server ------------------------------------------------------------------------------------------

/** A server process that is one of several workers (`--workers N`): which one, and its join listener. */
export interface WorkerRole {
  /** 0 … workers − 1. */
  readonly index: number;
  readonly workers: number;
  /** Where this worker accepts the JOINs of its sessions (any stripe is accepted there). */
  readonly join: Address;
  /**
   * Whether the OK reply to an OPEN names the join port (`--advertise-join on`). Off (behind a load
   * balancer, which the client must not bypass): the reply names the worker with port 0, so JOINs come
   * to the main address and find the worker through WRONG_WORKER answers.
   */
  readonly advertise: boolean;
}
