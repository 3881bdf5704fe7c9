/**
 * The stripe handshake on the wire (docs/protocol.md §3): parsers that tell a handshake reader
 * (src/proxy/handshake.ts) how long the first message of a stripe is, for protocol version 2's two first
 * messages, whose bytes are encoded and authenticated by src/secure/messages.ts. Pure: no sockets.
 *
 * A parser, not a fixed size, drives the reader because a v2 first message carries its own (sealed)
 * length: the reader cannot know the size before the parser has opened the first bytes.
 */

import { StriperError } from "../errors.ts";
import {
  readClientHello,
  readServerReply,
  type ClientHello,
  type HandshakeAuth,
  type HelloResume,
  type ServerReplyIn,
  type SilentReason,
  type Step,
} from "../secure/messages.ts";

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

/**
 * A first message that failed a check. The server answers every one the same way (silence: no byte back,
 * read and discard until the deadline, then close); `reason` only picks the counter and the log line.
 */
export class HandshakeRejected extends StriperError {
  constructor(readonly reason: SilentReason) {
    super("E_HANDSHAKE_REJECTED", `first message refused: ${reason}`);
    this.name = "HandshakeRejected";
  }
}

/** Turns a reader step of src/secure/messages.ts into a parser step, given how many bytes it saw. */
function toParseStep<T, R>(step: Step<T, R>, have: number): ParseStep<T> {
  switch (step.status) {
    case "need":
      return { kind: "more", bytes: Math.max(1, step.total - have) };
    case "done":
      return { kind: "done", size: step.consumed, value: step.value };
    case "fail":
      return { kind: "invalid", error: new HandshakeRejected(step.reason) };
    default: {
      const never: never = step;
      throw new Error(`unknown handshake step ${JSON.stringify(never)}`);
    }
  }
}

/**
 * The server's parser of a client's first message (§3.5) under `auth`: sid ‖ cs ‖ the header record,
 * which must authenticate under one of the keys. One parser per connection: it remembers which key
 * opened the length, so the keys are tried once. Failures are HandshakeRejected with the reason.
 */
export function clientHelloParser(auth: HandshakeAuth): HandshakeParser<ClientHello> {
  let resume: HelloResume | undefined;
  return (received) => {
    const step = readClientHello(received, auth, resume);
    if (step.status === "need" && step.resume !== undefined) resume = step.resume;
    return toParseStep(step, received.byteLength);
  };
}

/**
 * The client's parser of the server's reply (§3.8) to the hello it sent with `sid` and `cs`: it must
 * authenticate under the client's key and be bound to that hello. Failures are HandshakeRejected.
 */
export function serverReplyParser(auth: HandshakeAuth, hello: { sid: Uint8Array; cs: Uint8Array }): HandshakeParser<ServerReplyIn> {
  return (received) => toParseStep(readServerReply(received, auth, hello), received.byteLength);
}
