/**
 * Wire format: pinned constants, golden bytes, frame round-trips, the incremental decoder under every
 * split and under garbage, and FrameBatch padding (docs/protocol.md). The v2 first messages are tested
 * in secure-messages.test.ts.
 *
 * Randomised tests use a seeded PRNG. The seed is printed on failure; rerun with TEST_SEED=<seed>.
 */

import { describe, expect, test } from "bun:test";
import { ptr } from "bun:ffi";
import { ProtocolError } from "../src/errors.ts";
import { FrameBatch, BufferPool } from "../src/wire/batch.ts";
import {
  FrameDecoder,
  decodeAckEntries,
  decodeResetReason,
  encodeAckEntries,
  encodeFrame,
  encodeResetReason,
  readU64,
  writeFrameHeader,
  writeU64,
  type FrameSink,
} from "../src/wire/codec.ts";
import * as C from "../src/wire/constants.ts";
import {
  ACK_FLAG_FIN,
  FRAME_ACK,
  FRAME_DATA,
  FRAME_FIN,
  FRAME_HEADER_SIZE,
  FRAME_PING,
  FRAME_PONG,
  FRAME_RESET,
  MAX_FRAME_PAYLOAD,
  MAX_PAD,
  MAX_CONTROL_PAYLOAD,
  RESET_PROTOCOL,
} from "../src/wire/constants.ts";
import { expectProtocolError, prng, randInt } from "./helpers/util.ts";

// --- helpers -----------------------------------------------------------------------------------------

const SEED = process.env.TEST_SEED !== undefined ? Number(process.env.TEST_SEED) >>> 0 : (Math.random() * 2 ** 32) >>> 0;

/** Runs `fn` with a PRNG seeded from SEED (+ salt); on failure the error names the seed. */
function seeded(salt: number, fn: (rand: () => number) => void): void {
  const seed = (SEED + salt) >>> 0;
  try {
    fn(prng(seed));
  } catch (err) {
    const msg = `failed with TEST_SEED=${SEED} (sub-seed ${seed}): ${(err as Error).message}`;
    console.error(msg);
    throw Object.assign(err as Error, { message: msg });
  }
}

function randomBytes(rand: () => number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (rand() * 256) | 0;
  return b;
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

/** What a decoder reported, in a form that compares by value. */
type Event =
  | { kind: "data"; offset: number; bytes: number[] }
  | { kind: "control"; type: number; flags: number; value: number; payload: number[] };

/** A sink that records events; adjacent DATA fragments that continue each other are merged. */
class Recorder implements FrameSink {
  events: Event[] = [];
  fragments = 0;
  /** Every DATA fragment must be a view of a pushed chunk (zero-copy); set to check it. */
  currentChunk: Uint8Array | undefined;
  data(offset: number, bytes: Uint8Array): void {
    expect(bytes.byteLength).toBeGreaterThan(0);
    if (this.currentChunk) expect(bytes.buffer).toBe(this.currentChunk.buffer);
    this.fragments++;
    const last = this.events.at(-1);
    if (last?.kind === "data" && last.offset + last.bytes.length === offset) {
      for (const b of bytes) last.bytes.push(b);
    } else this.events.push({ kind: "data", offset, bytes: Array.from(bytes) });
  }
  control(type: number, flags: number, value: number, payload: Uint8Array): void {
    this.events.push({ kind: "control", type, flags, value, payload: Array.from(payload) });
  }
}

/** Merges contiguous DATA events, as Recorder does, so expected and decoded lists compare directly. */
function normalise(events: Event[]): Event[] {
  const out: Event[] = [];
  for (const e of events) {
    const last = out.at(-1);
    if (e.kind === "data" && e.bytes.length === 0) continue; // an empty DATA frame reports nothing
    if (e.kind === "data" && last?.kind === "data" && last.offset + last.bytes.length === e.offset) {
      last.bytes.push(...e.bytes);
    } else out.push(e.kind === "data" ? { ...e, bytes: [...e.bytes] } : e);
  }
  return out;
}

/** Encodes a DATA frame with `pad` junk bytes between header and payload. */
function dataFrame(offset: number, payload: Uint8Array, pad = 0, padFill = 0xa5): Uint8Array {
  const buf = new Uint8Array(FRAME_HEADER_SIZE + pad + payload.byteLength);
  writeFrameHeader(new DataView(buf.buffer), 0, FRAME_DATA, 0, pad, payload.byteLength, offset);
  buf.fill(padFill, FRAME_HEADER_SIZE, FRAME_HEADER_SIZE + pad);
  buf.set(payload, FRAME_HEADER_SIZE + pad);
  return buf;
}

/** A 16-byte header with arbitrary fields (including invalid ones), for error tests. */
function rawHeader(type: number, flags: number, pad: number, length: number, hi: number, lo: number): Uint8Array {
  const h = new Uint8Array(FRAME_HEADER_SIZE);
  const v = new DataView(h.buffer);
  v.setUint8(0, type);
  v.setUint8(1, flags);
  v.setUint8(2, pad);
  v.setUint32(4, length);
  v.setUint32(8, hi);
  v.setUint32(12, lo);
  return h;
}

/** An ACK payload: one 8-byte entry per stripe (u16 index, u16 generation, u32 received mod 2^32). */
function ackPayload(entries: [index: number, generation: number, received: number][]): Uint8Array {
  const p = new Uint8Array(entries.length * 8);
  const v = new DataView(p.buffer);
  entries.forEach(([i, g, r], k) => {
    v.setUint16(k * 8, i);
    v.setUint16(k * 8 + 2, g);
    v.setUint32(k * 8 + 4, r >>> 0);
  });
  return p;
}

/** A stream of many mixed frames and the events a decoder must report for it. */
function mixedStream(rand: () => number, frames: number): { bytes: Uint8Array; events: Event[]; boundaries: Set<number> } {
  const parts: Uint8Array[] = [];
  const events: Event[] = [];
  const boundaries = new Set<number>([0]);
  let at = 0;
  const reasons = ["", "target refused", "stripe 3 — ünïcödé ✓", "x".repeat(200)];
  for (let f = 0; f < frames; f++) {
    const kind = randInt(rand, 0, 9);
    let frame: Uint8Array;
    if (kind <= 3) {
      // DATA: random offset anywhere below 2^53, random pad, sometimes empty.
      const len = rand() < 0.1 ? 0 : randInt(rand, 1, 300);
      const offset = rand() < 0.5 ? randInt(rand, 0, 1_000_000) : Math.floor(rand() * (2 ** 53 - 1 - len));
      const pad = rand() < 0.5 ? 0 : randInt(rand, 1, MAX_PAD);
      const payload = randomBytes(rand, len);
      frame = dataFrame(offset, payload, pad, randInt(rand, 0, 255));
      events.push({ kind: "data", offset, bytes: Array.from(payload) });
    } else {
      const type = [FRAME_ACK, FRAME_ACK, FRAME_PING, FRAME_PONG, FRAME_FIN, FRAME_RESET][kind - 4]!;
      const flags = type === FRAME_ACK && rand() < 0.5 ? ACK_FLAG_FIN : 0;
      const value = rand() < 0.5 ? randInt(rand, 0, 2 ** 32) : Math.floor(rand() * 2 ** 53);
      let payload: Uint8Array = new Uint8Array(0);
      if (type === FRAME_ACK) {
        const n = randInt(rand, 0, 8);
        const entries: [number, number, number][] = [];
        for (let k = 0; k < n; k++) entries.push([k, randInt(rand, 0, 0xffff), randInt(rand, 0, 0xffffffff)]);
        payload = ackPayload(entries);
      } else if (type === FRAME_RESET) {
        payload = new TextEncoder().encode(reasons[randInt(rand, 0, reasons.length - 1)]!);
      }
      frame = encodeFrame(type, flags, value, payload);
      events.push({ kind: "control", type, flags, value, payload: Array.from(payload) });
    }
    parts.push(frame);
    at += frame.byteLength;
    boundaries.add(at);
  }
  const bytes = new Uint8Array(at);
  let pos = 0;
  for (const p of parts) {
    bytes.set(p, pos);
    pos += p.byteLength;
  }
  return { bytes, events: normalise(events), boundaries };
}

/** Decodes `chunks` in order with a fresh decoder; returns the recorder. */
function decodeChunks(chunks: Uint8Array[], checkZeroCopy = false): Recorder {
  const rec = new Recorder();
  const dec = new FrameDecoder(rec);
  for (const c of chunks) {
    if (checkZeroCopy) rec.currentChunk = c;
    dec.push(c);
  }
  expect(dec.atBoundary).toBe(true);
  return rec;
}

const DECODER_CODES = new Set(["E_UNKNOWN_FRAME", "E_FRAME_TOO_LARGE", "E_BAD_PAD", "E_OFFSET_RANGE"]);

// --- constants -----------------------------------------------------------------------------------

describe("wire constants", () => {
  // Every wire value, literally. Changing one changes the protocol: bump the version (V2 in
  // src/secure/constants.ts) and docs/protocol.md.
  const PINNED: Record<string, number> = {
    FRAME_HEADER_SIZE: 16,
    MAX_FRAME_PAYLOAD: 1048576,
    MAX_PAD: 63,
    MAX_CONTROL_PAYLOAD: 65536,
    FRAME_DATA: 0,
    FRAME_ACK: 1,
    FRAME_PING: 2,
    FRAME_PONG: 3,
    FRAME_FIN: 4,
    FRAME_RESET: 5,
    FRAME_TARGET: 6,
    FRAME_OPENED: 7,
    FRAME_TYPE_MAX: 7,
    ACK_FLAG_FIN: 1,
    RESET_PEER_FAILED: 1,
    RESET_GRACE_EXPIRED: 2,
    RESET_PROTOCOL: 3,
    RESET_SHUTDOWN: 4,
    RESET_TARGET_UNREACHABLE: 5,
    RESET_NOT_ALLOWED: 6,
    RESET_TARGET_UNRESOLVED: 7,
    RESET_TARGET_REFUSED: 8,
    RESET_TARGET_TIMEOUT: 9,
    ACK_ENTRY_SIZE: 8,
    RESET_REASON_CHARS: 200,
    RESET_REASON_BYTES: 200,
    "FrameType.Data": 0,
    "FrameType.Ack": 1,
    "FrameType.Ping": 2,
    "FrameType.Pong": 3,
    "FrameType.Fin": 4,
    "FrameType.Reset": 5,
    "FrameType.Target": 6,
    "FrameType.Opened": 7,
    "ResetCode.PeerFailed": 1,
    "ResetCode.GraceExpired": 2,
    "ResetCode.Protocol": 3,
    "ResetCode.Shutdown": 4,
    "ResetCode.TargetUnreachable": 5,
    "ResetCode.NotAllowed": 6,
    "ResetCode.TargetUnresolved": 7,
    "ResetCode.TargetRefused": 8,
    "ResetCode.TargetTimeout": 9,
  };

  /** Every exported wire value: constants by name, enum members as "Enum.Member" (not the reverse mapping). */
  const exported: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(C)) {
    if (typeof value !== "object" || value === null) exported[name] = value;
    else for (const [member, v] of Object.entries(value)) if (!/^\d+$/.test(member)) exported[`${name}.${member}`] = v;
  }

  for (const [name, value] of Object.entries(PINNED)) {
    test(`${name} is ${value}`, () => {
      expect(exported[name]).toBe(value);
    });
  }

  test("every exported constant is pinned here (a new one needs a pin and a line in docs/protocol.md)", () => {
    expect(Object.keys(exported).sort()).toEqual(Object.keys(PINNED).sort());
  });

});

// --- u64 -----------------------------------------------------------------------------------------

describe("u64 fields", () => {
  const values = [0, 1, 0xff, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, 2 ** 40 + 12345, 2 ** 52, 2 ** 53 - 2, 2 ** 53 - 1];

  test("writeU64/readU64 round-trip every value up to 2^53-1, big-endian", () => {
    const v = new DataView(new ArrayBuffer(8));
    for (const x of values) {
      writeU64(v, 0, x);
      expect(readU64(v, 0)).toBe(x);
      expect(v.getUint32(0)).toBe(Math.floor(x / 2 ** 32));
      expect(v.getUint32(4)).toBe(x % 2 ** 32);
    }
  });

  test("a high word of 2^21 or more (values >= 2^53) is E_OFFSET_RANGE", () => {
    const v = new DataView(new ArrayBuffer(8));
    for (const hi of [2 ** 21, 2 ** 21 + 1, 0x8000_0000, 0xffff_ffff]) {
      v.setUint32(0, hi);
      v.setUint32(4, 0);
      expectProtocolError(() => readU64(v, 0), "E_OFFSET_RANGE");
    }
    writeU64(v, 0, 2 ** 53);
    expectProtocolError(() => readU64(v, 0), "E_OFFSET_RANGE");
  });

  test("every frame type carries values above 2^32 and up to 2^53-1 intact", () => {
    for (const type of [FRAME_DATA, FRAME_ACK, FRAME_PING, FRAME_PONG, FRAME_FIN, FRAME_RESET]) {
      for (const x of values) {
        const payload = type === FRAME_DATA ? new Uint8Array([7]) : new Uint8Array(0);
        const rec = decodeChunks([encodeFrame(type, 0, x, payload)]);
        if (type === FRAME_DATA) expect(rec.events).toEqual([{ kind: "data", offset: x, bytes: [7] }]);
        else expect(rec.events).toEqual([{ kind: "control", type, flags: 0, value: x, payload: [] }]);
      }
    }
  });

  test("a frame whose value is 2^53 or more is rejected with E_OFFSET_RANGE", () => {
    for (const type of [FRAME_DATA, FRAME_ACK, FRAME_FIN]) {
      const dec = new FrameDecoder(new Recorder());
      expectProtocolError(() => dec.push(encodeFrame(type, 0, 2 ** 53)), "E_OFFSET_RANGE");
      const dec2 = new FrameDecoder(new Recorder());
      expectProtocolError(() => dec2.push(rawHeader(type, 0, 0, 0, 0xffffffff, 0xffffffff)), "E_OFFSET_RANGE");
    }
  });
});

// --- frames --------------------------------------------------------------------------------------

describe("frames", () => {
  test("the header is type, flags, pad, reserved, u32 length, u64 value, big-endian (golden vector)", () => {
    const f = encodeFrame(FRAME_ACK, ACK_FLAG_FIN, 0x0102030405, ackPayload([[2, 7, 0xdeadbeef]]));
    expect(hex(f)).toBe("01" + "01" + "00" + "00" + "00000008" + "0000000102030405" + "0002" + "0007" + "deadbeef");
    expect(hex(dataFrame(2 ** 32 + 5, new Uint8Array([0xab, 0xcd]), 3, 0))).toBe(
      "00" + "00" + "03" + "00" + "00000002" + "0000000100000005" + "000000" + "abcd",
    );
  });

  test("DATA round-trips offset and payload", () => {
    const payload = Uint8Array.from({ length: 1000 }, (_, i) => i & 0xff);
    const rec = decodeChunks([encodeFrame(FRAME_DATA, 0, 123456789012, payload)]);
    expect(rec.events).toEqual([{ kind: "data", offset: 123456789012, bytes: Array.from(payload) }]);
  });

  test("an empty DATA frame reports nothing and leaves the decoder at a boundary", () => {
    const rec = decodeChunks([encodeFrame(FRAME_DATA, 0, 42), dataFrame(43, new Uint8Array(0), 17)]);
    expect(rec.events).toEqual([]);
  });

  test("DATA pad bytes (1..63, any content) are skipped; the payload offset is unchanged", () => {
    for (let pad = 0; pad <= MAX_PAD; pad++) {
      const payload = Uint8Array.from({ length: 64 + pad }, (_, i) => (i * 7 + pad) & 0xff);
      const rec = decodeChunks([dataFrame(2 ** 40 + pad, payload, pad, 0xff)]);
      expect(rec.events).toEqual([{ kind: "data", offset: 2 ** 40 + pad, bytes: Array.from(payload) }]);
    }
  });

  test("ACK round-trips flags, cumulative value and per-stripe entries", () => {
    const entries: [number, number, number][] = [
      [0, 1, 0],
      [1, 0xffff, 0xffffffff],
      [63, 2, 2 ** 31 + 5],
    ];
    const payload = ackPayload(entries);
    const rec = decodeChunks([encodeFrame(FRAME_ACK, ACK_FLAG_FIN, 2 ** 45 + 1, payload)]);
    expect(rec.events).toEqual([{ kind: "control", type: FRAME_ACK, flags: ACK_FLAG_FIN, value: 2 ** 45 + 1, payload: Array.from(payload) }]);
    const got = new DataView(Uint8Array.from((rec.events[0] as { payload: number[] }).payload).buffer);
    for (let k = 0; k < entries.length; k++) {
      expect([got.getUint16(k * 8), got.getUint16(k * 8 + 2), got.getUint32(k * 8 + 4)]).toEqual(entries[k]!);
    }
  });

  test("PING, PONG and FIN round-trip their value with no payload", () => {
    const rec = decodeChunks([encodeFrame(FRAME_PING, 0, 987654321), encodeFrame(FRAME_PONG, 0, 987654321), encodeFrame(FRAME_FIN, 0, 2 ** 50)]);
    expect(rec.events).toEqual([
      { kind: "control", type: FRAME_PING, flags: 0, value: 987654321, payload: [] },
      { kind: "control", type: FRAME_PONG, flags: 0, value: 987654321, payload: [] },
      { kind: "control", type: FRAME_FIN, flags: 0, value: 2 ** 50, payload: [] },
    ]);
  });

  test("RESET round-trips its code and UTF-8 reason", () => {
    const reason = "target unreachable — ECONNREFUSED ✗";
    const rec = decodeChunks([encodeFrame(FRAME_RESET, 0, RESET_PROTOCOL, new TextEncoder().encode(reason))]);
    const e = rec.events[0] as { type: number; value: number; payload: number[] };
    expect(e.type).toBe(FRAME_RESET);
    expect(e.value).toBe(RESET_PROTOCOL);
    expect(new TextDecoder().decode(Uint8Array.from(e.payload))).toBe(reason);
  });

  test("a control payload arrives whole even when its bytes are split", () => {
    const payload = new TextEncoder().encode("split reason");
    const f = encodeFrame(FRAME_RESET, 0, 1, payload);
    const rec = decodeChunks([f.subarray(0, 17), f.subarray(17, 20), f.subarray(20)]);
    expect(rec.events).toEqual([{ kind: "control", type: FRAME_RESET, flags: 0, value: 1, payload: Array.from(payload) }]);
  });
});

// --- ACK entries and RESET reasons ----------------------------------------------------------------

describe("ACK entries", () => {
  test("encode to index, generation, received mod 2^32, 8 bytes each, big-endian (golden vector)", () => {
    const payload = encodeAckEntries([
      { index: 1, generation: 2, received: 0x0304_0506 },
      { index: 0xfffe, generation: 0xffff, received: 2 ** 32 + 7 }, // counts are sent mod 2^32
    ]);
    expect(Buffer.from(payload).toString("hex")).toBe("0001" + "0002" + "03040506" + "fffe" + "ffff" + "00000007");
  });

  test("no entries is an empty payload", () => {
    expect(encodeAckEntries([]).byteLength).toBe(0);
    expect(decodeAckEntries(new Uint8Array(0))).toEqual([]);
  });

  test("decode the documented bytes, from a view at an offset, ignoring a trailing piece under 8 bytes", () => {
    const bytes = Buffer.from("ff" + "0003" + "0009" + "ffffffff" + "003f" + "0001" + "00000000" + "01020304050607", "hex");
    const view = new Uint8Array(bytes.buffer, bytes.byteOffset + 1, bytes.byteLength - 1);
    expect(decodeAckEntries(view)).toEqual([
      { index: 3, generation: 9, received: 0xffffffff },
      { index: 63, generation: 1, received: 0 },
    ]);
  });

  test("round-trip through an ACK frame and the decoder", () => {
    const entries = [
      { index: 0, generation: 1, received: 0 },
      { index: 7, generation: 0x8000, received: 123_456_789 },
    ];
    const rec = decodeChunks([encodeFrame(FRAME_ACK, 0, 42, encodeAckEntries(entries))]);
    const e = rec.events[0] as { payload: number[] };
    expect(decodeAckEntries(Uint8Array.from(e.payload))).toEqual(entries);
  });
});

describe("RESET reason", () => {
  test("is UTF-8 of the message (golden vector)", () => {
    expect(Buffer.from(encodeResetReason("E ✗")).toString("hex")).toBe("4520e29c97");
  });

  test("the sender keeps the first 200 UTF-16 code units: up to 600 bytes", () => {
    expect(encodeResetReason("a".repeat(300)).byteLength).toBe(200);
    expect(encodeResetReason("✗".repeat(300)).byteLength).toBe(600);
  });

  test("the receiver decodes only the first 200 bytes", () => {
    expect(decodeResetReason(new TextEncoder().encode("b".repeat(250)))).toBe("b".repeat(200));
  });

  test("invalid UTF-8 is replaced, not an error; an empty reason reads 'no reason given'", () => {
    expect(decodeResetReason(Uint8Array.of(0x6f, 0x6b, 0xff))).toBe("ok\ufffd");
    expect(decodeResetReason(new Uint8Array(0))).toBe("no reason given");
  });

  test("a reason cut inside a multi-byte character at 200 bytes ends in one replacement character", () => {
    const payload = encodeResetReason("x" + "✗".repeat(100)); // 1 + 300 bytes: byte 200 splits a character
    expect(decodeResetReason(payload)).toBe("x" + "✗".repeat(66) + "\ufffd");
  });
});

// --- decoder errors ------------------------------------------------------------------------------

describe("decoder errors", () => {
  test("an unknown frame type is E_UNKNOWN_FRAME", () => {
    for (const type of [C.FRAME_TYPE_MAX + 1, 9, 0x80, 0xff]) {
      const dec = new FrameDecoder(new Recorder());
      expectProtocolError(() => dec.push(rawHeader(type, 0, 0, 0, 0, 0)), "E_UNKNOWN_FRAME");
    }
  });

  test("an unknown type is detected from the header alone, split or not", () => {
    const h = rawHeader(8, 0, 0, 5, 0, 0);
    const dec = new FrameDecoder(new Recorder());
    dec.push(h.subarray(0, 15));
    expectProtocolError(() => dec.push(h.subarray(15)), "E_UNKNOWN_FRAME");
  });

  test("a payload length above the maximum is E_FRAME_TOO_LARGE; the maximum itself is accepted", () => {
    for (const type of [FRAME_DATA, FRAME_ACK, FRAME_RESET, FRAME_PING]) {
      // Control frames have their own, smaller limit: a 16-byte header must not make us allocate 1 MiB.
      const max = type === FRAME_DATA ? MAX_FRAME_PAYLOAD : MAX_CONTROL_PAYLOAD;
      for (const length of [max + 1, 0x7fffffff, 0xffffffff]) {
        const dec = new FrameDecoder(new Recorder());
        expectProtocolError(() => dec.push(rawHeader(type, 0, 0, length, 0, 0)), "E_FRAME_TOO_LARGE");
      }
      const ok = new FrameDecoder(new Recorder());
      ok.push(rawHeader(type, 0, 0, max, 0, 0));
      expect(ok.atBoundary).toBe(false);
    }
  });

  test("the decoder's own maxPayload lowers the limit", () => {
    const dec = new FrameDecoder(new Recorder(), 100);
    expectProtocolError(() => dec.push(rawHeader(FRAME_DATA, 0, 0, 101, 0, 0)), "E_FRAME_TOO_LARGE");
    const ok = new FrameDecoder(new Recorder(), 100);
    ok.push(encodeFrame(FRAME_DATA, 0, 0, new Uint8Array(100)));
    expect(ok.atBoundary).toBe(true);
  });

  test("an oversize length is rejected without allocating a buffer for it", () => {
    // Counts Uint8Array allocations by size while the decoder runs. The largest control frame proves the
    // spy sees the decoder's allocations; the oversize ones must not allocate anything large.
    const Orig = globalThis.Uint8Array;
    let biggest = 0;
    const spy = new Proxy(Orig, {
      construct(target, args, newTarget) {
        if (typeof args[0] === "number") biggest = Math.max(biggest, args[0]);
        return Reflect.construct(target, args, newTarget);
      },
    });
    const headers = [FRAME_ACK, FRAME_RESET, FRAME_DATA].map((t) => rawHeader(t, 0, 0, 0xffffffff, 0, 0));
    const maxHeader = rawHeader(FRAME_ACK, 0, 0, MAX_CONTROL_PAYLOAD, 0, 0);
    let control = 0;
    const errors: unknown[] = [];
    (globalThis as { Uint8Array: unknown }).Uint8Array = spy;
    try {
      new FrameDecoder(new Recorder()).push(maxHeader);
      control = biggest;
      biggest = 0;
      for (const h of headers) {
        try {
          new FrameDecoder(new Recorder()).push(h);
        } catch (err) {
          errors.push(err);
        }
      }
    } finally {
      (globalThis as { Uint8Array: unknown }).Uint8Array = Orig;
    }
    expect(control).toBe(MAX_CONTROL_PAYLOAD);
    expect(biggest).toBeLessThanOrEqual(FRAME_HEADER_SIZE);
    expect(errors.map((e) => (e as ProtocolError).code)).toEqual(["E_FRAME_TOO_LARGE", "E_FRAME_TOO_LARGE", "E_FRAME_TOO_LARGE"]);
  });

  test("pad above 63, or any pad on a non-DATA frame, is E_BAD_PAD", () => {
    for (const pad of [MAX_PAD + 1, 0x80, 0xff]) {
      const dec = new FrameDecoder(new Recorder());
      expectProtocolError(() => dec.push(rawHeader(FRAME_DATA, 0, pad, 10, 0, 0)), "E_BAD_PAD");
    }
    for (const type of [FRAME_ACK, FRAME_PING, FRAME_PONG, FRAME_FIN, FRAME_RESET]) {
      const dec = new FrameDecoder(new Recorder());
      expectProtocolError(() => dec.push(rawHeader(type, 0, 1, 0, 0, 0)), "E_BAD_PAD");
    }
  });

  test("the reserved header byte and unknown flags are ignored", () => {
    const f = encodeFrame(FRAME_PING, 0xfe, 5);
    f[3] = 0x99;
    const rec = decodeChunks([f]);
    expect(rec.events).toEqual([{ kind: "control", type: FRAME_PING, flags: 0xfe, value: 5, payload: [] }]);
  });
});

// --- incremental decoding ------------------------------------------------------------------------

describe("FrameDecoder fed chunks split anywhere", () => {
  test("a split at every single byte position yields exactly the unsplit frames", () => {
    seeded(1, (rand) => {
      const { bytes, events, boundaries } = mixedStream(rand, 60);
      expect(decodeChunks([bytes]).events).toEqual(events);
      for (let k = 1; k < bytes.byteLength; k++) {
        const rec = new Recorder();
        const dec = new FrameDecoder(rec);
        rec.currentChunk = bytes.subarray(0, k);
        dec.push(rec.currentChunk);
        // atBoundary is true exactly between frames.
        if (dec.atBoundary !== boundaries.has(k)) throw new Error(`atBoundary wrong after a split at byte ${k}`);
        rec.currentChunk = bytes.subarray(k);
        dec.push(rec.currentChunk);
        expect(dec.atBoundary).toBe(true);
        if (!Bun.deepEquals(rec.events, events)) {
          expect(rec.events, `split at byte ${k} of ${bytes.byteLength}`).toEqual(events);
        }
      }
    });
  });

  test("one byte at a time yields exactly the unsplit frames", () => {
    seeded(2, (rand) => {
      const { bytes, events } = mixedStream(rand, 200);
      const chunks = Array.from({ length: bytes.byteLength }, (_, i) => bytes.subarray(i, i + 1));
      expect(decodeChunks(chunks, true).events).toEqual(events);
    });
  });

  test("splits at seeded-random points yield exactly the unsplit frames", () => {
    seeded(3, (rand) => {
      for (let iter = 0; iter < 300; iter++) {
        const { bytes, events } = mixedStream(rand, randInt(rand, 1, 80));
        const chunks: Uint8Array[] = [];
        for (let pos = 0; pos < bytes.byteLength; ) {
          // Mostly small pieces around header size, sometimes large ones.
          const n = rand() < 0.7 ? randInt(rand, 1, 40) : randInt(rand, 1, 2000);
          // Copy each piece into its own buffer sometimes, as a socket would deliver it.
          const piece = bytes.subarray(pos, pos + n);
          chunks.push(rand() < 0.5 ? piece : piece.slice());
          pos += n;
        }
        const rec = decodeChunks(chunks, true);
        if (!Bun.deepEquals(rec.events, events)) expect(rec.events, `iteration ${iter}`).toEqual(events);
      }
    });
  });

  test("DATA fragments are views of the pushed chunks (zero-copy) at the right offsets", () => {
    const payload = Uint8Array.from({ length: 5000 }, (_, i) => i & 0xff);
    const f = dataFrame(1000, payload, 20);
    const got: [number, Uint8Array][] = [];
    const dec = new FrameDecoder({ data: (o, b) => got.push([o, b]), control() {} });
    const a = f.slice(0, 100);
    const b = f.slice(100, 3000);
    const c = f.slice(3000);
    for (const chunk of [a, b, c]) dec.push(chunk);
    expect(got.map(([o, x]) => [o, x.byteLength])).toEqual([
      [1000, 100 - 36],
      [1064, 2900],
      [3964, f.byteLength - 3000],
    ]);
    expect(got[0]![1].buffer).toBe(a.buffer);
    expect(got[1]![1].buffer).toBe(b.buffer);
    expect(got[2]![1].buffer).toBe(c.buffer);
  });
});

// --- garbage -------------------------------------------------------------------------------------

describe("FrameDecoder fed garbage", () => {
  /** Pushes chunks until the decoder throws; any throw must be a ProtocolError with a decoder code. */
  function feed(chunks: Uint8Array[]): "ok" | string {
    const dec = new FrameDecoder({ data() {}, control() {} });
    for (const c of chunks) {
      try {
        dec.push(c);
      } catch (err) {
        if (!(err instanceof ProtocolError)) throw new Error(`decoder threw a non-ProtocolError: ${err}`, { cause: err });
        if (!DECODER_CODES.has(err.code)) throw new Error(`decoder threw unexpected code ${err.code}`);
        return err.code;
      }
    }
    return "ok";
  }

  function randomSplit(rand: () => number, bytes: Uint8Array): Uint8Array[] {
    const chunks: Uint8Array[] = [];
    for (let pos = 0; pos < bytes.byteLength; ) {
      const n = randInt(rand, 1, 64);
      chunks.push(bytes.subarray(pos, pos + n));
      pos += n;
    }
    return chunks;
  }

  test(
    "random bytes produce frames or a ProtocolError, nothing else, and always terminate",
    () => {
      seeded(4, (rand) => {
        const seen = new Map<string, number>();
        for (let iter = 0; iter < 20_000; iter++) {
          const r = feed(randomSplit(rand, randomBytes(rand, randInt(rand, 0, 256))));
          seen.set(r, (seen.get(r) ?? 0) + 1);
        }
        expect(seen.get("E_OFFSET_RANGE") ?? 0).toBeGreaterThan(0);
      });
    },
    60_000,
  );

  test(
    "random headers with plausible fields produce frames or a ProtocolError, nothing else",
    () => {
      seeded(5, (rand) => {
        const seen = new Set<string>();
        for (let iter = 0; iter < 20_000; iter++) {
          const parts: Uint8Array[] = [];
          for (let f = randInt(rand, 1, 6); f > 0; f--) {
            const type = rand() < 0.9 ? randInt(rand, 0, 6) : randInt(rand, 0, 255);
            const pad = rand() < 0.6 ? 0 : rand() < 0.9 ? randInt(rand, 0, 70) : randInt(rand, 0, 255);
            const length = rand() < 0.9 ? randInt(rand, 0, 200) : rand() < 0.5 ? MAX_FRAME_PAYLOAD + randInt(rand, -2, 2) : randInt(rand, 0, 0xffffffff);
            const hi = rand() < 0.9 ? randInt(rand, 0, 2 ** 21 - 1) : randInt(rand, 0, 0xffffffff);
            parts.push(rawHeader(type, randInt(rand, 0, 255), pad, length, hi, randInt(rand, 0, 0xffffffff)));
            // Usually exactly the body the header announces, so the next header is a generated one.
            const body = (type === FRAME_DATA ? pad : 0) + length;
            parts.push(randomBytes(rand, rand() < 0.8 && body <= 300 ? body : randInt(rand, 0, 300)));
          }
          const all = Buffer.concat(parts);
          seen.add(feed(randomSplit(rand, all)));
        }
        // The generator reaches every outcome, so this test exercises every check.
        for (const code of ["ok", ...DECODER_CODES]) expect(seen).toContain(code);
      });
    },
    60_000,
  );

  test(
    "valid streams with flipped bits produce frames or a ProtocolError, nothing else",
    () => {
      seeded(6, (rand) => {
        for (let iter = 0; iter < 3000; iter++) {
          const { bytes } = mixedStream(rand, randInt(rand, 1, 20));
          for (let flips = randInt(rand, 1, 8); flips > 0; flips--) {
            const i = randInt(rand, 0, bytes.byteLength - 1);
            bytes[i] = rand() < 0.5 ? bytes[i]! ^ (1 << randInt(rand, 0, 7)) : randInt(rand, 0, 255);
          }
          feed(randomSplit(rand, bytes));
        }
      });
    },
    60_000,
  );
});

// --- FrameBatch ----------------------------------------------------------------------------------

describe("FrameBatch", () => {
  /** A source buffer with its own ArrayBuffer, so its address is stable once taken. */
  function source(n: number): Uint8Array {
    const b = new Uint8Array(new ArrayBuffer(n));
    for (let i = 0; i < n; i++) b[i] = (i * 31 + 7) & 0xff;
    return b;
  }

  const mod64 = (x: number): number => ((x % 64) + 64) % 64;

  test("appendData payloads round-trip through FrameDecoder, co-aligned with their source when >= 1024 bytes", () => {
    seeded(7, (rand) => {
      const src = source(300_000);
      const srcAddr = ptr(src);
      const backing = new Uint8Array(new ArrayBuffer(1 << 20));
      for (let iter = 0; iter < 200; iter++) {
        // A batch buffer at an arbitrary byte offset inside a larger allocation.
        const batchOff = randInt(rand, 0, 127);
        const batch = new FrameBatch(backing.subarray(batchOff, batchOff + 512 * 1024));
        const sent: { offset: number; payload: Uint8Array }[] = [];
        const controls: number[] = [];
        let streamOff = randInt(rand, 0, 2 ** 40);
        for (;;) {
          if (rand() < 0.3) {
            const len = randInt(rand, 0, 40);
            if (batch.room < FRAME_HEADER_SIZE + len) break;
            batch.appendControl(FRAME_ACK, 0, len, new Uint8Array(len).fill(len));
            controls.push(len);
          }
          const size = rand() < 0.3 ? randInt(rand, 1, 1023) : rand() < 0.5 ? randInt(rand, 1024, 1100) : randInt(rand, 1024, 65536);
          if (batch.dataRoom < size) break;
          const at = randInt(rand, 0, src.byteLength - size);
          const payload = src.subarray(at, at + size);
          batch.appendData(streamOff, payload);
          sent.push({ offset: streamOff, payload });
          streamOff += size + randInt(rand, 0, 3);
        }
        const frags: { offset: number; bytes: Uint8Array }[] = [];
        const ctl: number[] = [];
        const dec = new FrameDecoder({
          data: (offset, bytes) => frags.push({ offset, bytes }),
          control: (_t, _f, value) => ctl.push(value),
        });
        dec.push(batch.bytes());
        expect(dec.atBoundary).toBe(true);
        expect(ctl).toEqual(controls);
        expect(frags.length).toBe(sent.length);
        for (let k = 0; k < sent.length; k++) {
          const { offset, payload } = sent[k]!;
          const got = frags[k]!;
          expect(got.offset).toBe(offset);
          expect(got.bytes).toEqual(payload);
          // The fragment is a view into the batch: its address is where appendData put the payload.
          const inBatch = ptr(got.bytes);
          const fromSrc = srcAddr + payload.byteOffset;
          if (payload.byteLength >= 1024 && mod64(inBatch - fromSrc) !== 0) {
            throw new Error(`payload of ${payload.byteLength} at source offset ${payload.byteOffset} not co-aligned (batch at +${batchOff}, frame ${k})`);
          }
          if (payload.byteLength < 1024) {
            // No padding for small payloads: the payload follows its header directly.
            const headerAt = got.bytes.byteOffset - FRAME_HEADER_SIZE - batch.buf.byteOffset;
            expect(batch.buf[headerAt + 2]).toBe(0);
          }
        }
      }
    });
  });

  test("reset() to another buffer re-bases the alignment", () => {
    const src = source(8192);
    const srcAddr = ptr(src);
    const backing = new Uint8Array(new ArrayBuffer(200_000));
    const batch = new FrameBatch(backing.subarray(0, 50_000));
    for (const off of [1, 17, 63, 64, 100]) {
      batch.reset(backing.subarray(off, off + 50_000));
      const payload = src.subarray(5, 5 + 4000);
      batch.appendData(0, payload);
      let frag: Uint8Array | undefined;
      new FrameDecoder({ data: (_o, b) => (frag = b), control() {} }).push(batch.bytes());
      expect(frag).toEqual(payload);
      expect(mod64(ptr(frag!) - (srcAddr + 5))).toBe(0);
    }
  });

  test("dataRoom leaves space for a header and the largest pad; length tracks appends", () => {
    const batch = new FrameBatch(new Uint8Array(new ArrayBuffer(10_000)));
    expect(batch.room).toBe(10_000);
    expect(batch.dataRoom).toBe(10_000 - FRAME_HEADER_SIZE - MAX_PAD);
    batch.appendControl(FRAME_PING, 0, 1);
    expect(batch.length).toBe(FRAME_HEADER_SIZE);
    const payload = source(5000).subarray(3);
    batch.appendData(0, payload);
    const pad = batch.buf[FRAME_HEADER_SIZE + 2]!;
    expect(pad).toBeLessThanOrEqual(MAX_PAD);
    expect(batch.length).toBe(2 * FRAME_HEADER_SIZE + pad + payload.byteLength);
    batch.reset(batch.buf);
    expect(batch.length).toBe(0);
    expect(batch.bytes().byteLength).toBe(0);
  });

  test("BufferPool reuses buffers of its size only, up to its bound", () => {
    const pool = new BufferPool(100, 2);
    const a = pool.get();
    const b = pool.get();
    const c = pool.get();
    expect(a.byteLength).toBe(100);
    pool.put(a);
    pool.put(b);
    pool.put(c); // over the bound: dropped
    pool.put(new Uint8Array(50)); // wrong size: dropped
    expect(pool.get()).toBe(b);
    expect(pool.get()).toBe(a);
    expect(pool.get()).not.toBe(c);
  });
});
