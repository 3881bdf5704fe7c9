/**
 * Pure encoders and an incremental decoder for the frames of the stripe wire format (docs/protocol.md
 * §4). No sockets. All integers are big-endian. The handshake (HELLO, WELCOME) is in handshake.ts.
 */

import { ProtocolError } from "../errors.ts";
import {
  ACK_ENTRY_SIZE,
  FRAME_DATA,
  FRAME_HEADER_SIZE,
  FRAME_TYPE_MAX,
  MAX_CONTROL_PAYLOAD,
  MAX_FRAME_PAYLOAD,
  MAX_PAD,
  RESET_REASON_BYTES,
  RESET_REASON_CHARS,
  type FrameType,
} from "./constants.ts";

/** 2^53 is the largest offset a JS number holds exactly; the high word must stay below 2^21. */
const MAX_HIGH_WORD = 1 << 21;

/** Writes a u64 from a non-negative safe integer. */
export function writeU64(view: DataView, pos: number, value: number): void {
  view.setUint32(pos, Math.floor(value / 0x1_0000_0000));
  view.setUint32(pos + 4, value >>> 0);
}

/** Reads a u64 that must fit in 53 bits (offsets never get near it); larger is a protocol error. */
export function readU64(view: DataView, pos: number): number {
  const hi = view.getUint32(pos);
  if (hi >= MAX_HIGH_WORD) throw new ProtocolError("E_OFFSET_RANGE", `64-bit value out of range (high word ${hi})`);
  return hi * 0x1_0000_0000 + view.getUint32(pos + 4);
}

// --- Frames ----------------------------------------------------------------------------------------
//  0                   1                   2                   3
//  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
// |     type      |     flags     |      pad      |   reserved    |
// |                     payload length (u32)                      |
// |                        value (u64) ...                        |
// |                              ...                              |
// then `pad` bytes to skip (DATA only), then `payload length` bytes.

/**
 * Writes a frame header at `pos` of `view`. `pad` bytes (0–63) follow the header before the payload; the
 * sender uses them to keep the payload copy 64-byte co-aligned with its source.
 */
export function writeFrameHeader(
  view: DataView,
  pos: number,
  type: number,
  flags: number,
  pad: number,
  length: number,
  value: number,
): void {
  view.setUint32(pos, (type << 24) | (flags << 16) | (pad << 8));
  view.setUint32(pos + 4, length);
  writeU64(view, pos + 8, value);
}

/** Encodes one control frame (any type, small payload) into a new buffer. */
export function encodeFrame(type: number, flags: number, value: number, payload?: Uint8Array): Uint8Array {
  const len = payload?.byteLength ?? 0;
  const buf = new Uint8Array(FRAME_HEADER_SIZE + len);
  writeFrameHeader(new DataView(buf.buffer), 0, type, flags, 0, len, value);
  if (payload) buf.set(payload, FRAME_HEADER_SIZE);
  return buf;
}

/** Every frame type but DATA: what FrameSink.control receives, so a `switch` over it can be exhaustive. */
export type ControlFrameType = Exclude<FrameType, FrameType.Data>;

/** Receives what the decoder finds. DATA payloads arrive as one or more fragments, never copied. */
export interface FrameSink {
  /** A piece of a DATA frame's payload: `bytes` belong at stream `offset`. */
  data(offset: number, bytes: Uint8Array): void;
  /** A whole non-DATA frame (payload joined; empty when none). The decoder has checked the type. */
  control(type: ControlFrameType, flags: number, value: number, payload: Uint8Array): void;
  /**
   * An empty DATA frame (valid, and without effect on the stream). Reported apart from `data` so a
   * session can count it against its peer's control budget: otherwise a flood of them would cost
   * decoding work that no limit sees.
   */
  empty?(): void;
}

// --- ACK entries -----------------------------------------------------------------------------------
//  0                   1                   2                   3
//  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
// |         stripe index          |          generation           |
// |        bytes received on this stripe connection, mod 2^32     |

/** One entry of an ACK's payload: how much one stripe connection has received. */
export interface AckEntry {
  /** Stripe index. */
  index: number;
  /** The stripe's generation (from its HELLO); an entry for another generation is ignored. */
  generation: number;
  /** Bytes received on this stripe connection since its handshake; encoded mod 2^32. */
  received: number;
}

/** Encodes ACK entries, in the order given, into a new payload of 8 bytes each. */
export function encodeAckEntries(entries: readonly AckEntry[]): Uint8Array {
  const payload = new Uint8Array(entries.length * ACK_ENTRY_SIZE);
  const v = new DataView(payload.buffer);
  let pos = 0;
  for (const e of entries) {
    v.setUint16(pos, e.index);
    v.setUint16(pos + 2, e.generation);
    v.setUint32(pos + 4, e.received >>> 0);
    pos += ACK_ENTRY_SIZE;
  }
  return payload;
}

/** Decodes an ACK's payload; a trailing piece shorter than one entry is ignored (protocol §4.3). */
export function decodeAckEntries(payload: Uint8Array): AckEntry[] {
  const v = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const entries: AckEntry[] = [];
  for (let pos = 0; pos + ACK_ENTRY_SIZE <= payload.byteLength; pos += ACK_ENTRY_SIZE) {
    entries.push({ index: v.getUint16(pos), generation: v.getUint16(pos + 2), received: v.getUint32(pos + 4) });
  }
  return entries;
}

// --- RESET reason ----------------------------------------------------------------------------------

const utf8 = new TextEncoder();
const utf8Lenient = new TextDecoder(); // replaces invalid sequences instead of throwing

/** A RESET's payload: the first 200 UTF-16 code units of `message`, as UTF-8 (so at most 600 bytes). */
export function encodeResetReason(message: string): Uint8Array {
  return utf8.encode(message.slice(0, RESET_REASON_CHARS));
}

/** A received RESET's reason: its first 200 bytes as UTF-8 (invalid sequences replaced), or "no reason given". */
export function decodeResetReason(payload: Uint8Array): string {
  return utf8Lenient.decode(payload.subarray(0, RESET_REASON_BYTES)) || "no reason given";
}

const enum Phase {
  Header,
  Pad,
  Payload,
}

/**
 * Incremental frame decoder: push() chunks split anywhere. DATA payload fragments are subarrays of the
 * pushed chunks (zero-copy). Throws ProtocolError (E_UNKNOWN_FRAME, E_FRAME_TOO_LARGE, E_BAD_PAD,
 * E_OFFSET_RANGE) on malformed input; after a throw the decoder must be discarded.
 */
export class FrameDecoder {
  private readonly header = new Uint8Array(FRAME_HEADER_SIZE);
  private readonly headerView = new DataView(this.header.buffer);
  private headerFill = 0;
  private phase = Phase.Header;
  private type = 0;
  private flags = 0;
  private value = 0;
  private remaining = 0; // pad or payload bytes left in the current phase
  private payloadLength = 0;
  private control: Uint8Array | undefined; // joined payload of a control frame
  private controlFill = 0;

  constructor(
    private readonly sink: FrameSink,
    private readonly maxPayload = MAX_FRAME_PAYLOAD,
  ) {}

  /** True when no frame is partially decoded (a clean frame boundary). */
  get atBoundary(): boolean {
    return this.phase === Phase.Header && this.headerFill === 0;
  }

  push(chunk: Uint8Array): void {
    let pos = 0;
    const end = chunk.byteLength;
    while (pos < end) {
      switch (this.phase) {
        case Phase.Header: {
          if (this.headerFill === 0 && end - pos >= FRAME_HEADER_SIZE) {
            // Fast path: the whole header is in this chunk.
            this.parseHeader(new DataView(chunk.buffer, chunk.byteOffset + pos, FRAME_HEADER_SIZE));
            pos += FRAME_HEADER_SIZE;
          } else {
            const take = Math.min(FRAME_HEADER_SIZE - this.headerFill, end - pos);
            this.header.set(chunk.subarray(pos, pos + take), this.headerFill);
            this.headerFill += take;
            pos += take;
            if (this.headerFill < FRAME_HEADER_SIZE) return;
            this.headerFill = 0;
            this.parseHeader(this.headerView);
          }
          break;
        }
        case Phase.Pad: {
          const take = Math.min(this.remaining, end - pos);
          this.remaining -= take;
          pos += take;
          if (this.remaining === 0) this.startPayload();
          break;
        }
        case Phase.Payload: {
          const take = Math.min(this.remaining, end - pos);
          if (this.type === FRAME_DATA) {
            const offset = this.value + (this.payloadLength - this.remaining);
            this.remaining -= take;
            const bytes = chunk.subarray(pos, pos + take);
            pos += take;
            if (this.remaining === 0) this.phase = Phase.Header;
            this.sink.data(offset, bytes);
          } else {
            this.control!.set(chunk.subarray(pos, pos + take), this.controlFill);
            this.controlFill += take;
            this.remaining -= take;
            pos += take;
            if (this.remaining === 0) this.emitControl();
          }
          break;
        }
        default: {
          const unreachable: never = this.phase;
          throw new Error(`bad decoder phase ${unreachable}`);
        }
      }
    }
  }

  private parseHeader(v: DataView): void {
    const word = v.getUint32(0);
    const type = word >>> 24;
    const flags = (word >>> 16) & 0xff;
    const pad = (word >>> 8) & 0xff;
    const length = v.getUint32(4);
    const value = readU64(v, 8);
    if (type > FRAME_TYPE_MAX) throw new ProtocolError("E_UNKNOWN_FRAME", `unknown frame type ${type}`);
    if (length > this.maxPayload || (type !== FRAME_DATA && length > MAX_CONTROL_PAYLOAD)) {
      throw new ProtocolError("E_FRAME_TOO_LARGE", `frame payload of ${length} bytes exceeds ${this.maxPayload}`);
    }
    if (pad > MAX_PAD || (pad !== 0 && type !== FRAME_DATA)) {
      throw new ProtocolError("E_BAD_PAD", `invalid padding ${pad} on frame type ${type}`);
    }
    this.type = type;
    this.flags = flags;
    this.value = value;
    this.payloadLength = length;
    if (pad > 0) {
      this.phase = Phase.Pad;
      this.remaining = pad;
    } else {
      this.startPayload();
    }
  }

  private startPayload(): void {
    this.remaining = this.payloadLength;
    if (this.type === FRAME_DATA) {
      if (this.payloadLength > 0) this.phase = Phase.Payload;
      else {
        this.phase = Phase.Header;
        this.sink.empty?.();
      }
      return;
    }
    this.control = new Uint8Array(this.payloadLength);
    this.controlFill = 0;
    if (this.payloadLength === 0) this.emitControl();
    else this.phase = Phase.Payload;
  }

  private emitControl(): void {
    this.phase = Phase.Header;
    const payload = this.control!;
    this.control = undefined;
    // parseHeader admitted only types 0..FRAME_TYPE_MAX, and DATA never gets here.
    this.sink.control(this.type as ControlFrameType, this.flags, this.value, payload);
  }
}
