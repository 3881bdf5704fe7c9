/**
 * The v2 first messages of both directions in both modes: pinned constants, byte layout, round trips
 * read at every prefix length, 0-RTT records after the header, and every silent-failure reason.
 */

import { describe, expect, test } from "bun:test";
import { createCipheriv, randomBytes } from "node:crypto";
import * as C from "../src/secure/constants.ts";
import { deriveC2S, deriveS2C } from "../src/secure/kdf.ts";
import {
  SILENT_REASONS,
  checkFresh,
  checkTime,
  decodeHeader,
  encodeClientHello,
  encodeHeader,
  encodeServerReply,
  readClientHello,
  readServerReply,
  type ClientHeader,
  type ClientHello,
  type HandshakeAuth,
  type ServerReply,
  type Step,
} from "../src/secure/messages.ts";
import { RecordOpener, RecordSealer } from "../src/secure/record.ts";
import { ReplaySet } from "../src/secure/replay.ts";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const key = () => new Uint8Array(randomBytes(32));
const NOW = 1_700_000_000_000;
const K = key();
const KEYED: HandshakeAuth = { mode: "keyed", keys: [K] };
const PLAIN: HandshakeAuth = { mode: "plain" };
const SID = new Uint8Array(16).map((_, i) => 0xa0 + i);

function header(over: Partial<ClientHeader> = {}): ClientHeader {
  return {
    kind: C.KIND_OPEN,
    flags: 0,
    stripeIndex: 3,
    generation: 7,
    stripeCount: 8,
    timestampMs: NOW,
    window: 16 << 20,
    secret: new Uint8Array(32).fill(0x5e),
    options: [],
    ...over,
  };
}
const REPLY: ServerReply = { status: C.STATUS_OK, flags: 0, window: 8 << 20, options: [] };

function done<T>(step: Step<T, unknown>): { consumed: number; value: T } {
  if (step.status !== "done") throw new Error(`expected done, got ${JSON.stringify(step)}`);
  return step;
}
function reason(step: Step<unknown, unknown>): string {
  if (step.status !== "fail") throw new Error(`expected fail, got ${step.status}`);
  return step.reason;
}

/** Reads a hello as a server would: calling again only once `need` bytes are there. Counts calls. */
function readGrowing(bytes: Uint8Array, auth: HandshakeAuth) {
  let have = 0;
  let calls = 0;
  let resume: Parameters<typeof readClientHello>[2];
  for (;;) {
    calls++;
    const step = readClientHello(bytes.subarray(0, have), auth, resume);
    if (step.status !== "need") return { step, calls };
    expect(step.total).toBeGreaterThan(have);
    resume = step.resume;
    have = Math.min(bytes.byteLength, step.total);
    if (have < step.total) return { step, calls };
  }
}

describe("constants", () => {
  test("every wire value is pinned", () => {
    expect({ ...C }).toEqual({
      V2: 2,
      KEY_SIZE: 32,
      SID_SIZE: 16,
      SALT_SIZE: 32,
      SECRET_SIZE: 32,
      TAG_SIZE: 16,
      NONCE_SIZE: 12,
      LENGTH_RECORD_SIZE: 20,
      RECORD_OVERHEAD: 36,
      MAX_RECORD: 1048576,
      MAX_HEADER: 2048,
      MAX_SEALS: 4294967296,
      PLAIN_LENGTH_SIZE: 4,
      CLIENT_PREFIX_SIZE: 48,
      SERVER_PREFIX_SIZE: 32,
      KIND_OPEN: 1,
      KIND_JOIN: 2,
      HEADER_FIXED_SIZE: 56,
      REPLY_FIXED_SIZE: 8,
      TLV_HEADER_SIZE: 3,
      HEADER_FLAG_STANDBY: 1,
      OPT_DESTINATION: 1,
      STATUS_OK: 0,
      STATUS_UNKNOWN_SESSION: 1,
      STATUS_REFUSED: 3,
      STATUS_WRONG_WORKER: 4,
      OPT_WORKER: 2,
      OPT_JOIN: 1,
      TIME_WINDOW_MS: 30000,
      REPLAY_SLACK_MS: 1000,
      FIRST_FRAME_COUNTER: 2,
    });
    expect(SILENT_REASONS).toEqual([
      "bad-auth", "too-long", "bad-header", "bad-version", "stale-time", "replay", "replay-full",
      "bad-member", "rate-limited", "busy", "timeout", "truncated", "bad-proxy",
    ]);
  });
});

describe("header and reply bodies", () => {
  test("header layout, field by field", () => {
    const h = header({ kind: 2, flags: 0x0102, stripeIndex: 0x0304, generation: 0x0506, stripeCount: 0x0708, timestampMs: 0x0000_0123_4567_89ab, window: 0x0c0d0e0f, options: [{ type: 9, value: Uint8Array.of(0xee, 0xff) }] });
    const b = encodeHeader(h);
    expect(b.byteLength).toBe(56 + 5);
    expect(hex(b.subarray(0, 24))).toBe("02" + "02" + "0102" + "0304" + "0506" + "0708" + "0000" + "00000123456789ab" + "0c0d0e0f");
    expect(hex(b.subarray(24, 56))).toBe("5e".repeat(32));
    expect(hex(b.subarray(56))).toBe("09" + "0002" + "eeff");
    expect(decodeHeader(b)).toEqual(h);
  });

  test("reply layout", () => {
    const { bytes } = encodeServerReply(undefined, { sid: SID, cs: new Uint8Array(32) }, { status: 3, flags: 0x0a0b, window: 0x01020304, options: [] });
    // plain: 32 zero bytes ‖ u32 length ‖ body
    expect(hex(bytes)).toBe("00".repeat(32) + "00000008" + "02" + "03" + "0a0b" + "01020304");
  });

  test("unknown options are carried, not refused; out-of-range fields are the caller's bug", () => {
    const opts = [{ type: 200, value: new Uint8Array(0) }, { type: 7, value: new Uint8Array(300).fill(1) }];
    expect(decodeHeader(encodeHeader(header({ options: opts })))).toEqual(header({ options: opts }));
    expect(() => encodeHeader(header({ stripeIndex: 65536 }))).toThrow(RangeError);
    expect(() => encodeHeader(header({ secret: new Uint8Array(31) }))).toThrow(RangeError);
    expect(() => encodeHeader(header({ timestampMs: -1 }))).toThrow(RangeError);
    expect(() => encodeHeader(header({ options: [{ type: 1, value: new Uint8Array(2000) }] }))).toThrow("exceeds 2048");
  });
});

for (const [name, auth] of [["keyed", KEYED], ["plain", PLAIN]] as const) {
  describe(`client hello, ${name}`, () => {
    test("session id in clear at offset 0, the salt at 16; read back exactly", () => {
      const out = encodeClientHello(auth, SID, header({ options: [{ type: 1, value: Uint8Array.of(1, 2, 3) }] }));
      expect(hex(out.bytes.subarray(0, 16))).toBe(hex(SID));
      expect(hex(out.bytes.subarray(16, 48))).toBe(hex(out.cs));
      if (name === "plain") expect(hex(out.cs)).toBe("00".repeat(32));
      else expect(out.cs.some((b) => b !== 0)).toBe(true);
      const size = 48 + (name === "keyed" ? 36 : 4) + 56 + 6;
      expect(out.bytes.byteLength).toBe(size);
      const r = done(readClientHello(out.bytes, auth));
      expect(r.consumed).toBe(size);
      expect(r.value.header).toEqual(header({ options: [{ type: 1, value: Uint8Array.of(1, 2, 3) }] }));
      expect(hex(r.value.sid)).toBe(hex(SID));
      expect(hex(r.value.cs)).toBe(hex(out.cs));
      expect(r.value.keyIndex).toBe(name === "keyed" ? 0 : -1);
      if (name === "keyed") expect(hex(r.value.key!)).toBe(hex(deriveC2S(K, out.cs, SID)));
      else expect(r.value.key).toBeUndefined();
    });

    test("read incrementally: at most three calls, and never a failure for any prefix", () => {
      const out = encodeClientHello(auth, SID, header());
      const { step, calls } = readGrowing(out.bytes, auth);
      expect(done(step).consumed).toBe(out.bytes.byteLength);
      expect(calls).toBe(3);
      for (let n = 0; n < out.bytes.byteLength; n++) expect(readClientHello(out.bytes.subarray(0, n), auth).status).toBe("need");
    });

    test("a server reply round trip, bound to the hello", () => {
      const hello = encodeClientHello(auth, SID, header());
      const psk = name === "keyed" ? K : undefined;
      const reply = encodeServerReply(psk, { sid: SID, cs: hello.cs }, { ...REPLY, options: [{ type: 4, value: Uint8Array.of(4) }] });
      expect(reply.bytes.byteLength).toBe(32 + (name === "keyed" ? 36 : 4) + 8 + 4);
      for (let n = 0; n < reply.bytes.byteLength; n++) expect(readServerReply(reply.bytes.subarray(0, n), auth, { sid: SID, cs: hello.cs }).status).toBe("need");
      const r = done(readServerReply(reply.bytes, auth, { sid: SID, cs: hello.cs }));
      expect(r.consumed).toBe(reply.bytes.byteLength);
      expect(r.value.reply).toEqual({ ...REPLY, options: [{ type: 4, value: Uint8Array.of(4) }] });
      expect(hex(r.value.ss)).toBe(hex(reply.ss));
      if (name === "keyed") expect(hex(r.value.key!)).toBe(hex(deriveS2C(K, hello.cs, reply.ss, SID)));
    });
  });
}

describe("keyed: keys, 0-RTT and the record keys that follow", () => {
  test("the server finds the client's key among 16 and says which", () => {
    const keys = Array.from({ length: 16 }, key);
    const out = encodeClientHello({ mode: "keyed", keys: [keys[11]!] }, SID, header());
    const r = done(readClientHello(out.bytes, { mode: "keyed", keys }));
    expect(r.value.keyIndex).toBe(11);
  });

  test("0-RTT records right behind the header open under K_c2s from seal number 2; the reply's under K_s2c", () => {
    const hello = encodeClientHello(KEYED, SID, header());
    expect(hello.sealer!.counter).toBe(C.FIRST_FRAME_COUNTER);
    const early = hello.sealer!.seal(new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n"));
    const wire = Buffer.concat([hello.bytes, early]);
    const r = done(readClientHello(wire, KEYED));
    const opener = new RecordOpener(r.value.key!, C.FIRST_FRAME_COUNTER);
    const got: Uint8Array[] = [];
    opener.push(wire.subarray(r.consumed), got);
    expect(new TextDecoder().decode(Buffer.concat(got))).toBe("GET / HTTP/1.1\r\n\r\n");

    const reply = encodeServerReply(K, r.value, REPLY);
    const first = reply.sealer!.seal(Uint8Array.of(1, 2, 3));
    const back = Buffer.concat([reply.bytes, first]);
    const rr = done(readServerReply(back, KEYED, { sid: SID, cs: hello.cs }));
    const o2 = new RecordOpener(rr.value.key!, C.FIRST_FRAME_COUNTER);
    const got2: Uint8Array[] = [];
    o2.push(back.subarray(rr.consumed), got2);
    expect([...Buffer.concat(got2)]).toEqual([1, 2, 3]);
  });

  test("every connection gets fresh salts, hence fresh keys", () => {
    const a = encodeClientHello(KEYED, SID, header());
    const b = encodeClientHello(KEYED, SID, header());
    expect(hex(a.cs)).not.toBe(hex(b.cs));
    expect(hex(a.key!)).not.toBe(hex(b.key!));
    const ra = encodeServerReply(K, { sid: SID, cs: a.cs }, REPLY);
    const rb = encodeServerReply(K, { sid: SID, cs: a.cs }, REPLY);
    expect(hex(ra.key!)).not.toBe(hex(rb.key!));
  });
});

describe("silent failures, client hello", () => {
  const hello = encodeClientHello(KEYED, SID, header());

  /** A keyed first message with any header body (sealed properly under K). */
  function sealedHello(body: Uint8Array, psk = K): Uint8Array {
    const cs = new Uint8Array(randomBytes(32));
    const rec = new RecordSealer(deriveC2S(psk, cs, SID), 0, C.MAX_RECORD).seal(body, Buffer.concat([SID, cs]));
    return Buffer.concat([SID, cs, rec]);
  }

  test("bad-auth: a wrong key, garbage, a plain client, any changed byte of sid, cs or the record", () => {
    expect(reason(readClientHello(hello.bytes, { mode: "keyed", keys: [key(), key()] }))).toBe("bad-auth");
    expect(reason(readClientHello(new Uint8Array(randomBytes(200)), KEYED))).toBe("bad-auth");
    expect(reason(readClientHello(encodeClientHello(PLAIN, SID, header()).bytes, KEYED))).toBe("bad-auth");
    for (let i = 0; i < hello.bytes.byteLength; i++) {
      const bad = new Uint8Array(hello.bytes);
      bad[i]! ^= 0x10;
      expect(reason(readGrowing(bad, KEYED).step)).toBe("bad-auth");
    }
  });

  test("a keyed client at a plain server fails too (its sealed length reads as an absurd plain length)", () => {
    // With a fixed salt the outcome is fixed; over 200 random salts, never a success.
    for (let i = 0; i < 200; i++) {
      const { step } = readGrowing(encodeClientHello(KEYED, SID, header()).bytes, PLAIN);
      expect(step.status).not.toBe("done");
    }
  });

  test("too-long: an authenticated header length above 2 KiB (keyed) or announced so (plain)", () => {
    expect(reason(readClientHello(sealedHello(new Uint8Array(2049).fill(2)).subarray(0, 68), KEYED))).toBe("too-long");
    const plain = new Uint8Array(52);
    new DataView(plain.buffer).setUint32(48, 2049);
    expect(reason(readClientHello(plain, PLAIN))).toBe("too-long");
    new DataView(plain.buffer).setUint32(48, 0xffff_ffff);
    expect(reason(readClientHello(plain, PLAIN))).toBe("too-long");
  });

  test("bad-version: authenticated, but not version 2", () => {
    const body = encodeHeader(header());
    body[0] = 3;
    expect(reason(readClientHello(sealedHello(body), KEYED))).toBe("bad-version");
    body[0] = 1;
    expect(reason(readClientHello(sealedHello(body), KEYED))).toBe("bad-version");
  });

  test("bad-header: authenticated but empty, short, or with a truncated option", () => {
    const full = encodeHeader(header({ options: [{ type: 1, value: new Uint8Array(10) }] }));
    expect(reason(readClientHello(sealedHello(full.subarray(0, 55)), KEYED))).toBe("bad-header");
    expect(reason(readClientHello(sealedHello(full.subarray(0, 58)), KEYED))).toBe("bad-header");
    expect(reason(readClientHello(sealedHello(full.subarray(0, full.byteLength - 1)), KEYED))).toBe("bad-header");
    // An authenticated zero length, made by hand (the sealer refuses empty records).
    const cs = new Uint8Array(32).fill(1);
    const c = createCipheriv("aes-256-gcm", deriveC2S(K, cs, SID), new Uint8Array(12));
    c.setAAD(Buffer.concat([SID, cs]));
    const zero = Buffer.concat([SID, cs, c.update(new Uint8Array(4)), c.final(), c.getAuthTag()]);
    expect(reason(readClientHello(zero, KEYED))).toBe("bad-header");
    const plain = new Uint8Array(52);
    expect(reason(readClientHello(plain, PLAIN))).toBe("bad-header");
  });

  test("a record under another key's K_c2s but this sid/cs is refused (the key that made it is not ours)", () => {
    expect(reason(readClientHello(sealedHello(encodeHeader(header()), key()), KEYED))).toBe("bad-auth");
  });
});

describe("freshness: time, then replay", () => {
  function read(ts: number, auth: HandshakeAuth = KEYED): ClientHello {
    return done(readClientHello(encodeClientHello(auth, SID, header({ timestampMs: ts })).bytes, auth)).value;
  }

  test("stale-time beyond ±30 s, inclusive bounds accepted", () => {
    expect(checkTime(NOW + 30_000, NOW)).toBeUndefined();
    expect(checkTime(NOW - 30_000, NOW)).toBeUndefined();
    expect(checkTime(NOW + 30_001, NOW)).toBe("stale-time");
    expect(checkTime(NOW - 30_001, NOW)).toBe("stale-time");
    const replay = new ReplaySet();
    expect(checkFresh(read(NOW - 31_000), NOW, replay)).toBe("stale-time");
    expect(checkFresh(read(NOW + 31_000), NOW, replay)).toBe("stale-time");
    expect(replay.size).toBe(0); // a stale hello never reaches the replay set
  });

  test("replay: the same first message twice, within the window", () => {
    const replay = new ReplaySet();
    const bytes = encodeClientHello(KEYED, SID, header()).bytes;
    const a = done(readClientHello(bytes, KEYED)).value;
    expect(checkFresh(a, NOW, replay)).toBeUndefined();
    const b = done(readClientHello(bytes, KEYED)).value;
    expect(checkFresh(b, NOW + 29_000, replay)).toBe("replay");
    // After the window the time check refuses it first.
    expect(checkFresh(b, NOW + 31_000, replay)).toBe("stale-time");
  });

  test("replay-full: the set cannot remember another salt", () => {
    const replay = new ReplaySet({ maxEntries: 1 });
    expect(checkFresh(read(NOW), NOW, replay)).toBeUndefined();
    expect(checkFresh(read(NOW), NOW, replay)).toBe("replay-full");
  });

  test("a timestamp from before the replay set's memory began (a server restart) is stale-time", () => {
    const replay = new ReplaySet({ sinceMs: NOW });
    expect(checkFresh(read(NOW - 1), NOW + 5000, replay)).toBe("stale-time");
    expect(replay.size).toBe(0);
    expect(checkFresh(read(NOW), NOW + 5000, replay)).toBeUndefined();
  });

  test("plain mode skips both checks (no key: a timestamp proves nothing; every salt is zero)", () => {
    const replay = new ReplaySet();
    expect(checkFresh(read(0, PLAIN), NOW, replay)).toBeUndefined();
    expect(checkFresh(read(0, PLAIN), NOW, replay)).toBeUndefined();
    expect(replay.size).toBe(0);
  });
});

describe("silent failures, server reply (the client's E_AUTH cases)", () => {
  const hello = encodeClientHello(KEYED, SID, header());
  const reply = encodeServerReply(K, { sid: SID, cs: hello.cs }, REPLY);
  const mine = { sid: SID, cs: hello.cs };

  test("bad-auth: an impostor's key, a reply to another hello, a replayed reply, a reflected hello", () => {
    expect(reason(readServerReply(encodeServerReply(key(), mine, REPLY).bytes, KEYED, mine))).toBe("bad-auth");
    const other = encodeClientHello(KEYED, SID, header());
    expect(reason(readServerReply(reply.bytes, KEYED, { sid: SID, cs: other.cs }))).toBe("bad-auth");
    expect(reason(readServerReply(reply.bytes, KEYED, { sid: new Uint8Array(16), cs: hello.cs }))).toBe("bad-auth");
    expect(reason(readServerReply(hello.bytes, KEYED, mine))).toBe("bad-auth");
    expect(reason(readServerReply(hello.bytes.subarray(16), KEYED, mine))).toBe("bad-auth");
    for (let i = 0; i < reply.bytes.byteLength; i++) {
      const bad = new Uint8Array(reply.bytes);
      bad[i]! ^= 0x01;
      expect(reason(readServerReply(bad, KEYED, mine))).toBe("bad-auth");
    }
    // A plain server's reply (44 bytes) is shorter than a sealed one: the client waits for more (its
    // deadline then fails it); with the frames that follow it, it fails authentication.
    const plain = encodeServerReply(undefined, mine, REPLY).bytes;
    expect(readServerReply(plain, KEYED, mine)).toEqual({ status: "need", total: 52 });
    expect(reason(readServerReply(Buffer.concat([plain, new Uint8Array(16)]), KEYED, mine))).toBe("bad-auth");
  });

  test("too-long, bad-version, bad-header", () => {
    const ss = new Uint8Array(32).fill(9);
    const sealed = (body: Uint8Array) =>
      Buffer.concat([ss, new RecordSealer(deriveS2C(K, hello.cs, ss, SID)).seal(body, Buffer.concat([hello.cs, ss]))]);
    expect(reason(readServerReply(sealed(new Uint8Array(2049)), KEYED, mine))).toBe("too-long");
    expect(reason(readServerReply(sealed(Uint8Array.of(1, 0, 0, 0, 0, 0, 0, 0)), KEYED, mine))).toBe("bad-version");
    expect(reason(readServerReply(sealed(Uint8Array.of(2, 0, 0)), KEYED, mine))).toBe("bad-header");
  });
});
