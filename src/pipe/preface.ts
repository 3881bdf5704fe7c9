/**
 * PrefacePipe: a carrier whose peer sends a first message (a preface) before the byte stream proper,
 * which this pipe reads off and hands to `preface`, passing everything after it through unchanged.
 * Sending works from the start.
 *
 * Used by the client in plain mode (`--no-auth`) for 0-RTT: the session sends the app's first bytes on a
 * new stripe before the server's reply has arrived; the reply is read here, and the frames behind it go
 * to the session as if the reply had never been there. (Keyed stripes do the same inside SealedPipe,
 * whose records need the key the reply brings.) After the preface this pipe is a pass-through: one extra
 * call per received chunk, nothing copied.
 */

import { BrokenError, StriperError } from "../errors.ts";
import type { HandshakeParser } from "../wire/handshake.ts";
import { NOOP_HANDLER, newStats, type Pipe, type PipeHandler, type PipeState, type PipeStats } from "./pipe.ts";

/** Largest preface accepted (a v2 reply is at most ~2 KiB). */
const MAX_PREFACE = 4096;

/** A pipe that reads a preface off its carrier's inbound stream, then passes bytes through. */
export class PrefacePipe<T> implements Pipe {
  readonly stats: PipeStats = newStats();
  private handler: PipeHandler = NOOP_HANDLER;
  private parse: HandshakeParser<T> | undefined;
  private parts: Uint8Array[] = [];
  private have = 0;
  private need = 0;
  private closedHere = false;

  /**
   * `parse` reads the preface; `onPreface` gets its value and returns undefined to go on, or an error to
   * close the pipe with (e.g. a refusal). A preface the parser rejects closes the pipe with
   * `rejected(error)`; a stream that ends before the preface is complete with `truncated()`.
   */
  constructor(
    readonly carrier: Pipe,
    parse: HandshakeParser<T>,
    private readonly onPreface: (value: T) => StriperError | undefined,
    private readonly rejected: (err: StriperError) => StriperError,
    private readonly truncated: () => StriperError,
  ) {
    this.parse = parse;
    const first = parse(new Uint8Array(0));
    this.need = first.kind === "more" ? first.bytes : 1;
    carrier.setHandler({
      ready: () => this.handler.ready?.(),
      data: (chunk) => this.onData(chunk),
      drain: () => this.handler.drain(),
      end: () => (this.parse === undefined ? this.handler.end() : this.close(this.truncated())),
      close: (err) => {
        if (this.closedHere) return;
        this.closedHere = true;
        const handler = this.handler;
        this.handler = NOOP_HANDLER;
        handler.close(err === undefined && this.parse !== undefined ? this.truncated() : err);
      },
    });
  }

  get state(): PipeState {
    return this.closedHere ? "closed" : this.carrier.state;
  }
  get readable(): boolean {
    return !this.closedHere && this.carrier.readable;
  }
  get writable(): boolean {
    return !this.closedHere && this.carrier.writable;
  }
  get error(): StriperError | undefined {
    return this.carrier.error;
  }
  get copiesOnSend(): boolean | undefined {
    return this.carrier.copiesOnSend;
  }

  setHandler(handler: PipeHandler): void {
    this.handler = handler;
  }

  send(chunk: Uint8Array): boolean {
    this.stats.bytesOut += chunk.byteLength;
    return this.carrier.send(chunk);
  }

  shutdown(): void {
    this.carrier.shutdown();
  }

  pause(): void {
    this.carrier.pause();
  }

  resume(): void {
    this.carrier.resume();
  }

  close(err?: StriperError): void {
    if (this.closedHere) return;
    this.carrier.close(err); // its close event reaches our handler with `err`
  }

  private onData(chunk: Uint8Array): void {
    if (this.closedHere) return;
    if (this.parse === undefined) {
      this.stats.bytesIn += chunk.byteLength;
      this.handler.data(chunk);
      return;
    }
    this.parts.push(chunk);
    this.have += chunk.byteLength;
    if (this.have < this.need) return;
    const all = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts);
    this.parts = [all];
    let step: ReturnType<HandshakeParser<T>>;
    try {
      step = this.parse(all);
    } catch (err) {
      this.close(new BrokenError("E_INTERNAL", `preface parser threw: ${String(err)}`, { cause: err }));
      return;
    }
    switch (step.kind) {
      case "more":
        this.need = all.byteLength + step.bytes;
        if (this.need > MAX_PREFACE) this.close(this.rejected(new BrokenError("E_HANDSHAKE_TOO_LARGE", `preface of ${this.need} bytes`)));
        return;
      case "invalid":
        this.close(this.rejected(step.error));
        return;
      case "done": {
        this.parse = undefined;
        this.parts = [];
        const refusal = this.onPreface(step.value);
        if (refusal !== undefined) {
          this.close(refusal);
          return;
        }
        if (step.size < all.byteLength && !this.closedHere) this.onData(all.subarray(step.size));
        return;
      }
      default: {
        const never: never = step;
        throw new Error(`unknown parse step ${JSON.stringify(never)}`);
      }
    }
  }
}
