/**
 * The server's allowlist (`--allow RULE`, issue 13): which client-chosen destinations it connects to.
 *
 * A rule is HOST:PORTS.
 *   HOST   `*` (any destination), `example.com` (that name), `*.example.com` (any name below it, at any
 *          depth, not example.com itself), an address (`10.0.0.5`, `[::1]`), or a CIDR block
 *          (`10.1.0.0/16`, `[fd00::/8]`, also written `[fd00::]/8`).
 *   PORTS  `443`, a list `80,443`, a range `8000-8100`, a mix `22,8000-8100`, or `*` (any port).
 *
 * SSRF defaults: an address that is special (loopback, private, link-local, CGNAT, multicast,
 * unspecified, reserved — src/proxy/ip.ts) or one of the server's own addresses is refused unless an
 * address or CIDR rule contains it. Name rules and `*` never open them: `*:443` does not reach
 * 127.0.0.1:443, `127.0.0.1:8080` does, and so does `10.0.0.0/8:22` for any name that resolves into it.
 * Every address is judged after DNS resolution, and the server connects to the address it judged.
 *
 * Pure: parsing and judging, no DNS, no sockets.
 */

import { StriperError } from "../errors.ts";
import { canonical, cidrContains, formatIp, isHostname, normalizeHostname, parseCidr, specialKind, type Cidr, type Ip } from "./ip.ts";

/** Ports a rule covers: inclusive ranges; `[[0, 65535]]` is any. */
export type PortRanges = readonly (readonly [number, number])[];

/** What a rule's host part matches. */
export type HostPattern =
  | { readonly kind: "any" }
  | { readonly kind: "name"; readonly name: string }
  /** `*.suffix`: names ending in ".suffix". */
  | { readonly kind: "suffix"; readonly suffix: string }
  | { readonly kind: "cidr"; readonly cidr: Cidr };

/** One parsed rule. */
export interface AllowRule {
  /** The rule as written, for logs. */
  readonly text: string;
  readonly host: HostPattern;
  readonly ports: PortRanges;
}

/** A rule that cannot be parsed: E_CONFIG with the rule and what is wrong. */
function bad(text: string, why: string): StriperError {
  return new StriperError("E_CONFIG", `--allow "${text}": ${why}`);
}

function parsePorts(text: string, rule: string): PortRanges {
  if (text === "*") return [[0, 65535]];
  const out: [number, number][] = [];
  for (const part of text.split(",")) {
    const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(part);
    if (!m) throw bad(rule, `"${part}" is not a port, a port range or *`);
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    if (lo < 1 || hi > 65535 || lo > hi) throw bad(rule, `port range "${part}" must lie within 1-65535, low end first`);
    out.push([lo, hi]);
  }
  return out;
}

/**
 * A CIDR block with IPv4-mapped IPv6 bases folded to IPv4 (`[::ffff:10.0.0.0/104]` is 10.0.0.0/8), so
 * rules compare with canonical addresses.
 */
function foldCidr(c: Cidr): Cidr {
  if (c.base.byteLength === 16 && c.prefix >= 96) {
    const v4 = canonical(c.base);
    if (v4.byteLength === 4 && c.base[10] === 0xff && c.base[11] === 0xff) return { base: v4, prefix: c.prefix - 96 };
  }
  return c;
}

/** Parses one rule. Throws StriperError E_CONFIG naming the rule. */
export function parseAllowRule(text: string): AllowRule {
  const t = text.trim();
  let hostText: string;
  let portText: string;
  if (t.startsWith("[")) {
    // [v6]:ports, [v6/n]:ports or [v6]/n:ports
    const m = /^\[([^\]]+)\](\/\d{1,3})?:([^:]+)$/.exec(t);
    if (!m) throw bad(text, "expected [IPv6]:PORTS or [IPv6/PREFIX]:PORTS");
    hostText = m[1]! + (m[2] ?? "");
    const c = parseCidr(hostText);
    if (c === undefined || c.base.byteLength !== 16) throw bad(text, `"${hostText}" is not an IPv6 address or block (host bits must be zero)`);
    return { text: t, host: { kind: "cidr", cidr: foldCidr(c) }, ports: parsePorts(m[3]!, text) };
  }
  const colon = t.lastIndexOf(":");
  if (colon <= 0) throw bad(text, "expected HOST:PORTS (a port, a list, a range, or *)");
  hostText = t.slice(0, colon);
  portText = t.slice(colon + 1);
  if (hostText.includes(":")) throw bad(text, "write IPv6 addresses in brackets: [::1]:8080");
  const ports = parsePorts(portText, text);
  if (hostText === "*") return { text: t, host: { kind: "any" }, ports };
  if (/^[\d.]+(\/\d+)?$/.test(hostText)) {
    const c = parseCidr(hostText);
    if (c === undefined) throw bad(text, `"${hostText}" is not an IPv4 address or block (host bits must be zero)`);
    return { text: t, host: { kind: "cidr", cidr: c }, ports };
  }
  if (hostText.startsWith("*.")) {
    const suffix = hostText.slice(2);
    if (!isHostname(suffix)) throw bad(text, `"${suffix}" is not a host name`);
    return { text: t, host: { kind: "suffix", suffix: normalizeHostname(suffix) }, ports };
  }
  if (hostText.includes("*")) throw bad(text, `a wildcard may only be "*" or lead the name ("*.example.com")`);
  if (!isHostname(hostText)) throw bad(text, `"${hostText}" is not a host name, an address or a CIDR block`);
  return { text: t, host: { kind: "name", name: normalizeHostname(hostText) }, ports };
}

/** Parses every rule; the first bad one throws E_CONFIG. */
export function parseAllowRules(texts: readonly string[]): AllowRule[] {
  return texts.map(parseAllowRule);
}

const portIn = (ports: PortRanges, port: number): boolean => ports.some(([lo, hi]) => port >= lo && port <= hi);

function nameMatches(h: HostPattern, name: string): boolean {
  switch (h.kind) {
    case "any":
      return true;
    case "name":
      return h.name === name;
    case "suffix":
      return name.endsWith(`.${h.suffix}`);
    case "cidr":
      return false;
    default: {
      const never: never = h;
      throw new Error(`unknown host pattern ${JSON.stringify(never)}`);
    }
  }
}

/** What the allowlist says about a destination before its name is resolved. */
export type NameVerdict =
  /** A name rule allows the name: resolve it; each address is then judged by `judgeAddress`. */
  | { readonly kind: "by-name"; readonly rule: string }
  /** No name rule does, but an address rule might contain what it resolves to: resolve and judge. */
  | { readonly kind: "by-address" }
  /** Nothing can allow it: refuse without a DNS lookup. */
  | { readonly kind: "refused"; readonly why: string };

/**
 * Judges a requested host name (normalized) and port before any lookup, so that names no rule could
 * allow cost no DNS query (the server is not a resolver for anyone holding a key).
 */
export function judgeName(rules: readonly AllowRule[], name: string, port: number): NameVerdict {
  for (const r of rules) if (r.host.kind !== "cidr" && portIn(r.ports, port) && nameMatches(r.host, name)) return { kind: "by-name", rule: r.text };
  if (rules.some((r) => r.host.kind === "cidr" && portIn(r.ports, port))) return { kind: "by-address" };
  return { kind: "refused", why: "no rule allows this name and port" };
}

/** The verdict on one address. */
export type AddressVerdict =
  | { readonly ok: true; readonly rule: string }
  /** `special`: refused by the SSRF defaults (a special or own address), not merely by a missing rule. */
  | { readonly ok: false; readonly why: string; readonly special: boolean };

/**
 * Judges one address (a literal destination, or one the name resolved to) for `port`. `byName`: a name
 * rule (or `*`) allowed the request; it opens ordinary public addresses only. `own`: the server's own
 * addresses (canonical), special like loopback.
 */
export function judgeAddress(rules: readonly AllowRule[], ip: Ip, port: number, byName: string | undefined, own: readonly Ip[]): AddressVerdict {
  const c = canonical(ip);
  for (const r of rules) if (r.host.kind === "cidr" && portIn(r.ports, port) && cidrContains(r.host.cidr, c)) return { ok: true, rule: r.text };
  const special = specialKind(c);
  const isOwn = own.some((o) => o.byteLength === c.byteLength && o.every((b, i) => b === c[i]));
  const what = special !== undefined ? `a ${special} address` : isOwn ? "one of the server's own addresses" : undefined;
  if (what !== undefined) return { ok: false, why: `${formatIp(c)} is ${what}: only a rule naming the address opens it`, special: true };
  if (byName !== undefined) return { ok: true, rule: byName };
  return { ok: false, why: `no rule allows ${formatIp(c)} port ${port}`, special: false };
}

/** The `*`-rule (if any) that lets a client name a literal address for `port`. */
export function anyRule(rules: readonly AllowRule[], port: number): string | undefined {
  return rules.find((r) => r.host.kind === "any" && portIn(r.ports, port))?.text;
}
