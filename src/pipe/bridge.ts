/**
 * Bridge: joins two pipes (the original design's io_bridge). What comes out of one goes into the other;
 * when the destination is congested the source is paused until drain; a FIN is passed on as a half-close
 * after all preceding data; when one side breaks the other is torn down with the same error, so a peer
 * never mistakes a failure for a clean EOF.
 */

import type { StriperError } from "../errors.ts";
import type { Pipe } from "./pipe.ts";

/** Counters for one direction of a bridge. */
export interface BridgeDirection {
  bytes: number;
  /** Times the destination was congested and the source paused. */
  congestions: number;
  /** The FIN was passed on. */
  finished: boolean;
}

/** How a bridge ended. */
export interface BridgeResult {
  /** a → b and b → a. */
  aToB: BridgeDirection;
  bToA: BridgeDirection;
  /** The first error either side reported; undefined when both closed cleanly. */
  error: StriperError | undefined;
  durationMs: number;
}

/** Joins `a` and `b`; `onDone` fires once when both have closed. */
export class Bridge {
  readonly aToB: BridgeDirection = { bytes: 0, congestions: 0, finished: false };
  readonly bToA: BridgeDirection = { bytes: 0, congestions: 0, finished: false };
  error: StriperError | undefined;
  private readonly started = performance.now();
  private closedCount = 0;

  constructor(
    readonly a: Pipe,
    readonly b: Pipe,
    private readonly onDone?: (result: BridgeResult) => void,
  ) {
    this.wire(a, b, this.aToB);
    this.wire(b, a, this.bToA);
  }

  private wire(src: Pipe, dst: Pipe, dir: BridgeDirection): void {
    src.setHandler({
      data: (chunk) => {
        if (!dst.writable) return; // dst already failed; its close tears src down
        dir.bytes += chunk.byteLength;
        if (!dst.send(chunk)) {
          dir.congestions++;
          src.pause();
        }
      },
      // src drained means dst → src may continue: resume the pipe that feeds src.
      drain: () => dst.resume(),
      end: () => {
        dir.finished = true;
        if (dst.writable) dst.shutdown();
      },
      close: (err) => {
        if (err && !this.error) this.error = err;
        if (err) dst.close(err);
        this.closedCount++;
        if (this.closedCount === 2) this.onDone?.(this.result());
      },
    });
  }

  /** The counters so far. */
  result(): BridgeResult {
    return { aToB: this.aToB, bToA: this.bToA, error: this.error, durationMs: performance.now() - this.started };
  }
}
