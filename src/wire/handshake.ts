/**
 * The stripe handshake on the wire (docs/protocol.md §3): the HELLO a client sends first on every stripe,
 * the WELCOME the server answers with, and parsers that tell a handshake reader how long a message is.
 * Pure: no sockets. All integers are big-endian.
 *
 * A parser, not a fixed size, drives the reader (src/proxy/handshake.ts) because the next protocol
 * version's first message carries its own length (docs/protocol.md §12): the reader cannot know the size
 * before it has looked at the first bytes.
 */

import { ProtocolError, StriperError } from "../errors.ts";
import { HELLO_SIZE, MAGIC, SESSION_ID_SIZE, WELCOME_SIZE } from "./constants.ts";

// --- HELLO -----------------------------------------------------------------------------------------
//  0                   1                   2                   3
//  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
// |                         magic "TSTR"                          |
// |    version    |     kind      |          stripe index         |
// |          stripe count         |          generation           |
// |                  session id (16 bytes) ...                    |
// |                 receive window (bytes, u32)                   |

/** What a stripe announces when it connects. */
export interface Hello {
  version: number;
  kind: number;
  stripeIndex: number;
  stripeCount: number;
  /** Counts the client's dials of this stripe index; ACK entries name it so stale counts are ignored. */
  generation: number;
  sessionId: Uint8Array;
  window: number;
}

/** Encodes a HELLO into a new 32-byte buffer. */
export function encodeHello(h: Hello): Uint8Array {
  const buf = new Uint8Array(HELLO_SIZE);
  const v = new DataView(buf.buffer);
  v.setUint32(0, MAGIC);
  v.setUint8(4, h.version);
  v.setUint8(5, h.kind);
  v.setUint16(6, h.stripeIndex);
  v.setUint16(8, h.stripeCount);
  v.setUint16(10, h.generation);
  buf.set(h.sessionId.subarray(0, SESSION_ID_SIZE), 12);
  v.setUint32(28, h.window);
  return buf;
}

/** Decodes a complete HELLO; throws ProtocolError E_BAD_MAGIC when it is not one. */
export function decodeHello(buf: Uint8Array): Hello {
  if (buf.byteLength < HELLO_SIZE) throw new ProtocolError("E_SHORT_HELLO", "HELLO shorter than 32 bytes");
  const v = new DataView(buf.buffer, buf.byteOffset, HELLO_SIZE);
  if (v.getUint32(0) !== MAGIC) throw new ProtocolError("E_BAD_MAGIC", "not a tcp-striper HELLO");
  return {
    version: v.getUint8(4),
    kind: v.getUint8(5),
    stripeIndex: v.getUint16(6),
    stripeCount: v.getUint16(8),
    generation: v.getUint16(10),
    sessionId: new Uint8Array(buf.subarray(12, 12 + SESSION_ID_SIZE)), // a copy: Buffer#slice would share memory
    window: v.getUint32(28),
  };
}

// --- WELCOME ---------------------------------------------------------------------------------------
// |                         magic "TSTR"                          |
// |    version    |    status     |           reserved            |
// |                 receive window (bytes, u32)                   |
// |                           reserved                            |

/** The server's answer to a HELLO. */
export interface Welcome {
  version: number;
  status: number;
  window: number;
}

/** Encodes a WELCOME into a new 16-byte buffer. */
export function encodeWelcome(w: Welcome): Uint8Array {
  const buf = new Uint8Array(WELCOME_SIZE);
  const v = new DataView(buf.buffer);
  v.setUint32(0, MAGIC);
  v.setUint8(4, w.version);
  v.setUint8(5, w.status);
  v.setUint32(8, w.window);
  return buf;
}

/** Decodes a complete WELCOME; throws ProtocolError when it is not one. */
export function decodeWelcome(buf: Uint8Array): Welcome {
  if (buf.byteLength < WELCOME_SIZE) throw new ProtocolError("E_SHORT_WELCOME", "WELCOME shorter than 16 bytes");
  const v = new DataView(buf.buffer, buf.byteOffset, WELCOME_SIZE);
  if (v.getUint32(0) !== MAGIC) throw new ProtocolError("E_BAD_MAGIC", "not a tcp-striper WELCOME");
  return { version: v.getUint8(4), status: v.getUint8(5), window: v.getUint32(8) };
}

// --- Parsers -------------------------------------------------------------------------------------

/** What a handshake parser makes of the bytes received so far. */
export type ParseStep<T> =
  /** The message is longer: call again once at least `bytes` more have arrived (`bytes` ≥ 1). */
  | { readonly kind: "more"; readonly bytes: number }
  /** The message is the first `size` bytes; what follows belongs to the frame stream. */
  | { readonly kind: "done"; readonly size: number; readonly value: T }
  /** Not a message we accept; the connection gets no reply. */
  | { readonly kind: "invalid"; readonly error: StriperError };

/**
 * Reads a handshake message from every byte received so far on the connection (from its first byte). It
 * is called first with no bytes, then again each time as many more bytes as it asked for have arrived;
 * it may keep state between calls (e.g. which key opened a length).
 */
export type HandshakeParser<T> = (received: Uint8Array) => ParseStep<T>;

/** A parser for a message of a fixed `size` that `decode` turns into a value or rejects with a StriperError. */
export function fixedSizeParser<T>(size: number, decode: (message: Uint8Array) => T): HandshakeParser<T> {
  return (received) => {
    if (received.byteLength < size) return { kind: "more", bytes: size - received.byteLength };
    try {
      return { kind: "done", size, value: decode(received.subarray(0, size)) };
    } catch (err) {
      if (!(err instanceof StriperError)) throw err;
      return { kind: "invalid", error: err };
    }
  };
}

/** Parses a v1 HELLO: 32 bytes, E_BAD_MAGIC when they are not one. */
export const helloParser: HandshakeParser<Hello> = fixedSizeParser(HELLO_SIZE, decodeHello);

/** Parses a v1 WELCOME: 16 bytes, E_BAD_MAGIC when they are not one. */
export const welcomeParser: HandshakeParser<Welcome> = fixedSizeParser(WELCOME_SIZE, decodeWelcome);
