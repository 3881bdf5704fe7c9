/**
 * What the proxies report about themselves: ProxyStats over real sessions (in-process proxies on
 * loopback), the SIGUSR1 lines, and the client's notice while a session has no stripe (pure, fake timers;
 * and end to end through a fault proxy that goes away and comes back).
 */

import { describe, expect, test } from "bun:test";
import { ConnectError } from "../src/errors.ts";
import { startFaultProxy, type FaultProxy } from "../src/link/fault.ts";
import type { SessionSnapshot } from "../src/ops/stats.ts";
import { startClient } from "../src/proxy/client.ts";
import type { LogEvent } from "../src/proxy/log.ts";
import { OutageNotice, type NoticeTimers } from "../src/proxy/outage.ts";
import { startServer } from "../src/proxy/server.ts";
import { reasonLabel, statsEvents } from "../src/proxy/stats.ts";
import { KEYED } from "./helpers/keys.ts";
import { converse, randomData, sha256, startTarget } from "./helpers/net.ts";
import { cleanups, until } from "./helpers/util.ts";

const cleanup = cleanups();

/** Timers the test runs by hand. */
class Timers implements NoticeTimers {
  t = 0;
  pending = new Map<number, { at: number; fn: () => void }>();
  private seq = 0;
  now = () => this.t;
  set = (fn: () => void, ms: number) => {
    this.pending.set(++this.seq, { at: this.t + ms, fn });
    return this.seq;
  };
  clear = (h: unknown) => void this.pending.delete(h as number);
  advance(ms: number): void {
    this.t += ms;
    for (const [id, x] of [...this.pending]) {
      if (x.at > this.t) continue;
      this.pending.delete(id);
      x.fn();
    }
  }
}

describe("OutageNotice", () => {
  const make = () => {
    const timers = new Timers();
    const lines: LogEvent[] = [];
    const n = new OutageNotice({ id: "abc", peer: "server:7000", graceMs: 10_000, log: (ev) => lines.push(ev), timers });
    return { timers, lines, n };
  };
  const refused = new ConnectError("ECONNREFUSED", "connection refused");

  test("says once, after a second without a stripe, how long, how many re-dials failed and how long it waits", () => {
    const { timers, lines, n } = make();
    n.lost(2); // other stripes left: no outage
    timers.advance(5000);
    expect(lines).toEqual([]);
    n.lost(0);
    for (let i = 0; i < 3; i++) {
      timers.advance(250);
      n.failed(refused);
    }
    expect(lines).toEqual([]);
    timers.advance(250);
    expect(lines.length).toBe(1);
    expect(lines[0]!.msg).toBe(
      "session abc has had no stripe to server:7000 for 1.0 s (3 re-dials failed, last: ECONNREFUSED connection refused); re-dialling, waiting up to 9.0 s more (grace 10.0 s) before the session is reset",
    );
    expect(lines[0]).toMatchObject({ level: "warn", event: "session.waiting", session: "abc", fields: { failedRedials: 3, secondsLeft: 9 } });
    // More failures and time: still one line.
    n.failed(refused);
    timers.advance(5000);
    expect(lines.length).toBe(1);
    n.back();
    expect(lines[1]!.msg).toBe("session abc: a stripe to server:7000 is back after 6.0 s without one (4 re-dials failed)");
  });

  test("an outage shorter than the notice delay logs nothing, and the next one is told afresh", () => {
    const { timers, lines, n } = make();
    n.lost(0);
    timers.advance(400);
    n.back();
    timers.advance(5000);
    expect(lines).toEqual([]);
    n.lost(0);
    timers.advance(1000);
    expect(lines.map((l) => l.event)).toEqual(["session.waiting"]);
    expect(lines[0]!.msg).toContain("(0 re-dials failed)");
    n.stop(); // the session ended: nothing more, and no timer left
    expect(timers.pending.size).toBe(0);
  });
});

describe("statsEvents (SIGUSR1)", () => {
  test("a line per session and one per stripe, each naming the session; the figures as fields", () => {
    const s: SessionSnapshot = {
      id: "0123456789ab",
      listener: "127.0.0.1:2222",
      remote: "[::1]:50000",
      startedAt: 1_000_000,
      bytesUp: 3 * 1024 * 1024,
      bytesDown: 2048,
      sendBufferBytes: 65536,
      reorderBytes: 0,
      stripeDeaths: 1,
      resentBytes: 4096,
      stripes: [
        { index: 0, usable: true, rateBytesPerSecond: 4_010_000, inflightBytes: 262144, rttSeconds: 0.0213, stalls: 0, resentBytes: 0, sentBytes: 1048576, receivedBytes: 1024 },
        { index: 2, usable: true, rateBytesPerSecond: 0, inflightBytes: 0, rttSeconds: 0, stalls: 2, resentBytes: 4096, sentBytes: 0, receivedBytes: 0, capBytes: 131072 },
        { index: 3, usable: true, rateBytesPerSecond: 4e6, inflightBytes: 90_000, rttSeconds: 0.0262, stalls: 0, resentBytes: 0, sentBytes: 0, receivedBytes: 0, capBytes: 148_000.4, minRttSeconds: 0.0211, queueSeconds: 0.0051 },
      ],
    };
    const ev = statsEvents([s], 1_012_345);
    expect(ev.map((e) => e.msg)).toEqual([
      "session 0123456789ab [::1]:50000 age 12.3 s up 3.0 MiB down 2.0 KiB stripes 3/3 store 64.0 KiB reorder 0 B deaths 1 resent 4.0 KiB",
      "session 0123456789ab stripe 0: 4.01 MB/s in flight 256.0 KiB rtt 21.3 ms stalls 0 resent 0 B sent 1.0 MiB received 1.0 KiB",
      "session 0123456789ab stripe 2: 0.00 MB/s in flight 0 B rtt 0.0 ms cap 128.0 KiB stalls 2 resent 4.0 KiB sent 0 B received 0 B",
      // The rate scheduler's view (issue 11): cap, minimum RTT and the queue the stripe holds.
      "session 0123456789ab stripe 3: 4.00 MB/s in flight 87.9 KiB rtt 26.2 ms cap 144.5 KiB min 21.1 ms queue 5.1 ms stalls 0 resent 0 B sent 0 B received 0 B",
    ]);
    expect(ev.map((e) => [e.event, e.session])).toEqual([
      ["stats.session", "0123456789ab"],
      ["stats.stripe", "0123456789ab"],
      ["stats.stripe", "0123456789ab"],
      ["stats.stripe", "0123456789ab"],
    ]);
    expect(ev[3]!.fields).toMatchObject({ stripe: 3, minRttSeconds: 0.0211, queueSeconds: 0.0051 });
    expect(ev[1]!.fields).toMatchObject({ stripe: 0, rateBytesPerSecond: 4_010_000, rttSeconds: 0.0213 });
  });

  test("reason labels are short and stable", () => {
    expect(["E_STRIPE_SILENT", "E_STRIPE_EOF", "ECONNRESET", "E_RECORD_AUTH", "E_SESSION_LIMIT"].map(reasonLabel)).toEqual([
      "silent",
      "eof",
      "econnreset",
      "record-auth",
      "session-limit",
    ]);
  });
});

describe("ProxyStats over real sessions", () => {
  test("counters add ended sessions to live ones; deaths by reason; re-dials counted on both sides; idle() waits for the last", async () => {
    const target = startTarget({ mode: "echo" });
    cleanup.push(() => target.stop());
    const server = startServer({ listen: { host: "127.0.0.1", port: 0 }, target: { host: "127.0.0.1", port: target.port }, auth: KEYED, log: () => {} });
    cleanup.push(() => server.stop());
    const fault = await startFaultProxy({ targetHost: "127.0.0.1", targetPort: server.port });
    cleanup.push(() => fault.stop());
    const client = startClient({ listen: { host: "127.0.0.1", port: 0 }, peer: { host: "127.0.0.1", port: fault.port }, auth: KEYED, stripes: 3, log: () => {} });
    cleanup.push(() => client.stop());

    const a = await converse(client.port);
    const one = randomData(3 * 1024 * 1024, 1);
    a.send(one);
    await a.received(one.byteLength);
    await until(() => fault.live().length === 3, "3 stripes up");
    // One stripe reset: a death on both sides, a re-dial by the client, a re-dialled JOIN at the server.
    fault.live()[0]!.reset();
    await until(() => client.stats.counters().redials === 1 && server.stats.counters().redials === 1, "the re-dial joined");
    expect(Object.values(client.stats.counters().stripeDeaths).reduce((t, n) => t + n, 0)).toBe(1);
    expect(Object.values(server.stats.counters().stripeDeaths).reduce((t, n) => t + n, 0)).toBe(1);

    let idle = false;
    void server.stats.idle().then(() => (idle = true));
    const b = await converse(client.port);
    const two = randomData(1024 * 1024, 2);
    b.send(two);
    expect(sha256(await b.received(two.byteLength))).toBe(sha256(two));
    expect((await b.end()).cleanEnd).toBe(true);
    await until(() => server.stats.liveSessions === 1, "session b ended on the server");
    // Ended (b) plus live (a), each way.
    expect(server.stats.counters()).toMatchObject({ sessionsTotal: 2, bytesUp: one.byteLength + two.byteLength, bytesDown: one.byteLength + two.byteLength });
    expect(client.stats.counters()).toMatchObject({ sessionsTotal: 2, bytesUp: one.byteLength + two.byteLength, bytesDown: one.byteLength + two.byteLength });
    expect(idle).toBe(false);
    expect((await a.end()).cleanEnd).toBe(true);
    await until(() => idle, "idle() resolved after the last session");
    const c = server.stats.counters();
    expect(c.sessionDurationSeconds.count).toBe(2);
    expect(c.stripeRttSeconds.count).toBeGreaterThanOrEqual(3);
    expect(server.stats.sessions()).toEqual([]);
  });

  test("the client says when a session has no stripe, and when one is back; the session survives the outage", async () => {
    const target = startTarget({ mode: "echo" });
    cleanup.push(() => target.stop());
    const server = startServer({ listen: { host: "127.0.0.1", port: 0 }, target: { host: "127.0.0.1", port: target.port }, auth: KEYED, log: () => {} });
    cleanup.push(() => server.stop());
    let fault: FaultProxy = await startFaultProxy({ targetHost: "127.0.0.1", targetPort: server.port });
    const port = fault.port;
    cleanup.push(() => fault.stop());
    const lines: string[] = [];
    const client = startClient({ listen: { host: "127.0.0.1", port: 0 }, peer: { host: "127.0.0.1", port }, auth: KEYED, stripes: 2, log: (l) => lines.push(l) });
    cleanup.push(() => client.stop());
    const conv = await converse(client.port);
    conv.send(randomData(1000, 1));
    await conv.received(1000);
    await until(() => fault.live().length === 2, "2 stripes up");

    // The path goes away: every stripe is reset and re-dials are refused until it comes back.
    await fault.stop();
    await until(() => lines.some((l) => l.includes("has had no stripe")), () => `a waiting line; got:\n${lines.join("\n")}`);
    const waiting = lines.filter((l) => l.includes("has had no stripe"));
    expect(waiting.length).toBe(1);
    expect(waiting[0]).toMatch(/^session \w+ has had no stripe to 127\.0\.0\.1:\d+ for 1\.\d s \((\d+) re-dials? failed, last: ECONNREFUSED [^)]*\); re-dialling, waiting up to [\d.]+ s more \(grace 10\.0 s\) before the session is reset$/);
    expect(Number(/\((\d+) re-dial/.exec(waiting[0]!)![1])).toBeGreaterThan(0);
    fault = await startFaultProxy({ targetHost: "127.0.0.1", targetPort: server.port, listenPort: port });
    await until(() => lines.some((l) => l.includes("is back after")), () => `a line saying a stripe is back; got:\n${lines.join("\n")}`);
    const more = randomData(100_000, 2);
    conv.send(more);
    await conv.received(1000 + more.byteLength);
    expect((await conv.end()).cleanEnd).toBe(true);
    expect(lines.filter((l) => l.includes("has had no stripe")).length).toBe(1);
  });
});
