/**
 * The first message of each direction of a v2 stripe connection, as pure encoders and incremental
 * readers (docs/protocol.md §3.5–§3.9). No sockets, no clocks of their own.
 *
 * Client → server:
 *   off 0   16  session id (clear; load balancers hash it)
 *   off 16  32  client salt cs (clear)
 *   off 48      header record: keyed, sealed under K_c2s with seal numbers 0, 1 and AAD sid ‖ cs;
 *               plain (--no-auth), u32 length ‖ body and cs = 32 zero bytes
 *   then        frame records under K_c2s from seal number 2 (0-RTT: they may follow at once)
 *
 * Server → client:
 *   off 0   32  server salt ss (clear; zero in plain mode)
 *   off 32      reply record: keyed, sealed under K_s2c with seal numbers 0, 1 and AAD cs ‖ ss
 *   then        frame records under K_s2c from seal number 2
 *
 * Readers take everything received so far and answer "need N bytes in all", "done, K bytes consumed"
 * or "fail silently for reason R". A reader never throws on peer input. Failures carry a SilentReason:
 * the server treats every one the same way on the wire (no byte back, read and discard until the
 * deadline) and only counts them per reason.
 */

import { randomBytes } from "node:crypto";
import {
  CLIENT_PREFIX_SIZE,
  HEADER_FIXED_SIZE,
  LENGTH_RECORD_SIZE,
  MAX_HEADER,
  MAX_RECORD,
  PLAIN_LENGTH_SIZE,
  REPLY_FIXED_SIZE,
  SALT_SIZE,
  SECRET_SIZE,
  SERVER_PREFIX_SIZE,
  SID_SIZE,
  TAG_SIZE,
  TIME_WINDOW_MS,
  TLV_HEADER_SIZE,
  V2,
} from "./constants.ts";
import { deriveC2S, deriveS2C } from "./kdf.ts";
import { openBody, openLength, RecordSealer } from "./record.ts";
import type { ReplaySet } from "./replay.ts";

// --- reasons ---------------------------------------------------------------------------------------

/**
 * Why a first message was dropped. The wire behaviour is the same for all (silence); the reason only
 * feeds counters and the aggregated log line.
 */
export type SilentReason =
  /** No key opened the header record (garbage, a wrong key, a plain peer, a tampered byte). */
  | "bad-auth"
  /** The authenticated (or, plain, announced) header length exceeds MAX_HEADER. */
  | "too-long"
  /** Authenticated but malformed: empty, shorter than the fixed part, a truncated option. */
  | "bad-header"
  /** Authenticated, but not version 2. */
  | "bad-version"
  /** The timestamp is more than the window away from the server's clock. */
  | "stale-time"
  /** The client salt was seen within the window. */
  | "replay"
  /** The replay set is full: the salt cannot be remembered, so it is refused. */
  | "replay-full"
  /** Admission: a JOIN's proof, or a second OPEN's secret, does not match the session (or its key). */
  | "bad-member"
  /** Accept: the source's token bucket is empty. */
  | "rate-limited"
  /** Accept: too many connections have not authenticated yet. */
  | "busy"
  /** The whole first message did not arrive before the handshake deadline. */
  | "timeout"
  /** The connection ended before the whole first message arrived. */
  | "truncated"
  /** From a load balancer (`--proxy-protocol-from`): no valid PROXY v2 header first (src/proxy/proxyproto.ts). */
  | "bad-proxy";

/** Every SilentReason, in documentation order (counters are kept per entry). */
export const SILENT_REASONS: readonly SilentReason[] = [
  "bad-auth",
  "too-long",
  "bad-header",
  "bad-version",
  "stale-time",
  "replay",
  "replay-full",
  "bad-member",
  "rate-limited",
  "busy",
  "timeout",
  "truncated",
  "bad-proxy",
];

/** How first messages are protected: sealed under pre-shared keys, or plain (`--no-auth`). */
export type HandshakeAuth =
  /** Server: accepts any of `keys` (1..16). Client: uses keys[0]. */
  | { readonly mode: "keyed"; readonly keys: readonly Uint8Array[] }
  | { readonly mode: "plain" };

/** Result of a reader given the bytes received so far. */
export type Step<T, R = undefined> =
  /** Call again once at least `total` bytes have arrived in all (pass `resume` back if set). */
  | { readonly status: "need"; readonly total: number; readonly resume?: R }
  /** Read: `consumed` bytes were the message; any bytes after them are the first frame records. */
  | { readonly status: "done"; readonly consumed: number; readonly value: T }
  /** Drop silently. */
  | { readonly status: "fail"; readonly reason: SilentReason };

// --- bodies ----------------------------------------------------------------------------------------

/** An option: type u8, length u16, value. v2 defines none; receivers skip types they do not know. */
export interface Tlv {
  type: number;
  value: Uint8Array;
}

/**
 * The client's header: the body of its first record.
 *
 *  0       1       2               4               6               8
 * |version| kind  |     flags     |  stripe index |  generation   |
 * |  stripe count |   reserved    |        timestamp (u64, unix ms) ...
 * |      ... timestamp            |     receive window (u32)      |
 * |                secret (32 bytes): OPEN → S, JOIN → P                    |
 * |  options: TLV* ...
 */
export interface ClientHeader {
  /** KIND_OPEN or KIND_JOIN (admission checks it; the codec carries any value). */
  kind: number;
  flags: number;
  stripeIndex: number;
  generation: number;
  stripeCount: number;
  /** The client's clock, unix ms. */
  timestampMs: number;
  /** The client's receive window in bytes. */
  window: number;
  /** OPEN: the session secret S. JOIN: the proof P = HMAC(S, "tcp-striper v2 join" ‖ cs). */
  secret: Uint8Array;
  options: Tlv[];
}

/** The server's reply: version u8 | status u8 | flags u16 | window u32 | options TLV*. */
export interface ServerReply {
  /** STATUS_OK, STATUS_UNKNOWN_SESSION or STATUS_REFUSED. */
  status: number;
  flags: number;
  /** With OK: the server's receive window. */
  window: number;
  options: Tlv[];
}

function checkUint(name: string, v: number, bits: 8 | 16 | 32): void {
  if (!Number.isInteger(v) || v < 0 || v > 2 ** bits - 1) throw new RangeError(`${name} must be a u${bits}, got ${v}`);
}

function optionsSize(options: readonly Tlv[]): number {
  let n = 0;
  for (const o of options) {
    checkUint("option type", o.type, 8);
    checkUint("option length", o.value.byteLength, 16);
    n += TLV_HEADER_SIZE + o.value.byteLength;
  }
  return n;
}

function writeOptions(view: DataView, buf: Uint8Array, at: number, options: readonly Tlv[]): void {
  for (const o of options) {
    view.setUint8(at, o.type);
    view.setUint16(at + 1, o.value.byteLength);
    buf.set(o.value, at + TLV_HEADER_SIZE);
    at += TLV_HEADER_SIZE + o.value.byteLength;
  }
}

/** Reads TLVs from `at` to the end of `body`; undefined when one is truncated. Values are copies. */
function readOptions(body: Uint8Array, at: number): Tlv[] | undefined {
  const out: Tlv[] = [];
  while (at < body.byteLength) {
    if (body.byteLength - at < TLV_HEADER_SIZE) return undefined;
    const type = body[at]!;
    const len = (body[at + 1]! << 8) | body[at + 2]!;
    at += TLV_HEADER_SIZE;
    if (body.byteLength - at < len) return undefined;
    out.push({ type, value: body.slice(at, at + len) });
    at += len;
  }
  return out;
}

/** The options alone, as a header carries them after its fixed part (a TARGET frame's payload). */
export function encodeOptions(options: readonly Tlv[]): Uint8Array {
  const buf = new Uint8Array(optionsSize(options));
  writeOptions(new DataView(buf.buffer), buf, 0, options);
  return buf;
}

/** Options from a body that holds nothing else; undefined when one is truncated. */
export function readOptionsBody(body: Uint8Array): Tlv[] | undefined {
  return readOptions(body, 0);
}

/** Encodes a header body (version 2). Throws RangeError on out-of-range fields (a caller's bug). */
export function encodeHeader(h: ClientHeader): Uint8Array {
  checkUint("kind", h.kind, 8);
  checkUint("flags", h.flags, 16);
  checkUint("stripe index", h.stripeIndex, 16);
  checkUint("generation", h.generation, 16);
  checkUint("stripe count", h.stripeCount, 16);
  checkUint("window", h.window, 32);
  if (!Number.isSafeInteger(h.timestampMs) || h.timestampMs < 0) throw new RangeError(`timestamp must be a non-negative safe integer, got ${h.timestampMs}`);
  if (h.secret.byteLength !== SECRET_SIZE) throw new RangeError(`secret must be ${SECRET_SIZE} bytes, got ${h.secret.byteLength}`);
  const size = HEADER_FIXED_SIZE + optionsSize(h.options);
  if (size > MAX_HEADER) throw new RangeError(`header of ${size} bytes exceeds ${MAX_HEADER}`);
  const buf = new Uint8Array(size);
  const v = new DataView(buf.buffer);
  v.setUint8(0, V2);
  v.setUint8(1, h.kind);
  v.setUint16(2, h.flags);
  v.setUint16(4, h.stripeIndex);
  v.setUint16(6, h.generation);
  v.setUint16(8, h.stripeCount);
  v.setUint16(10, 0); // reserved
  v.setUint32(12, Math.floor(h.timestampMs / 0x1_0000_0000));
  v.setUint32(16, h.timestampMs >>> 0);
  v.setUint32(20, h.window);
  buf.set(h.secret, 24);
  writeOptions(v, buf, HEADER_FIXED_SIZE, h.options);
  return buf;
}

/** Decodes an (authenticated) header body: the header, or why it is refused. */
export function decodeHeader(body: Uint8Array): ClientHeader | SilentReason {
  // The version comes first: a later version may lay out the rest differently.
  if (body.byteLength === 0) return "bad-header";
  if (body[0] !== V2) return "bad-version";
  if (body.byteLength < HEADER_FIXED_SIZE) return "bad-header";
  const v = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const options = readOptions(body, HEADER_FIXED_SIZE);
  if (options === undefined) return "bad-header";
  return {
    kind: v.getUint8(1),
    flags: v.getUint16(2),
    stripeIndex: v.getUint16(4),
    generation: v.getUint16(6),
    stripeCount: v.getUint16(8),
    timestampMs: v.getUint32(12) * 0x1_0000_0000 + v.getUint32(16),
    window: v.getUint32(20),
    secret: body.slice(24, 24 + SECRET_SIZE),
    options,
  };
}

/** Encodes a reply body (version 2). Throws RangeError on out-of-range fields. */
export function encodeReply(r: ServerReply): Uint8Array {
  checkUint("status", r.status, 8);
  checkUint("flags", r.flags, 16);
  checkUint("window", r.window, 32);
  const size = REPLY_FIXED_SIZE + optionsSize(r.options);
  if (size > MAX_HEADER) throw new RangeError(`reply of ${size} bytes exceeds ${MAX_HEADER}`);
  const buf = new Uint8Array(size);
  const v = new DataView(buf.buffer);
  v.setUint8(0, V2);
  v.setUint8(1, r.status);
  v.setUint16(2, r.flags);
  v.setUint32(4, r.window);
  writeOptions(v, buf, REPLY_FIXED_SIZE, r.options);
  return buf;
}

/** Decodes an (authenticated) reply body: the reply, or why it is refused. */
export function decodeReply(body: Uint8Array): ServerReply | SilentReason {
  if (body.byteLength === 0) return "bad-header";
  if (body[0] !== V2) return "bad-version";
  if (body.byteLength < REPLY_FIXED_SIZE) return "bad-header";
  const v = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const options = readOptions(body, REPLY_FIXED_SIZE);
  if (options === undefined) return "bad-header";
  return { status: v.getUint8(1), flags: v.getUint16(2), window: v.getUint32(4), options };
}

// --- record framing shared by both first messages ----------------------------------------------------

function concat(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.byteLength;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

function plainRecord(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(PLAIN_LENGTH_SIZE + body.byteLength);
  new DataView(out.buffer).setUint32(0, body.byteLength);
  out.set(body, PLAIN_LENGTH_SIZE);
  return out;
}

/** Bounds check of an authenticated (or plain) first-record length. */
function lengthProblem(length: number): SilentReason | undefined {
  if (length === 0) return "bad-header";
  if (length > MAX_HEADER) return "too-long";
  return undefined;
}

/**
 * Reads the first record at `at` of `buf`: plain when `key` is undefined, else opened with seal
 * numbers 0, 1 and `aad`. Needs `length` already known to fit. Returns the body or a reason.
 */
function recordBody(buf: Uint8Array, at: number, length: number, key: Uint8Array | undefined, aad: Uint8Array): Uint8Array | SilentReason {
  if (key === undefined) return buf.subarray(at + PLAIN_LENGTH_SIZE, at + PLAIN_LENGTH_SIZE + length);
  const ctAt = at + LENGTH_RECORD_SIZE;
  return openBody(key, 1, buf.subarray(ctAt, ctAt + length), buf.subarray(ctAt + length, ctAt + length + TAG_SIZE), aad) ?? "bad-auth";
}

/** Total bytes of a first message whose record body has `length` bytes. */
function messageSize(prefix: number, length: number, keyed: boolean): number {
  return prefix + (keyed ? LENGTH_RECORD_SIZE + length + TAG_SIZE : PLAIN_LENGTH_SIZE + length);
}

// --- client → server -------------------------------------------------------------------------------

/** What the client sends first, and what it needs to go on sealing. */
export interface ClientHelloOut {
  /** The whole first message (sid ‖ cs ‖ header record). */
  bytes: Uint8Array;
  /** The client salt used (zero in plain mode). */
  cs: Uint8Array;
  /** K_c2s (keyed) or undefined (plain). */
  key: Uint8Array | undefined;
  /** Keyed: the sealer for the frame records that follow (seal number 2 on). Plain: undefined. */
  sealer: RecordSealer | undefined;
}

/**
 * Builds a client's first message. `cs` defaults to 32 fresh random bytes (keyed); tests may pass one.
 * Throws RangeError on out-of-range header fields.
 */
export function encodeClientHello(auth: HandshakeAuth, sid: Uint8Array, header: ClientHeader, cs?: Uint8Array): ClientHelloOut {
  if (sid.byteLength !== SID_SIZE) throw new RangeError(`session id must be ${SID_SIZE} bytes`);
  const body = encodeHeader(header);
  if (auth.mode === "plain") {
    const zero = new Uint8Array(SALT_SIZE);
    return { bytes: concat(sid, zero, plainRecord(body)), cs: zero, key: undefined, sealer: undefined };
  }
  const salt = cs ?? new Uint8Array(randomBytes(SALT_SIZE));
  if (salt.byteLength !== SALT_SIZE) throw new RangeError(`client salt must be ${SALT_SIZE} bytes`);
  const key = deriveC2S(firstKey(auth), salt, sid);
  const sealer = new RecordSealer(key, 0, MAX_RECORD);
  const record = sealer.seal(body, concat(sid, salt));
  return { bytes: concat(sid, salt, record), cs: salt, key, sealer };
}

/** A client's first message, read and authenticated. */
export interface ClientHello {
  sid: Uint8Array;
  cs: Uint8Array;
  header: ClientHeader;
  /** Index of the server key that opened it; -1 in plain mode. */
  keyIndex: number;
  /** K_c2s, for the frame records that follow (seal number 2 on); undefined in plain mode. */
  key: Uint8Array | undefined;
}

/** Carried from a "need" step to the next call, so the keys are not tried again. */
export interface HelloResume {
  keyIndex: number;
  key: Uint8Array;
  length: number;
}

/**
 * Server side: reads a client's first message from `buf` (everything received so far). Keyed: the
 * sealed length is tried under K_c2s of each key in turn (≤ 16); none opens → "bad-auth". Checks, in
 * order: authentication of the length, its bounds, authentication of the body, version, layout. The
 * time and replay checks come after, in checkFresh().
 */
export function readClientHello(buf: Uint8Array, auth: HandshakeAuth, resume?: HelloResume): Step<ClientHello, HelloResume> {
  const keyed = auth.mode === "keyed";
  const first = CLIENT_PREFIX_SIZE + (keyed ? LENGTH_RECORD_SIZE : PLAIN_LENGTH_SIZE);
  if (buf.byteLength < first) return { status: "need", total: first };
  const sid = buf.subarray(0, SID_SIZE);
  const cs = buf.subarray(SID_SIZE, CLIENT_PREFIX_SIZE);
  const aad = buf.subarray(0, CLIENT_PREFIX_SIZE);
  let keyIndex = -1;
  let key: Uint8Array | undefined;
  let length: number;
  if (auth.mode === "plain") {
    length = readU32(buf, CLIENT_PREFIX_SIZE);
  } else if (resume !== undefined) {
    ({ keyIndex, key, length } = resume);
  } else {
    const sealed = buf.subarray(CLIENT_PREFIX_SIZE, first);
    let found: number | undefined;
    for (let i = 0; i < auth.keys.length && found === undefined; i++) {
      const k = deriveC2S(auth.keys[i]!, cs, sid);
      const n = openLength(k, 0, sealed, aad);
      if (n !== undefined) {
        keyIndex = i;
        key = k;
        found = n;
      }
    }
    if (found === undefined) return { status: "fail", reason: "bad-auth" };
    length = found;
  }
  const problem = lengthProblem(length);
  if (problem !== undefined) return { status: "fail", reason: problem };
  const total = messageSize(CLIENT_PREFIX_SIZE, length, keyed);
  if (buf.byteLength < total) {
    return key === undefined ? { status: "need", total } : { status: "need", total, resume: { keyIndex, key, length } };
  }
  const body = recordBody(buf, CLIENT_PREFIX_SIZE, length, key, aad);
  if (typeof body === "string") return { status: "fail", reason: body };
  const header = decodeHeader(body);
  if (typeof header === "string") return { status: "fail", reason: header };
  return {
    status: "done",
    consumed: total,
    value: { sid: buf.slice(0, SID_SIZE), cs: buf.slice(SID_SIZE, CLIENT_PREFIX_SIZE), header, keyIndex, key },
  };
}

// --- server → client -------------------------------------------------------------------------------

/** What the server sends first, and what it needs to go on sealing. */
export interface ServerReplyOut {
  bytes: Uint8Array;
  /** The server salt used (zero in plain mode). */
  ss: Uint8Array;
  /** K_s2c (keyed) or undefined (plain). */
  key: Uint8Array | undefined;
  /** Keyed: the sealer for the frame records that follow (seal number 2 on). */
  sealer: RecordSealer | undefined;
}

/**
 * Builds the server's reply to an authenticated hello. Keyed: `psk` is the key that opened the hello
 * (the session's key). `ss` defaults to 32 fresh random bytes.
 */
export function encodeServerReply(
  psk: Uint8Array | undefined,
  hello: { sid: Uint8Array; cs: Uint8Array },
  reply: ServerReply,
  ss?: Uint8Array,
): ServerReplyOut {
  const body = encodeReply(reply);
  if (psk === undefined) {
    const zero = new Uint8Array(SALT_SIZE);
    return { bytes: concat(zero, plainRecord(body)), ss: zero, key: undefined, sealer: undefined };
  }
  const salt = ss ?? new Uint8Array(randomBytes(SALT_SIZE));
  if (salt.byteLength !== SALT_SIZE) throw new RangeError(`server salt must be ${SALT_SIZE} bytes`);
  const key = deriveS2C(psk, hello.cs, salt, hello.sid);
  const sealer = new RecordSealer(key, 0, MAX_RECORD);
  const record = sealer.seal(body, concat(hello.cs, salt));
  return { bytes: concat(salt, record), ss: salt, key, sealer };
}

/** A server's reply, read and authenticated. */
export interface ServerReplyIn {
  ss: Uint8Array;
  reply: ServerReply;
  /** K_s2c, for the frame records that follow (seal number 2 on); undefined in plain mode. */
  key: Uint8Array | undefined;
}

/**
 * Client side: reads the server's reply from `buf` (everything received so far) for the hello it sent
 * (`sid`, `cs`). Keyed: it must open under K_s2c of the client's key with AAD cs ‖ ss, which binds it to
 * this hello: a reply recorded from another connection, or made without the key, fails ("bad-auth").
 */
export function readServerReply(buf: Uint8Array, auth: HandshakeAuth, hello: { sid: Uint8Array; cs: Uint8Array }): Step<ServerReplyIn> {
  const keyed = auth.mode === "keyed";
  const first = SERVER_PREFIX_SIZE + (keyed ? LENGTH_RECORD_SIZE : PLAIN_LENGTH_SIZE);
  if (buf.byteLength < first) return { status: "need", total: first };
  const ss = buf.subarray(0, SERVER_PREFIX_SIZE);
  const aad = concat(hello.cs, ss);
  let key: Uint8Array | undefined;
  let length: number | undefined;
  if (auth.mode === "plain") {
    length = readU32(buf, SERVER_PREFIX_SIZE);
  } else {
    key = deriveS2C(firstKey(auth), hello.cs, ss, hello.sid);
    length = openLength(key, 0, buf.subarray(SERVER_PREFIX_SIZE, first), aad);
    if (length === undefined) return { status: "fail", reason: "bad-auth" };
  }
  const problem = lengthProblem(length);
  if (problem !== undefined) return { status: "fail", reason: problem };
  const total = messageSize(SERVER_PREFIX_SIZE, length, keyed);
  if (buf.byteLength < total) return { status: "need", total };
  const body = recordBody(buf, SERVER_PREFIX_SIZE, length, key, aad);
  if (typeof body === "string") return { status: "fail", reason: body };
  const reply = decodeReply(body);
  if (typeof reply === "string") return { status: "fail", reason: reply };
  return { status: "done", consumed: total, value: { ss: buf.slice(0, SERVER_PREFIX_SIZE), reply, key } };
}

// --- freshness (server checks 6 and 7) ------------------------------------------------------------------

/** Check 6: the hello's timestamp within ±window of the server's clock. */
export function checkTime(timestampMs: number, nowMs: number, windowMs = TIME_WINDOW_MS): SilentReason | undefined {
  return Math.abs(timestampMs - nowMs) > windowMs ? "stale-time" : undefined;
}

/** Check 7: the client salt not seen within the window (and remembered now); run after checkTime. */
export function checkReplay(replay: ReplaySet, cs: Uint8Array, timestampMs: number, nowMs: number): SilentReason | undefined {
  const verdict = replay.admit(cs, timestampMs, nowMs);
  switch (verdict) {
    case "fresh":
      return undefined;
    case "replay":
      return "replay";
    case "full":
      return "replay-full";
    default: {
      const never: never = verdict;
      throw new Error(`unknown replay verdict ${String(never)}`);
    }
  }
}

/**
 * Checks 6 then 7 for an authenticated hello. Check 6 also refuses ("stale-time") a timestamp older than
 * the replay set's memory (`sinceMs`, the server's start): the set cannot tell whether such a hello was
 * seen by the previous process, so a first flight recorded before a restart cannot be replayed after it.
 * The price: right after a restart, a client whose clock runs s seconds behind is refused for s seconds.
 * Plain mode (keyIndex −1) skips both: without a key a timestamp proves nothing, and every plain hello
 * carries the same zero salt.
 */
export function checkFresh(hello: ClientHello, nowMs: number, replay: ReplaySet): SilentReason | undefined {
  if (hello.keyIndex < 0) return undefined;
  const ts = hello.header.timestampMs;
  if (replay.sinceMs !== undefined && ts < replay.sinceMs) return "stale-time";
  return checkTime(ts, nowMs, replay.windowMs) ?? checkReplay(replay, hello.cs, ts, nowMs);
}

function firstKey(auth: { keys: readonly Uint8Array[] }): Uint8Array {
  const k = auth.keys[0];
  if (k === undefined) throw new RangeError("keyed handshake without a key");
  return k;
}

function readU32(buf: Uint8Array, pos: number): number {
  return ((buf[pos]! << 24) | (buf[pos + 1]! << 16) | (buf[pos + 2]! << 8) | buf[pos + 3]!) >>> 0;
}
