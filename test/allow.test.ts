/**
 * The server's allowlist and its SSRF defaults (issue 13), as pure units: IP parsing and folding
 * (src/proxy/ip.ts), rule parsing and judging (src/proxy/allow.ts).
 */

import { describe, expect, test } from "bun:test";
import { StriperError } from "../src/errors.ts";
import { anyRule, judgeAddress, judgeName, parseAllowRule, parseAllowRules } from "../src/proxy/allow.ts";
import { canonical, cidrContains, formatIp, isHostname, parseCidr, parseIp, specialKind } from "../src/proxy/ip.ts";

const ip = (t: string) => {
  const x = parseIp(t);
  if (x === undefined) throw new Error(`not an address: ${t}`);
  return x;
};

describe("IP addresses", () => {
  test("IPv4 is strict dotted-quad: no octal, hex, short or integer forms", () => {
    expect([...ip("192.0.2.1")]).toEqual([192, 0, 2, 1]);
    for (const bad of ["010.0.0.1", "0x7f.0.0.1", "127.1", "2130706433", "1.2.3.256", "1.2.3.4.5", "1..2.3", " 1.2.3.4", "1.2.3.-4"]) {
      expect(parseIp(bad)).toBeUndefined();
    }
  });

  test("IPv6 text: compression, an IPv4 tail, and the RFC 5952 form back", () => {
    expect(formatIp(ip("2001:DB8:0:0:0:0:0:1"))).toBe("2001:db8::1");
    expect(formatIp(ip("::"))).toBe("::");
    expect(formatIp(ip("::1"))).toBe("::1");
    expect(formatIp(ip("fe80::1:0:0:2"))).toBe("fe80::1:0:0:2");
    expect(formatIp(ip("1:0:0:2:0:0:0:3"))).toBe("1:0:0:2::3");
    expect(formatIp(ip("1:2:3:4:5:6:7:0"))).toBe("1:2:3:4:5:6:7:0"); // a single zero group is not shortened
    expect([...ip("::ffff:127.0.0.1").subarray(10)]).toEqual([0xff, 0xff, 127, 0, 0, 1]);
    for (const bad of ["1::2::3", "1:2:3:4:5:6:7:8:9", "12345::", "::g", "fe80::1%eth0", "1.2.3.4::", "[::1]", ":::"]) {
      expect(parseIp(bad)).toBeUndefined();
    }
  });

  test("IPv4 carried in IPv6 (mapped, compatible, NAT64, 6to4) folds to the IPv4 it stands for", () => {
    expect(formatIp(canonical(ip("::ffff:127.0.0.1")))).toBe("127.0.0.1");
    expect(formatIp(canonical(ip("::ffff:7f00:1")))).toBe("127.0.0.1");
    expect(formatIp(canonical(ip("::10.0.0.1")))).toBe("10.0.0.1");
    expect(formatIp(canonical(ip("64:ff9b::a9fe:a9fe")))).toBe("169.254.169.254");
    expect(formatIp(canonical(ip("2002:c0a8:0101::1")))).toBe("192.168.1.1");
    expect(formatIp(canonical(ip("::1")))).toBe("::1"); // IPv6's own loopback stays
    expect(formatIp(canonical(ip("2001:db8::1")))).toBe("2001:db8::1");
  });

  test("CIDR blocks: prefix bounds, host bits must be zero, containment", () => {
    const b = parseCidr("10.1.0.0/16")!;
    expect(cidrContains(b, ip("10.1.255.7"))).toBe(true);
    expect(cidrContains(b, ip("10.2.0.0"))).toBe(false);
    expect(cidrContains(parseCidr("fc00::/7")!, ip("fdff::1"))).toBe(true);
    expect(cidrContains(parseCidr("fc00::/7")!, ip("fe00::1"))).toBe(false);
    expect(cidrContains(parseCidr("100.64.0.0/10")!, ip("100.127.255.255"))).toBe(true);
    expect(cidrContains(parseCidr("100.64.0.0/10")!, ip("100.128.0.0"))).toBe(false);
    expect(cidrContains(parseCidr("0.0.0.0/0")!, ip("::1"))).toBe(false); // families never mix
    for (const bad of ["10.1.0.1/16", "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/x"]) expect(parseCidr(bad)).toBeUndefined();
  });

  test("special ranges: every kind the SSRF defaults refuse, and ordinary addresses that are not", () => {
    const cases: [string, string | undefined][] = [
      ["127.0.0.1", "loopback"],
      ["127.255.0.9", "loopback"],
      ["::1", "loopback"],
      ["::ffff:127.0.0.1", "loopback"],
      ["10.0.0.5", "private"],
      ["172.16.0.1", "private"],
      ["172.31.255.255", "private"],
      ["192.168.1.1", "private"],
      ["fd12::1", "private"],
      ["169.254.169.254", "link-local"],
      ["fe80::1", "link-local"],
      ["100.64.0.1", "cgnat"],
      ["224.0.0.1", "multicast"],
      ["ff02::1", "multicast"],
      ["0.0.0.0", "unspecified"],
      ["::", "unspecified"],
      ["255.255.255.255", "reserved"],
      ["64:ff9b::7f00:1", "loopback"],
      ["172.32.0.1", undefined],
      ["100.128.0.1", undefined],
      ["93.184.216.34", undefined],
      ["2606:2800:220:1::1", undefined],
      ["192.0.2.1", undefined],
    ];
    for (const [a, kind] of cases) expect([a, specialKind(ip(a))]).toEqual([a, kind]);
  });

  test("host names: DNS syntax, and no numeric form getaddrinfo would read as an address", () => {
    for (const ok of ["example.com", "a-b.example.com.", "x", "_srv.example.org", "xn--bcher-kva.example"]) expect(isHostname(ok)).toBe(true);
    for (const bad of ["", "a..b", "-", "a b", "ex ample.com", "a/b", "127.1", "2130706433", "1.2.3.4", "0x7f000001", "a".repeat(64) + ".com", `${"a.".repeat(127)}ab`]) {
      expect(isHostname(bad)).toBe(false);
    }
  });
});

describe("rules", () => {
  test("every documented form parses", () => {
    expect(parseAllowRule("*:443").host).toEqual({ kind: "any" });
    expect(parseAllowRule("*.debian.org:80,443")).toMatchObject({ host: { kind: "suffix", suffix: "debian.org" }, ports: [[80, 80], [443, 443]] });
    expect(parseAllowRule("Example.COM.:8000-8100")).toMatchObject({ host: { kind: "name", name: "example.com" }, ports: [[8000, 8100]] });
    expect(parseAllowRule("10.1.0.0/16:22").host).toMatchObject({ kind: "cidr", cidr: { prefix: 16 } });
    expect(parseAllowRule("127.0.0.1:8080").host).toMatchObject({ kind: "cidr", cidr: { prefix: 32 } });
    expect(parseAllowRule("[::1]:8080").host).toMatchObject({ kind: "cidr", cidr: { prefix: 128 } });
    expect(parseAllowRule("[fd00::/8]:443").host).toMatchObject({ kind: "cidr", cidr: { prefix: 8 } });
    expect(parseAllowRule("[fd00::]/8:443").host).toMatchObject({ kind: "cidr", cidr: { prefix: 8 } });
    expect(parseAllowRule("10.0.0.0/8:*").ports).toEqual([[0, 65535]]);
    expect(parseAllowRule("x.org:22,8000-8100").ports).toEqual([[22, 22], [8000, 8100]]);
    // An IPv4-mapped block folds to IPv4.
    expect(formatIp(parseAllowRule("[::ffff:10.0.0.0/104]:22").host.kind === "cidr" ? (parseAllowRule("[::ffff:10.0.0.0/104]:22").host as { cidr: { base: Uint8Array } }).cidr.base : new Uint8Array())).toBe("10.0.0.0");
  });

  test("bad rules are E_CONFIG naming the rule and the problem", () => {
    const cases: [string, string][] = [
      ["example.com", "expected HOST:PORTS"],
      ["example.com:", "is not a port"],
      ["example.com:0", "must lie within 1-65535"],
      ["example.com:70000", "must lie within 1-65535"],
      ["example.com:443-80", "low end first"],
      ["ex*ample.com:80", "a wildcard may only be"],
      ["*.:80", "is not a host name"],
      ["10.0.0.1/8:22", "host bits must be zero"],
      ["::1:80", "write IPv6 addresses in brackets"],
      ["[::1]", "expected [IPv6]:PORTS"],
      ["[10.0.0.1]:80", "is not an IPv6 address"],
      ["a b:80", "is not a host name"],
    ];
    for (const [rule, why] of cases) {
      let err: unknown;
      try {
        parseAllowRule(rule);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(StriperError);
      expect((err as StriperError).code).toBe("E_CONFIG");
      expect((err as StriperError).message).toContain(`"${rule}"`);
      expect((err as StriperError).message).toContain(why);
    }
  });
});

describe("judging", () => {
  const own = [ip("192.0.2.2"), ip("fd00::2")];

  test("names: a matching name rule lets the name be resolved; nothing that could allow it refuses before DNS", () => {
    const rules = parseAllowRules(["*.debian.org:80,443", "git.example.com:22"]);
    expect(judgeName(rules, "deb.debian.org", 443)).toEqual({ kind: "by-name", rule: "*.debian.org:80,443" });
    expect(judgeName(rules, "a.b.debian.org", 80).kind).toBe("by-name");
    expect(judgeName(rules, "debian.org", 80).kind).toBe("refused"); // *.x is below x, not x itself
    expect(judgeName(rules, "deb.debian.org", 22).kind).toBe("refused");
    expect(judgeName(rules, "git.example.com", 22).kind).toBe("by-name");
    expect(judgeName(rules, "evildebian.org", 80).kind).toBe("refused");
    // An address rule for the port means any name might resolve into it: resolve, then judge addresses.
    expect(judgeName(parseAllowRules(["10.1.0.0/16:22"]), "db.internal", 22)).toEqual({ kind: "by-address" });
    expect(judgeName(parseAllowRules(["10.1.0.0/16:22"]), "db.internal", 23).kind).toBe("refused");
  });

  test("*:443 opens public addresses, never loopback, private, link-local, CGNAT or the server's own", () => {
    const rules = parseAllowRules(["*:443"]);
    const byName = anyRule(rules, 443);
    expect(byName).toBe("*:443");
    expect(judgeAddress(rules, ip("93.184.216.34"), 443, byName, own)).toEqual({ ok: true, rule: "*:443" });
    expect(judgeAddress(rules, ip("93.184.216.34"), 80, anyRule(rules, 80), own)).toEqual({ ok: false, why: "no rule allows 93.184.216.34 port 80", special: false });
    for (const a of ["127.0.0.1", "::1", "10.0.0.5", "192.168.0.1", "fd00::5", "169.254.169.254", "fe80::1", "100.64.1.1", "224.0.0.1", "0.0.0.0", "::ffff:127.0.0.1", "::ffff:10.1.2.3"]) {
      const v = judgeAddress(rules, ip(a), 443, byName, own);
      expect([a, v.ok]).toEqual([a, false]);
      if (!v.ok) expect([a, v.special, v.why.includes("only a rule naming the address opens it")]).toEqual([a, true, true]);
    }
    const mine = judgeAddress(rules, ip("192.0.2.2"), 443, byName, own);
    expect(mine).toEqual({ ok: false, why: "192.0.2.2 is one of the server's own addresses: only a rule naming the address opens it", special: true });
  });

  test("a rule naming the address opens it: exactly, by block, by port; IPv4-mapped is IPv4", () => {
    const rules = parseAllowRules(["127.0.0.1:8080", "10.1.0.0/16:22", "[fd00::/8]:443", "192.0.2.2:9000"]);
    expect(judgeAddress(rules, ip("127.0.0.1"), 8080, undefined, own)).toEqual({ ok: true, rule: "127.0.0.1:8080" });
    expect(judgeAddress(rules, ip("::ffff:127.0.0.1"), 8080, undefined, own).ok).toBe(true);
    expect(judgeAddress(rules, ip("127.0.0.1"), 8081, undefined, own).ok).toBe(false);
    expect(judgeAddress(rules, ip("127.0.0.2"), 8080, undefined, own).ok).toBe(false);
    expect(judgeAddress(rules, ip("10.1.200.3"), 22, undefined, own)).toEqual({ ok: true, rule: "10.1.0.0/16:22" });
    expect(judgeAddress(rules, ip("fd00::7"), 443, undefined, own).ok).toBe(true);
    expect(judgeAddress(rules, ip("192.0.2.2"), 9000, undefined, own).ok).toBe(true); // own address, named
    // A public address no rule names, with no name rule behind the request: refused.
    expect(judgeAddress(rules, ip("93.184.216.34"), 22, undefined, own)).toEqual({ ok: false, why: "no rule allows 93.184.216.34 port 22", special: false });
  });
});
