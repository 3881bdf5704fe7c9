/**
 * IP addresses for the server's allowlist and its SSRF defaults (issue 13): strict parsing of IPv4 and
 * IPv6 text, CIDR blocks, and the special ranges a client-chosen destination may not reach unless a rule
 * names them explicitly (loopback, private, link-local, CGNAT, multicast, unspecified, reserved).
 *
 * Pure: no sockets, no DNS. Addresses are bytes (4 or 16); `canonical()` folds an IPv4 address carried in
 * IPv6 (IPv4-mapped ::ffff:a.b.c.d, IPv4-compatible ::a.b.c.d, NAT64 64:ff9b::/96, 6to4 2002::/16) to
 * the IPv4 it stands for, so that `::ffff:127.0.0.1` is judged as 127.0.0.1.
 */

/** An IP address: 4 bytes (IPv4) or 16 (IPv6). */
export type Ip = Uint8Array;

/** A CIDR block: every address whose first `prefix` bits equal those of `base`. */
export interface Cidr {
  readonly base: Ip;
  readonly prefix: number;
}

/**
 * Strict dotted-quad IPv4: four decimal parts 0–255, no leading zeros. Forms that inet_aton() also takes
 * (octal "010.1", hex "0x7f.1", "127.1", "2130706433") are not addresses here; a destination written so
 * is refused as a name (see `isHostname`), which closes the gap between what we check and what
 * getaddrinfo() would resolve it to.
 */
export function parseIpv4(text: string): Ip | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i]!;
    if (!/^(0|[1-9]\d{0,2})$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    out[i] = n;
  }
  return out;
}

/** IPv6 text (RFC 4291 §2.2: hex groups, one "::", an IPv4 tail); no zone ids, no brackets. */
export function parseIpv6(text: string): Ip | undefined {
  if (text.length < 2 || text.length > 45 || !/^[0-9a-fA-F:.]+$/.test(text)) return undefined;
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const groups = (s: string): number[] | undefined => {
    if (s === "") return [];
    const out: number[] = [];
    const parts = s.split(":");
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i]!;
      if (i === parts.length - 1 && p.includes(".")) {
        const v4 = parseIpv4(p);
        if (v4 === undefined) return undefined;
        out.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(p)) return undefined;
        out.push(parseInt(p, 16));
      }
    }
    return out;
  };
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (head === undefined || tail === undefined) return undefined;
  // An IPv4 tail may only end the address.
  if (halves.length === 2 && halves[0]!.includes(".")) return undefined;
  const n = head.length + tail.length;
  if (halves.length === 1 ? n !== 8 : n > 7) return undefined;
  const all = [...head, ...new Array<number>(8 - n).fill(0), ...tail];
  const out = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    out[2 * i] = all[i]! >> 8;
    out[2 * i + 1] = all[i]! & 0xff;
  }
  return out;
}

/** An IPv4 or IPv6 address from its text, or undefined when the text is not one. */
export function parseIp(text: string): Ip | undefined {
  return text.includes(":") ? parseIpv6(text) : parseIpv4(text);
}

/** The address as text: dotted quad, or RFC 5952 IPv6 (lower case, the longest zero run as "::"). */
export function formatIp(ip: Ip): string {
  if (ip.byteLength === 4) return ip.join(".");
  const g: number[] = [];
  for (let i = 0; i < 8; i++) g.push((ip[2 * i]! << 8) | ip[2 * i + 1]!);
  let best = -1;
  let bestLen = 1; // a single zero group is not shortened
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(":");
  if (best < 0) return hex(g);
  return `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}

const startsWith = (ip: Ip, prefix: readonly number[]): boolean => prefix.every((b, i) => ip[i] === b);
const zeros = (n: number): number[] => new Array<number>(n).fill(0);

/**
 * The address an IPv6 address stands for when it carries an IPv4 one: IPv4-mapped (::ffff:0:0/96),
 * IPv4-compatible (::/96, deprecated, but kernels still route some), NAT64 (64:ff9b::/96) and 6to4
 * (2002::/16). Any other address is returned as it is. `::` and `::1` are IPv6's own.
 */
export function canonical(ip: Ip): Ip {
  if (ip.byteLength === 4) return ip;
  if (startsWith(ip, [...zeros(10), 0xff, 0xff])) return ip.slice(12);
  if (startsWith(ip, [0, 0x64, 0xff, 0x9b, ...zeros(8)])) return ip.slice(12);
  if (startsWith(ip, zeros(12)) && !(ip[12] === 0 && ip[13] === 0 && ip[14] === 0 && ip[15]! <= 1)) return ip.slice(12);
  if (ip[0] === 0x20 && ip[1] === 0x02) return ip.slice(2, 6);
  return ip;
}

/** Parses "a.b.c.d/n", "x::y/n" or a bare address (a /32 or /128). Host bits must be zero. */
export function parseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf("/");
  const base = parseIp(slash < 0 ? text : text.slice(0, slash));
  if (base === undefined) return undefined;
  const max = base.byteLength * 8;
  let prefix = max;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > max) return undefined;
    prefix = Number(p);
  }
  for (let bit = prefix; bit < max; bit++) if (base[bit >> 3]! & (0x80 >> (bit & 7))) return undefined;
  return { base, prefix };
}

/** Whether `ip` is in `block` (same family only: fold with `canonical` first where that matters). */
export function cidrContains(block: Cidr, ip: Ip): boolean {
  if (ip.byteLength !== block.base.byteLength) return false;
  const full = block.prefix >> 3;
  for (let i = 0; i < full; i++) if (ip[i] !== block.base[i]) return false;
  const rest = block.prefix & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (ip[full]! & mask) === (block.base[full]! & mask);
}

/** Why an address is special: refused as a client-chosen destination unless a rule names it. */
export type SpecialKind = "unspecified" | "loopback" | "private" | "link-local" | "cgnat" | "multicast" | "reserved";

const block = (text: string): Cidr => parseCidr(text)!;

/** The special ranges, by kind (IANA special-purpose registries; RFC 6890). */
const SPECIAL: readonly (readonly [Cidr, SpecialKind])[] = [
  [block("0.0.0.0/8"), "unspecified"], // "this network"; 0.0.0.0 reaches the host itself on Linux
  [block("10.0.0.0/8"), "private"],
  [block("100.64.0.0/10"), "cgnat"],
  [block("127.0.0.0/8"), "loopback"],
  [block("169.254.0.0/16"), "link-local"], // cloud metadata services live here (169.254.169.254)
  [block("172.16.0.0/12"), "private"],
  [block("192.168.0.0/16"), "private"],
  [block("224.0.0.0/4"), "multicast"],
  [block("240.0.0.0/4"), "reserved"], // and 255.255.255.255, the limited broadcast
  [block("::/128"), "unspecified"],
  [block("::1/128"), "loopback"],
  [block("fc00::/7"), "private"], // unique local addresses
  [block("fec0::/10"), "private"], // deprecated site-local
  [block("fe80::/10"), "link-local"],
  [block("ff00::/8"), "multicast"],
];

/**
 * The special range `ip` falls in (after `canonical`), or undefined for an ordinary public address.
 * The server's own addresses are special too; the caller checks those (they are not fixed ranges).
 */
export function specialKind(ip: Ip): SpecialKind | undefined {
  const c = canonical(ip);
  for (const [range, kind] of SPECIAL) if (cidrContains(range, c)) return kind;
  return undefined;
}

/** Two addresses are the same once folded (`::ffff:10.0.0.1` equals `10.0.0.1`). */
export function sameIp(a: Ip, b: Ip): boolean {
  const x = canonical(a);
  const y = canonical(b);
  return x.byteLength === y.byteLength && x.every((v, i) => v === y[i]);
}

/**
 * A DNS host name as a destination may carry it: 1–253 characters of letters, digits, "-" and "_" in
 * dot-separated labels of 1–63 that neither start nor end with "-", optionally one trailing dot; the last label is not all digits and not
 * "0x…" (so no numeric form that getaddrinfo() would read as an IPv4 address passes as a name).
 */
export function isHostname(name: string): boolean {
  const n = name.endsWith(".") ? name.slice(0, -1) : name;
  if (n.length < 1 || n.length > 253) return false;
  const labels = n.split(".");
  for (const l of labels) if (!/^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/.test(l)) return false;
  const last = labels[labels.length - 1]!;
  return !/^\d+$/.test(last) && !/^0x[0-9a-f]*$/i.test(last);
}

/** A host name in the form rules compare: lower case, without a trailing dot. */
export function normalizeHostname(name: string): string {
  const n = name.toLowerCase();
  return n.endsWith(".") ? n.slice(0, -1) : n;
}
