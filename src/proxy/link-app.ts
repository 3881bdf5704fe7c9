/**
 * Client side: joins an app connection to its session once the front and the server allow it (issue 13).
 *
 * - A front that answers its app (SOCKS, HTTP CONNECT) and waits for the verdict: the app's bytes go to
 *   the session at once (0-RTT, and any "optimistic data" that came with the request), but nothing flows
 *   back and no reply is written until the server has said what became of the connect: OPENED → the
 *   success reply, then the bridge; a RESET → the error reply in the app's protocol, from the RESET code
 *   (src/proxy/destination.ts outcomeOfReset); no word within `verdictTimeoutMs` → a timeout reply.
 * - Otherwise (a plain listener, or a front that answered at once): the bridge at once.
 *
 * The session is bridged through a meter: once `growAfter` bytes have passed either way, `onBulk` fires
 * (the client then dials the session's other stripes; short connections stay on one).
 */

import { BrokenError, PeerResetError, type StriperError } from "../errors.ts";
import { Bridge, type BridgeResult } from "../pipe/bridge.ts";
import type { Pipe, PipeHandler, PipeState, PipeStats } from "../pipe/pipe.ts";
import type { StripedPipe } from "../pipe/striped.ts";
import { outcomeOfReset, type Outcome } from "./destination.ts";
import type { AppConnection } from "./front.ts";

/** Default time a client waits for the server's verdict on a connect, ms (its own deadlines are 5 + 10 s). */
export const VERDICT_TIMEOUT_MS = 30_000;

/**
 * A pipe that counts the bytes through another, both ways, and calls `onBulk` once when they reach
 * `threshold`. Everything else passes straight through.
 */
export class MeteredPipe implements Pipe {
  private total = 0;
  private fired = false;

  constructor(
    private readonly inner: Pipe,
    private readonly threshold: number,
    private readonly onBulk: () => void,
  ) {}

  get state(): PipeState {
    return this.inner.state;
  }
  get readable(): boolean {
    return this.inner.readable;
  }
  get writable(): boolean {
    return this.inner.writable;
  }
  get error(): StriperError | undefined {
    return this.inner.error;
  }
  get stats(): PipeStats {
    return this.inner.stats;
  }

  private count(n: number): void {
    this.total += n;
    if (!this.fired && this.total >= this.threshold) {
      this.fired = true;
      this.onBulk();
    }
  }

  setHandler(h: PipeHandler): void {
    this.inner.setHandler({
      ready: h.ready,
      data: (chunk) => {
        this.count(chunk.byteLength);
        h.data(chunk);
      },
      drain: () => h.drain(),
      end: () => h.end(),
      close: (err) => h.close(err),
    });
  }
  send(chunk: Uint8Array): boolean {
    this.count(chunk.byteLength);
    return this.inner.send(chunk);
  }
  shutdown(): void {
    this.inner.shutdown();
  }
  pause(): void {
    this.inner.pause();
  }
  resume(): void {
    this.inner.resume();
  }
  close(err?: StriperError): void {
    this.inner.close(err);
  }
}

/** How to link one app to its session. */
export interface LinkOptions {
  /** Bytes either way after which `onBulk` fires; undefined: never (all stripes are dialled at once). */
  growAfter: number | undefined;
  onBulk: () => void;
  /** How long to wait for the server's verdict when the front waits for it, ms. */
  verdictTimeoutMs?: number;
  /** The session ended before its target connected: one log line (the outcome and the session's error). */
  onFailed(outcome: Exclude<Outcome, "connected">, err: StriperError | undefined): void;
  /** The app connection and the session have both ended (bridged or not). */
  onDone(r: BridgeResult): void;
}

const idle = () => ({ bytes: 0, congestions: 0, finished: false });

/** What a session that ended before its target connected tells the app: from the server's RESET code. */
export function failureOutcome(err: StriperError | undefined): Exclude<Outcome, "connected"> {
  if (err instanceof PeerResetError) return outcomeOfReset(err.peerCode);
  return err?.code === "E_VERDICT_TIMEOUT" ? "timeout" : "failed";
}

/** Links `app` to `session` as the module comment says. */
export function linkApp(app: AppConnection, session: StripedPipe, o: LinkOptions): void {
  const peer: Pipe = o.growAfter === undefined ? session : new MeteredPipe(session, o.growAfter, o.onBulk);
  if (app.leftover !== undefined && app.leftover.byteLength > 0) peer.send(app.leftover);
  const answer = app.answer;
  if (answer === undefined || !answer.waits) {
    // The app was answered already (or needs no answer): a failure shows as a reset. Still say why.
    let connected = false;
    session.opened = () => {
      connected = true;
    };
    new Bridge(app.pipe, peer, (r) => {
      if (!connected && r.error !== undefined) o.onFailed(failureOutcome(r.error), r.error);
      o.onDone(r);
    });
    return;
  }
  // Waiting for the verdict: app → session flows, session → app is held, no reply yet.
  let decided = false;
  const started = performance.now();
  session.pause();
  const timer = setTimeout(() => {
    session.close(new BrokenError("E_VERDICT_TIMEOUT", `the server did not say within ${o.verdictTimeoutMs ?? VERDICT_TIMEOUT_MS} ms whether the target connected`));
  }, o.verdictTimeoutMs ?? VERDICT_TIMEOUT_MS);
  timer.unref?.();
  app.pipe.setHandler({
    data: (chunk) => {
      if (!peer.writable) return;
      if (!peer.send(chunk)) app.pipe.pause();
    },
    drain() {},
    end: () => {
      if (peer.writable) peer.shutdown();
    },
    close: (err) => {
      if (decided) return;
      decided = true;
      clearTimeout(timer);
      session.close(err ?? new BrokenError("E_ABORTED", "the app closed before the target connected"));
      o.onDone({ aToB: idle(), bToA: idle(), error: err, durationMs: performance.now() - started });
    },
  });
  session.setHandler({
    data() {}, // paused until the verdict: nothing is delivered
    drain: () => app.pipe.resume(),
    end() {},
    close: (err) => {
      if (decided) return;
      decided = true;
      clearTimeout(timer);
      const outcome = failureOutcome(err);
      o.onFailed(outcome, err);
      answer.failed(outcome);
      o.onDone({ aToB: idle(), bToA: idle(), error: err, durationMs: performance.now() - started });
    },
  });
  session.opened = () => {
    // Out of the frame decoder's call stack: the bridge delivers at once.
    queueMicrotask(() => {
      if (decided || session.closed) return;
      decided = true;
      clearTimeout(timer);
      answer.connected();
      new Bridge(app.pipe, peer, o.onDone);
      session.resume();
      app.pipe.resume();
    });
  };
}
