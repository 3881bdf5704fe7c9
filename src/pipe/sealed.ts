/**
 * SealedPipe: the pipe contract over a carrier pipe, every byte in sealed records (src/secure/record.ts).
 *
 * - send(chunk) seals the chunk as one record (a chunk above the record maximum as several) and hands
 *   the carrier ONE buffer per record; sendv() of a batch cut into several records hands a copying
 *   carrier its small records gathered in one buffer (fewer socket writes). The plaintext is encrypted before send() returns, so the caller may reuse its buffer at once:
 *   `copiesOnSend` is true whatever the carrier does.
 * - Inbound records are opened; a record's plaintext reaches `data` only after its tag verified. A
 *   record that fails (E_RECORD_AUTH and the other RecordError codes) resets the carrier at once; the
 *   records that verified before it are still delivered, then the pipe closes with that error. The
 *   striped session then treats the stripe as dead and re-sends what the peer had not confirmed on it
 *   (lossless). Nothing of a failed record, or after it, is ever delivered. A throwing `data` handler
 *   closes the pipe with E_HANDLER.
 * - Backpressure, pause/resume and half-close pass through to the carrier. A FIN or a clean close in
 *   the middle of a record is E_RECORD_TRUNCATED (a truncated record cannot be authenticated).
 *
 * Two ways to start the inbound side:
 * - `opener` (+ `leftover`): the peer's first message was read already (server: the hello; the leftover
 *   holds the 0-RTT records that came with it).
 * - `preface`: the peer's first message arrives on this pipe before its records (client: the server's
 *   reply, which brings the s2c key). Sending works at once (0-RTT); inbound bytes go to `preface` until
 *   it returns the opener.
 *
 * Output buffers: with a copying carrier (a socket), records of 64 KiB or more are sealed into pooled
 * buffers, returned to the pool when the carrier took them (send() true) or at its drain; a fresh
 * 256 KiB buffer costs ~20 µs more than a reused one, more than the copy itself (bench/secure.bench.ts).
 */

import { BrokenError, StriperError } from "../errors.ts";
import { RECORD_OVERHEAD } from "../secure/constants.ts";
import { RecordError } from "../secure/errors.ts";
import { ALIGN_SLACK, type RecordOpener, type RecordSealer } from "../secure/record.ts";
import { NOOP_HANDLER, newStats, type Pipe, type PipeHandler, type PipeState, type PipeStats } from "./pipe.ts";

/** What a preface reader says about the bytes received so far. */
export type PrefaceStep =
  /** Call again with at least `total` bytes. */
  | { status: "need"; total: number }
  /** The first `consumed` bytes were the preface; records follow, opened by `opener`. */
  | { status: "done"; consumed: number; opener: RecordOpener }
  /** Not an acceptable preface: the pipe closes with `error`. */
  | { status: "fail"; error: StriperError };

/** Options of a SealedPipe. Give exactly one of `opener` and `preface`. */
export interface SealedPipeOptions {
  /** Seals outbound records (from seal number 2 after a header or reply record). */
  sealer: RecordSealer;
  /** Opens inbound records, when the peer's key is known already. */
  opener?: RecordOpener;
  /** With `opener`: inbound bytes that arrived with the handshake, opened before anything else. */
  leftover?: Uint8Array;
  /** Reads the peer's first message, which precedes its records; see the module comment. */
  preface?: (received: Uint8Array) => PrefaceStep;
  /** Largest body per record sent (default: the sealer's maximum, 1 MiB). */
  maxRecord?: number;
}

/** The largest preface accepted (a v2 reply is ≤ 2.1 KiB): a reader asking for more is refused. */
const MAX_PREFACE = 64 * 1024;
/** Records from this size on are sealed into pooled buffers (smaller ones would pin a big buffer). */
const POOL_FROM = 64 * 1024;
/** Records below this size are gathered into one carrier buffer with their neighbours (sendGathered). */
const GATHER_BELOW = 128 * 1024;
/** Size of a pooled output buffer: a default session batch (512 KiB + 32 KiB slack) sealed, with room. */
const POOL_BUFFER = 640 * 1024;
/** Pooled buffers kept idle, shared by every SealedPipe. */
const POOL_KEEP = 16;
const pool: Uint8Array[] = [];

function poolGet(): Uint8Array {
  return pool.pop() ?? Buffer.allocUnsafe(POOL_BUFFER);
}
function poolPut(buf: Uint8Array): void {
  if (pool.length < POOL_KEEP) pool.push(buf);
}

/**
 * Cuts a list of pieces into consecutive groups: one ends at each offset of `cuts` (ascending, within the
 * total) and wherever a group would exceed `max` bytes. Pieces are split (subarrays) where a cut falls.
 */
function splitPieces(pieces: readonly Uint8Array[], max: number, cuts: readonly number[] = []): { pieces: Uint8Array[]; length: number }[] {
  const out: { pieces: Uint8Array[]; length: number }[] = [];
  let cur: Uint8Array[] = [];
  let n = 0; // bytes in the current group
  let at = 0; // offset of the current group's start
  let c = 0; // next cut
  for (let p of pieces) {
    while (p.byteLength > 0) {
      while (c < cuts.length && cuts[c]! <= at) c++;
      const limit = Math.min(max, c < cuts.length ? cuts[c]! - at : max);
      const take = Math.min(p.byteLength, limit - n);
      cur.push(take === p.byteLength ? p : p.subarray(0, take));
      n += take;
      p = p.subarray(take);
      if (n === limit) {
        out.push({ pieces: cur, length: n });
        at += n;
        cur = [];
        n = 0;
      }
    }
  }
  if (n > 0) out.push({ pieces: cur, length: n });
  return out;
}

/** A pipe whose bytes travel in sealed records over a carrier pipe. */
export class SealedPipe implements Pipe {
  readonly stats: PipeStats = newStats();
  /** send() seals (encrypts into a new buffer) before it returns: the caller's chunk is free at once. */
  readonly copiesOnSend = true;
  readonly maxRecord: number;
  private _state: PipeState;
  private _readable = true;
  private _writable = true;
  private _error: StriperError | undefined;
  private handler: PipeHandler = NOOP_HANDLER;
  private readonly sealer: RecordSealer;
  private opener: RecordOpener | undefined;
  private preface: ((received: Uint8Array) => PrefaceStep) | undefined;
  private prefaceBuf = new Uint8Array(0);
  private prefaceFill = 0;
  private prefaceNeed = 0;
  // Inbound: raw carrier chunks not opened yet, and verified plaintext not delivered yet (the receiver
  // paused in between). Both stay small: the carrier is paused along with this pipe.
  private backlog: Uint8Array[] = [];
  private ready: Uint8Array[] = [];
  private readyHead = 0;
  private paused = false;
  private pumping = false;
  private pumpScheduled = false;
  private endPending = false;
  private closePending = false;
  // A record failed: the records verified before it (in `ready`) are delivered first, then this closes.
  private failure: StriperError | undefined;
  // Pooled output buffers the carrier still holds (it returned false); back to the pool at drain.
  private lent: Uint8Array[] = [];
  private congested = false; // the carrier returned false; cleared at its drain

  constructor(
    readonly carrier: Pipe,
    opts: SealedPipeOptions,
  ) {
    if (carrier.state === "closed") throw new BrokenError("E_CLOSED", "sealed pipe over a closed carrier");
    if ((opts.opener === undefined) === (opts.preface === undefined)) {
      throw new Error("SealedPipe needs exactly one of `opener` and `preface`");
    }
    this.sealer = opts.sealer;
    this.maxRecord = Math.min(opts.maxRecord ?? opts.sealer.maxBody, opts.sealer.maxBody);
    this.opener = opts.opener;
    this.preface = opts.preface;
    this._state = carrier.state;
    if (opts.leftover !== undefined && opts.leftover.byteLength > 0) this.backlog.push(opts.leftover);
    carrier.setHandler({
      ready: () => this.onReady(),
      data: (chunk) => this.onData(chunk),
      drain: () => this.onDrain(),
      end: () => this.onEnd(),
      close: (err) => this.onCarrierClose(err),
    });
    if (this.backlog.length > 0) this.schedulePump(); // after the owner has installed its handler
  }

  get state(): PipeState {
    return this._state;
  }
  get readable(): boolean {
    return this._readable;
  }
  get writable(): boolean {
    return this._writable;
  }
  get error(): StriperError | undefined {
    return this._error;
  }

  setHandler(handler: PipeHandler): void {
    this.handler = handler;
  }

  /**
   * Seals `chunk` and sends it. Returns false when the carrier is congested (wait for drain). Throws
   * BrokenError E_NOT_WRITABLE after shutdown or close. A key whose counter is used up closes the pipe
   * with E_RECORD_COUNTER (and send returns false) rather than throwing into the session.
   */
  send(chunk: Uint8Array): boolean {
    // One piece, no cuts: sendv splits it only at the record maximum.
    return this.sendv([chunk], chunk.byteLength);
  }

  /**
   * Seals the concatenation of `pieces` (`length` bytes) straight from where they lie, so the caller need
   * not copy them together first: the encryption is the copy. A record ends at each offset in `cuts` (the
   * session cuts at frame boundaries about every frame size, so a slow stripe's receiver gets whole frames
   * released as they arrive rather than after a long record) and wherever the record maximum would be
   * exceeded. Over a copying carrier, consecutive records below GATHER_BELOW share one pooled buffer
   * (sendGathered); otherwise each record is one carrier buffer. The pieces are free again when this
   * returns. Same results as send().
   */
  sendv(pieces: readonly Uint8Array[], length: number, cuts?: readonly number[]): boolean {
    if (!this._writable) throw new BrokenError("E_NOT_WRITABLE", "send() after shutdown or close");
    this.stats.bytesOut += length;
    if (length === 0) return !this.congested;
    let ok = true;
    try {
      if (length <= this.maxRecord && (cuts === undefined || cuts.length === 0 || (cuts.length === 1 && cuts[0]! >= length))) {
        ok = this.sendRecord(pieces, length);
      } else {
        const groups = splitPieces(pieces, this.maxRecord, cuts);
        if (this.carrier.copiesOnSend === true) {
          ok = this.sendGathered(groups);
        } else {
          for (const group of groups) {
            ok = this.sendRecord(group.pieces, group.length) && ok;
            if (this._state === "closed") return false;
          }
        }
      }
    } catch (err) {
      if (!(err instanceof RecordError)) throw err;
      this.close(err);
      return false;
    }
    if (!ok) {
      this.congested = true;
      this.stats.congestions++;
    }
    return ok;
  }

  /** Seals one record (`length` ≤ maxRecord bytes in `pieces`) and hands it to the carrier in one buffer. */
  private sendRecord(pieces: readonly Uint8Array[], length: number): boolean {
    const pooled = this.carrier.copiesOnSend === true && length >= POOL_FROM && length + RECORD_OVERHEAD + ALIGN_SLACK <= POOL_BUFFER;
    if (!pooled) return this.carrier.send(this.sealer.sealv(pieces));
    const buf = poolGet();
    const ok = this.carrier.send(this.sealer.sealv(pieces, undefined, buf));
    if (ok) poolPut(buf);
    else this.lent.push(buf); // the carrier keeps the unwritten rest by reference until drain
    return ok;
  }

  /**
   * Sends records over a copying carrier, consecutive records below GATHER_BELOW sealed one after another
   * into one pooled buffer (sealAt) and written together: a slow stripe's batch is cut into many small
   * records (a frame is ~25 ms of its rate), and one write per record cost ~20% more CPU at 16 KiB
   * (measured). A large record still goes alone through sendRecord: its ciphertext copy is co-aligned
   * there, and two 256 KiB records in one buffer measured no cheaper than two writes.
   */
  private sendGathered(groups: readonly { pieces: Uint8Array[]; length: number }[]): boolean {
    // Small records of less than POOL_FROM in all go in one exact-size buffer: a congested carrier would
    // otherwise pin a whole pooled buffer for a few bytes (hundreds of stripes add up).
    let small = 0;
    for (const g of groups) if (g.length < GATHER_BELOW) small += g.length + RECORD_OVERHEAD;
    const pooled = small >= POOL_FROM;
    let ok = true;
    let buf: Uint8Array | undefined;
    let at = 0;
    const flush = () => {
      if (buf === undefined) return;
      const sent = this.carrier.send(buf.subarray(0, at));
      if (pooled && sent) poolPut(buf);
      else if (pooled) this.lent.push(buf); // the carrier keeps the unwritten rest by reference until drain
      ok = sent && ok;
      buf = undefined;
      at = 0;
    };
    for (const g of groups) {
      if (g.length >= GATHER_BELOW) {
        flush();
        ok = this.sendRecord(g.pieces, g.length) && ok;
      } else {
        if (buf !== undefined && at + g.length + RECORD_OVERHEAD > buf.byteLength) flush();
        buf ??= pooled ? poolGet() : Buffer.allocUnsafe(small);
        at = this.sealer.sealAt(g.pieces, g.length, buf, at);
      }
      if (this._state === "closed") return false;
    }
    flush();
    return ok;
  }

  shutdown(): void {
    if (!this._writable) return;
    this._writable = false;
    this.carrier.shutdown();
  }

  pause(): void {
    this.paused = true;
    this.carrier.pause();
  }

  resume(): void {
    this.paused = false;
    if (this.hasInbound() || this.endPending || this.closePending) this.schedulePump();
    this.carrier.resume();
  }

  close(err?: StriperError): void {
    if (this._state === "closed") return;
    this.finish(err);
    this.carrier.close(err);
  }

  // --- carrier events ---

  private onReady(): void {
    if (this._state !== "opening") return;
    this._state = "open";
    this.handler.ready?.();
  }

  private onData(chunk: Uint8Array): void {
    if (this._state === "closed") return;
    this._state = "open";
    // Always through the backlog: keeps order behind chunks held for a paused receiver and behind a
    // chunk being opened when the handler re-enters.
    this.backlog.push(chunk);
    this.pump();
  }

  private onDrain(): void {
    for (const b of this.lent) poolPut(b);
    this.lent = [];
    this.congested = false;
    this.handler.drain();
  }

  private onEnd(): void {
    if (this._state === "closed") return;
    this.endPending = true;
    this.pump();
  }

  private onCarrierClose(err: StriperError | undefined): void {
    if (this._state === "closed") return;
    if (err === undefined && (this.hasInbound() || this.endPending)) {
      this.closePending = true; // both directions ended cleanly; deliver what is held first
      return;
    }
    if (err === undefined && this._readable && !this.atBoundary()) err = this.truncated();
    this.finish(err);
  }

  // --- receive path ---

  private hasInbound(): boolean {
    return this.backlog.length > 0 || this.readyHead < this.ready.length || this.failure !== undefined;
  }

  private atBoundary(): boolean {
    return this.preface === undefined && this.opener !== undefined && this.opener.atBoundary;
  }

  private truncated(): RecordError {
    if (this.preface !== undefined) {
      return new RecordError("E_RECORD_TRUNCATED", `stream ended before the peer's first message was complete (${this.prefaceFill} bytes)`);
    }
    return new RecordError("E_RECORD_TRUNCATED", `stream ended inside a record (${this.opener?.buffered ?? 0} bytes of it received)`);
  }

  private schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    // From a fresh stack: resume() is often called inside another pipe's callback, which must not see
    // data events re-entering it.
    queueMicrotask(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (!this.paused && this._state !== "closed") {
        if (this.readyHead < this.ready.length) {
          const piece = this.ready[this.readyHead]!;
          this.ready[this.readyHead++] = undefined as unknown as Uint8Array;
          this.stats.bytesIn += piece.byteLength;
          try {
            this.handler.data(piece);
          } catch (err) {
            // The rest cannot be delivered in order any more: fail loudly rather than drop it.
            this.close(new BrokenError("E_HANDLER", `data handler threw: ${String(err)}`, { cause: err }));
            break;
          }
          continue;
        }
        this.ready = [];
        this.readyHead = 0;
        if (this.failure !== undefined) {
          this.finish(this.failure);
          break;
        }
        const chunk = this.backlog.shift();
        if (chunk === undefined) break;
        if (this.preface !== undefined) this.readPreface(chunk);
        else this.open(chunk);
      }
    } finally {
      this.pumping = false;
    }
    if (this.paused || this._state === "closed" || this.hasInbound()) return;
    if (this.endPending) this.deliverEnd();
    if (this.closePending && (this._state as PipeState) !== "closed") this.finish(undefined);
  }

  /**
   * Opens one carrier chunk into `ready`. When a record fails, the records of the chunk that verified
   * before it are still delivered (they are authentic, and the session counts them as received), then
   * the pipe closes with the error; nothing of the failed record or after it is delivered.
   */
  private open(chunk: Uint8Array): void {
    try {
      this.opener!.push(chunk, this.ready);
    } catch (err) {
      const failure = err instanceof StriperError ? err : new BrokenError("E_INTERNAL", String(err), { cause: err });
      this.failure = failure;
      this.backlog = [];
      this.endPending = false;
      this.closePending = false;
      // Reset the carrier now (the peer learns at once, nothing more is read); our own close follows
      // once the verified records are delivered (see pump).
      this.carrier.setHandler(NOOP_HANDLER);
      this.carrier.close(failure);
    }
  }

  /** Collects the peer's first message; hands what follows it to the opener. */
  private readPreface(chunk: Uint8Array): void {
    try {
      this.readPrefaceChunk(chunk);
    } catch (err) {
      this.close(err instanceof StriperError ? err : new BrokenError("E_INTERNAL", `preface reader threw: ${String(err)}`, { cause: err }));
    }
  }

  private readPrefaceChunk(chunk: Uint8Array): void {
    let pos = 0;
    while (pos < chunk.byteLength || this.prefaceNeed <= this.prefaceFill) {
      if (this.prefaceNeed <= this.prefaceFill) {
        const step = this.preface!(this.prefaceBuf.subarray(0, this.prefaceFill));
        switch (step.status) {
          case "need":
            if (step.total <= this.prefaceFill || step.total > MAX_PREFACE) {
              this.close(new RecordError("E_RECORD_TOO_LARGE", `peer's first message needs ${step.total} bytes, at most ${MAX_PREFACE} accepted`));
              return;
            }
            this.prefaceNeed = step.total;
            if (this.prefaceBuf.byteLength < step.total) {
              const grown = new Uint8Array(step.total);
              grown.set(this.prefaceBuf.subarray(0, this.prefaceFill));
              this.prefaceBuf = grown;
            }
            continue;
          case "done": {
            if (step.consumed > this.prefaceFill) {
              this.close(new BrokenError("E_INTERNAL", `preface reader consumed ${step.consumed} of ${this.prefaceFill} bytes`));
              return;
            }
            this.preface = undefined;
            this.opener = step.opener;
            const rest: Uint8Array[] = [];
            if (step.consumed < this.prefaceFill) rest.push(this.prefaceBuf.slice(step.consumed, this.prefaceFill));
            if (pos < chunk.byteLength) rest.push(chunk.subarray(pos));
            this.backlog.unshift(...rest);
            this.prefaceBuf = new Uint8Array(0);
            this.prefaceFill = 0;
            return;
          }
          case "fail":
            this.close(step.error);
            return;
          default: {
            const never: never = step;
            throw new Error(`unknown preface step ${String(never)}`);
          }
        }
      }
      const take = Math.min(this.prefaceNeed - this.prefaceFill, chunk.byteLength - pos);
      this.prefaceBuf.set(chunk.subarray(pos, pos + take), this.prefaceFill);
      this.prefaceFill += take;
      pos += take;
    }
  }

  private deliverEnd(): void {
    this.endPending = false;
    if (!this._readable) return;
    if (!this.atBoundary()) {
      this.close(this.truncated());
      return;
    }
    this._readable = false;
    this.handler.end();
  }

  private finish(err: StriperError | undefined): void {
    if (this._state === "closed") return;
    this._state = "closed";
    this._error = err;
    this._readable = false;
    this._writable = false;
    this.backlog = [];
    this.ready = [];
    this.readyHead = 0;
    this.endPending = false;
    this.closePending = false;
    this.lent = []; // the carrier may still hold them: never reuse
    const handler = this.handler;
    this.handler = NOOP_HANDLER;
    handler.close(err);
  }
}
