/**
 * PROXY protocol version 2 (HAProxy's proxy-protocol.txt, §2.2), the receiving side only: how a relay
 * behind a load balancer (HAProxy's `send-proxy-v2`) learns the client's address for its logs and its
 * per-source limits. Pure: a parser in the shape the handshake reader drives (src/wire/handshake.ts), and
 * the set of load-balancer addresses a header is accepted from (`--proxy-protocol-from CIDR`).
 *
 *  0                   1                   2                   3
 * +---------------------------------------------------------------+
 * |  signature: 0D 0A 0D 0A 00 0D 0A 51 55 49 54 0A (12 bytes)    |  0
 * +---------------+---------------+-------------------------------+
 * |  ver 2 | cmd  | family | prot |   length of what follows (u16)| 12
 * +---------------+---------------+-------------------------------+
 * |  addresses: IPv4 4+4+2+2 = 12, IPv6 16+16+2+2 = 36 bytes;     | 16
 * |  then TLVs (type u8, length u16, value) to the end            |
 *
 * Strict and bounded: the signature must match exactly, the version must be 2, the command LOCAL (0) or
 * PROXY (1); a PROXY header over TCP must carry an IPv4 or IPv6 address block; the whole header is at
 * most MAX_PROXY_HEADER bytes and its TLVs must fill the rest exactly (they are skipped, not
 * interpreted). Anything else is invalid: the server then treats the connection like any failed first
 * message (silence, reason `bad-proxy`). A connection from an address that is not a load balancer never
 * goes through this parser: a PROXY header from it is just bytes that do not authenticate.
 */

import { BlockList, isIP } from "node:net";
import { StriperError } from "../errors.ts";
import { formatIp } from "./ip.ts";
import type { Address } from "../pipe/tcp.ts";
import { HandshakeRejected, type HandshakeParser } from "../wire/handshake.ts";

/** The 12-byte signature that opens every version 2 header. */
export const PROXY_V2_SIGNATURE = new Uint8Array([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
/** Signature, version/command, family/protocol, length. */
export const PROXY_V2_FIXED = 16;
/**
 * The largest header accepted, fixed part included. HAProxy's `send-proxy-v2` sends 28 (IPv4) or 52
 * (IPv6) bytes; options such as `proxy-v2-options ssl,unique-id` add TLVs of a few hundred bytes at most.
 */
export const MAX_PROXY_HEADER = 1024;

/** Address block sizes by family (after the 16 fixed bytes): UNSPEC, INET, INET6, UNIX. */
const BLOCK = [0, 12, 36, 216] as const;
const INET_BLOCK = BLOCK[1];
const INET6_BLOCK = BLOCK[2];

/** What a valid header said. */
export interface ProxyHeader {
  /**
   * "proxy": a relayed connection, `source` is the client. "local": the balancer's own connection (a
   * health check), or a relayed one whose address family we do not take (UNSPEC, UNIX): the connection's
   * own address stands.
   */
  readonly command: "proxy" | "local";
  /** The client's address and port (command "proxy" only). */
  readonly source?: Address;
  /** The address the client connected to on the balancer (command "proxy" only). */
  readonly destination?: Address;
}

/**
 * Formats 16 bytes as an IPv6 address (RFC 5952, src/proxy/ip.ts). An IPv4-mapped address is an IPv4
 * client behind a dual-stack balancer: named as IPv4.
 */
export function formatIpv6(b: Uint8Array): string {
  const mapped = b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff;
  return formatIp(mapped ? b.subarray(12, 16) : b.subarray(0, 16));
}

const invalid = () => ({ kind: "invalid" as const, error: new HandshakeRejected("bad-proxy") });

/**
 * The parser of one PROXY v2 header at the start of a connection from a load balancer. It asks for the
 * fixed 16 bytes, checks them, then asks for the rest. Invalid input is HandshakeRejected("bad-proxy").
 */
export function proxyHeaderParser(): HandshakeParser<ProxyHeader> {
  return (buf) => {
    if (buf.byteLength < PROXY_V2_FIXED) {
      // Fail on the first byte that differs from the signature, not only once 16 have arrived.
      for (let i = 0; i < Math.min(buf.byteLength, PROXY_V2_SIGNATURE.byteLength); i++) if (buf[i] !== PROXY_V2_SIGNATURE[i]) return invalid();
      return { kind: "more", bytes: PROXY_V2_FIXED - buf.byteLength };
    }
    for (let i = 0; i < PROXY_V2_SIGNATURE.byteLength; i++) if (buf[i] !== PROXY_V2_SIGNATURE[i]) return invalid();
    const verCmd = buf[12]!;
    const famProto = buf[13]!;
    const length = (buf[14]! << 8) | buf[15]!;
    const total = PROXY_V2_FIXED + length;
    if (verCmd >> 4 !== 2) return invalid();
    const command = verCmd & 0x0f;
    if (command !== 0 && command !== 1) return invalid();
    const family = famProto >> 4;
    const proto = famProto & 0x0f;
    if (family > 3 || proto > 2) return invalid();
    if (total > MAX_PROXY_HEADER) return invalid();
    // A relayed TCP connection must say so: a datagram (or unnamed-transport) address block is not ours.
    if (command === 1 && (family === 1 || family === 2) && proto !== 1) return invalid();
    // The address block is skipped by its family's size for LOCAL too (the spec: discard it).
    const block = BLOCK[family as 0 | 1 | 2 | 3];
    if (length < block) return invalid();
    if (buf.byteLength < total) return { kind: "more", bytes: total - buf.byteLength };
    if (!tlvsFit(buf.subarray(PROXY_V2_FIXED + block, total))) return invalid();
    const port = (at: number) => (buf[at]! << 8) | buf[at + 1]!;
    const a = PROXY_V2_FIXED;
    let value: ProxyHeader;
    if (command === 1 && family === 1) {
      const ip4 = (at: number) => `${buf[at]}.${buf[at + 1]}.${buf[at + 2]}.${buf[at + 3]}`;
      value = { command: "proxy", source: { host: ip4(a), port: port(a + 8) }, destination: { host: ip4(a + 4), port: port(a + 10) } };
    } else if (command === 1 && family === 2) {
      value = {
        command: "proxy",
        source: { host: formatIpv6(buf.subarray(a, a + 16)), port: port(a + 32) },
        destination: { host: formatIpv6(buf.subarray(a + 16, a + 32)), port: port(a + 34) },
      };
    } else value = { command: "local" };
    return { kind: "done", size: total, value };
  };
}

/** TLVs must tile `rest` exactly: a truncated one is a malformed header. */
function tlvsFit(rest: Uint8Array): boolean {
  let at = 0;
  while (at < rest.byteLength) {
    if (rest.byteLength - at < 3) return false;
    at += 3 + ((rest[at + 1]! << 8) | rest[at + 2]!);
  }
  return at === rest.byteLength;
}

/** Encodes a PROXY v2 header (tests, and tools that stand in for a balancer). */
export function encodeProxyHeader(h: { command: "proxy" | "local"; source?: Address; destination?: Address; tlvs?: Uint8Array }): Uint8Array {
  const tlvs = h.tlvs ?? new Uint8Array(0);
  const src = h.source;
  const v6 = src !== undefined && isIP(src.host) === 6;
  const block = h.command === "local" ? 0 : v6 ? INET6_BLOCK : INET_BLOCK;
  const out = new Uint8Array(PROXY_V2_FIXED + block + tlvs.byteLength);
  out.set(PROXY_V2_SIGNATURE, 0);
  out[12] = h.command === "proxy" ? 0x21 : 0x20;
  out[13] = h.command === "local" ? 0x00 : v6 ? 0x21 : 0x11;
  const view = new DataView(out.buffer);
  view.setUint16(14, block + tlvs.byteLength);
  if (h.command === "proxy") {
    if (src === undefined || h.destination === undefined) throw new RangeError("a PROXY command needs source and destination");
    const bytes = (host: string) => (v6 ? ipv6Bytes(host) : new Uint8Array(host.split(".").map(Number)));
    const n = v6 ? 16 : 4;
    out.set(bytes(src.host), 16);
    out.set(bytes(h.destination.host), 16 + n);
    view.setUint16(16 + 2 * n, src.port);
    view.setUint16(18 + 2 * n, h.destination.port);
  }
  out.set(tlvs, PROXY_V2_FIXED + block);
  return out;
}

/** The 16 bytes of an IPv6 address in text form (no zone, no embedded IPv4). */
function ipv6Bytes(host: string): Uint8Array {
  const [left, right] = host.split("::") as [string, string | undefined];
  const groups = (s: string | undefined) => (s ? s.split(":").map((x) => parseInt(x, 16)) : []);
  const l = groups(left);
  const r = groups(right);
  const all = right === undefined ? l : [...l, ...new Array<number>(8 - l.length - r.length).fill(0), ...r];
  const out = new Uint8Array(16);
  all.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  });
  return out;
}

// --- Who may send a header ----------------------------------------------------------------------------

/**
 * The load balancers a relay takes PROXY headers from: a set of CIDR blocks (`--proxy-protocol-from`,
 * repeatable). A connection from one of them must start with a header; from anywhere else a header is
 * never read (it is bytes that fail authentication, like any garbage).
 */
export class BalancerSet {
  private readonly list = new BlockList();
  /** The blocks as given, for the start line. */
  readonly text: readonly string[];

  /** Throws StriperError E_CONFIG on a block that is not an IPv4 or IPv6 CIDR. */
  constructor(cidrs: readonly string[]) {
    for (const c of cidrs) {
      const { address, prefix, family } = parseCidr(c);
      this.list.addSubnet(address, prefix, family);
    }
    this.text = [...cidrs];
  }

  /** Whether a connection from `host` (as Bun reports a remote address) comes from a balancer. */
  has(host: string): boolean {
    const family = isIP(host);
    if (family === 0) return false;
    return this.list.check(host, family === 4 ? "ipv4" : "ipv6");
  }
}

/** Why `text` is not a CIDR block ("10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "::1"), or undefined. */
export function cidrProblem(text: string): string | undefined {
  const slash = text.indexOf("/");
  const address = slash < 0 ? text : text.slice(0, slash);
  const kind = isIP(address);
  if (kind === 0) return `"${text}" is not an IPv4 or IPv6 address or CIDR block`;
  const max = kind === 4 ? 32 : 128;
  const prefixText = slash < 0 ? String(max) : text.slice(slash + 1);
  if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > max) return `the prefix of "${text}" must be 0-${max}`;
  return undefined;
}

/** Parses "10.0.0.0/8", "192.0.2.7" (a /32), "2001:db8::/32", "::1" (a /128). Throws E_CONFIG. */
export function parseCidr(text: string): { address: string; prefix: number; family: "ipv4" | "ipv6" } {
  const problem = cidrProblem(text);
  if (problem !== undefined) throw new StriperError("E_CONFIG", `proxy-protocol-from: ${problem}`);
  const slash = text.indexOf("/");
  const address = slash < 0 ? text : text.slice(0, slash);
  const v4 = isIP(address) === 4;
  return { address, prefix: slash < 0 ? (v4 ? 32 : 128) : Number(text.slice(slash + 1)), family: v4 ? "ipv4" : "ipv6" };
}
