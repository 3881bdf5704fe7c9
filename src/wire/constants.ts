/**
 * Wire constants. Every value is specified in docs/protocol.md; test/wire.test.ts pins each one so a
 * reordered or edited constant cannot silently change the protocol. The handshake's constants (first
 * messages, records, statuses) are in src/secure/constants.ts.
 */

/** Every frame starts with this fixed header. */
export const FRAME_HEADER_SIZE = 16;
/** Largest payload a frame may announce; larger is a protocol error (E_FRAME_TOO_LARGE). */
export const MAX_FRAME_PAYLOAD = 1 << 20;
/** Largest payload of a non-DATA frame (ACK, RESET...); larger is E_FRAME_TOO_LARGE. */
export const MAX_CONTROL_PAYLOAD = 64 * 1024;
/** Largest padding between a DATA header and its payload (keeps copies 64-byte co-aligned). */
export const MAX_PAD = 63;

/**
 * Frame types (the header's first byte). A regular enum, so a `switch` over it can be checked for
 * exhaustiveness; the FRAME_* constants below are the same values under their spec names.
 */
export enum FrameType {
  /** Bytes of the stream at a byte offset. value = offset. */
  Data = 0,
  /** Cumulative data-level ack. value = every byte below it was delivered; payload = ACK entries. */
  Ack = 1,
  /** Keepalive probe on this stripe. value = opaque token echoed by PONG. */
  Ping = 2,
  /** Answer to PING, on the same stripe. value = the PING's token. */
  Pong = 3,
  /** Data-level FIN. value = final length of the stream in this direction. */
  Fin = 4,
  /** Abort the whole session. value = reset code; payload = UTF-8 reason. */
  Reset = 5,
  /**
   * Client → server, only as the first frame of a standby stripe the client takes for a session (issue
   * 13): value = the client's receive window; payload = header options (the destination, or none).
   */
  Target = 6,
  /** Server → client, once: the target is connected; its bytes follow. value = 0, no payload. */
  Opened = 7,
}

/** Frame type: bytes of the stream at a byte offset. value = offset. */
export const FRAME_DATA = FrameType.Data;
/** Frame type: cumulative data-level ack. value = every byte below it was delivered. */
export const FRAME_ACK = FrameType.Ack;
/** Frame type: keepalive probe on this stripe. value = opaque token echoed by PONG. */
export const FRAME_PING = FrameType.Ping;
/** Frame type: answer to PING, on the same stripe. value = the PING's token. */
export const FRAME_PONG = FrameType.Pong;
/** Frame type: data-level FIN. value = final length of the stream in this direction. */
export const FRAME_FIN = FrameType.Fin;
/** Frame type: abort the whole session. value = reset code; payload = UTF-8 reason. */
export const FRAME_RESET = FrameType.Reset;
/** Frame type: a standby stripe is taken; value = receive window, payload = options (client → server). */
export const FRAME_TARGET = FrameType.Target;
/** Frame type: the server's connection to the target is established (server → client). */
export const FRAME_OPENED = FrameType.Opened;
/** Highest defined frame type; anything above is E_UNKNOWN_FRAME. */
export const FRAME_TYPE_MAX = FrameType.Opened;

/** ACK flag: the sender of the ACK has received the peer's data-level FIN (and all data before it). */
export const ACK_FLAG_FIN = 0x01;

/** One ACK entry: u16 stripe index, u16 generation, u32 bytes received on that stripe mod 2^32. */
export const ACK_ENTRY_SIZE = 8;

/** RESET codes (the RESET frame's value): why a session was aborted. */
export enum ResetCode {
  /** The app or target connection was reset or failed. */
  PeerFailed = 1,
  /** No stripe for longer than the grace period. */
  GraceExpired = 2,
  /** A protocol violation was detected. */
  Protocol = 3,
  /** The proxy is shutting down. */
  Shutdown = 4,
  /** The target could not be reached (other than the codes below: network or host unreachable...). */
  TargetUnreachable = 5,
  /** The destination is not allowed: no rule allows it, or it is a special address no rule names. */
  NotAllowed = 6,
  /** The destination's name did not resolve (no such name, no address, the lookup timed out). */
  TargetUnresolved = 7,
  /** The target refused the connection. */
  TargetRefused = 8,
  /** The target did not answer within the connect deadline. */
  TargetTimeout = 9,
}

/** RESET code: the app or target connection was reset or failed. */
export const RESET_PEER_FAILED = ResetCode.PeerFailed;
/** RESET code: no stripe for longer than the grace period. */
export const RESET_GRACE_EXPIRED = ResetCode.GraceExpired;
/** RESET code: a protocol violation was detected. */
export const RESET_PROTOCOL = ResetCode.Protocol;
/** RESET code: the proxy is shutting down. */
export const RESET_SHUTDOWN = ResetCode.Shutdown;
/** RESET code: the target could not be reached. */
export const RESET_TARGET_UNREACHABLE = ResetCode.TargetUnreachable;
/** RESET code: the destination is not allowed by the server. */
export const RESET_NOT_ALLOWED = ResetCode.NotAllowed;
/** RESET code: the destination's name did not resolve. */
export const RESET_TARGET_UNRESOLVED = ResetCode.TargetUnresolved;
/** RESET code: the target refused the connection. */
export const RESET_TARGET_REFUSED = ResetCode.TargetRefused;
/** RESET code: the target did not answer in time. */
export const RESET_TARGET_TIMEOUT = ResetCode.TargetTimeout;
/** A RESET's sender encodes at most this many UTF-16 code units of its reason (up to 3 bytes each in UTF-8). */
export const RESET_REASON_CHARS = 200;
/** A RESET's receiver decodes at most this many bytes of the reason. */
export const RESET_REASON_BYTES = 200;
