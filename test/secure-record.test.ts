/**
 * The record layer: golden vectors (computed with Python's `cryptography` AESGCM, not node:crypto),
 * round trips at every split, the typed errors, nonce uniqueness, and a fast-check property: any split
 * and any single flipped bit gives E_RECORD_AUTH, never a crash and never a byte of the damaged record.
 * TEST_SEED=<seed> replays a failing property run.
 */

import type { ErrorCode } from "../src/errors.ts";
import { describe, expect, test } from "bun:test";
import { createCipheriv, randomBytes } from "node:crypto";
import fc from "fast-check";
import { StriperError } from "../src/errors.ts";
import { LENGTH_RECORD_SIZE, MAX_RECORD, MAX_SEALS, RECORD_OVERHEAD, TAG_SIZE } from "../src/secure/constants.ts";
import { RecordError } from "../src/secure/errors.ts";
import { ptr } from "bun:ffi";
import { ALIGN_SLACK, RecordOpener, RecordSealer, copyUnaliased, openBody, openLength, recordSize, writeNonce } from "../src/secure/record.ts";
import { prng, randInt } from "./helpers/util.ts";

const SEED = process.env.TEST_SEED !== undefined ? Number(process.env.TEST_SEED) | 0 : (Math.random() * 2 ** 31) | 0;
function params(numRuns: number): fc.Parameters<unknown> {
  return {
    seed: SEED,
    numRuns,
    reporter(details) {
      if (details.failed) {
        console.error(`property failed: rerun with TEST_SEED=${details.seed} (path ${details.counterexamplePath})`);
        throw new Error(fc.defaultReportMessage(details) ?? "property failed");
      }
    },
  };
}

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const seq = (from: number, n: number) => new Uint8Array(n).map((_, i) => from + i);
const KEY = Buffer.from("1faaecd5d4931df7942a9f41301869687b00a6fd14bc0dca9cb36a3ab7e473ea", "hex");

function bytes(n: number, seed: number): Uint8Array {
  const r = prng(seed);
  return new Uint8Array(n).map(() => (r() * 256) | 0);
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength))));
}

/** Seals `bodies` with a fresh sealer; returns each record. */
function sealAll(key: Uint8Array, bodies: readonly Uint8Array[], counter = 0): Uint8Array[] {
  const s = new RecordSealer(key, counter);
  return bodies.map((b) => s.seal(b));
}

/** Opens `stream` pushed in `pieces` cut at `cuts`; returns the delivered plaintext and any error. */
function openSplit(key: Uint8Array, stream: Uint8Array, cuts: readonly number[], counter = 0, max = MAX_RECORD) {
  const opener = new RecordOpener(key, counter, max);
  const out: Uint8Array[] = [];
  let error: unknown;
  let at = 0;
  for (const cut of [...cuts, stream.byteLength]) {
    if (cut < at) continue;
    try {
      opener.push(stream.subarray(at, cut), out);
    } catch (err) {
      error = err;
      break;
    }
    at = cut;
  }
  return { opener, plain: concat(out), pieces: out, error };
}

function expectRecordError(err: unknown, code: ErrorCode): void {
  expect(err).toBeInstanceOf(RecordError);
  expect(err).toBeInstanceOf(StriperError);
  expect((err as RecordError).code).toBe(code);
  expect((err as RecordError).message).not.toContain("\n");
}

describe("record layout", () => {
  test("matches a vector computed with Python's cryptography (counter 2, no AAD)", () => {
    const s = new RecordSealer(KEY, 2);
    const rec = s.seal(new TextEncoder().encode("tcp-striper"));
    expect(hex(rec)).toBe("4a79e35866020f8ed184304c3b65bd64301cfd83ac323a282cf184b88057cfd032b1deef8eb145cef06b72651ba1d9");
    expect(s.counter).toBe(4);
  });

  test("matches a vector with AAD (a header record: counter 0, AAD sid ‖ cs)", () => {
    const aad = new Uint8Array([...seq(0x60, 16), ...seq(0x20, 32)]);
    const rec = new RecordSealer(KEY).seal(new TextEncoder().encode("v2"), aad);
    expect(hex(rec)).toBe("89448b132a8ccddfe556b5b93a8ebe169d739cd842731cf617d3861eba5ec3c9be40f2922e46");
    expect(openLength(KEY, 0, rec, aad)).toBe(2);
    expect(openLength(KEY, 0, rec)).toBeUndefined(); // the AAD is authenticated
    const body = openBody(KEY, 1, rec.subarray(20, 22), rec.subarray(22), aad);
    expect(new TextDecoder().decode(body)).toBe("v2");
  });

  test("nonce = 4 zero bytes ‖ u64 BE counter", () => {
    const n = new Uint8Array(12).fill(0xff);
    n.fill(0, 0, 4);
    writeNonce(n, 0);
    expect(hex(n)).toBe("000000000000000000000000");
    writeNonce(n, 0x01020304);
    expect(hex(n)).toBe("000000000000000001020304");
    writeNonce(n, 2 ** 32 + 5);
    expect(hex(n)).toBe("000000000000000100000005");
  });

  test("one contiguous record of body + 36 bytes, for every size up to 1 MiB", () => {
    for (const n of [1, 15, 16, 100, 2047, 2048, 4096, 65_536, 262_144, MAX_RECORD]) {
      const body = bytes(n, n);
      const rec = new RecordSealer(KEY).seal(body);
      expect(rec.byteLength).toBe(n + RECORD_OVERHEAD);
      expect(recordSize(n)).toBe(n + RECORD_OVERHEAD);
      const { plain, error } = openSplit(KEY, rec, []);
      expect(error).toBeUndefined();
      expect(hex(plain)).toBe(hex(body));
    }
  });

  test("seals into a caller's scratch buffer when it is large enough", () => {
    const scratch = new Uint8Array(300_000);
    const body = bytes(262_144, 3);
    const rec = new RecordSealer(KEY).seal(body, undefined, scratch);
    expect(rec.buffer).toBe(scratch.buffer);
    expect(rec.byteOffset).toBeLessThanOrEqual(ALIGN_SLACK);
    expect(hex(openSplit(KEY, rec, []).plain)).toBe(hex(body));
    const small = new Uint8Array(262_144 + RECORD_OVERHEAD); // no room for alignment: not used
    const rec2 = new RecordSealer(KEY).seal(body, undefined, small);
    expect(rec2.buffer).not.toBe(small.buffer);
  });

  test("sealv: a record from scattered pieces is byte-identical to sealing their concatenation", () => {
    const pieces = [bytes(16, 1), bytes(48, 2), bytes(65_536, 3), new Uint8Array(0), bytes(16, 4), bytes(5000, 5)];
    const joined = concat(pieces);
    const scratch = new Uint8Array(joined.byteLength + RECORD_OVERHEAD + ALIGN_SLACK);
    const a = new RecordSealer(KEY, 6).sealv(pieces, undefined, scratch);
    const b = new RecordSealer(KEY, 6).seal(joined);
    expect(hex(a)).toBe(hex(b));
    expect(a.buffer).toBe(scratch.buffer);
    expect(hex(openSplit(KEY, a, [100, 30_000], 6).plain)).toBe(hex(joined));
    const s = new RecordSealer(KEY, 0, 1000);
    let err: unknown;
    try {
      s.sealv([new Uint8Array(0), new Uint8Array(0)]);
    } catch (e) {
      err = e;
    }
    expectRecordError(err, "E_RECORD_EMPTY");
    try {
      s.sealv([new Uint8Array(600), new Uint8Array(401)]);
    } catch (e) {
      err = e;
    }
    expectRecordError(err, "E_RECORD_TOO_LARGE");
  });

  test("sealAt: consecutive records written into one buffer are byte-identical to separate seals", () => {
    const bodies = [[bytes(16, 1), bytes(70_000, 2)], [bytes(3, 3)], [bytes(200_000, 4), new Uint8Array(0), bytes(48, 5)]];
    const lengths = bodies.map((ps) => ps.reduce((n, p) => n + p.byteLength, 0));
    for (const start of [0, 1, 20, 63, 4095]) {
      const dst = new Uint8Array(start + lengths.reduce((n, l) => n + recordSize(l), 0) + 7).fill(0xee);
      const s = new RecordSealer(KEY, 4);
      let at = start;
      bodies.forEach((ps, i) => (at = s.sealAt(ps, lengths[i]!, dst, at)));
      expect(at).toBe(dst.byteLength - 7);
      expect(s.counter).toBe(4 + 2 * bodies.length);
      const ref = sealAll(KEY, bodies.map(concat), 4);
      expect(hex(dst.subarray(start, at))).toBe(hex(concat(ref)));
      expect(dst.subarray(0, start).every((b) => b === 0xee) && dst.subarray(at).every((b) => b === 0xee)).toBe(true);
    }
  });

  test("sealAt refuses a record without room (before any seal), or pieces that do not add up to its length", () => {
    const s = new RecordSealer(KEY, 0, 1000);
    const dst = new Uint8Array(100);
    expect(() => s.sealAt([bytes(65, 1)], 65, dst, 0)).toThrow(RangeError);
    expect(() => s.sealAt([bytes(10, 1)], 10, dst, 60)).toThrow(RangeError);
    expect(() => s.sealAt([bytes(10, 1)], 9, dst, 0)).toThrow(RangeError);
    let err: unknown;
    try {
      s.sealAt([], 0, dst, 0);
    } catch (e) {
      err = e;
    }
    expectRecordError(err, "E_RECORD_EMPTY");
    try {
      s.sealAt([bytes(1001, 1)], 1001, new Uint8Array(2000), 0);
    } catch (e) {
      err = e;
    }
    expectRecordError(err, "E_RECORD_TOO_LARGE");
  });

  test("copyUnaliased copies exactly at every distance from its source, the bounced ones (1-63 past, mod 4096) included", () => {
    const src = bytes(70_000, 9);
    const dst = new Uint8Array(70_000 + 8192);
    for (const delta of [0, 1, 20, 63, 64, 100, 2048, 4095]) {
      const at = (ptr(src) + delta - ptr(dst)) & 4095;
      dst.fill(0);
      copyUnaliased(dst, at, src);
      expect((ptr(dst) + at - ptr(src)) & 4095).toBe(delta);
      expect(hex(dst.subarray(at, at + src.byteLength))).toBe(hex(src));
      expect(dst.subarray(0, at).every((b) => b === 0) && dst.subarray(at + src.byteLength).every((b) => b === 0)).toBe(true);
    }
  });

  test("the ciphertext is not the plaintext", () => {
    const body = new Uint8Array(4096);
    const rec = new RecordSealer(KEY).seal(body);
    expect(rec.subarray(LENGTH_RECORD_SIZE, LENGTH_RECORD_SIZE + 4096).some((b) => b !== 0)).toBe(true);
  });
});

describe("RecordOpener", () => {
  const bodies = [1, 2, 19, 20, 21, 300].map((n, i) => bytes(n, i + 10));
  const stream = concat(sealAll(KEY, bodies));
  const expected = hex(concat(bodies));

  test("opens a stream split at every single point", () => {
    for (let cut = 0; cut <= stream.byteLength; cut++) {
      const { plain, error, opener } = openSplit(KEY, stream, [cut]);
      expect(error).toBeUndefined();
      expect(hex(plain)).toBe(expected);
      expect(opener.atBoundary).toBe(true);
      expect(opener.records).toBe(bodies.length);
    }
  });

  test("opens a stream fed one byte at a time, releasing each record only at its last byte", () => {
    const opener = new RecordOpener(KEY);
    const out: Uint8Array[] = [];
    const ends: number[] = [];
    let end = 0;
    for (const b of bodies) ends.push((end += recordSize(b.byteLength)));
    let released = 0;
    for (let i = 0; i < stream.byteLength; i++) {
      opener.push(stream.subarray(i, i + 1), out);
      const total = out.reduce((n, p) => n + p.byteLength, 0);
      const whole = ends.filter((e) => e <= i + 1).length;
      expect(total).toBe(bodies.slice(0, whole).reduce((n, b) => n + b.byteLength, 0));
      if (whole > released) {
        expect(ends[whole - 1]).toBe(i + 1);
        released = whole;
      }
      expect(opener.atBoundary).toBe(ends.includes(i + 1));
    }
    expect(hex(concat(out))).toBe(expected);
  });

  test("opens at seeded random splits, large records included", () => {
    const seed = SEED;
    const rand = prng(seed);
    const big = [262_144, 70_000, 1, MAX_RECORD, 5000].map((n, i) => bytes(n, i + 100));
    const s = concat(sealAll(KEY, big));
    for (let round = 0; round < 20; round++) {
      const cuts: number[] = [];
      for (let at = 0; at < s.byteLength; ) cuts.push((at += randInt(rand, 1, 200_000)));
      const { plain, error } = openSplit(KEY, s, cuts);
      if (error) throw new Error(`seed ${seed}: ${String(error)}`);
      expect(plain.byteLength).toBe(concat(big).byteLength);
      expect(Buffer.compare(plain, concat(big))).toBe(0);
    }
  });

  test("a record whose body spans chunks is delivered as pieces, without a copy into one buffer", () => {
    const body = bytes(100_000, 5);
    const rec = new RecordSealer(KEY).seal(body);
    const { pieces, plain } = openSplit(KEY, rec, [LENGTH_RECORD_SIZE + 30_000, LENGTH_RECORD_SIZE + 60_000]);
    expect(pieces.length).toBe(3);
    expect(Buffer.compare(plain, body)).toBe(0);
  });

  test("the wrong key, the wrong counter, a reordered or a reflected stream: E_RECORD_AUTH", () => {
    expectRecordError(openSplit(randomBytes(32), stream, []).error, "E_RECORD_AUTH");
    expectRecordError(openSplit(KEY, stream, [], 2).error, "E_RECORD_AUTH");
    const recs = sealAll(KEY, bodies);
    const swapped = concat([recs[1]!, recs[0]!, ...recs.slice(2)]);
    expectRecordError(openSplit(KEY, swapped, []).error, "E_RECORD_AUTH");
    // A record replayed inside the stream (same bytes again) fails too: the counter moved on.
    const replayed = concat([recs[0]!, recs[0]!]);
    const r = openSplit(KEY, replayed, []);
    expectRecordError(r.error, "E_RECORD_AUTH");
    expect(hex(r.plain)).toBe(hex(bodies[0]!));
  });

  test("an authenticated length above the maximum is E_RECORD_TOO_LARGE before the body arrives", () => {
    const rec = new RecordSealer(KEY).seal(bytes(5000, 1));
    const { error, opener } = openSplit(KEY, rec.subarray(0, LENGTH_RECORD_SIZE), [], 0, 4096);
    expectRecordError(error, "E_RECORD_TOO_LARGE");
    expect(opener.buffered).toBe(0);
  });

  test("an authenticated zero length is E_RECORD_EMPTY", () => {
    // Made by hand: the sealer refuses to make one.
    const nonce = new Uint8Array(12);
    const c = createCipheriv("aes-256-gcm", KEY, nonce);
    const sealed = Buffer.concat([c.update(new Uint8Array(4)), c.final(), c.getAuthTag()]);
    expectRecordError(openSplit(KEY, sealed, []).error, "E_RECORD_EMPTY");
  });

  test("after an error the opener refuses all input with the same error", () => {
    const opener = new RecordOpener(KEY);
    const out: Uint8Array[] = [];
    const bad = new Uint8Array(stream);
    bad[0]! ^= 1;
    let first: unknown;
    try {
      opener.push(bad, out);
    } catch (err) {
      first = err;
    }
    expectRecordError(first, "E_RECORD_AUTH");
    expect(() => opener.push(stream, out)).toThrow(first as Error);
    expect(out.length).toBe(0);
  });
});

describe("sealer limits and nonce uniqueness", () => {
  test("an empty body or one above the maximum cannot be sealed", () => {
    const s = new RecordSealer(KEY, 0, 1000);
    let err: unknown;
    try {
      s.seal(new Uint8Array(0));
    } catch (e) {
      err = e;
    }
    expectRecordError(err, "E_RECORD_EMPTY");
    try {
      s.seal(new Uint8Array(1001));
    } catch (e) {
      err = e;
    }
    expectRecordError(err, "E_RECORD_TOO_LARGE");
    expect(s.counter).toBe(0); // nothing consumed
  });

  test("the counter never wraps: E_RECORD_COUNTER at the limit, on both sides", () => {
    const s = new RecordSealer(KEY, MAX_SEALS - 4);
    const last = [s.seal(bytes(10, 1)), s.seal(bytes(10, 2))];
    let err: unknown;
    try {
      s.seal(bytes(10, 3));
    } catch (e) {
      err = e;
    }
    expectRecordError(err, "E_RECORD_COUNTER");
    expect(s.counter).toBe(MAX_SEALS);
    const { plain, error } = openSplit(KEY, concat(last), [], MAX_SEALS - 4);
    expect(error).toBeUndefined();
    expect(plain.byteLength).toBe(20);
    expectRecordError(openSplit(KEY, last[0]!, [], MAX_SEALS - 1).error, "E_RECORD_COUNTER");
  });

  test("no two seals under one key share a nonce: record i opens only at seal numbers 2i, 2i+1", () => {
    const s = new RecordSealer(KEY);
    const recs = Array.from({ length: 200 }, (_, i) => s.seal(bytes(8, i)));
    for (let i = 0; i < recs.length; i++) {
      const r = recs[i]!;
      for (let c = Math.max(0, 2 * i - 3); c <= 2 * i + 3; c++) {
        expect(openLength(KEY, c, r) !== undefined).toBe(c === 2 * i);
        expect(openBody(KEY, c, r.subarray(20, 28), r.subarray(28)) !== undefined).toBe(c === 2 * i + 1);
      }
    }
    expect(s.counter).toBe(400);
  });
});

describe("property: any split, any single flipped bit", () => {
  const recordsArb = fc.array(fc.integer({ min: 1, max: 3000 }), { minLength: 1, maxLength: 5 });

  test("intact streams open exactly, whatever the split", () => {
    fc.assert(
      fc.property(recordsArb, fc.array(fc.nat(), { maxLength: 12 }), fc.integer(), (sizes, cutSeeds, seed) => {
        const bodies = sizes.map((n, i) => bytes(n, seed + i));
        const s = concat(sealAll(KEY, bodies));
        const cuts = cutSeeds.map((c) => c % (s.byteLength + 1)).sort((a, b) => a - b);
        const { plain, error, opener } = openSplit(KEY, s, cuts);
        expect(error).toBeUndefined();
        expect(Buffer.compare(plain, concat(bodies))).toBe(0);
        expect(opener.atBoundary).toBe(true);
      }),
      params(300),
    );
  });

  test("a flipped bit in a length seal, a body or a tag: E_RECORD_AUTH, and only whole earlier records delivered", () => {
    fc.assert(
      fc.property(
        recordsArb,
        fc.nat(),
        fc.nat(),
        fc.array(fc.nat(), { maxLength: 12 }),
        fc.integer(),
        (sizes, recSeed, bitSeed, cutSeeds, seed) => {
          const bodies = sizes.map((n, i) => bytes(n, seed + i));
          const recs = sealAll(KEY, bodies);
          const j = recSeed % recs.length;
          const start = recs.slice(0, j).reduce((n, r) => n + r.byteLength, 0);
          const s = concat(recs);
          // Bit positions cover all three parts of record j: length seal, body, tag.
          const bit = bitSeed % (recs[j]!.byteLength * 8);
          s[start + (bit >>> 3)]! ^= 1 << (bit & 7);
          const cuts = cutSeeds.map((c) => c % (s.byteLength + 1)).sort((a, b) => a - b);
          const { plain, error } = openSplit(KEY, s, cuts);
          expectRecordError(error, "E_RECORD_AUTH");
          expect(Buffer.compare(plain, concat(bodies.slice(0, j)))).toBe(0);
        },
      ),
      params(500),
    );
  });

  test("every bit of a small record, each part: a typed error and nothing delivered", () => {
    const body = bytes(24, 9);
    const rec = new RecordSealer(KEY).seal(body);
    const parts = { length: 0, body: 0, tag: 0 };
    for (let bit = 0; bit < rec.byteLength * 8; bit++) {
      const bad = new Uint8Array(rec);
      bad[bit >>> 3]! ^= 1 << (bit & 7);
      const { plain, error } = openSplit(KEY, bad, [(bit * 7) % bad.byteLength]);
      expectRecordError(error, "E_RECORD_AUTH");
      expect(plain.byteLength).toBe(0);
      const at = bit >>> 3;
      parts[at < LENGTH_RECORD_SIZE ? "length" : at < rec.byteLength - TAG_SIZE ? "body" : "tag"]++;
    }
    expect(parts).toEqual({ length: 160, body: 192, tag: 128 });
  });
});
