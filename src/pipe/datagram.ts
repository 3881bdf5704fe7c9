/**
 * DatagramPipe: message boundaries over a byte pipe (the carrier). Each message travels as
 *
 *    0                   1                   2                   3
 *    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *   |                    message length (u32, BE)                   |
 *   |                  message bytes (length bytes) ...             |
 *
 * Sending messages of 3, 123 and 4 bytes delivers exactly those three messages. A length above the
 * maximum is refused on send (MessageTooLargeError thrown) and on receive (the pipe closes with it,
 * before anything of the announced size is allocated). A FIN inside a message closes the pipe with
 * ProtocolError E_TRUNCATED. Everything else (half-close, backpressure, pause) is the carrier's
 * semantics, with "chunk" meaning "message" (see pipe.ts).
 */

import { BrokenError, MessageTooLargeError, ProtocolError, StriperError } from "../errors.ts";
import { NOOP_HANDLER, newStats, type Pipe, type PipeHandler, type PipeState, type PipeStats } from "./pipe.ts";

/** Bytes in the length prefix in front of every message. */
export const LENGTH_PREFIX_SIZE = 4;
/** Default largest message, in bytes (1 MiB). */
export const DEFAULT_MAX_MESSAGE = 1024 * 1024;
/** Largest maximum the u32 prefix can express. */
const MAX_U32 = 0xffff_ffff;
/**
 * Messages below this size are sent as one coalesced buffer (one copy, one carrier write); larger ones as
 * two carrier sends (a 4-byte prefix, then the caller's buffer untouched), since a copy then costs more
 * than the extra write.
 */
export const COALESCE_BELOW = 16 * 1024;
/** Below this, a misaligned copy is cheaper than the extra subarray that aligning needs (measured). */
const ALIGN_FROM = 2048;

/**
 * Encodes one message as prefix + bytes in a new buffer (always copies). The result may be a subarray:
 * the copied bytes keep the source's offset modulo 64, because a copy whose destination sits 1–15 bytes
 * past its source (mod 4096) — as a payload right behind a 4-byte prefix would — runs several times
 * slower (docs/bun-sockets.md, "Copying").
 */
export function encodeMessage(msg: Uint8Array): Uint8Array {
  const pad = msg.byteLength < ALIGN_FROM ? 0 : alignPad(msg.byteOffset - LENGTH_PREFIX_SIZE);
  const out = new Uint8Array(pad + LENGTH_PREFIX_SIZE + msg.byteLength);
  writeLength(out, pad, msg.byteLength);
  out.set(msg, pad + LENGTH_PREFIX_SIZE);
  return pad === 0 ? out : out.subarray(pad);
}

/** Bytes to skip at the start of a new buffer so that offset `pad` ≡ `offset` (mod 64). */
function alignPad(offset: number): number {
  return offset & 63;
}

/** The 4-byte prefix alone, for sending in front of a message that is not copied. */
export function encodeLength(length: number): Uint8Array {
  const out = new Uint8Array(LENGTH_PREFIX_SIZE);
  writeLength(out, 0, length);
  return out;
}

function writeLength(buf: Uint8Array, pos: number, length: number): void {
  buf[pos] = length >>> 24;
  buf[pos + 1] = (length >>> 16) & 0xff;
  buf[pos + 2] = (length >>> 8) & 0xff;
  buf[pos + 3] = length & 0xff;
}

function readLength(buf: Uint8Array, pos: number): number {
  // `>>> 0`: a bare `<< 24` goes negative for lengths ≥ 2^31.
  return ((buf[pos]! << 24) | (buf[pos + 1]! << 16) | (buf[pos + 2]! << 8) | buf[pos + 3]!) >>> 0;
}

function checkMax(max: number): number {
  if (!Number.isInteger(max) || max < 0 || max > MAX_U32) {
    throw new StriperError("E_BAD_OPTION", `maximum message size must be an integer in 0..${MAX_U32}, got ${max}`);
  }
  return max;
}

/**
 * Receives one whole message. Return `false` to stop the current push() right after this message (the
 * caller keeps the rest of the chunk, see push()); anything else continues.
 */
export type MessageSink = (msg: Uint8Array) => boolean | void;

/**
 * Incremental decoder: push() chunks split anywhere; each complete message goes to the sink. A message
 * that lies inside one pushed chunk is delivered as a subarray of it (zero-copy); one that spans chunks
 * is assembled with exactly one copy into a new buffer (its length plus under 64 bytes of alignment). An
 * announced length above the maximum throws MessageTooLargeError as soon as the 4th prefix byte arrives;
 * after a throw the decoder must be discarded.
 */
export class MessageDecoder {
  readonly maxMessage: number;
  private readonly prefix = new Uint8Array(LENGTH_PREFIX_SIZE);
  private prefixFill = 0;
  private body: Uint8Array | undefined; // message being assembled across chunks
  private bodyFill = 0;
  // Length of a message whose prefix ended exactly at the end of a chunk: nothing is allocated yet, so
  // a body that then lies inside the next chunk is still delivered without a copy.
  private pendingLength = -1;

  constructor(
    private readonly sink: MessageSink,
    maxMessage = DEFAULT_MAX_MESSAGE,
  ) {
    this.maxMessage = checkMax(maxMessage);
  }

  /** True when no message is partially received (a FIN here is clean). */
  get atBoundary(): boolean {
    return this.prefixFill === 0 && this.body === undefined && this.pendingLength < 0;
  }

  /** Bytes of the current partial message (prefix included) held by the decoder. */
  get partialBytes(): number {
    if (this.body !== undefined) return LENGTH_PREFIX_SIZE + this.bodyFill;
    return this.pendingLength >= 0 ? LENGTH_PREFIX_SIZE : this.prefixFill;
  }

  /**
   * Decodes `chunk`. Returns how many bytes were consumed: all of them, unless the sink returned false,
   * in which case it stops right after that message and the caller pushes the rest later.
   */
  push(chunk: Uint8Array): number {
    const end = chunk.byteLength;
    let pos = 0;
    while (pos < end) {
      const body = this.body;
      if (body !== undefined) {
        const take = Math.min(end - pos, body.byteLength - this.bodyFill);
        body.set(chunk.subarray(pos, pos + take), this.bodyFill);
        this.bodyFill += take;
        pos += take;
        if (this.bodyFill < body.byteLength) return pos;
        this.body = undefined;
        this.bodyFill = 0;
        if (this.sink(body) === false) return pos;
        continue;
      }
      let length: number;
      if (this.pendingLength >= 0) {
        length = this.pendingLength;
        this.pendingLength = -1;
      } else {
        if (this.prefixFill === 0 && end - pos >= LENGTH_PREFIX_SIZE) {
          length = readLength(chunk, pos);
          pos += LENGTH_PREFIX_SIZE;
        } else {
          const take = Math.min(LENGTH_PREFIX_SIZE - this.prefixFill, end - pos);
          this.prefix.set(chunk.subarray(pos, pos + take), this.prefixFill);
          this.prefixFill += take;
          pos += take;
          if (this.prefixFill < LENGTH_PREFIX_SIZE) return pos;
          this.prefixFill = 0;
          length = readLength(this.prefix, 0);
        }
        // Checked before anything is allocated: a hostile prefix must not cost memory.
        if (length > this.maxMessage) throw new MessageTooLargeError(length, this.maxMessage);
      }
      if (end - pos >= length) {
        const msg = chunk.subarray(pos, pos + length);
        pos += length;
        if (this.sink(msg) === false) return pos;
      } else if (pos === end) {
        this.pendingLength = length;
      } else {
        // Co-aligned with its source (see encodeMessage); the message is a subarray past `pad` bytes.
        const pad = alignPad(chunk.byteOffset + pos);
        const assembled = new Uint8Array(pad + length).subarray(pad);
        assembled.set(chunk.subarray(pos), 0);
        this.bodyFill = end - pos;
        this.body = assembled;
        pos = end;
      }
    }
    return pos;
  }
}

/** Options of a DatagramPipe. */
export interface DatagramOptions {
  /** Largest message sent or accepted, in bytes. Default 1 MiB; at most 2^32 − 1. */
  maxMessage?: number;
}


/**
 * A pipe of messages over a carrier pipe. Takes over the carrier's handler at construction, so build it
 * where the carrier's handler would be installed (e.g. inside listenTcp's onAccept). A chunk of the pipe
 * contract is one message here; stats count message bytes, not prefixes.
 */
export class DatagramPipe implements Pipe {
  readonly stats: PipeStats = newStats();
  readonly maxMessage: number;
  private _state: PipeState;
  private _readable = true;
  private _writable = true;
  private _error: StriperError | undefined;
  private handler: PipeHandler = NOOP_HANDLER;
  private readonly decoder: MessageDecoder;
  // Carrier chunks not yet decoded because the receiver paused in the middle of one.
  private backlog: Uint8Array[] = [];
  private paused = false;
  private pumping = false;
  private pumpScheduled = false;
  private inHandler = false; // distinguishes a throwing handler from a decoding error
  private endPending = false; // carrier FIN held back behind the backlog
  private closePending = false; // carrier closed cleanly while the backlog was still undelivered

  constructor(
    readonly carrier: Pipe,
    opts: DatagramOptions = {},
  ) {
    if (carrier.state === "closed") throw new BrokenError("E_CLOSED", "datagram pipe over a closed carrier");
    this.maxMessage = checkMax(opts.maxMessage ?? DEFAULT_MAX_MESSAGE);
    this.decoder = new MessageDecoder((msg) => this.deliver(msg), this.maxMessage);
    this._state = carrier.state;
    carrier.setHandler({
      ready: () => this.onReady(),
      data: (chunk) => this.onData(chunk),
      drain: () => this.handler.drain(),
      end: () => this.onEnd(),
      close: (err) => this.onCarrierClose(err),
    });
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
   * Sends one message (ownership passes to the pipe). Throws MessageTooLargeError above the maximum and
   * BrokenError E_NOT_WRITABLE after shutdown or close; returns false when the carrier is congested.
   */
  send(msg: Uint8Array): boolean {
    if (!this._writable) throw new BrokenError("E_NOT_WRITABLE", "send() after shutdown or close");
    const length = msg.byteLength;
    if (length > this.maxMessage) throw new MessageTooLargeError(length, this.maxMessage);
    this.stats.bytesOut += length;
    let ok: boolean;
    if (length < COALESCE_BELOW) {
      ok = this.carrier.send(encodeMessage(msg));
    } else {
      // Two sends, no copy: the carrier owns each chunk and keeps their order.
      const first = this.carrier.send(encodeLength(length));
      ok = this.carrier.send(msg) && first;
    }
    if (!ok) this.stats.congestions++;
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
    if (this.backlog.length > 0 || this.endPending || this.closePending) this.schedulePump();
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
    // Always through the backlog: keeps order behind chunks held for a paused receiver (a carrier may
    // deliver one more chunk after pause()) and behind a chunk being decoded when the handler re-enters.
    this.backlog.push(chunk);
    this.pump();
  }

  private onEnd(): void {
    if (this._state === "closed") return;
    this.endPending = true;
    this.pump(); // delivers the FIN once the backlog is empty and the receiver is not paused
  }

  private onCarrierClose(err: StriperError | undefined): void {
    if (this._state === "closed") return;
    if (err === undefined && (this.backlog.length > 0 || this.endPending)) {
      // Both directions finished cleanly, but messages are still held for a paused receiver.
      this.closePending = true;
      return;
    }
    if (err === undefined && this._readable && !this.decoder.atBoundary) {
      err = truncated(this.decoder.partialBytes);
    }
    this.finish(err);
  }

  // --- receive path ---

  /** Decodes one carrier chunk; returns false if it stopped early (the rest is back on the backlog). */
  private decode(chunk: Uint8Array): boolean {
    this.pumping = true;
    let used: number;
    try {
      used = this.decoder.push(chunk);
    } catch (err) {
      this.pumping = false;
      if (this.inHandler) {
        // The rest of the chunk cannot be delivered in order any more: fail loudly rather than drop it.
        this.inHandler = false;
        this.close(new BrokenError("E_HANDLER", `message handler threw: ${String(err)}`, { cause: err }));
      } else {
        this.close(err instanceof StriperError ? err : new BrokenError("E_INTERNAL", String(err), { cause: err }));
      }
      return false;
    }
    this.pumping = false;
    if (used < chunk.byteLength && this._state !== "closed") {
      this.backlog.unshift(chunk.subarray(used));
      return false;
    }
    return true;
  }

  /** The decoder's sink: returns false to stop decoding when the receiver paused or closed. */
  private deliver(msg: Uint8Array): boolean {
    if (this._state === "closed") return false;
    this.stats.bytesIn += msg.byteLength;
    this.inHandler = true;
    this.handler.data(msg);
    this.inHandler = false;
    // The handler may have closed us: re-read the state (TypeScript's narrowing does not know that).
    return !this.paused && (this._state as PipeState) !== "closed";
  }

  private schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    // Deliver held messages from a fresh stack: resume() is often called from inside another pipe's
    // callback, which must not see data events re-entering it.
    queueMicrotask(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  private pump(): void {
    while (!this.paused && !this.pumping && this._state !== "closed" && this.backlog.length > 0) {
      if (!this.decode(this.backlog.shift()!)) return;
    }
    if (this.paused || this.pumping || this._state === "closed" || this.backlog.length > 0) return;
    if (this.endPending) this.deliverEnd();
    if (this.closePending && (this._state as PipeState) !== "closed") this.finish(undefined);
  }

  private deliverEnd(): void {
    this.endPending = false;
    if (!this._readable) return;
    if (!this.decoder.atBoundary) {
      this.close(truncated(this.decoder.partialBytes));
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
    this.endPending = false;
    this.closePending = false;
    const handler = this.handler;
    this.handler = NOOP_HANDLER;
    handler.close(err);
  }
}

function truncated(partial: number): ProtocolError {
  return new ProtocolError("E_TRUNCATED", `end of stream inside a message (${partial} bytes of it received)`);
}
