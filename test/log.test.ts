/** Log lines: escaping, address formatting, text and JSON rendering, aggregation (clock passed in). */

import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { BrokenError } from "../src/errors.ts";
import type { SessionMetrics } from "../src/pipe/striped.ts";
import {
  LogAggregator,
  Logger,
  MAX_FIELD,
  escapeText,
  formatRemote,
  quietLog,
  remoteHost,
  sessionEndEvent,
  sessionEndLine,
  stderrLog,
  type LogEvent,
} from "../src/proxy/log.ts";

const metrics: SessionMetrics = {
  stripes: 4,
  usableStripes: 4,
  stripeDeaths: 0,
  stripeDeathsByReason: {},
  resentBytes: 0,
  ackBytes: 1024,
  sendBufferBytes: 0,
  peakSendBufferBytes: 0,
  reorderBytes: 0,
  peakReorderBytes: 0,
  perStripe: [],
};

/** True for a code point a log line must never contain raw: C0, DEL, C1, bidi/invisible format, separators, lone surrogates. */
function unsafeCodePoint(cp: number): boolean {
  return (
    cp <= 0x1f ||
    (cp >= 0x7f && cp <= 0x9f) ||
    cp === 0x061c ||
    cp === 0x180e ||
    (cp >= 0x200b && cp <= 0x200f) ||
    (cp >= 0x2028 && cp <= 0x202e) ||
    (cp >= 0x2060 && cp <= 0x206f) ||
    cp === 0xfeff ||
    (cp >= 0xd800 && cp <= 0xdfff)
  );
}

function unsafeIn(s: string): number[] {
  const bad: number[] = [];
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    if (unsafeCodePoint(cp)) bad.push(cp);
  }
  return bad;
}

/** A peer's RESET reason that tries to end our line and forge a clean session end. */
const FORGED =
  "bye\n2026-01-01T00:00:00.000Z session 0123456789ab end up 1.0 MiB down 1.0 MiB 1.00 s stripe-deaths 0 resent 0 B acks 0 B reason ok" +
  "\r\x1b[2K\x1b[1A\u202egnp.exe\u2028\u0085";

describe("escapeText", () => {
  test("a forged line in a peer's text stays on our line, its controls visible", () => {
    const out = escapeText(FORGED, 1000);
    expect(out).not.toContain("\n");
    expect(out).not.toContain("\r");
    expect(out).not.toContain("\x1b");
    expect(unsafeIn(out)).toEqual([]);
    expect(out).toContain("bye\\n2026-01-01T00:00:00.000Z session");
    expect(out).toContain("\\r\\x1b[2K\\x1b[1A\\u202egnp.exe\\u2028\\x85");
  });

  test("ordinary text, accents and emoji pass unchanged; the backslash is doubled so escapes stay unambiguous", () => {
    expect(escapeText("peer reset the session (code 3): déjà vu 😀")).toBe("peer reset the session (code 3): déjà vu 😀");
    expect(escapeText("a\\nb")).toBe("a\\\\nb");
  });

  test("long text is cut at the bound, never inside a surrogate pair, and marked", () => {
    expect(escapeText("x".repeat(500))).toBe(`${"x".repeat(MAX_FIELD)}…[+${500 - MAX_FIELD}]`);
    const emoji = "a" + "😀".repeat(10); // the cut at 4 falls inside the second emoji
    expect(escapeText(emoji, 4)).toBe("a😀…[+18]");
  });

  test("property: whatever a peer sends, the escaped text has no unsafe character and a bounded length", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 600 }), fc.integer({ min: 1, max: 300 }), (s, max) => {
        const out = escapeText(s, max);
        expect(unsafeIn(out)).toEqual([]);
        // Each kept unit becomes at most a 6-character escape; plus the cut marker.
        expect(out.length).toBeLessThanOrEqual(6 * max + 16);
      }),
      { numRuns: 500 },
    );
  });
});

describe("formatRemote", () => {
  test("IPv6 in brackets, IPv4-mapped IPv6 as IPv4, an unknown host named, the port optional", () => {
    expect(formatRemote("203.0.113.7", 443)).toBe("203.0.113.7:443");
    expect(formatRemote("2001:db8::1", 443)).toBe("[2001:db8::1]:443");
    expect(formatRemote("::ffff:203.0.113.7", 5000)).toBe("203.0.113.7:5000");
    expect(formatRemote(undefined, 5000)).toBe("unknown:5000");
    expect(formatRemote("", null)).toBe("unknown");
    expect(formatRemote("2001:db8::1")).toBe("[2001:db8::1]");
    expect(remoteHost("::FFFF:10.0.0.1")).toBe("10.0.0.1");
  });
});

describe("Logger", () => {
  test("text keeps today's line shape: ISO time, one space, the message, escaped", () => {
    const lines: string[] = [];
    const log = new Logger({ write: (l) => lines.push(l), now: () => Date.UTC(2026, 0, 2, 3, 4, 5, 6) });
    log.sink("server listening on 127.0.0.1:7000 target 127.0.0.1:9000");
    log.emit({ event: "stripe.dropped", msg: `stripe from [::1]:5 dropped: E_PEER_RESET ${FORGED}` });
    expect(lines[0]).toBe("2026-01-02T03:04:05.006Z server listening on 127.0.0.1:7000 target 127.0.0.1:9000");
    expect(lines).toHaveLength(2);
    expect(lines[1]!.startsWith("2026-01-02T03:04:05.006Z stripe from [::1]:5 dropped: E_PEER_RESET bye\\n")).toBe(true);
    expect(unsafeIn(lines[1]!)).toEqual([]);
  });

  test("JSON lines carry ts, level, event, session, remote, msg and fields; peer text round-trips exactly", () => {
    const lines: string[] = [];
    const log = new Logger({ format: "json", write: (l) => lines.push(l), now: () => 0 });
    const err = new BrokenError("E_PEER_RESET", `peer reset the session (code 3): ${FORGED}`);
    log.emit(sessionEndEvent("0123456789ab", 10, 20, 1500, metrics, err, "[2001:db8::1]:443"));
    log.sink("plain line");
    expect(lines).toHaveLength(2);
    for (const l of lines) {
      expect(l).not.toContain("\n");
      expect(unsafeIn(l)).toEqual([]);
    }
    const rec = JSON.parse(lines[0]!);
    expect(rec).toMatchObject({
      ts: "1970-01-01T00:00:00.000Z",
      level: "warn",
      event: "session.end",
      session: "0123456789ab",
      remote: "[2001:db8::1]:443",
      fields: { up: 10, down: 20, ms: 1500, stripeDeaths: 0, code: "E_PEER_RESET" },
    });
    // The reason as data: exactly what the peer sent, its controls escaped only in transit.
    expect(err.message.length).toBeLessThan(MAX_FIELD);
    expect(rec.fields.reason).toBe(err.message);
    expect(rec.msg).toBe(sessionEndLine("0123456789ab", 10, 20, 1500, metrics, err, "[2001:db8::1]:443"));
    expect(JSON.parse(lines[1]!)).toMatchObject({ level: "info", event: "log", msg: "plain line" });
  });

  test("sessionEndLine escapes a peer's reason itself: a forged end line never starts a line of its own", () => {
    const line = sessionEndLine("abc", 1, 2, 3, metrics, new BrokenError("E_PEER_RESET", FORGED));
    expect(line.split("\n")).toHaveLength(1);
    expect(line.endsWith("reason ok")).toBe(false);
    expect(unsafeIn(line)).toEqual([]);
    expect(sessionEndLine("abc", 1, 2, 3, metrics)).toEndWith("reason ok");
  });

  test("the plain sinks are still exported", () => {
    expect(typeof stderrLog).toBe("function");
    expect(quietLog("anything")).toBeUndefined();
  });
});

describe("LogAggregator", () => {
  function rig(opts: { intervalMs?: number; maxKeys?: number; maxLines?: number } = {}) {
    const clock = { t: 0 };
    const out: string[] = [];
    const agg = new LogAggregator((ev) => out.push(ev.msg), { ...opts, now: () => clock.t });
    const drop = (host: string, code = "E_HANDSHAKE_TIMEOUT") =>
      agg.note(
        `drop ${host} ${code}`,
        { event: "stripe.dropped", msg: `stripe from ${host}:1234 dropped: ${code}` },
        (n, s): LogEvent => ({ event: "stripe.dropped", msg: `${n} stripes from ${host} dropped in the last ${s} s: ${code}` }),
      );
    return { clock, out, agg, drop };
  }

  test("the first event is logged at once; its repeats become one line per interval", () => {
    const { clock, out, drop } = rig();
    for (let k = 0; k < 312; k++) {
      drop("203.0.113.7");
      clock.t += 30; // 312 events over 9.36 s
    }
    expect(out).toEqual(["stripe from 203.0.113.7:1234 dropped: E_HANDSHAKE_TIMEOUT"]);
    clock.t = 11_000;
    drop("198.51.100.1"); // a later note() flushes ended intervals (at most once a second)
    expect(out).toEqual([
      "stripe from 203.0.113.7:1234 dropped: E_HANDSHAKE_TIMEOUT",
      "312 stripes from 203.0.113.7 dropped in the last 11 s: E_HANDSHAKE_TIMEOUT",
      "stripe from 198.51.100.1:1234 dropped: E_HANDSHAKE_TIMEOUT",
    ]);
  });

  test("a busy kind keeps one summary per interval; a quiet one is forgotten and logs at once again", () => {
    const { clock, out, agg, drop } = rig();
    // One event a second for 30 s: three intervals of 10 events.
    for (clock.t = 0; clock.t < 30_000; clock.t += 1000) drop("a");
    agg.flush();
    const summary = "10 stripes from a dropped in the last 10 s: E_HANDSHAKE_TIMEOUT";
    expect(out).toEqual(["stripe from a:1234 dropped: E_HANDSHAKE_TIMEOUT", summary, summary, summary]);
    clock.t = 40_000;
    agg.flush(); // the fourth interval had none: forgotten
    expect(agg.size).toBe(0);
    drop("a");
    expect(out.slice(4)).toEqual(["stripe from a:1234 dropped: E_HANDSHAKE_TIMEOUT"]);
  });

  test("a single event makes no summary", () => {
    const { clock, out, agg, drop } = rig();
    drop("a");
    clock.t = 20_000;
    agg.flush();
    agg.close();
    expect(out).toEqual(["stripe from a:1234 dropped: E_HANDSHAKE_TIMEOUT"]);
  });

  test("memory is bounded: beyond maxKeys kinds, events are only counted, in one overflow line", () => {
    const { clock, out, agg, drop } = rig({ maxKeys: 50, maxLines: 1000 });
    for (let k = 0; k < 5000; k++) drop(`2001:db8::${k.toString(16)}`);
    expect(agg.size).toBe(50);
    expect(out).toHaveLength(50);
    clock.t = 10_000;
    agg.flush();
    expect(out.at(-1)).toBe("4950 more events of other kinds in the last 10 s (over 50 kinds at once)");
  });

  test("at most maxLines events are logged as they happen per interval; the rest are summarised", () => {
    const { clock, out, agg, drop } = rig({ maxLines: 3 });
    for (let k = 0; k < 10; k++) drop(`h${k}`);
    expect(out).toEqual([0, 1, 2].map((k) => `stripe from h${k}:1234 dropped: E_HANDSHAKE_TIMEOUT`));
    clock.t = 10_000;
    agg.flush();
    expect(out.slice(3)).toEqual([3, 4, 5, 6, 7, 8, 9].map((k) => `1 stripes from h${k} dropped in the last 10 s: E_HANDSHAKE_TIMEOUT`));
    drop("new"); // a new interval: the budget is back
    expect(out.at(-1)).toBe("stripe from new:1234 dropped: E_HANDSHAKE_TIMEOUT");
  });

  test("close() logs every pending summary", () => {
    const { clock, out, agg, drop } = rig();
    drop("a");
    drop("a");
    clock.t = 2500;
    agg.close();
    expect(out).toEqual(["stripe from a:1234 dropped: E_HANDSHAKE_TIMEOUT", "2 stripes from a dropped in the last 3 s: E_HANDSHAKE_TIMEOUT"]);
    expect(agg.size).toBe(0);
  });

  test("a flood of 20,000 connect-and-reset events from one host makes a handful of lines", () => {
    const { clock, out, agg, drop } = rig();
    for (let k = 0; k < 20_000; k++) {
      drop("203.0.113.7", "E_HANDSHAKE_EOF");
      clock.t += 7700 / 20_000;
    }
    clock.t = 10_000;
    agg.flush();
    expect(out).toEqual([
      "stripe from 203.0.113.7:1234 dropped: E_HANDSHAKE_EOF",
      "20000 stripes from 203.0.113.7 dropped in the last 10 s: E_HANDSHAKE_EOF",
    ]);
  });
});
