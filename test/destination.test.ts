/**
 * Destinations on the wire and what comes back (issue 13), as pure units: the DESTINATION option, the
 * TARGET frame a standby stripe starts with, reset codes → outcomes → SOCKS replies and HTTP statuses,
 * the users file, the dialer's growth (a session on one stripe until its data is bulk), and the bounds
 * on the server's name lookups.
 */

import { describe, expect, test } from "bun:test";
import { StriperError } from "../src/errors.ts";
import { destinationFromOptions, destinationOf, destinationOptions, formatDestination, outcomeOfReset, SERVER_DEFAULT, type Destination } from "../src/proxy/destination.ts";
import { StripeDialer, type DialAttempt } from "../src/proxy/dialer.ts";
import { httpStatusOf } from "../src/proxy/http-connect.ts";
import { parseAllowRules } from "../src/proxy/allow.ts";
import { parseIp } from "../src/proxy/ip.ts";
import { targetFrame } from "../src/proxy/pool.ts";
import { socksReplyOf } from "../src/proxy/socks.ts";
import { StandbyTable, readTarget } from "../src/proxy/standby.ts";
import { TargetOpener, type LookupAddress, type TargetResult } from "../src/proxy/target.ts";
import { parseUsers } from "../src/proxy/users.ts";
import { OPT_DESTINATION } from "../src/secure/constants.ts";
import { decodeHeader, encodeHeader } from "../src/secure/messages.ts";
import { ResetCode } from "../src/wire/constants.ts";
import { until } from "./helpers/util.ts";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

describe("the DESTINATION option", () => {
  test("byte layout: SOCKS5's address encoding, then the port", () => {
    const v4 = destinationOptions(destinationOf("192.0.2.7", 22));
    expect(v4).toHaveLength(1);
    expect(v4[0]!.type).toBe(OPT_DESTINATION);
    expect(hex(v4[0]!.value)).toBe("01" + "c0000207" + "0016");
    expect(hex(destinationOptions(destinationOf("::1", 443))[0]!.value)).toBe("04" + "00".repeat(15) + "01" + "01bb");
    expect(hex(destinationOptions(destinationOf("db.example", 5432))[0]!.value)).toBe("03" + "0a" + Buffer.from("db.example").toString("hex") + "1538");
    expect(destinationOptions(SERVER_DEFAULT)).toEqual([]);
  });

  test("round trip through a sealed header's options, with unknown options around it skipped", () => {
    const dests: Destination[] = [destinationOf("192.0.2.7", 22), destinationOf("2001:db8::5", 8443), destinationOf("deb.debian.org", 80), SERVER_DEFAULT];
    for (const d of dests) {
      const options = [{ type: 200, value: Uint8Array.of(1, 2, 3) }, ...destinationOptions(d), { type: 9, value: new Uint8Array() }];
      const h = decodeHeader(encodeHeader({ kind: 1, flags: 0, stripeIndex: 0, generation: 1, stripeCount: 4, timestampMs: 1, window: 65536, secret: new Uint8Array(32), options }));
      if (typeof h === "string") throw new Error(h);
      expect(destinationFromOptions(h.options)).toEqual(d);
    }
  });

  test("a name that is an address is judged as the address; names are lower-cased", () => {
    const name = (n: string) => [{ type: OPT_DESTINATION, value: Uint8Array.of(3, n.length, ...Buffer.from(n), 0, 80) }];
    expect(destinationFromOptions(name("127.0.0.1"))).toEqual({ kind: "ip", ip: parseIp("127.0.0.1")!, port: 80 });
    expect(destinationFromOptions(name("WWW.Example.COM."))).toEqual({ kind: "name", name: "www.example.com", port: 80 });
  });

  test("malformed options are E_BAD_DESTINATION, never a throw", () => {
    const opt = (...b: number[]) => ({ type: OPT_DESTINATION, value: Uint8Array.from(b) });
    const bad: [ReturnType<typeof opt>[], string][] = [
      [[opt()], "empty"],
      [[opt(1, 1, 2, 3, 4, 0)], "bytes for address type 1"],
      [[opt(1, 1, 2, 3, 4, 0, 0)], "port 0"],
      [[opt(4, 1, 2, 3)], "bytes for address type 4"],
      [[opt(2, 1, 2, 3, 4, 0, 80)], "unknown address type 2"],
      [[opt(3, 0, 0, 80)], "empty name"],
      [[opt(3)], "name length missing"],
      [[opt(3, 3, 0x61, 0x20, 0x62, 0, 80)], "not printable ASCII"],
      [[opt(3, 3, 0x61, 0x2f, 0x62, 0, 80)], "is not a host name"],
      [[opt(3, 5, 0x61, 0x62, 0, 80)], "bytes for address type 3"],
      [[opt(1, 1, 2, 3, 4, 0, 80), opt(1, 1, 2, 3, 4, 0, 80)], "given twice"],
    ];
    for (const [options, why] of bad) {
      const r = destinationFromOptions(options);
      expect(r).toBeInstanceOf(StriperError);
      expect((r as StriperError).code).toBe("E_BAD_DESTINATION");
      expect((r as StriperError).message).toContain(why);
    }
  });

  test("destinationOf: addresses, names, and what is neither", () => {
    expect(destinationOf("10.0.0.1", 1).kind).toBe("ip");
    expect(destinationOf("example.com", 65535).kind).toBe("name");
    for (const [h, p] of [["example.com", 0], ["example.com", 65536], ["bad host", 80], ["127.1", 80]] as const) {
      expect(() => destinationOf(h, p)).toThrow(StriperError);
    }
    expect(formatDestination(destinationOf("::1", 80))).toBe("[::1]:80");
    expect(formatDestination(SERVER_DEFAULT)).toBe("the server's target");
  });
});

describe("what the app is told", () => {
  test("RESET codes → outcome → SOCKS5 reply → HTTP status, as issue 13 lists them", () => {
    const table: [number, string, number, number][] = [
      [ResetCode.NotAllowed, "not-allowed", 0x02, 403],
      [ResetCode.TargetUnresolved, "unresolved", 0x04, 502],
      [ResetCode.TargetRefused, "refused", 0x05, 502],
      [ResetCode.TargetTimeout, "timeout", 0x06, 504],
      [ResetCode.TargetUnreachable, "unreachable", 0x04, 502],
      [ResetCode.PeerFailed, "failed", 0x01, 502],
      [ResetCode.Shutdown, "failed", 0x01, 502],
      [200, "failed", 0x01, 502],
    ];
    for (const [code, outcome, rep, status] of table) {
      const o = outcomeOfReset(code);
      expect([code, o, socksReplyOf(o), httpStatusOf(o)]).toEqual([code, outcome, rep, status] as never);
    }
    expect(socksReplyOf("connected")).toBe(0);
    expect(httpStatusOf("connected")).toBe(200);
  });
});

describe("the TARGET frame", () => {
  test("layout: a frame header of type 6, value = window, payload = the options (3 + 1 + 1 + 11 + 2 = 18 bytes); then the session's frames", () => {
    const f = targetFrame(1 << 20, destinationOf("example.com", 443));
    expect(hex(f.subarray(0, 16))).toBe("06000000" + "00000012" + "0000000000100000");
    const rest = Uint8Array.of(9, 9, 9);
    const step = readTarget(new Uint8Array(Buffer.concat([f, rest])));
    if (step.kind !== "done") throw new Error(step.kind);
    expect(step.frame.window).toBe(1 << 20);
    expect(destinationFromOptions(step.frame.options)).toEqual(destinationOf("example.com", 443));
    expect([...step.rest]).toEqual([9, 9, 9]);
    // Split anywhere before its end: "more".
    for (let i = 0; i < f.byteLength; i++) expect(readTarget(f.subarray(0, i)).kind).toBe("more");
  });

  test("anything else first, flags, an oversize payload or truncated options: invalid", () => {
    const f = targetFrame(65536, SERVER_DEFAULT);
    const data = Uint8Array.from(f);
    data[0] = 0; // DATA
    expect(readTarget(data)).toMatchObject({ kind: "invalid", error: { code: "E_UNEXPECTED_FRAME" } });
    const flagged = Uint8Array.from(f);
    flagged[1] = 1;
    expect(readTarget(flagged)).toMatchObject({ kind: "invalid", error: { code: "E_UNEXPECTED_FRAME" } });
    const big = Uint8Array.from(f);
    new DataView(big.buffer).setUint32(4, 4096);
    expect(readTarget(big)).toMatchObject({ kind: "invalid", error: { code: "E_FRAME_TOO_LARGE" } });
    const truncated = new Uint8Array(16 + 2);
    truncated[0] = 6;
    new DataView(truncated.buffer).setUint32(4, 2);
    truncated[16] = 1; // a TLV header cut short
    expect(readTarget(truncated)).toMatchObject({ kind: "invalid", error: { code: "E_BAD_DESTINATION" } });
  });

  test("the standby table bounds stripes in all and per source", () => {
    const t = new StandbyTable({ max: 3, perSource: 2 });
    t.add("a", "s1");
    t.add("b", "s1");
    expect(t.blocker("s1")).toBe("standby limit 2 per source");
    expect(t.blocker("s2")).toBeUndefined();
    t.add("c", "s2");
    expect(t.blocker("s3")).toBe("standby limit 3");
    t.remove("a", "s1");
    t.remove("a", "s1"); // twice: no effect
    expect(t.size).toBe(2);
    expect(t.blocker("s1")).toBeUndefined();
    expect(t.has("b")).toBe(true);
  });
});

describe("the users file", () => {
  test("user:password lines; comments and blanks skipped; the password may hold colons", () => {
    const u = parseUsers("# LAN users\nalice:s3cret\n\n  # more\nbob:a:b:c\n", "users");
    expect(u.size).toBe(2);
    expect(u.check("alice", "s3cret")).toBe(true);
    expect(u.check("alice", "s3cret ")).toBe(false);
    expect(u.check("bob", "a:b:c")).toBe(true);
    expect(u.check("carol", "s3cret")).toBe(false);
    expect(u.check(Buffer.from("alice"), Buffer.from("s3cret"))).toBe(true);
  });

  test("errors name the file and line, never the password", () => {
    const cases: [string, string][] = [
      ["alice\n", "users:1: expected user:password"],
      ["alice:x\n:pw\n", "users:2: user and password must each be 1-255 bytes"],
      ["alice:\n", "users:1: user and password must each be 1-255 bytes"],
      [`alice:${"p".repeat(256)}\n`, "users:1: user and password must each be 1-255 bytes"],
      ["alice:x\nalice:y\n", 'users:2: user "alice" given twice'],
      ["alice:p\u0001w\n", "users:1: user and password must be printable characters"],
      ["# nobody\n", "users: no users (expected user:password lines)"],
    ];
    for (const [text, message] of cases) {
      expect(() => parseUsers(text, "users")).toThrow(message);
    }
  });
});

describe("a session grows only when its data is bulk", () => {
  const manual = () => {
    const timers: (() => void)[] = [];
    return { set: (fn: () => void) => timers.push(fn), clear() {}, timers };
  };

  test("initial 1: stripe 0 alone until grow(); then the others, once", () => {
    const dials: DialAttempt[] = [];
    const d = new StripeDialer({ stripes: 4, initial: 1, dial: (a) => dials.push(a), unreachable() {}, timers: manual() });
    d.start();
    d.succeeded(0);
    expect(dials.map((a) => a.index)).toEqual([0]);
    d.grow();
    d.grow();
    expect(dials.map((a) => [a.index, a.kind])).toEqual([[0, 1], [1, 2], [2, 2], [3, 2]]);
  });

  test("grow() before the session is accepted: the others follow the acceptance", () => {
    const dials: DialAttempt[] = [];
    const d = new StripeDialer({ stripes: 3, initial: 1, dial: (a) => dials.push(a), unreachable() {}, timers: manual() });
    d.start();
    d.grow();
    expect(dials.map((a) => a.index)).toEqual([0]);
    d.succeeded(0);
    expect(dials.map((a) => a.index)).toEqual([0, 1, 2]);
  });

  test("adopt(): a pooled stripe is the accepted opening stripe (generation 1); its re-dial is a JOIN of generation 2", () => {
    const dials: DialAttempt[] = [];
    const t = manual();
    const d = new StripeDialer({ stripes: 2, initial: 1, dial: (a) => dials.push(a), unreachable() {}, timers: t, random: () => 0.5 });
    d.adopt(0, 1);
    expect(d.everAccepted).toBe(true);
    expect(dials).toEqual([]);
    d.redial(0);
    t.timers.shift()!();
    expect(dials).toEqual([{ index: 0, generation: 2, kind: 2 }]);
  });
});

describe("the server's name lookups are bounded", () => {
  test("at most maxLookups run at once, maxLookupQueue wait, the next fails at once (E_DNS_BUSY, code 7); a slot freed starts a waiting one", async () => {
    const pending: { name: string; answer: (a: LookupAddress[]) => void }[] = [];
    const opener = new TargetOpener({
      policy: { defaultTarget: undefined, rules: parseAllowRules(["*.test:80"]) },
      maxLookups: 2,
      maxLookupQueue: 1,
      dnsTimeoutMs: 60_000,
      lookup: (name) => new Promise((answer) => pending.push({ name, answer })),
      // Nothing may be connected here: every lookup answers with a special address no rule names.
      connect: () => {
        throw new Error("no connect expected");
      },
      ownAddresses: () => [],
    });
    const results: (TargetResult | undefined)[] = [];
    for (let i = 0; i < 4; i++) opener.open({ kind: "name", name: `n${i}.test`, port: 80 }, (r) => (results[i] = r));
    await until(() => results[3] !== undefined, "the fourth lookup refused");
    expect(pending.map((p) => p.name)).toEqual(["n0.test", "n1.test"]);
    expect(opener.activeLookups).toBe(2);
    const busy = results[3]!;
    expect(busy.ok).toBe(false);
    if (busy.ok) return;
    expect([busy.error.code, busy.error.resetCode, busy.reason]).toEqual(["E_DNS_BUSY", ResetCode.TargetUnresolved, "dns-busy"]);
    expect(results.slice(0, 3)).toEqual([undefined, undefined, undefined]);
    // n0 answers (loopback: refused by the SSRF defaults): its slot goes to n2, which was waiting.
    pending[0]!.answer([{ address: "127.0.0.1", family: 4 }]);
    await until(() => pending.length === 3, "the waiting lookup started");
    expect(pending[2]!.name).toBe("n2.test");
    expect(opener.activeLookups).toBe(2);
    const first = results[0]!;
    expect(first.ok ? "connected" : [first.error.code, first.reason]).toEqual(["E_NOT_ALLOWED", "ssrf"]);
  });
});
