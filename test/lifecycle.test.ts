/** Drain, stop and reload: the pure state machine and its driver, with a fake clock and fake proxies. */

import { describe, expect, test } from "bun:test";
import { ConfigFileError, parseArgs, type RunConfig } from "../src/cli/args.ts";
import type { StriperError } from "../src/errors.ts";
import { Lifecycle, diffConfig, runLifecycle, type Clock, type Drainable, type LifecycleSignal } from "../src/ops/lifecycle.ts";

describe("Lifecycle (pure)", () => {
  test("SIGTERM drains until every session ends; a second signal stops at once", () => {
    const m = new Lifecycle(30_000);
    expect(m.signal("SIGTERM", 1000)).toEqual({ kind: "drain", deadline: 31_000 });
    expect(m.state).toBe("draining");
    expect(m.tick(30_999)).toEqual({ kind: "ignore", why: "before the deadline" });
    expect(m.signal("SIGINT", 2000)).toEqual({ kind: "stop", reason: "second-signal" });
    expect(m.state).toBe("stopped");
    expect(m.signal("SIGTERM", 3000)).toEqual({ kind: "ignore", why: "already stopped" });
    expect(m.drained()).toEqual({ kind: "ignore", why: "drained while stopped" });
  });

  test("the deadline stops a drain that has not finished; drained before it stops cleanly", () => {
    const a = new Lifecycle(500);
    a.signal("SIGINT", 0);
    expect(a.tick(500)).toEqual({ kind: "stop", reason: "deadline" });
    const b = new Lifecycle(500);
    b.signal("SIGTERM", 0);
    expect(b.drained()).toEqual({ kind: "stop", reason: "drained" });
    expect(b.tick(600)).toEqual({ kind: "ignore", why: "timer while stopped" });
  });

  test("a zero drain timeout stops at the first signal", () => {
    expect(new Lifecycle(0).signal("SIGTERM", 5)).toEqual({ kind: "stop", reason: "deadline" });
  });

  test("SIGHUP reloads only while accepting; SIGUSR1 prints statistics until stopped", () => {
    const m = new Lifecycle(100);
    expect(m.signal("SIGHUP", 0)).toEqual({ kind: "reload" });
    expect(m.signal("SIGUSR1", 0)).toEqual({ kind: "stats" });
    m.signal("SIGTERM", 0);
    expect(m.signal("SIGHUP", 1)).toEqual({ kind: "ignore", why: "reload ignored while draining" });
    expect(m.signal("SIGUSR1", 1)).toEqual({ kind: "stats" });
    expect(m.drained().kind).toBe("stop");
    expect(m.signal("SIGUSR1", 2)).toEqual({ kind: "ignore", why: "already stopped" });
  });
});

describe("diffConfig", () => {
  const base = parseArgs(["server", "--listen", "127.0.0.1:1", "--target", "h:2"]) as RunConfig;
  test("names what changed; every option today needs a restart", () => {
    expect(diffConfig(base, base)).toEqual({ changed: [], needRestart: [] });
    const next = parseArgs(["server", "--listen", "127.0.0.1:1", "--target", "h:3", "--window", "65536", "--max-sessions", "9"]) as RunConfig;
    expect(diffConfig(base, next)).toEqual({ changed: ["max-sessions", "target", "window"], needRestart: ["max-sessions", "target", "window"] });
    const two = { ...base, listeners: [...base.listeners, ...base.listeners] };
    expect(diffConfig(base, two).changed).toEqual(["listener"]);
  });
});

/** Timers that run when the test moves time on. */
class FakeClock implements Clock {
  t = 0;
  /** Timers fire this many ms before their time (real timers do, by the monotonic clock). */
  constructor(private readonly early = 0) {}
  private timers: { at: number; fn: () => void; id: number }[] = [];
  private seq = 0;
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.seq;
    this.timers.push({ at: this.t + ms, fn, id });
    return id;
  }
  clearTimeout(id: unknown): void {
    this.timers = this.timers.filter((x) => x.id !== id);
  }
  advance(ms: number): void {
    this.t += ms;
    for (const x of this.timers.filter((y) => y.at - this.early <= this.t)) {
      this.clearTimeout(x.id);
      x.fn();
    }
  }
}

/** A proxy whose sessions end when the test says so. */
class FakeUnit implements Drainable {
  liveSessions: number;
  draining = false;
  stoppedWith: StriperError | undefined;
  private finish: (() => void) | undefined;
  constructor(live: number) {
    this.liveSessions = live;
  }
  drain(): Promise<void> {
    this.draining = true;
    return new Promise((resolve) => (this.finish = resolve));
  }
  endAll(): void {
    this.liveSessions = 0;
    this.finish?.();
  }
  stop(reason: StriperError): void {
    this.stoppedWith ??= reason;
  }
}

function harness(opts: { drainTimeoutMs?: number; config?: RunConfig; reread?: () => Promise<RunConfig>; early?: number } = {}) {
  const clock = new FakeClock(opts.early);
  const units = [new FakeUnit(2), new FakeUnit(1)];
  const log: string[] = [];
  const exits: number[] = [];
  const applied: string[][] = [];
  const handlers = new Map<LifecycleSignal, () => void>();
  let stats = 0;
  const h = runLifecycle({
    units,
    drainTimeoutMs: opts.drainTimeoutMs ?? 30_000,
    log: (l) => log.push(l),
    exit: (c) => exits.push(c),
    stats: () => stats++,
    config: opts.config,
    reread: opts.reread,
    apply: (_next, changed) => applied.push(changed),
    signals: { on: (sig, fn) => handlers.set(sig, fn) },
    clock,
  });
  const send = (sig: LifecycleSignal) => handlers.get(sig)!();
  return { clock, units, log, exits, applied, send, h, stats: () => stats };
}

const tick = () => new Promise((r) => setTimeout(r, 0));

describe("runLifecycle", () => {
  test("SIGTERM: every unit drains; when the last session ends the process exits 0", async () => {
    const t = harness();
    t.send("SIGTERM");
    expect(t.h.state()).toBe("draining");
    expect(t.units.every((u) => u.draining)).toBe(true);
    expect(t.log[0]).toBe("SIGTERM: draining 3 session(s), new ones refused; up to 30000 ms (a second SIGTERM stops at once)");
    t.clock.advance(1000);
    t.units[0]!.endAll();
    await tick();
    expect(t.exits).toEqual([]);
    t.clock.advance(500);
    t.units[1]!.endAll();
    await tick();
    expect(t.h.state()).toBe("stopped");
    expect(t.exits).toEqual([0]);
    expect(t.log.at(-1)).toBe("stopped: every session ended (1500 ms)");
    expect(t.units.map((u) => u.stoppedWith?.code)).toEqual(["E_SHUTDOWN", "E_SHUTDOWN"]);
  });

  test("units stop accepting before the line that says new sessions are refused is written", () => {
    const t = harness();
    const seen: boolean[] = [];
    const h = runLifecycle({ units: t.units, drainTimeoutMs: 1000, log: () => seen.push(t.units.every((u) => u.draining)), exit: () => {}, stats: () => {}, clock: t.clock });
    h.signal("SIGTERM");
    expect(seen).toEqual([true]);
  });

  test("the drain deadline resets what is left with E_DRAIN_TIMEOUT and says how many", async () => {
    const t = harness({ drainTimeoutMs: 2000 });
    t.send("SIGINT");
    t.units[1]!.endAll();
    t.clock.advance(1999);
    expect(t.exits).toEqual([]);
    t.clock.advance(1);
    expect(t.exits).toEqual([0]);
    expect(t.units[0]!.stoppedWith?.code).toBe("E_DRAIN_TIMEOUT");
    expect(t.log.at(-1)).toBe("stopped: drain deadline of 2000 ms passed, 2 session(s) reset (E_DRAIN_TIMEOUT)");
    // A drain finishing afterwards changes nothing.
    t.units[0]!.endAll();
    await tick();
    expect(t.exits).toEqual([0]);
  });

  test("a deadline timer that fires early is armed again: the drain still ends at the deadline", () => {
    const t = harness({ drainTimeoutMs: 2000, early: 1 });
    t.send("SIGTERM");
    t.clock.advance(1999); // the timer fires at 1999: before the deadline, so ignored and re-armed
    expect(t.exits).toEqual([]);
    expect(t.h.state()).toBe("draining");
    t.clock.advance(1);
    expect(t.exits).toEqual([0]);
    expect(t.log.at(-1)).toBe("stopped: drain deadline of 2000 ms passed, 3 session(s) reset (E_DRAIN_TIMEOUT)");
  });

  test("a second SIGTERM stops at once", () => {
    const t = harness();
    t.send("SIGTERM");
    t.send("SIGTERM");
    expect(t.exits).toEqual([0]);
    expect(t.log.at(-1)).toBe("stopped: second signal, 3 session(s) reset (E_SHUTDOWN)");
    t.clock.advance(60_000);
    expect(t.exits).toEqual([0]);
  });

  test("SIGUSR1 prints statistics and changes nothing", () => {
    const t = harness();
    t.send("SIGUSR1");
    t.send("SIGUSR1");
    expect(t.stats()).toBe(2);
    expect(t.h.state()).toBe("accepting");
  });

  describe("SIGHUP", () => {
    const config = parseArgs(["server", "--listen", "127.0.0.1:1", "--target", "h:2"]) as RunConfig;
    const withFile = { ...config, configPath: "/etc/s.toml" };

    test("a valid, unchanged config is applied (keys are re-read) and logged", async () => {
      const t = harness({ config: withFile, reread: async () => withFile });
      t.send("SIGHUP");
      await t.h.reloading;
      expect(t.applied).toEqual([[]]);
      expect(t.log).toEqual(["SIGHUP: config reloaded (no option changed)"]);
    });

    test("a broken config is refused with one line and the running one stays", async () => {
      const t = harness({ config: withFile, reread: async () => Promise.reject(new ConfigFileError("/etc/s.toml:3: window: must be between 65536 and 1073741824, got 1")) });
      t.send("SIGHUP");
      await t.h.reloading;
      expect(t.applied).toEqual([]);
      expect(t.log).toEqual(["SIGHUP: reload refused, keeping the running config: /etc/s.toml:3: window: must be between 65536 and 1073741824, got 1"]);
      expect(t.h.state()).toBe("accepting");
    });

    test("a change that needs a restart is refused, naming the options", async () => {
      const next = parseArgs(["server", "--listen", "127.0.0.1:9", "--target", "h:2"]) as RunConfig;
      const t = harness({ config: withFile, reread: async () => ({ ...next, configPath: "/etc/s.toml" }) });
      t.send("SIGHUP");
      await t.h.reloading;
      expect(t.applied).toEqual([]);
      expect(t.log).toEqual(["SIGHUP: reload refused, keeping the running config: listen changed, which needs a restart"]);
    });

    test("without a config file there is nothing to re-read", async () => {
      const t = harness({ config });
      t.send("SIGHUP");
      await t.h.reloading;
      expect(t.log).toEqual(["SIGHUP: no --config file to re-read; nothing changed"]);
    });

    test("a reload that finishes after a drain began is dropped", async () => {
      let release: (c: RunConfig) => void = () => {};
      const t = harness({ config: withFile, reread: () => new Promise((r) => (release = r)) });
      t.send("SIGHUP");
      t.send("SIGTERM");
      release(withFile);
      await t.h.reloading;
      expect(t.applied).toEqual([]);
      expect(t.log.at(-1)).toBe("SIGHUP: reload dropped, the process is draining");
      t.send("SIGHUP");
      expect(t.log.at(-1)).toBe("SIGHUP: reload ignored while draining");
    });
  });
});
