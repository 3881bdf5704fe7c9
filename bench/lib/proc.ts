/**
 * Child processes for the end-to-end suite: spawn with a readiness signal, collect JSON lines from
 * stdout and a tail of stderr, wait for events with deadlines, kill reliably, and read /proc counters.
 * Every child is registered so that exit, Ctrl-C and failures kill it (and bench/tools/pdeathsig.ts is
 * preloaded into it, so even a SIGKILLed suite leaves no proxy behind). Paths in argv are relative to
 * the directory set with `runFrom` (default: the repository). Children are Bun scripts unless started
 * with `exec` (an external program, argv[0] its name).
 */

import type { Subprocess } from "bun";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";

/** Repository root (bench/lib/../..). */
export const ROOT = resolve(import.meta.dir, "../..");
/** Where children run from: the repository, or a snapshot of it (see `runFrom`). */
let workDir = ROOT;

/** Makes every child start from `dir` (a copy of the repository's src/ and bench/ tools). */
export function runFrom(dir: string): void {
  workDir = dir;
}
/** Linux clock ticks per second for /proc/PID/stat (CLK_TCK; 100 on every mainstream kernel config). */
export const CLK_TCK = 100;

/** Raised when a deadline passes; the message says what did not happen. */
export class TimeoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TimeoutError";
  }
}

/** A child that exited (or failed to bind) before it was ready. */
export class StartError extends Error {
  constructor(
    message: string,
    readonly portClash: boolean,
  ) {
    super(message);
    this.name = "StartError";
  }
}

type Json = Record<string, unknown>;

interface Waiter {
  pred: (e: Json) => boolean;
  resolve: (e: Json) => void;
  reject: (err: Error) => void;
}

/** Live children, for cleanup. */
const live = new Set<Child>();

/**
 * How a child tells us it listens: a JSON {"event":"ready"} line on stdout, a stderr line matching, or
 * nothing ("spawned": ready once started; for programs that print nothing, e.g. a client like scp).
 */
export type Readiness = "json" | "spawned" | RegExp;

/** One spawned process. */
export class Child {
  readonly proc: Subprocess<"pipe" | "ignore", "pipe", "pipe">;
  readonly pid: number;
  /** JSON objects read from stdout, in order. */
  readonly events: Json[] = [];
  /** Last lines of stderr and non-JSON stdout, for failure reports. */
  readonly tail: string[] = [];
  /** Every stderr line matching `keep` (e.g. session end lines), for per-run notes. */
  readonly kept: string[] = [];
  exitCode: number | null = null;
  readonly ready: Promise<void>;
  private readonly waiters = new Set<Waiter>();
  private readySeen = false;
  private readyResolve!: () => void;
  private readyReject!: (e: Error) => void;

  constructor(
    readonly name: string,
    argv: string[],
    private readonly readiness: Readiness,
    opts: { stdin?: boolean; keep?: RegExp; exec?: boolean } = {},
  ) {
    this.ready = new Promise<void>((res, rej) => {
      this.readyResolve = res;
      this.readyReject = rej;
    });
    this.ready.catch(() => {}); // observed by whoever awaits it; never an unhandled rejection
    // A Bun script gets the pdeath preload; an external program (`exec`, e.g. scp or haproxy) runs as
    // given and relies on the suite's own cleanup.
    const cmd = opts.exec ? argv : [process.execPath, "--preload", resolve(workDir, "bench/tools/pdeathsig.ts"), ...argv];
    this.proc = Bun.spawn(cmd, {
      cwd: workDir,
      stdin: opts.stdin ? "pipe" : "ignore",
      stdout: "pipe",
      stderr: "pipe",
      env: { ...process.env, BENCH_PARENT_PID: String(process.pid), NO_COLOR: "1" },
    }) as Subprocess<"pipe" | "ignore", "pipe", "pipe">;
    this.pid = this.proc.pid;
    live.add(this);
    if (readiness === "spawned") this.markReady();
    void this.readLines(this.proc.stdout, true);
    void this.readLines(this.proc.stderr, false, opts.keep);
    void this.proc.exited.then((code) => {
      this.exitCode = code;
      live.delete(this);
      const why = `${this.name} exited with code ${code}${this.tail.length ? `: ${this.tail.slice(-3).join(" | ")}` : ""}`;
      if (!this.readySeen) {
        const clash = this.tail.some((l) => /EADDRINUSE|address already in use|in use/i.test(l));
        this.readyReject(new StartError(why, clash));
      }
      for (const w of this.waiters) w.reject(new Error(why));
      this.waiters.clear();
    });
  }

  private markReady(): void {
    if (this.readySeen) return;
    this.readySeen = true;
    this.readyResolve();
  }

  private async readLines(stream: ReadableStream<Uint8Array>, stdout: boolean, keep?: RegExp): Promise<void> {
    const dec = new TextDecoder();
    let buf = "";
    const line = (l: string): void => {
      if (stdout && l.startsWith("{")) {
        try {
          const e = JSON.parse(l) as Json;
          this.events.push(e);
          if (e.event === "ready" && this.readiness === "json") this.markReady();
          for (const w of this.waiters) {
            if (w.pred(e)) {
              this.waiters.delete(w);
              w.resolve(e);
            }
          }
          return;
        } catch {
          // not JSON after all: keep it as text
        }
      }
      if (!l) return;
      this.tail.push(l);
      if (this.tail.length > 40) this.tail.shift();
      if (keep?.test(l)) this.kept.push(l);
      if (!stdout && this.readiness instanceof RegExp && this.readiness.test(l)) this.markReady();
    };
    try {
      for await (const chunk of stream) {
        buf += dec.decode(chunk, { stream: true });
        let i: number;
        while ((i = buf.indexOf("\n")) >= 0) {
          line(buf.slice(0, i));
          buf = buf.slice(i + 1);
        }
      }
    } catch {
      // the pipe broke because the process died; exit handling reports it
    }
    if (buf) line(buf);
  }

  /** Resolves with the first event (past or future) matching `pred`; rejects at the deadline or on exit. */
  waitEvent(pred: (e: Json) => boolean, timeoutMs: number, what: string): Promise<Json> {
    const seen = this.events.find(pred);
    if (seen) return Promise.resolve(seen);
    if (this.exitCode !== null) return Promise.reject(new Error(`${this.name} exited (code ${this.exitCode}) before ${what}`));
    return new Promise<Json>((res, rej) => {
      const t = setTimeout(() => {
        this.waiters.delete(w);
        rej(new TimeoutError(`${this.name}: ${what} did not happen within ${(timeoutMs / 1000).toFixed(0)} s`));
      }, timeoutMs);
      const w: Waiter = {
        pred,
        resolve: (e) => {
          clearTimeout(t);
          res(e);
        },
        reject: (err) => {
          clearTimeout(t);
          rej(err);
        },
      };
      this.waiters.add(w);
    });
  }

  /** Writes a command line to the child's stdin (children started with `stdin: true`). */
  send(line: string): void {
    const sink = this.proc.stdin as unknown as { write(s: string): void; flush(): void } | undefined;
    try {
      sink?.write(`${line}\n`);
      sink?.flush();
    } catch {
      // the child is gone; its exit is reported elsewhere
    }
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process has exited. */
  async kill(graceMs = 1500): Promise<void> {
    if (this.exitCode !== null) return;
    try {
      this.proc.kill("SIGTERM");
    } catch {
      // already gone
    }
    const exited = await Promise.race([this.proc.exited.then(() => true), Bun.sleep(graceMs).then(() => false)]);
    if (!exited) {
      try {
        this.proc.kill("SIGKILL");
      } catch {
        // already gone
      }
      await this.proc.exited;
    }
    live.delete(this);
  }
}

/** Waits for every child's readiness, with one deadline for all. */
export async function allReady(children: Child[], timeoutMs: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, rej) => {
    timer = setTimeout(() => {
      const slow = children.filter((c) => c.exitCode === null).map((c) => c.name);
      rej(new TimeoutError(`not ready within ${timeoutMs / 1000} s: ${slow.join(", ")}`));
    }, timeoutMs);
  });
  try {
    await Promise.race([Promise.all(children.map((c) => c.ready)), deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** Kills every live child at once (SIGTERM, SIGKILL after the grace period). */
export async function killAll(graceMs = 1500): Promise<void> {
  await Promise.all([...live].map((c) => c.kill(graceMs)));
}

/** Synchronous last resort (process 'exit' handler): SIGKILL whatever is still alive. */
export function killAllNow(): void {
  for (const c of live) {
    try {
      c.proc.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
  live.clear();
}

/** Number of children still running (0 after a clean run). */
export function liveCount(): number {
  return live.size;
}

/**
 * Free TCP ports on 127.0.0.1: bind `n` listeners on port 0 at once (so the ports are distinct), read
 * their ports, close them. A child may still lose the race for one; the runner retries on EADDRINUSE.
 */
export function freePorts(n: number): number[] {
  const ls: { port: number; stop(force?: boolean): void }[] = [];
  try {
    for (let i = 0; i < n; i++) ls.push(Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } }));
    return ls.map((l) => l.port);
  } finally {
    for (const l of ls) l.stop(true);
  }
}

/** utime + stime of a process in clock ticks (all its threads), or null when it is gone. */
export function cpuTicks(pid: number): number | null {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after "(comm)": state is field 3, utime 14, stime 15 (proc(5)).
    const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
    return Number(f[11]) + Number(f[12]);
  } catch {
    return null;
  }
}

/** Peak resident set (VmHWM) in bytes, or null when the process is gone. */
export function peakRss(pid: number): number | null {
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/** Resident set now (VmRSS) in bytes, or null when the process is gone. */
export function rssNow(pid: number): number | null {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}
