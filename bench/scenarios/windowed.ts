/**
 * windowed: apps that keep a bounded window of their own data unacknowledged — ssh, scp, rsync over
 * ssh — through the capped link (issue 11). Such an app runs at min(path rate, window ÷ round trip), so
 * whatever queue the pair adds under load costs it rate.
 *
 * - The windowed app (bench/tools/windowed-app.ts, as app and target): 2 MiB window (OpenSSH's channel
 *   window), the receiver acknowledging every 64 KiB, through N = 1, 4, 8, 16 stripes, upload and
 *   download. Figures: the rate against min(N × cap, window ÷ base round trip), and the app's own round
 *   trip (p50, p95) under load against the base round trip (the same app with a 1 KiB window: one
 *   message at a time through the same chain).
 * - Real scp of 256 MiB to a private sshd behind the pair, N = 8 and 16, when ssh, scp and sshd are
 *   installed (setup() installs them with apt-get when they are missing; where that fails, the runs
 *   fail with "not measured: … not installed" and the rows say so instead of a figure).
 *
 * Little's law bounds the round trip under load: with the window always full, round trip = window ÷
 * rate, 524, 131, 65.5 and 32.8 ms at 4 MB/s per stripe for N = 1, 4, 8, 16. Only from N = 15 on can it
 * be within 15 ms of a 20 ms path at full rate; below that, the rest of the window waits in the
 * client's send store, not in the stripes (docs/design.md).
 */

import { sshdConfigText } from "../lib/sshd.ts";
import { existsSync, mkdirSync, mkdtempSync, openSync, closeSync, rmSync, statSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir, userInfo } from "node:os";
import { join as joinPath } from "node:path";
import { Chain, LOOP, clientProc, linkProc, runTransfer, serverProc, type ChainPlan } from "../lib/chain.ts";
import { join, medianOf, plainFigure, rateFigure } from "../lib/figures.ts";
import { freePorts } from "../lib/proc.ts";
import { MB, MiB, fmt } from "../lib/stats.ts";
import type { Figure, RunResult, RunSpec, Scenario, TransferEvents } from "../lib/types.ts";

const STRIPES = [1, 4, 8, 16] as const;
const DIRS = ["up", "down"] as const;
/** The app's window and acknowledgement block (OpenSSH: 2 MiB channel window). */
const WINDOW = 2 * MiB;
const BLOCK = 64 * 1024;
/** The base round trip: one 1 KiB message at a time. */
const BASE_BLOCK = 1024;
/** Stripe counts with a rate target (0.9 of the ideal), and the one whose round trip is judged. */
const RATE_TARGET_FROM = 8;
const RTT_JUDGED = 16;
/** The round trip under load may exceed the base by less than this (ms), where Little's law allows. */
const RTT_WITHIN_MS = 15;
const SCP_STRIPES = [8, 16] as const;
const SCP_BYTES = 256 * MiB;
const TOOL = "bench/tools/windowed-app.ts";
const SSHD = "/usr/sbin/sshd";
const KEY = { base: "windowed/base", run: (dir: string, n: number) => `windowed/${dir}/N${n}`, scp: (n: number) => `windowed/scp/N${n}` };

/** Why scp cannot be measured on this machine (undefined: it can). */
function sshMissing(): string | undefined {
  const missing = ["ssh", "scp", "ssh-keygen"].filter((t) => !Bun.which(t));
  if (!existsSync(SSHD)) missing.push("sshd");
  return missing.length > 0 ? `${missing.join(", ")} not installed` : undefined;
}

/** Set by setup() when installing ssh failed: the scp runs report it. */
let installFailed: string | undefined;

async function sh(cmd: string[], timeoutMs = 120_000): Promise<{ code: number; out: string; err: string; ms: number }> {
  const t0 = performance.now();
  const p = Bun.spawn(cmd, { stdin: "ignore", stdout: "pipe", stderr: "pipe", env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" } });
  const timer = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
  const code = await p.exited;
  clearTimeout(timer);
  return { code, out, err, ms: performance.now() - t0 };
}

/** The windowed transfer of one direction through N stripes (or, `base`, the 1 KiB ping-pong). */
function windowedSpec(o: { capMBps: number; delayMs: number }, T: number, dir: "up" | "down", n: number, base = false): RunSpec {
  const window = base ? BASE_BLOCK : WINDOW;
  const block = base ? BASE_BLOCK : BLOCK;
  const seconds = base ? Math.max(1, T / 2) : 2 * T;
  const warmup = Math.min(1000, (seconds * 1000) / 4);
  const args = ["--window", String(window), "--block", String(block), "--warmup-ms", String(warmup)];
  return {
    key: base ? KEY.base : KEY.run(dir, n),
    scenario: "windowed",
    label: base ? `base RTT N=${n}` : `2 MiB N=${n} ${dir}`,
    dir,
    path: "pair",
    mid: "link",
    rates: [o.capMBps],
    delayMs: o.delayMs,
    stripes: n,
    bytes: 0,
    conns: 1,
    hash: false,
    deadlineMs: seconds * 1000,
    timeoutMs: (seconds + 30) * 1000,
    args: { app: args, target: args },
    tools: { app: TOOL, target: TOOL },
  };
}

// --- scp ---------------------------------------------------------------------------------------------

/** Keys, sshd config directory and the file to copy: made once per suite run, removed at exit. */
interface SshKit {
  dir: string;
  key: string;
  file: string;
  user: string;
}
let kit: Promise<SshKit> | undefined;
const cleanups: (() => void)[] = [];
process.on("exit", () => {
  for (const c of cleanups.splice(0)) c();
});

async function sshKit(bytes: number): Promise<SshKit> {
  const dir = mkdtempSync(joinPath(tmpdir(), "bench-ssh-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const key = joinPath(dir, "id");
  for (const f of [joinPath(dir, "host"), key]) {
    const r = await sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f]);
    if (r.code !== 0) throw new Error(`ssh-keygen: ${r.err.trim()}`);
  }
  writeFileSync(joinPath(dir, "authorized_keys"), await Bun.file(`${key}.pub`).text());
  // sshd wants its privilege-separation directory.
  if (!existsSync("/run/sshd")) {
    mkdirSync("/run/sshd", { mode: 0o755 });
    cleanups.push(() => rmSync("/run/sshd", { recursive: true, force: true }));
  }
  // In /dev/shm, so reading and writing it is not what limits scp; incompressible bytes.
  const file = joinPath("/dev/shm", `bench-scp-${process.pid}.bin`);
  cleanups.push(() => rmSync(file, { force: true }));
  const fd = openSync(file, "w");
  const chunk = new Uint8Array(1 << 20);
  const w = new Uint32Array(chunk.buffer);
  let x = 0x2545f491;
  for (let done = 0; done < bytes; done += chunk.byteLength) {
    for (let i = 0; i < w.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      w[i] = x >>> 0;
    }
    writeSync(fd, chunk, 0, Math.min(chunk.byteLength, bytes - done));
  }
  closeSync(fd);
  // Bun's os.userInfo() may not know the name ("unknown"); id(1) does.
  const id = await sh(["id", "-un"]);
  return { dir, key, file, user: id.code === 0 && id.out.trim() ? id.out.trim() : userInfo().username };
}

function sshdConfig(k: SshKit, port: number): string {
  const path = joinPath(k.dir, `sshd_config_${port}`);
  writeFileSync(path, sshdConfigText(k.dir, port, joinPath(k.dir, `sshd_${port}.pid`)));
  return path;
}

/**
 * One scp run: sshd behind server, link and client; an ssh master connection through the pair first
 * (so the key exchange is not timed), then `scp` of the file, timed, over it.
 */
async function runScp(spec: RunSpec, run: number): Promise<RunResult> {
  const missing = installFailed ?? sshMissing();
  if (missing) throw new Error(`not measured: ${missing}`);
  kit ??= sshKit(spec.bytes);
  const k = await kit;
  const [pSshd, pLink, pServer, pClient] = freePorts(8) as [number, number, number, number];
  const addr = (p: number): string => `${LOOP}:${p}`;
  const plan: ChainPlan = {
    procs: [
      { name: "sshd", argv: [SSHD, "-D", "-e", "-f", sshdConfig(k, pSshd)], ready: /Server listening on/, exec: true },
      serverProc(spec, pServer, addr(pSshd)),
      linkProc(spec, pLink, addr(pServer)),
      clientProc(spec, pClient, addr(pLink)),
    ],
    entry: pClient,
  };
  const chain = await Chain.start(plan);
  const ctl = joinPath(k.dir, `ctl-${pClient}`);
  const dst = `${k.file}.${run}.dst`;
  const ssh = [
    "-i", k.key,
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "BatchMode=yes",
    "-o", "LogLevel=ERROR",
    "-o", `ControlPath=${ctl}`,
    "-o", `Port=${pClient}`,
  ];
  const host = `${k.user}@${LOOP}`;
  try {
    const master = await sh(["ssh", ...ssh, "-o", "ControlMaster=yes", "-o", "ControlPersist=60", "-fN", host], 30_000);
    if (master.code !== 0) throw new Error(`ssh master connection: ${master.err.trim() || `exit ${master.code}`}`);
    const cpu0 = chain.cpuMark();
    const r = await sh(["scp", "-q", ...ssh, k.file, `${host}:${dst}`], spec.timeoutMs);
    const cpu = chain.cpuSince(cpu0);
    if (r.code !== 0) throw new Error(`scp exited ${r.code}: ${r.err.trim()}`);
    const got = existsSync(dst) ? statSync(dst).size : -1;
    const seconds = r.ms / 1000;
    const out: RunResult = { run, ok: true, bytes: spec.bytes, seconds, rate: spec.bytes / seconds, intact: got === spec.bytes, cpu, rss: {} };
    if (!out.intact) out.error = `scp wrote ${got} bytes, not ${spec.bytes}`;
    return out;
  } catch (err) {
    throw chain.withLogs(err);
  } finally {
    await sh(["ssh", ...ssh, "-O", "exit", host], 10_000).catch(() => undefined);
    rmSync(dst, { force: true });
    await chain.stop();
  }
}

// --- the scenario ------------------------------------------------------------------------------------

/** The sending side's report of a windowed transfer: the app's (upload) or the target's (download). */
function senderReport(ev: TransferEvents): Record<string, unknown> | undefined {
  if (ev.spec.dir === "up") return (ev.done.conns as Record<string, unknown>[] | undefined)?.[0];
  return ev.targetConns[0];
}

/** min(N × cap, window ÷ base round trip) in MB/s, the base round trip being the link's (2 × delay). */
function ideal(n: number, capMBps: number, delayMs: number): number {
  return Math.min(n * capMBps, delayMs > 0 ? WINDOW / MB / ((2 * delayMs) / 1000) : Infinity);
}

export const windowed: Scenario = {
  name: "windowed",
  description: "a 2 MiB-window app (like ssh) through N = 1, 4, 8, 16 capped stripes both ways, its round trip under load; real scp",
  reads: ["cap", "delay", "quick"],
  rateUnit: "MB/s",

  runs({ o, T }) {
    const specs: RunSpec[] = [];
    for (const dir of DIRS) for (const n of STRIPES) specs.push(windowedSpec(o, T, dir, n));
    specs.push(windowedSpec(o, T, "up", RTT_JUDGED, true));
    const bytes = o.quick ? 32 * MiB : SCP_BYTES;
    for (const n of SCP_STRIPES) {
      specs.push({
        key: KEY.scp(n),
        scenario: "windowed",
        label: `scp N=${n}`,
        dir: "up",
        path: "pair",
        mid: "link",
        rates: [o.capMBps],
        delayMs: o.delayMs,
        stripes: n,
        bytes,
        conns: 1,
        hash: false,
        deadlineMs: 0,
        // At a quarter of N × cap it still ends.
        timeoutMs: Math.ceil((4 * bytes) / (n * o.capMBps * MB)) * 1000 + 30_000,
      });
    }
    return specs;
  },

  async setup(_c, progress) {
    if (!sshMissing()) return;
    progress(`  windowed: ${sshMissing()}; installing openssh-server and openssh-client for the scp runs`);
    let r = await sh(["apt-get", "install", "-y", "-q", "openssh-server", "openssh-client"], 600_000).catch((e: Error) => ({ code: -1, err: e.message, out: "", ms: 0 }));
    if (r.code !== 0) {
      await sh(["apt-get", "update", "-q"], 600_000).catch(() => undefined);
      r = await sh(["apt-get", "install", "-y", "-q", "openssh-server", "openssh-client"], 600_000).catch((e: Error) => ({ code: -1, err: e.message, out: "", ms: 0 }));
    }
    const still = sshMissing();
    if (still) {
      installFailed = `${still} (apt-get install failed: ${r.err.trim().split("\n").pop() ?? `exit ${r.code}`})`;
      progress(`  windowed: scp runs will not be measured: ${installFailed}`);
    } else progress("  windowed: ssh installed");
  },

  measures: ({ o, T }) =>
    `- windowed: the windowed app (bench/tools/windowed-app.ts) keeps at most 2 MiB of its own data unacknowledged, the receiver acknowledging every 64 KiB (like OpenSSH's channel window), for ${2 * T} s through the link at ${o.capMBps} MB/s and ${o.delayMs} ms one way; rate = bytes / (connect → last byte); ideal = min(N × cap, 2 MiB ÷ ${2 * o.delayMs} ms); the app's round trip is from the write of a block's last byte to the ack covering it, after a warm-up, p50 and p95 over the run; the base round trip is the same app with a 1 KiB window (one message at a time) through 16 idle stripes. scp: ${o.quick ? "32" : "256"} MiB from /dev/shm to a private sshd on loopback behind the pair (upload), timed after an ssh master connection is up; OpenSSH's own 2 MiB window and ssh/sshd CPU are part of the figure.`,

  collect(ev: TransferEvents): Record<string, number> {
    const r = senderReport(ev);
    const rtt = r?.rtt as { n?: number; p50?: number; p95?: number } | undefined;
    if (!rtt?.n) return {};
    return { rttP50: rtt.p50 ?? 0, rttP95: rtt.p95 ?? 0, rttSamples: rtt.n, steadyMBps: Number(r?.steadyRate ?? 0) / MB };
  },

  run(spec: RunSpec, run: number): Promise<RunResult> {
    if (spec.key.startsWith("windowed/scp/")) return runScp(spec, run);
    return runTransfer(spec, run, { collect: windowed.collect });
  },

  figures({ o, results }) {
    const cap = o.capMBps;
    const p50 = (key: string): number | null => medianOf(results, key, (r) => r.figures?.rttP50 ?? null);
    const base = p50(KEY.base);
    const rows: Figure[] = [
      plainFigure(results, {
        scenario: "windowed",
        case: `base round trip: 1 KiB at a time, N=${RTT_JUDGED}`,
        key: KEY.base,
        unit: "ms",
        pick: (r) => r.figures?.rttP50 ?? null,
        note: `the link alone: ${2 * o.delayMs} ms`,
      }),
    ];
    for (const dir of DIRS) {
      const arrow = dir === "up" ? "upload" : "download";
      for (const n of STRIPES) {
        const key = KEY.run(dir, n);
        const rate = medianOf(results, key, (r) => r.rate / MB);
        const bound = rate ? (WINDOW / MB / rate) * 1000 : null;
        const p95 = medianOf(results, key, (r) => r.figures?.rttP95 ?? null);
        rows.push(
          rateFigure(results, {
            scenario: "windowed",
            case: `${arrow}: 2 MiB window, N=${n}`,
            key,
            unit: "MB/s",
            reference: { label: "min(N×cap, W÷RTT)", value: ideal(n, cap, o.delayMs) },
            minRatio: n >= RATE_TARGET_FROM ? 0.9 : undefined,
          }),
        );
        const rtt = plainFigure(results, {
          scenario: "windowed",
          case: `${arrow}: app round trip p50 under load, N=${n}`,
          key,
          unit: "ms",
          pick: (r) => r.figures?.rttP50 ?? null,
          note: join(p95 !== null ? `p95 ${fmt(p95, 1)} ms` : "", bound !== null ? `Little's law: ≥ W ÷ rate = ${fmt(bound, 1)} ms` : ""),
        });
        if (base !== null) rtt.reference = { label: "base", value: base };
        if (n === RTT_JUDGED && base !== null) rtt.target = { kind: "median", below: base + RTT_WITHIN_MS, text: `< base + ${RTT_WITHIN_MS} ms` };
        rows.push(rtt);
      }
    }
    for (const n of SCP_STRIPES) {
      const key = KEY.scp(n);
      const client = medianOf(results, key, (r) => r.cpu.client ?? null);
      const secs = medianOf(results, key, (r) => r.seconds);
      rows.push(
        rateFigure(results, {
          scenario: "windowed",
          case: `scp ${o.quick ? 32 : 256} MiB upload, N=${n}`,
          key,
          unit: "MB/s",
          reference: { label: "N×cap", value: n * cap },
          minRatio: 0.9,
          note: client !== null && secs ? `client proxy ${fmt(client / secs, 2)} cores busy` : "",
        }),
      );
    }
    return rows;
  },
};
