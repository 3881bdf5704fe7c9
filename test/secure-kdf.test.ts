/**
 * Key derivations pinned by vectors computed outside node:crypto: RFC 5869 for hkdfSync itself (older Bun
 * docs listed hkdf as missing), and fixed-input vectors for our labels computed with Python's hmac
 * module, plus an HKDF written here from HMAC (RFC 5869 §2.2–2.3) as a second, in-test derivation.
 */

import { describe, expect, test } from "bun:test";
import { createHmac, hkdfSync } from "node:crypto";
import { LABEL_C2S, LABEL_JOIN, LABEL_S2C, deriveC2S, deriveS2C, hkdf32, joinProof, proofMatches, secretsEqual } from "../src/secure/kdf.ts";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const seq = (from: number, n: number) => new Uint8Array(n).map((_, i) => from + i);

const PSK = seq(0x00, 32);
const CS = seq(0x20, 32);
const SS = seq(0x40, 32);
const SID = seq(0x60, 16);
const S = seq(0x80, 32);

/** HKDF-SHA256 from its definition: extract, then expand with a counter byte. */
function hkdfByHand(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Uint8Array {
  const prk = createHmac("sha256", salt).update(ikm).digest();
  const out: Buffer[] = [];
  let t = Buffer.alloc(0);
  for (let i = 1; Buffer.concat(out).byteLength < length; i++) {
    t = createHmac("sha256", prk).update(t).update(info).update(Uint8Array.of(i)).digest();
    out.push(t);
  }
  return Buffer.concat(out).subarray(0, length);
}

describe("HKDF-SHA256", () => {
  test("hkdfSync matches RFC 5869 test case 1", () => {
    const ikm = new Uint8Array(22).fill(0x0b);
    const salt = seq(0x00, 13);
    const info = seq(0xf0, 10);
    const okm = new Uint8Array(hkdfSync("sha256", ikm, salt, info, 42));
    expect(hex(okm)).toBe("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865");
    expect(hex(hkdfByHand(ikm, salt, info, 42))).toBe(hex(okm));
  });

  test("hkdf32 gives 32 bytes equal to the by-hand derivation", () => {
    const out = hkdf32(PSK, CS, SID);
    expect(out.byteLength).toBe(32);
    expect(hex(out)).toBe(hex(hkdfByHand(PSK, CS, SID, 32)));
  });
});

describe("protocol v2 derivations", () => {
  test("labels are pinned", () => {
    expect(LABEL_C2S).toBe("tcp-striper v2 c2s");
    expect(LABEL_S2C).toBe("tcp-striper v2 s2c");
    expect(LABEL_JOIN).toBe("tcp-striper v2 join");
  });

  test("K_c2s = HKDF(psk, cs, label ‖ sid): fixed vector", () => {
    const k = deriveC2S(PSK, CS, SID);
    expect(hex(k)).toBe("1faaecd5d4931df7942a9f41301869687b00a6fd14bc0dca9cb36a3ab7e473ea");
    expect(hex(k)).toBe(hex(hkdfByHand(PSK, CS, Buffer.concat([Buffer.from(LABEL_C2S), SID]), 32)));
  });

  test("K_s2c = HKDF(psk, cs ‖ ss, label ‖ sid): fixed vector", () => {
    const k = deriveS2C(PSK, CS, SS, SID);
    expect(hex(k)).toBe("9ef9c8ac2ad2d54e01f6d746f0b5e46dcab4f23b0480dd3a5bc12bd53fdb6154");
    expect(hex(k)).toBe(hex(hkdfByHand(PSK, Buffer.concat([CS, SS]), Buffer.concat([Buffer.from(LABEL_S2C), SID]), 32)));
  });

  test("join proof P = HMAC(S, label ‖ cs): fixed vector, checked in constant time", () => {
    const p = joinProof(S, CS);
    expect(hex(p)).toBe("8a493f9b61519c9d2c5fe985c09ffaf4c4a2a3a4d503f2c9bf2ca53e242ea254");
    expect(proofMatches(S, CS, p)).toBe(true);
    const flipped = new Uint8Array(p);
    flipped[31]! ^= 1;
    expect(proofMatches(S, CS, flipped)).toBe(false);
    expect(proofMatches(S, SS, p)).toBe(false); // bound to the connection's salt
    expect(proofMatches(S, CS, p.subarray(0, 16))).toBe(false); // wrong length: false, not a throw
  });

  test("every input changes the keys; the two directions never share a key", () => {
    const base = hex(deriveC2S(PSK, CS, SID));
    const other = seq(0x01, 32);
    expect(hex(deriveC2S(other, CS, SID))).not.toBe(base);
    expect(hex(deriveC2S(PSK, SS, SID))).not.toBe(base);
    expect(hex(deriveC2S(PSK, CS, seq(0x61, 16)))).not.toBe(base);
    expect(hex(deriveS2C(PSK, CS, SS, SID))).not.toBe(base);
    expect(hex(deriveS2C(PSK, CS, seq(0x41, 32), SID))).not.toBe(hex(deriveS2C(PSK, CS, SS, SID)));
  });

  test("secretsEqual compares whole secrets", () => {
    expect(secretsEqual(S, seq(0x80, 32))).toBe(true);
    expect(secretsEqual(S, seq(0x81, 32))).toBe(false);
    expect(secretsEqual(S, S.subarray(0, 31))).toBe(false);
  });

  test("wrong-sized inputs are programming errors", () => {
    expect(() => deriveC2S(PSK.subarray(0, 31), CS, SID)).toThrow("psk must be 32 bytes");
    expect(() => deriveS2C(PSK, CS, SS, SID.subarray(1))).toThrow("session id must be 16 bytes");
    expect(() => joinProof(S, CS.subarray(1))).toThrow("client salt must be 32 bytes");
  });
});
