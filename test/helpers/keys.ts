/**
 * Keys for tests that start proxies: `KEYED` is one fresh key shared by server and client (what a
 * deployment does), `PLAIN` is --no-auth, `otherKey()` a key the server does not know.
 */

import { randomBytes } from "node:crypto";
import type { StripeAuth } from "../../src/proxy/handshake.ts";
import { keyFromBytes, type Key } from "../../src/secure/keys.ts";

/** A new random key. */
export function newKey(): Key {
  return keyFromBytes(new Uint8Array(randomBytes(32)));
}

/** Keyed authentication with one key made for this test run: pass it to both proxies. */
export const KEYED: StripeAuth = { mode: "keyed", keys: [newKey()] };

/** Plain mode (--no-auth). */
export const PLAIN: StripeAuth = { mode: "plain" };

/** Keyed authentication with a key no other proxy has (an impostor, a wrong client). */
export function otherKey(): StripeAuth {
  return { mode: "keyed", keys: [newKey()] };
}
