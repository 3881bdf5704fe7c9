/** Contained callbacks (src/util/guard.ts) and the memory governor's tick: a throw never ends the process. */

import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { ConnectError } from "../src/errors.ts";
import { MemoryGovernor } from "../src/proxy/governor.ts";
import { guardPromise, guarded, guardedTimeout, rateLimitedReporter, setGuardReporter } from "../src/util/guard.ts";

const FIXTURE = join(import.meta.dir, "fixtures", "throwing-timer.ts");

/** Captures contained throws for the duration of `fn`. */
async function capturing(fn: (reports: [string, unknown][]) => Promise<void> | void): Promise<void> {
  const reports: [string, unknown][] = [];
  const previous = setGuardReporter((name, err) => reports.push([name, err]));
  try {
    await fn(reports);
  } finally {
    setGuardReporter(previous);
  }
}

describe("guarded callbacks", () => {
  test("a throw is reported under the callback's name and contained; a value passes through", async () => {
    await capturing((reports) => {
      const boom = new Error("boom");
      const f = guarded("handler", (x: number) => {
        if (x < 0) throw boom;
        return x * 2;
      });
      expect(f(21)).toBe(42);
      expect(f(-1)).toBeUndefined();
      expect(reports).toEqual([["handler", boom]]);
    });
  });

  test("a reporter that throws does not undo the containment", async () => {
    const previous = setGuardReporter(() => {
      throw new Error("stderr is gone");
    });
    try {
      expect(guarded("x", () => {
        throw new Error("boom");
      })()).toBeUndefined();
    } finally {
      setGuardReporter(previous);
    }
  });

  test("timer callbacks and promise rejections are reported, not left uncaught", async () => {
    await capturing(async (reports) => {
      await new Promise<void>((resolve) => {
        guardedTimeout("timer", () => {
          setTimeout(resolve, 1);
          throw new Error("in a timer");
        }, 1);
      });
      guardPromise("connect", Promise.reject(new ConnectError("ECONNREFUSED", "refused")));
      await Bun.sleep(5);
      expect(reports.map(([n, e]) => [n, (e as Error).message])).toEqual([
        ["timer", "in a timer"],
        ["connect", "refused"],
      ]);
    });
  });

  test("reports are rate-limited per name, counting what they skipped", () => {
    const lines: string[] = [];
    const clock = { t: 0 };
    const report = rateLimitedReporter((l) => lines.push(l), 60_000, () => clock.t);
    for (let k = 0; k < 100; k++) report("governor", new Error(`failure ${k}`));
    report("relay", new ConnectError("ECONNRESET", "reset"));
    clock.t = 60_000;
    report("governor", new Error("failure 100"));
    expect(lines).toEqual([
      "internal error in governor (contained): E_INTERNAL failure 0",
      "internal error in relay (contained): ECONNRESET reset",
      "internal error in governor (contained): E_INTERNAL failure 100 (99 more since the last report)",
    ]);
  });

  test("in a real process, a timer that throws on every tick ends it plainly but not when guarded", async () => {
    const run = async (mode: string) => {
      const p = Bun.spawn([process.execPath, FIXTURE, mode], { stdout: "pipe", stderr: "pipe" });
      const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
      return { out: out.trim(), err, code };
    };
    const plain = await run("plain");
    expect(plain.code).not.toBe(0);
    expect(plain.out).toBe("");
    expect(plain.err).toContain("boom 1");
    const safe = await run("guarded");
    expect(safe).toMatchObject({ out: "survived 5", code: 0 });
    // Four throws, one report line (the rest are counted for the next report).
    expect(safe.err.trim().split("\n")).toHaveLength(1);
    expect(safe.err).toContain("internal error in test timer (contained): E_INTERNAL boom 1");
  });
});

describe("MemoryGovernor", () => {
  function rig(read: () => number) {
    const log: string[] = [];
    const clock = { t: 0 };
    let collections = 0;
    const g = new MemoryGovernor({ arrayBuffers: read, collect: () => collections++, log: (l) => log.push(l), now: () => clock.t });
    return { g, log, clock, collections: () => collections };
  }

  test("collects when array buffers exceed the threshold, and reads nothing without one", () => {
    let reads = 0;
    let bytes = 100;
    const r = rig(() => (reads++, bytes));
    r.g.tick();
    expect(reads).toBe(0);
    r.g.threshold = 150;
    r.g.tick();
    bytes = 200;
    r.g.tick();
    expect([reads, r.collections()]).toEqual([2, 1]);
  });

  test("memoryUsage() failing (EMFILE) is logged once per episode and never thrown; collections resume after", () => {
    let failing = true;
    const r = rig(() => {
      if (failing) throw Object.assign(new Error("Failed to get memory usage"), { name: "SystemError" });
      return 1e9;
    });
    r.g.threshold = 1;
    for (let k = 0; k < 100; k++) {
      r.clock.t = k * 50;
      r.g.tick();
    }
    expect(r.log).toEqual(["memory governor: cannot read memory usage (Failed to get memory usage); collections paused until it can"]);
    expect(r.collections()).toBe(0);
    failing = false;
    r.clock.t = 5000;
    r.g.tick();
    r.g.tick();
    expect(r.log[1]).toBe("memory governor: memory usage readable again after 5.0 s (100 readings failed)");
    expect(r.log).toHaveLength(2);
    expect(r.collections()).toBe(2);
    failing = true;
    r.g.tick();
    expect(r.log).toHaveLength(3); // a new episode, logged once again
  });
});
