/**
 * Key derivations of protocol v2 (docs/protocol.md §3.3), all HKDF-SHA256 / HMAC-SHA256
 * from node:crypto:
 *
 *   K_c2s = HKDF(psk, salt = cs,      info = "tcp-striper v2 c2s" ‖ sid, 32)
 *   K_s2c = HKDF(psk, salt = cs ‖ ss, info = "tcp-striper v2 s2c" ‖ sid, 32)
 *   P     = HMAC-SHA256(S, "tcp-striper v2 join" ‖ cs)
 *
 * K_c2s depends only on the client's salt, so the client can seal 0-RTT records before the reply. The
 * labels differ per direction, so a stream reflected back at its sender never opens. Every stripe
 * connection has fresh salts, hence its own keys: counters restart at 0 under a new key, never an old one.
 */

import { createHmac, hkdfSync, timingSafeEqual } from "node:crypto";
import { KEY_SIZE, SALT_SIZE, SECRET_SIZE, SID_SIZE } from "./constants.ts";

/** HKDF info label of the client → server key. */
export const LABEL_C2S = "tcp-striper v2 c2s";
/** HKDF info label of the server → client key. */
export const LABEL_S2C = "tcp-striper v2 s2c";
/** HMAC label of the join proof. */
export const LABEL_JOIN = "tcp-striper v2 join";

const enc = new TextEncoder();
const C2S = enc.encode(LABEL_C2S);
const S2C = enc.encode(LABEL_S2C);
const JOIN = enc.encode(LABEL_JOIN);

/** HKDF-SHA256 with a 32-byte output. */
export function hkdf32(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array): Uint8Array {
  return new Uint8Array(hkdfSync("sha256", ikm, salt, info, KEY_SIZE));
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(a, 0);
  out.set(b, a.byteLength);
  return out;
}

function need(name: string, buf: Uint8Array, size: number): void {
  // A programming error (the codecs always pass fixed-size fields), never peer input: plain Error.
  if (buf.byteLength !== size) throw new Error(`${name} must be ${size} bytes, got ${buf.byteLength}`);
}

/** The client → server record key of one stripe connection. */
export function deriveC2S(psk: Uint8Array, cs: Uint8Array, sid: Uint8Array): Uint8Array {
  need("psk", psk, KEY_SIZE);
  need("client salt", cs, SALT_SIZE);
  need("session id", sid, SID_SIZE);
  return hkdf32(psk, cs, concat(C2S, sid));
}

/** The server → client record key of one stripe connection. */
export function deriveS2C(psk: Uint8Array, cs: Uint8Array, ss: Uint8Array, sid: Uint8Array): Uint8Array {
  need("psk", psk, KEY_SIZE);
  need("client salt", cs, SALT_SIZE);
  need("server salt", ss, SALT_SIZE);
  need("session id", sid, SID_SIZE);
  return hkdf32(psk, concat(cs, ss), concat(S2C, sid));
}

/** The proof a JOIN carries that it knows the session secret S, bound to this connection's salt. */
export function joinProof(secret: Uint8Array, cs: Uint8Array): Uint8Array {
  need("session secret", secret, SECRET_SIZE);
  need("client salt", cs, SALT_SIZE);
  return new Uint8Array(createHmac("sha256", secret).update(JOIN).update(cs).digest());
}

/** Constant-time check of a JOIN's proof against the session secret (admission step 8). */
export function proofMatches(secret: Uint8Array, cs: Uint8Array, proof: Uint8Array): boolean {
  if (proof.byteLength !== SECRET_SIZE) return false; // timingSafeEqual throws on unequal lengths
  return timingSafeEqual(joinProof(secret, cs), proof);
}

/** Constant-time equality of two session secrets (a second OPEN of a live sid must carry the same S). */
export function secretsEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && timingSafeEqual(a, b);
}
