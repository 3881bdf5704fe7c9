/**
 * Destinations (issue 13): where an app connection asks to go, how that travels to the server, and how
 * the answer comes back.
 *
 * - `Destination`: the server's own target, an address, or a host name (resolved by the server, as
 *   socks5h expects).
 * - On the wire it is the DESTINATION option (OPT_DESTINATION) of the OPEN header, or of the TARGET frame
 *   that starts a standby stripe's session: `atyp u8 ‖ address ‖ port u16`, the address encoded as in
 *   SOCKS5 (RFC 1928 §5): atyp 1 = IPv4 (4 bytes), 3 = name (u8 length 1–255, then the name), 4 = IPv6
 *   (16 bytes). It rides inside the sealed header or records: never in clear on a keyed stripe.
 * - `Outcome`: what became of the connect, from the RESET code the server ends a failed session with
 *   (or OPENED for success), which the fronts turn into a SOCKS reply or an HTTP status.
 *
 * Pure.
 */

import { ConnectError, StriperError } from "../errors.ts";
import type { Address } from "../pipe/tcp.ts";
import { OPT_DESTINATION } from "../secure/constants.ts";
import type { Tlv } from "../secure/messages.ts";
import { ResetCode } from "../wire/constants.ts";
import { formatIp, isHostname, normalizeHostname, parseIp, type Ip } from "./ip.ts";

/** Where an app connection goes. */
export type Destination =
  /** The server's own `--target` (a port forward without `--target`, or no destination sent). */
  | { readonly kind: "server-default" }
  /** An address: IPv4 (4 bytes) or IPv6 (16). */
  | { readonly kind: "ip"; readonly ip: Ip; readonly port: number }
  /** A host name, as the app gave it; the server resolves it. */
  | { readonly kind: "name"; readonly name: string; readonly port: number };

/** The server's own target. */
export const SERVER_DEFAULT: Destination = { kind: "server-default" };

/** SOCKS5 address types (RFC 1928 §5), also those of the DESTINATION option. */
export const ATYP_IPV4 = 1;
export const ATYP_NAME = 3;
export const ATYP_IPV6 = 4;

/**
 * A destination from a host and port as text: an address when `host` is one, else a host name. Throws
 * StriperError E_BAD_DESTINATION for anything else (a port out of range, a host that is neither).
 */
export function destinationOf(host: string, port: number): Destination {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new StriperError("E_BAD_DESTINATION", `port ${port} out of range 1-65535`);
  const ip = parseIp(host);
  if (ip !== undefined) return { kind: "ip", ip, port };
  if (!isHostname(host)) throw new StriperError("E_BAD_DESTINATION", `"${host}" is not a host name or an IP address`);
  return { kind: "name", name: host, port };
}

/** A destination from an Address (the command line's HOST:PORT). */
export function destinationFromAddress(a: Address): Destination {
  return destinationOf(a.host, a.port);
}

/** For logs: "example.com:443", "[::1]:80", "the server's target". Names are the peer's text: escape them. */
export function formatDestination(d: Destination): string {
  switch (d.kind) {
    case "server-default":
      return "the server's target";
    case "ip":
      return d.ip.byteLength === 16 ? `[${formatIp(d.ip)}]:${d.port}` : `${formatIp(d.ip)}:${d.port}`;
    case "name":
      return `${d.name}:${d.port}`;
    default: {
      const never: never = d;
      throw new Error(`unknown destination ${JSON.stringify(never)}`);
    }
  }
}

/** The option carrying `d`, or none for the server's default target. */
export function destinationOptions(d: Destination): Tlv[] {
  if (d.kind === "server-default") return [];
  let addr: Uint8Array;
  if (d.kind === "ip") addr = Uint8Array.of(d.ip.byteLength === 4 ? ATYP_IPV4 : ATYP_IPV6, ...d.ip);
  else {
    const name = new TextEncoder().encode(d.name);
    if (name.byteLength < 1 || name.byteLength > 255) throw new RangeError(`a destination name must be 1-255 bytes, got ${name.byteLength}`);
    addr = Uint8Array.of(ATYP_NAME, name.byteLength, ...name);
  }
  const value = new Uint8Array(addr.byteLength + 2);
  value.set(addr);
  value[addr.byteLength] = d.port >> 8;
  value[addr.byteLength + 1] = d.port & 0xff;
  return [{ type: OPT_DESTINATION, value }];
}

/** E_BAD_DESTINATION: a destination option that does not parse (only a key holder can send one). */
const malformed = (why: string): StriperError => new StriperError("E_BAD_DESTINATION", `destination option: ${why}`);

/**
 * The destination among header (or TARGET) options: the server's default without a DESTINATION
 * option; otherwise the parsed one, or a StriperError E_BAD_DESTINATION (two of them, a wrong length,
 * an unknown address type, a name that is not a host name, port 0). Unknown option types are skipped.
 */
export function destinationFromOptions(options: readonly Tlv[]): Destination | StriperError {
  const found = options.filter((o) => o.type === OPT_DESTINATION);
  if (found.length === 0) return SERVER_DEFAULT;
  if (found.length > 1) return malformed("given twice");
  const v = found[0]!.value;
  if (v.byteLength < 1) return malformed("empty");
  const atyp = v[0]!;
  let addrLen: number;
  let at = 1;
  if (atyp === ATYP_IPV4) addrLen = 4;
  else if (atyp === ATYP_IPV6) addrLen = 16;
  else if (atyp === ATYP_NAME) {
    if (v.byteLength < 2) return malformed("name length missing");
    addrLen = v[1]!;
    at = 2;
    if (addrLen === 0) return malformed("empty name");
  } else return malformed(`unknown address type ${atyp}`);
  if (v.byteLength !== at + addrLen + 2) return malformed(`${v.byteLength} bytes for address type ${atyp}`);
  const port = (v[at + addrLen]! << 8) | v[at + addrLen + 1]!;
  if (port === 0) return malformed("port 0");
  const addr = v.subarray(at, at + addrLen);
  if (atyp !== ATYP_NAME) return { kind: "ip", ip: new Uint8Array(addr), port };
  // Names are ASCII (IDNs travel as punycode); anything else is refused rather than guessed at.
  let name = "";
  for (const b of addr) {
    if (b < 0x21 || b > 0x7e) return malformed("a name with a byte that is not printable ASCII");
    name += String.fromCharCode(b);
  }
  // Some SOCKS clients send an address as a name: judge it as the address it is.
  const ip = parseIp(name);
  if (ip !== undefined) return { kind: "ip", ip, port };
  if (!isHostname(name)) return malformed(`"${name}" is not a host name`);
  return { kind: "name", name: normalizeHostname(name), port };
}

// --- outcomes ------------------------------------------------------------------------------------------

/** What became of a session's connect to its destination, in the terms the fronts answer apps in. */
export type Outcome =
  | "connected"
  /** The server's allowlist or SSRF defaults refuse it. */
  | "not-allowed"
  /** The name did not resolve. */
  | "unresolved"
  /** The target refused the connection. */
  | "refused"
  /** The target did not answer in time (or the server's verdict did not come in time). */
  | "timeout"
  /** Network or host unreachable, and other connect failures. */
  | "unreachable"
  /** Anything else: the server could not be reached, the session failed. */
  | "failed";

/** The outcome a RESET code from the server stands for (codes that are not about the target: failed). */
export function outcomeOfReset(code: number): Exclude<Outcome, "connected"> {
  switch (code) {
    case ResetCode.NotAllowed:
      return "not-allowed";
    case ResetCode.TargetUnresolved:
      return "unresolved";
    case ResetCode.TargetRefused:
      return "refused";
    case ResetCode.TargetTimeout:
      return "timeout";
    case ResetCode.TargetUnreachable:
      return "unreachable";
    default:
      return "failed";
  }
}

/** E_NOT_ALLOWED, sent as RESET_NOT_ALLOWED. */
export function notAllowed(why: string): ConnectError {
  return new ConnectError("E_NOT_ALLOWED", `not allowed: ${why}`, { resetCode: ResetCode.NotAllowed });
}

/** E_UNRESOLVED, sent as RESET_TARGET_UNRESOLVED. */
export function unresolved(why: string): ConnectError {
  return new ConnectError("E_UNRESOLVED", `name did not resolve: ${why}`, { resetCode: ResetCode.TargetUnresolved });
}

/**
 * The RESET code a failed connect to the target sends, from its error code: refused, timed out, or
 * (everything else: unreachable network or host, a reset) unreachable.
 */
export function connectResetCode(code: string): ResetCode {
  switch (code) {
    case "ECONNREFUSED":
      return ResetCode.TargetRefused;
    case "ETIMEDOUT":
    case "E_CONNECT_TIMEOUT":
      return ResetCode.TargetTimeout;
    case "E_NOT_ALLOWED":
      return ResetCode.NotAllowed;
    case "E_UNRESOLVED":
    case "ENOTFOUND":
      return ResetCode.TargetUnresolved;
    default:
      return ResetCode.TargetUnreachable;
  }
}
