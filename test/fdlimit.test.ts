/**
 * Descriptor limits: reading RLIMIT_NOFILE, the connection limits below it, and the ConnectionGate
 * (pure, clock passed in); then the gate with real sockets in a child process under `ulimit -n 64`.
 */

import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { join } from "node:path";
import type { Socket } from "bun";
import { ConnectionGate, RUNTIME_FDS, connectionLimits, parseProcLimits, readNofileLimit } from "../src/util/fdlimit.ts";
import { until } from "./helpers/util.ts";

const PROC_LIMITS = `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            1024                 524288               files
Max locked memory         8388608              8388608              bytes
`;

describe("reading the descriptor limit", () => {
  test("parses /proc/self/limits, including unlimited", () => {
    expect(parseProcLimits(PROC_LIMITS)).toEqual({ soft: 1024, hard: 524288 });
    expect(parseProcLimits(PROC_LIMITS.replace("1024                 524288", "unlimited            unlimited"))).toEqual({
      soft: Infinity,
      hard: Infinity,
    });
    expect(parseProcLimits("Max cpu time unlimited unlimited seconds\n")).toBeUndefined();
  });

  test("falls back to the shell's ulimit where there is no /proc, and to undefined when nothing works", () => {
    const noProc = () => {
      throw Object.assign(new Error("no such file"), { code: "ENOENT" });
    };
    expect(readNofileLimit(noProc, (a) => (a === "-Sn" ? "256\n" : "unlimited\n"))).toEqual({ soft: 256, hard: Infinity });
    expect(readNofileLimit(noProc, () => undefined)).toBeUndefined();
    expect(readNofileLimit(() => PROC_LIMITS, () => "1\n")).toEqual({ soft: 1024, hard: 524288 });
  });

  test("on this machine it agrees with the shell's ulimit -Sn", () => {
    const sh = Bun.spawnSync(["sh", "-c", "ulimit -Sn"], { stdout: "pipe" }).stdout.toString().trim();
    const got = readNofileLimit();
    expect(got).toBeDefined();
    expect(String(got!.soft === Infinity ? "unlimited" : got!.soft)).toBe(sh);
  });
});

describe("connectionLimits", () => {
  test("keeps the runtime's descriptors and a reserve for dials below the soft limit", () => {
    expect(connectionLimits(1024)).toEqual({ soft: 1024, total: 1024 - RUNTIME_FDS, accept: 992 - 62 });
    expect(connectionLimits(64)).toEqual({ soft: 64, total: 32, accept: 16 });
    expect(connectionLimits(20_000)).toEqual({ soft: 20_000, total: 19_968, accept: 19_968 - 1248 });
  });

  test("a configured maximum only lowers the accept limit; unknown or unlimited means the fallback", () => {
    expect(connectionLimits(1024, 100).accept).toBe(100);
    expect(connectionLimits(1024, 5000).accept).toBe(930);
    expect(connectionLimits(undefined)).toEqual(connectionLimits(1024));
    expect(connectionLimits(Infinity, 50_000).soft).toBe(50_000);
  });
});

describe("ConnectionGate", () => {
  function rig(soft = 1024) {
    const log: string[] = [];
    const clock = { t: 0 };
    const gate = new ConnectionGate(connectionLimits(soft), (l) => log.push(l), () => clock.t);
    return { gate, log, clock };
  }

  test("accepts up to the limit, then closes new connections at once, logging the condition once", () => {
    const { gate, log } = rig();
    const decisions = Array.from({ length: 2000 }, () => gate.onAccept());
    expect(decisions.filter((d) => d === "accept")).toHaveLength(930);
    expect(decisions.slice(930).every((d) => d === "close")).toBe(true);
    expect([gate.accepted, gate.refusedTotal, gate.full]).toEqual([930, 1070, true]);
    expect(log).toEqual([
      "connection limit reached (930 accepted, 930 in all; descriptor limit 1024: up to 930 connections accepted, 992 in all): " +
        "closing new connections at once until 884 are open",
    ]);
  });

  test("resumes only once the count has fallen 5 % below the limit, and says how many it closed", () => {
    const { gate, log, clock } = rig();
    for (let k = 0; k < 940; k++) gate.onAccept();
    clock.t = 12_300;
    for (let k = 0; k < 40; k++) gate.onClose("accepted"); // 890 open: still above 884
    expect(gate.onAccept()).toBe("close");
    for (let k = 0; k < 6; k++) gate.onClose("accepted"); // 884
    expect(gate.full).toBe(false);
    expect(log[1]).toBe("accepting connections again (884 open): 11 closed at once over 12.3 s");
    expect(gate.onAccept()).toBe("accept");
    expect(log).toHaveLength(2);
  });

  test("dials may use the reserve while accepts are closed, up to the total; refusals are logged once", () => {
    const { gate, log } = rig();
    for (let k = 0; k < 1000; k++) gate.onAccept(); // 930 accepted
    let dials = 0;
    while (gate.onDial()) dials++;
    expect(dials).toBe(992 - 930);
    expect(gate.onDial()).toBe(false);
    expect(gate.dialsRefused).toBe(2);
    expect(log.filter((l) => l.startsWith("descriptor limit: cannot open outgoing"))).toHaveLength(1);
    gate.onClose("dialled");
    expect(gate.onDial()).toBe(true);
    expect(log.at(-1)).toBe("outgoing connections possible again (991 open)");
  });

  test("property: whatever the order of events, counts stay within the limits and never go negative", () => {
    fc.assert(
      fc.property(fc.integer({ min: 40, max: 300 }), fc.array(fc.constantFrom("accept", "dial", "closeA", "closeD"), { maxLength: 1500 }), (soft, ops) => {
        const gate = new ConnectionGate(connectionLimits(soft), () => {}, () => 0);
        let a = 0;
        let d = 0;
        for (const op of ops) {
          if (op === "accept") {
            if (gate.onAccept() === "accept") a++;
          } else if (op === "dial") {
            if (gate.onDial()) d++;
          } else if (op === "closeA" && a > 0) {
            gate.onClose("accepted");
            a--;
          } else if (op === "closeD" && d > 0) {
            gate.onClose("dialled");
            d--;
          }
          expect([gate.accepted, gate.dialled]).toEqual([a, d]);
          expect(a).toBeLessThanOrEqual(gate.limits.accept);
          expect(a + d).toBeLessThanOrEqual(gate.limits.total);
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe("ConnectionGate with real sockets", () => {
  test("under ulimit -n 64, 100 connections: the excess is closed at once, descriptors never run out, and it accepts again", async () => {
    const fixture = join(import.meta.dir, "fixtures", "gated-server.ts");
    const child = Bun.spawn(["sh", "-c", `ulimit -n 64 && exec "${process.execPath}" "${fixture}"`], { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
    const lines: string[] = [];
    const wake = new Set<() => void>();
    (async () => {
      const decoder = new TextDecoder();
      let buf = "";
      for await (const chunk of child.stdout) {
        buf += decoder.decode(chunk);
        for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
          lines.push(buf.slice(0, nl));
          buf = buf.slice(nl + 1);
          for (const w of wake) w();
        }
      }
    })();
    const report = async () => {
      const before = lines.length;
      child.stdin.write("report\n");
      child.stdin.flush();
      await until(() => lines.slice(before).some((l) => l.startsWith('{"accepted"')), "the child did not answer a report", 5000, wake);
      return JSON.parse(lines.slice(before).find((l) => l.startsWith('{"accepted"'))!);
    };
    const clients: Socket<{ closed: boolean }>[] = [];
    // Connections the server reset before our connect() resolved (it closes them at once).
    let resetAtConnect = 0;
    const closedByServer = () => resetAtConnect + clients.filter((c) => c.data.closed).length;
    const dial = (port: number) =>
      Bun.connect<{ closed: boolean }>({
        hostname: "127.0.0.1",
        port,
        data: { closed: false },
        socket: {
          data() {},
          close(s) {
            s.data.closed = true;
          },
          error() {},
        },
      });
    try {
      await until(() => lines.length > 0, "the gated server did not start", 10_000, wake);
      const { port, limits } = JSON.parse(lines[0]!);
      expect(limits).toEqual({ soft: 64, total: 32, accept: 16 });
      for (let k = 0; k < 100; k++) {
        try {
          clients.push(await dial(port));
        } catch (err) {
          if ((err as { code?: string }).code !== "ECONNRESET") throw err;
          resetAtConnect++;
        }
      }
      await until(() => closedByServer() === 84, () => `closed by the server: ${closedByServer()} of 84`, 10_000);
      const full = await report();
      expect(full).toMatchObject({ accepted: 16, refused: 84, full: true });
      expect(typeof full.fds).toBe("number");
      expect(full.fds).toBeLessThan(64);
      expect(typeof full.rss).toBe("number"); // memoryUsage() works: descriptors never ran out
      expect(lines.filter((l) => l.startsWith("LOG connection limit reached"))).toHaveLength(1);
      // The accepted ones leave; new connections are accepted again.
      for (const c of clients) if (!c.data.closed) c.end();
      await until(() => lines.some((l) => l.startsWith("LOG accepting connections again")), "the gate did not resume", 10_000, wake);
      const again = await dial(port);
      clients.push(again);
      let accepted = 0;
      for (let tries = 0; tries < 100 && accepted !== 1; tries++) {
        accepted = (await report()).accepted;
        if (accepted !== 1) await Bun.sleep(20); // the child has not seen the accept yet
      }
      expect(accepted).toBe(1);
      expect(again.data.closed).toBe(false);
    } finally {
      for (const c of clients) c.terminate();
      child.stdin.write("exit\n");
      child.stdin.flush();
      await Promise.race([child.exited, Bun.sleep(2000)]);
      child.kill();
    }
  }, 60_000);
});
