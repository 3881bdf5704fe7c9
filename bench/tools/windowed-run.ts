#!/usr/bin/env bun
/**
 * Standalone driver for window-limited transfers through the proxy pair over the capped link: where
 * the queue is, and what a window-limited app (bench/tools/windowed-app.ts) or real scp gets.
 *
 *   bun bench/tools/windowed-run.ts [--stripes 1,4,8,16] [--direct] [--rate 4] [--delay 10]
 *        [--window 2097152] [--block 65536] [--seconds 8] [--runs 1] [--dir up|down]
 *        [--scheduler MODE] [--sample-ms 250] [--scp BYTES] [--scp-legacy] [--base]
 *        [--client-arg ARG]... [--server-arg ARG]... [--json FILE]
 *
 * Every component is its own process on loopback, on ports from a free-port probe: target (the
 * windowed app's target, or a private sshd), link (`src/main.ts link --rate R --delay D`), server, client
 * and app (the windowed app, or scp). `--direct` adds a run of the app through the link on ONE
 * connection (no proxies). `--base` adds a stop-and-wait run (window = block) per stripe count: the
 * unloaded app round trip through the same chain.
 *
 * While a transfer runs, every --sample-ms the driver sends SIGUSR1 to the sending proxy (per-stripe
 * in flight, RTT, rate), to the link (bytes in its delay lines and behind its token buckets, when the
 * link has that instrumentation; otherwise the link columns stay empty) and reads
 * `ss -tnmi` for the kernel queues of every socket in the chain (stripes, app and target sockets). Each
 * run prints one JSON line on stdout: the app's figures, and medians over the samples after warm-up of
 * each queue, summed over stripes and per stripe. A summary table goes to stderr at the end.
 *
 * scp (`--scp BYTES`): a private sshd (throwaway host and user keys in a temporary directory, loopback
 * port, no PAM, the root account, nothing outside the temporary directory changed except creating
 * /run/sshd when missing, removed again afterwards) is the target; one ssh master connection is opened
 * through the pair first, then `scp` of a BYTES file from /dev/shm to /dev/shm is timed over it, so the
 * figure is the transfer, not the key exchange. Needs ssh, scp, sshd and ssh-keygen installed.
 */

import { mkdtempSync, rmSync, writeFileSync, existsSync, mkdirSync, openSync, writeSync, closeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { sshdConfigText } from "../lib/sshd.ts";

const ROOT = resolve(import.meta.dir, "../..");
const BUN = process.execPath;
const LOOP = "127.0.0.1";
const MB = 1e6;

// ---------------------------------------------------------------------------------------------------
// Options

const USAGE = `usage: bun bench/tools/windowed-run.ts [--stripes 1,4,8,16] [--direct] [--rate MBPS] [--delay MS]
        [--window BYTES] [--block BYTES] [--seconds S] [--runs K] [--dir up|down] [--scheduler MODE]
        [--sample-ms MS] [--scp BYTES] [--scp-legacy] [--base] [--client-arg ARG]... [--server-arg ARG]... [--json FILE]`;

interface Options {
  stripes: number[];
  direct: boolean;
  rate: number;
  delay: number;
  window: number;
  block: number;
  seconds: number;
  runs: number;
  dir: "up" | "down";
  scheduler: string | undefined;
  sampleMs: number;
  scp: number;
  scpLegacy: boolean;
  base: boolean;
  clientArgs: string[];
  serverArgs: string[];
  json: string | undefined;
}

function usage(msg: string): never {
  process.stderr.write(`error: ${msg}\n${USAGE}\n`);
  process.exit(2);
}

function parseOptions(argv: string[]): Options {
  const o: Options = {
    stripes: [1, 4, 8, 16],
    direct: false,
    rate: 4,
    delay: 10,
    window: 2 * 1024 * 1024,
    block: 64 * 1024,
    seconds: 8,
    runs: 1,
    dir: "up",
    scheduler: undefined,
    sampleMs: 250,
    scp: 0,
    scpLegacy: false,
    base: false,
    clientArgs: [],
    serverArgs: [],
    json: undefined,
  };
  const num = (flag: string, v: string | undefined, min: number, max: number): number => {
    const n = Number(v);
    if (v === undefined || v.trim() === "" || !Number.isFinite(n) || n < min || n > max) usage(`${flag} wants a number in [${min}, ${max}], got "${v ?? ""}"`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const eq = a.indexOf("=");
    const flag = eq > 0 ? a.slice(0, eq) : a;
    const value = (): string | undefined => (eq > 0 ? a.slice(eq + 1) : argv[++i]);
    switch (flag) {
      case "--help":
      case "-h":
        process.stdout.write(`${USAGE}\n`);
        process.exit(0);
      case "--stripes":
        o.stripes = (value() ?? "").split(",").filter(Boolean).map((s) => Math.round(num(flag, s, 1, 64)));
        break;
      case "--direct":
        o.direct = true;
        break;
      case "--rate":
        o.rate = num(flag, value(), 0.01, 10_000);
        break;
      case "--delay":
        o.delay = num(flag, value(), 0, 5000);
        break;
      case "--window":
        o.window = Math.round(num(flag, value(), 1024, 1 << 30));
        break;
      case "--block":
        o.block = Math.round(num(flag, value(), 1024, 1 << 26));
        break;
      case "--seconds":
        o.seconds = num(flag, value(), 0.5, 600);
        break;
      case "--runs":
        o.runs = Math.round(num(flag, value(), 1, 50));
        break;
      case "--dir": {
        const v = value();
        if (v !== "up" && v !== "down") usage(`--dir: up or down, got "${v}"`);
        o.dir = v;
        break;
      }
      case "--scheduler":
        o.scheduler = value() ?? usage("--scheduler needs a value");
        break;
      case "--sample-ms":
        o.sampleMs = num(flag, value(), 0, 60_000);
        break;
      case "--scp":
        o.scp = Math.round(num(flag, value(), 1, 64 * 2 ** 30));
        break;
      case "--scp-legacy":
        o.scpLegacy = true;
        break;
      case "--base":
        o.base = true;
        break;
      case "--client-arg":
        o.clientArgs.push(value() ?? usage("--client-arg needs a value"));
        break;
      case "--server-arg":
        o.serverArgs.push(value() ?? usage("--server-arg needs a value"));
        break;
      case "--json":
        o.json = value();
        break;
      default:
        usage(`unknown argument "${a}"`);
    }
  }
  return o;
}

// ---------------------------------------------------------------------------------------------------
// Processes

/** A child process with its output collected line by line. */
class Child {
  readonly proc: Subprocess<"ignore", "pipe", "pipe">;
  readonly out: string[] = [];
  readonly err: string[] = [];
  private waiters: (() => void)[] = [];

  constructor(
    readonly name: string,
    cmd: string[],
    cwd = ROOT,
  ) {
    this.proc = Bun.spawn(cmd, { cwd, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
    live.add(this);
    void this.read(this.proc.stdout, this.out);
    void this.read(this.proc.stderr, this.err);
  }

  get pid(): number {
    return this.proc.pid;
  }

  private async read(stream: ReadableStream<Uint8Array>, into: string[]): Promise<void> {
    const dec = new TextDecoder();
    let rest = "";
    for await (const chunk of stream) {
      rest += dec.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = rest.indexOf("\n")) >= 0) {
        into.push(rest.slice(0, nl));
        rest = rest.slice(nl + 1);
        // Bounded: a chatty child cannot eat the driver's memory.
        if (into.length > 20_000) into.splice(0, 10_000);
      }
      for (const w of this.waiters.splice(0)) w();
    }
    if (rest) into.push(rest);
    for (const w of this.waiters.splice(0)) w();
  }

  /** Resolves with the first line (stdout or stderr) matching `re`, after `from` lines of each. */
  async waitLine(re: RegExp, ms: number, from = { out: 0, err: 0 }): Promise<string> {
    const end = performance.now() + ms;
    for (;;) {
      const hit = this.out.slice(from.out).find((l) => re.test(l)) ?? this.err.slice(from.err).find((l) => re.test(l));
      if (hit !== undefined) return hit;
      if (this.proc.exitCode !== null || this.proc.signalCode !== null) {
        await Bun.sleep(50); // let the last output in
        const late = this.out.slice(from.out).find((l) => re.test(l)) ?? this.err.slice(from.err).find((l) => re.test(l));
        if (late !== undefined) return late;
        throw new Error(`${this.name} exited (${this.proc.exitCode ?? this.proc.signalCode}) before ${re}: ${this.err.slice(-5).join(" | ")}`);
      }
      const left = end - performance.now();
      if (left <= 0) throw new Error(`${this.name}: no ${re} within ${ms} ms: ${this.err.slice(-5).join(" | ")}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 200));
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  signal(sig: NodeJS.Signals): void {
    try {
      this.proc.kill(sig);
    } catch {
      // already gone
    }
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      this.signal("SIGTERM");
      const t = setTimeout(() => this.signal("SIGKILL"), 1500);
      await this.proc.exited;
      clearTimeout(t);
    }
    live.delete(this);
  }
}

const live = new Set<Child>();
function killAllNow(): void {
  for (const c of live) c.signal("SIGKILL");
}
process.on("exit", killAllNow);
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => {
    killAllNow();
    cleanupSsh();
    process.exit(130);
  });
}

/** Free loopback ports from listening on port 0 (a race with other programs is possible, and rare). */
function freePorts(n: number): number[] {
  const ls = Array.from({ length: n }, () => Bun.listen({ hostname: LOOP, port: 0, socket: { data() {} } }));
  const ports = ls.map((l) => l.port);
  for (const l of ls) l.stop(true);
  return ports;
}

const json = (line: string): Record<string, unknown> | undefined => {
  try {
    const v = JSON.parse(line) as unknown;
    return v && typeof v === "object" ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
};

// ---------------------------------------------------------------------------------------------------
// Sampling: session statistics (SIGUSR1), link holdings (SIGUSR1), kernel queues (ss)

/** "120.0 KiB" → bytes (the proxies' formatBytes). */
function parseBytes(s: string): number {
  const m = /^([\d.]+) (B|KiB|MiB|GiB)$/.exec(s.trim());
  if (!m) return NaN;
  const k = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 }[m[2] as "B"];
  return Number(m[1]) * k;
}

interface StripeSample {
  index: number;
  rate: number;
  inflight: number;
  rtt: number;
  /** Minimum RTT, when the proxy reports one (ms). */
  minRtt?: number;
}
interface SessionSample {
  store: number;
  reorder: number;
  stripes: StripeSample[];
}

/**
 * Parses the proxies' SIGUSR1 statistics: a session line ("session ID … stripes u/n store X reorder Y …")
 * and a line per stripe ("session ID stripe i: R MB/s in flight X rtt T ms [cap C] [min M ms queue Q ms] …");
 * tolerant of fields added later. The first session in `text` is the one sampled.
 */
function parseStats(text: string): SessionSample | undefined {
  const m = /session (\w+) .* stripes \S+ store ([\d.]+ \S+) reorder ([\d.]+ \S+)/.exec(text);
  if (!m) return undefined;
  const stripes: StripeSample[] = [];
  const line = new RegExp(`session ${m[1]} stripe (\\d+): ([\\d.]+) MB/s in flight ([\\d.]+ \\S+) rtt ([\\d.]+) ms([^\\n]*)`, "g");
  for (const p of text.matchAll(line)) {
    const s: StripeSample = { index: Number(p[1]), rate: Number(p[2]) * MB, inflight: parseBytes(p[3]!), rtt: Number(p[4]) };
    const mr = / min ([\d.]+) ms/.exec(p[5]!);
    if (mr) s.minRtt = Number(mr[1]);
    stripes.push(s);
  }
  return { store: parseBytes(m[2]!), reorder: parseBytes(m[3]!), stripes };
}

/** Waits for a proxy's statistics after SIGUSR1 (its session line and every stripe's), and returns them. */
async function statsText(c: Child, ms: number, from: { out: number; err: number }): Promise<string> {
  const head = await c.waitLine(/ stripes \d+\/\d+ store /, ms, from);
  const n = Number(/ stripes \d+\/(\d+) store /.exec(head)![1]);
  if (n > 0) await c.waitLine(new RegExp(` stripe ${n - 1}: `), ms, from);
  return [...c.err.slice(from.err), ...c.out.slice(from.out)].join("\n");
}

interface LinkHeld {
  index: number;
  upWire: number;
  upQueue: number;
  downWire: number;
  downQueue: number;
}
function parseLinkHeld(line: string): LinkHeld[] | undefined {
  if (!line.includes("link held")) return undefined;
  const out: LinkHeld[] = [];
  for (const m of line.matchAll(/#(\d+) up wire (-?\d+) queue (-?\d+) down wire (-?\d+) queue (-?\d+)/g)) {
    out.push({ index: Number(m[1]), upWire: Number(m[2]), upQueue: Number(m[3]), downWire: Number(m[4]), downQueue: Number(m[5]) });
  }
  return out;
}

interface SockInfo {
  local: number;
  peer: number;
  recvQ: number;
  sendQ: number;
  notsent: number;
}

/** `ss -tnmi` for established loopback TCP sockets: ports, Recv-Q, Send-Q and notsent bytes. */
async function ssSnapshot(): Promise<SockInfo[]> {
  const p = Bun.spawn(["ss", "-tnmiH", "state", "established"], { stdout: "pipe", stderr: "ignore" });
  const text = await new Response(p.stdout).text();
  await p.exited;
  const out: SockInfo[] = [];
  let cur: SockInfo | undefined;
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    if (!/^\s/.test(line)) {
      // "Recv-Q Send-Q Local:Port Peer:Port" (the state column is absent with a state filter)
      const f = line.trim().split(/\s+/);
      const nums = f.filter((x) => /^\d+$/.test(x));
      const addrs = f.filter((x) => x.includes(":"));
      if (nums.length < 2 || addrs.length < 2) {
        cur = undefined;
        continue;
      }
      const port = (a: string): number => Number(a.slice(a.lastIndexOf(":") + 1));
      cur = { recvQ: Number(nums[0]), sendQ: Number(nums[1]), local: port(addrs[0]!), peer: port(addrs[1]!), notsent: 0 };
      out.push(cur);
    } else if (cur) {
      const ns = /notsent:(\d+)/.exec(line);
      if (ns) cur.notsent = Number(ns[1]);
    }
  }
  return out;
}

/** One sample of the whole chain, reduced to the figures of the data direction. */
interface Sample {
  t: number;
  /** Sending proxy's store (unsent + unacknowledged), receiving proxy's reorder buffer. */
  store: number;
  reorder: number;
  /** Per stripe of the sending proxy. */
  inflight: number[];
  rtt: number[];
  minRtt: number[];
  rate: number[];
  /** Per link connection, data direction. */
  linkQueue: number[];
  linkWire: number[];
  /** Kernel queues of the data direction, per stripe: sender proxy's socket Send-Q, link's Recv-Q on its side. */
  kSend1: number[];
  kRecv1: number[];
  /** link → receiving proxy: link's Send-Q, receiving proxy's Recv-Q. */
  kSend2: number[];
  kRecv2: number[];
  /** App-side sockets: app → entry proxy (Send-Q + Recv-Q), exit proxy → target (Send-Q + Recv-Q). */
  appSock: number;
  targetSock: number;
}

interface Ports {
  target: number;
  link: number;
  server: number;
  client: number;
}

/**
 * Whether the link answers SIGUSR1 with its holdings ("link held ..."): only a link with that
 * instrumentation does (issue-11 prototype); others log something else, and are then sampled no more.
 */
let linkAnswers: boolean | undefined;

async function takeSample(
  t: number,
  dir: "up" | "down",
  ports: Ports,
  client: Child,
  server: Child,
  link: Child,
): Promise<Sample | undefined> {
  const sender = dir === "up" ? client : server;
  const receiver = dir === "up" ? server : client;
  const from = { s: { out: sender.out.length, err: sender.err.length }, r: { out: receiver.out.length, err: receiver.err.length }, l: { out: link.out.length, err: link.err.length } };
  sender.signal("SIGUSR1");
  receiver.signal("SIGUSR1");
  // Every link in this repository handles SIGUSR1 (a process without a handler would die of it).
  if (linkAnswers !== false) link.signal("SIGUSR1");
  const ss = await ssSnapshot();
  let sLine: string, rLine: string;
  let lLine: string | undefined;
  try {
    [sLine, rLine, lLine] = await Promise.all([
      statsText(sender, 1000, from.s),
      statsText(receiver, 1000, from.r),
      linkAnswers === false
        ? Promise.resolve(undefined)
        : link.waitLine(/link held/, linkAnswers ? 1000 : 400, from.l).then(
            (l) => ((linkAnswers = true), l),
            () => ((linkAnswers = false), undefined),
          ),
    ]);
  } catch {
    return undefined;
  }
  const s = parseStats(sLine);
  const r = parseStats(rLine);
  const l = (lLine && parseLinkHeld(lLine)) || [];
  if (!s || !r) return undefined;
  const sum = (xs: SockInfo[], f: (x: SockInfo) => number): number => xs.reduce((a, x) => a + f(x), 0);
  // Sockets by role. Stripes: client ↔ link (link port), link ↔ server (server port).
  const cLink = ss.filter((x) => x.peer === ports.link); // client side of client↔link
  const linkC = ss.filter((x) => x.local === ports.link); // link side of client↔link
  const linkS = ss.filter((x) => x.peer === ports.server); // link side of link↔server
  const sLink = ss.filter((x) => x.local === ports.server); // server side of link↔server
  const appC = ss.filter((x) => x.peer === ports.client || x.local === ports.client);
  const sTarget = ss.filter((x) => x.peer === ports.target || x.local === ports.target);
  const up = dir === "up";
  return {
    t,
    store: s.store,
    reorder: r.reorder,
    inflight: s.stripes.map((x) => x.inflight),
    rtt: s.stripes.map((x) => x.rtt),
    minRtt: s.stripes.map((x) => x.minRtt ?? NaN),
    rate: s.stripes.map((x) => x.rate),
    linkQueue: l.map((x) => (up ? x.upQueue : x.downQueue)),
    linkWire: l.map((x) => (up ? x.upWire : x.downWire)),
    kSend1: (up ? cLink : sLink).map((x) => x.sendQ),
    kRecv1: (up ? linkC : linkS).map((x) => x.recvQ),
    kSend2: (up ? linkS : linkC).map((x) => x.sendQ),
    kRecv2: (up ? sLink : cLink).map((x) => x.recvQ),
    appSock: up ? sum(appC, (x) => (x.peer === ports.client ? x.sendQ : x.recvQ)) : sum(appC, (x) => (x.local === ports.client ? x.sendQ : x.recvQ)),
    targetSock: up ? sum(sTarget, (x) => (x.peer === ports.target ? x.sendQ : x.recvQ)) : sum(sTarget, (x) => (x.local === ports.target ? x.sendQ : x.recvQ)),
  };
}

function median(xs: number[]): number {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
}
// NaN for an empty list (e.g. a link without the SIGUSR1 holdings): shown as "-", not as 0.
const total = (xs: number[]): number => (xs.length ? xs.reduce((a, x) => a + (Number.isFinite(x) ? x : 0), 0) : NaN);
const maxOf = (xs: number[]): number => (xs.length ? xs.reduce((a, x) => (Number.isFinite(x) && x > a ? x : a), 0) : NaN);

/** Medians over samples: of the per-sample sum over stripes, and of the per-sample largest stripe. */
function summarize(samples: Sample[]) {
  const of = (f: (s: Sample) => number[]) => ({
    sum: median(samples.map((s) => total(f(s)))),
    maxStripe: median(samples.map((s) => maxOf(f(s)))),
    medStripe: median(samples.map((s) => median(f(s)))),
  });
  return {
    samples: samples.length,
    store: median(samples.map((s) => s.store)),
    reorder: median(samples.map((s) => s.reorder)),
    inflight: of((s) => s.inflight),
    rtt: of((s) => s.rtt),
    minRtt: of((s) => s.minRtt),
    rate: of((s) => s.rate),
    linkQueue: of((s) => s.linkQueue),
    linkWire: of((s) => s.linkWire),
    kernelSenderSendQ: of((s) => s.kSend1),
    kernelLinkRecvQ: of((s) => s.kRecv1),
    kernelLinkSendQ: of((s) => s.kSend2),
    kernelReceiverRecvQ: of((s) => s.kRecv2),
    appSock: median(samples.map((s) => s.appSock)),
    targetSock: median(samples.map((s) => s.targetSock)),
  };
}

// ---------------------------------------------------------------------------------------------------
// sshd for scp

let sshDir: string | undefined;
let madeRunSshd = false;

function cleanupSsh(): void {
  if (sshDir) rmSync(sshDir, { recursive: true, force: true });
  sshDir = undefined;
  if (madeRunSshd) rmSync("/run/sshd", { recursive: true, force: true });
  madeRunSshd = false;
}

async function sh(cmd: string[], opts: { cwd?: string } = {}): Promise<{ code: number; out: string; err: string; ms: number }> {
  const t0 = performance.now();
  const p = Bun.spawn(cmd, { cwd: opts.cwd, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
  const code = await p.exited;
  return { code, out, err, ms: performance.now() - t0 };
}

interface SshSetup {
  dir: string;
  key: string;
  file: string;
  config: string;
}

/** Keys, sshd config and the test file, once per driver run. */
async function sshSetup(bytes: number): Promise<SshSetup> {
  for (const tool of ["ssh", "scp", "ssh-keygen"]) if (!Bun.which(tool)) usage(`--scp needs ${tool} (apt-get install openssh-client)`);
  if (!existsSync("/usr/sbin/sshd")) usage("--scp needs /usr/sbin/sshd (apt-get install openssh-server)");
  const dir = mkdtempSync(join(tmpdir(), "windowed-ssh-"));
  sshDir = dir;
  const key = join(dir, "id");
  for (const [f, t] of [
    [join(dir, "host"), "ed25519"],
    [key, "ed25519"],
  ] as const) {
    const r = await sh(["ssh-keygen", "-q", "-t", t, "-N", "", "-f", f]);
    if (r.code !== 0) throw new Error(`ssh-keygen: ${r.err}`);
  }
  writeFileSync(join(dir, "authorized_keys"), await Bun.file(`${key}.pub`).text());
  if (!existsSync("/run/sshd")) {
    mkdirSync("/run/sshd", { mode: 0o755 });
    madeRunSshd = true;
  }
  // The file lives in /dev/shm: reading it must not be what limits scp.
  const file = join("/dev/shm", `windowed-run-${process.pid}.bin`);
  const fd = openSync(file, "w");
  const chunk = new Uint8Array(1 << 20);
  for (let done = 0; done < bytes; done += chunk.byteLength) {
    crypto.getRandomValues(chunk.subarray(0, 65536));
    for (let k = 65536; k < chunk.byteLength; k += 65536) chunk.copyWithin(k, 0, 65536), (chunk[k] = (k >> 16) ^ done);
    writeSync(fd, chunk, 0, Math.min(chunk.byteLength, bytes - done));
  }
  closeSync(fd);
  const config = join(dir, "sshd_config");
  return { dir, key, file, config };
}

function writeSshdConfig(s: SshSetup, port: number): void {
  writeFileSync(s.config, sshdConfigText(s.dir, port, join(s.dir, "sshd.pid")));
}

function sshArgs(s: SshSetup, port: number, ctl: string): string[] {
  return [
    "-i", s.key,
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "BatchMode=yes",
    "-o", "LogLevel=ERROR",
    "-o", `ControlPath=${ctl}`,
    "-o", `Port=${port}`,
  ];
}

// ---------------------------------------------------------------------------------------------------
// One run

interface RunSpec {
  kind: "pair" | "direct";
  stripes: number;
  window: number;
  label: string;
  scp: boolean;
}

async function runOnce(o: Options, spec: RunSpec, ssh: SshSetup | undefined): Promise<Record<string, unknown>> {
  const kids: Child[] = [];
  const spawn = (name: string, cmd: string[]): Child => {
    const c = new Child(name, cmd);
    kids.push(c);
    return c;
  };
  const [pTarget, pLink, pServer, pClient] = freePorts(4) as [number, number, number, number];
  const ports: Ports = { target: pTarget, link: pLink, server: pServer, client: pClient };
  const appFlags = ["--window", String(spec.window), "--block", String(o.block), "--deadline-ms", String(o.seconds * 1000)];
  try {
    // Target: the windowed app's target or sshd.
    let target: Child;
    if (spec.scp) {
      writeSshdConfig(ssh!, pTarget);
      target = spawn("sshd", ["/usr/sbin/sshd", "-D", "-e", "-f", ssh!.config]);
      await target.waitLine(/Server listening on/, 10_000);
    } else {
      const mode = o.dir === "up" ? "sink" : "source";
      target = spawn("target", [BUN, "bench/tools/windowed-app.ts", "--mode", mode, "--port", String(pTarget), ...appFlags]);
      await target.waitLine(/"event":"ready"/, 10_000);
    }
    const linkTarget = spec.kind === "direct" ? pTarget : pServer;
    const link = spawn("link", [BUN, "src/main.ts", "link", "--listen", `${LOOP}:${pLink}`, "--target", `${LOOP}:${linkTarget}`, "--rate", String(o.rate), "--delay", String(o.delay)]);
    await link.waitLine(/link listening on/, 10_000);
    let entry = pLink;
    let server: Child | undefined;
    let client: Child | undefined;
    if (spec.kind === "pair") {
      server = spawn("server", [BUN, "src/main.ts", "server", "--listen", `${LOOP}:${pServer}`, "--target", `${LOOP}:${pTarget}`, ...o.serverArgs]);
      const cArgs = [BUN, "src/main.ts", "client", "--listen", `${LOOP}:${pClient}`, "--peer", `${LOOP}:${pLink}`, "--stripes", String(spec.stripes), ...o.clientArgs];
      if (o.scheduler) cArgs.push("--scheduler", o.scheduler);
      client = spawn("client", cArgs);
      await Promise.all([server.waitLine(/server listening on/, 10_000), client.waitLine(/client listening on/, 10_000)]);
      entry = pClient;
    }

    const samples: Sample[] = [];
    let sampling = false;
    let t0 = 0;
    const sampler = async (): Promise<void> => {
      if (!client || !server || o.sampleMs <= 0) return;
      // Not before 1 s: a SIGUSR1 that reaches a process before its handler is installed kills it, and
      // the first second (startup) is left out of the figures anyway.
      while (sampling && performance.now() - t0 < 1000) await Bun.sleep(20);
      while (sampling) {
        const t = performance.now() - t0;
        const s = await takeSample(t, o.dir, ports, client, server, link);
        if (s && t >= 1000) samples.push(s);
        await Bun.sleep(o.sampleMs);
      }
    };

    let result: Record<string, unknown>;
    if (spec.scp) {
      const ctl = join(ssh!.dir, `ctl-${pClient}`);
      const base = sshArgs(ssh!, entry, ctl);
      const m0 = performance.now();
      const master = await sh(["ssh", ...base, "-o", "ControlMaster=yes", "-o", "ControlPersist=60", "-fN", `root@${LOOP}`]);
      const masterMs = performance.now() - m0;
      if (master.code !== 0) throw new Error(`ssh master: ${master.err.trim()}`);
      const ping = await sh(["ssh", ...base, `root@${LOOP}`, "true"]);
      sampling = true;
      t0 = performance.now();
      const bg = sampler();
      // To a file in /dev/shm, removed afterwards: sftp cannot fsetstat /dev/null (a harmless but noisy warning).
      const dst = `${ssh!.file}.dst`;
      const scpCmd = ["scp", "-q", ...(o.scpLegacy ? ["-O"] : []), ...base, ssh!.file, `root@${LOOP}:${dst}`];
      const r = await sh(scpCmd);
      rmSync(dst, { force: true });
      sampling = false;
      await bg;
      await sh(["ssh", ...base, "-O", "exit", `root@${LOOP}`]);
      if (r.code !== 0) throw new Error(`scp exited ${r.code}: ${r.err.trim()}`);
      result = { bytes: o.scp, seconds: r.ms / 1000, rate: o.scp / (r.ms / 1000), masterSetupMs: Math.round(masterMs), sshTrueMs: Math.round(ping.ms) };
    } else {
      const mode = o.dir === "up" ? "upload" : "download";
      const app = spawn("app", [BUN, "bench/tools/windowed-app.ts", "--mode", mode, "--port", String(entry), ...appFlags]);
      sampling = true;
      t0 = performance.now();
      const bg = sampler();
      const sender = o.dir === "up" ? app : target;
      // The sending side's connection report: the app's "done" (upload) or the target's "conn" (download).
      const line = await sender.waitLine(o.dir === "up" ? /"event":"done"/ : /"event":"conn"/, (o.seconds + 30) * 1000);
      sampling = false;
      await bg;
      const ev = json(line) ?? {};
      const d = (o.dir === "up" ? ((ev.conns as Record<string, unknown>[] | undefined)?.[0] ?? {}) : ev) as Record<string, unknown>;
      if (d.error) throw new Error(`app: ${String(d.error)}`);
      // From the start to the last ack the sender saw.
      const seconds = (Number(d.tLast) - Number(d.t0)) / 1000;
      result = { ...d, bytes: d.sent, seconds, rate: seconds > 0 ? Number(d.sent) / seconds : 0 };
    }
    return { ok: true, ...result, queues: samples.length ? summarize(samples) : undefined };
  } catch (err) {
    const logs = Object.fromEntries(kids.map((k) => [k.name, k.err.slice(-6)]));
    return { ok: false, error: (err as Error).message, logs };
  } finally {
    await Promise.all(kids.map((k) => k.stop()));
  }
}

// ---------------------------------------------------------------------------------------------------
// Main

const o = parseOptions(process.argv.slice(2));
// The pair is keyed, as deployed (and as the suite runs it): one throwaway key for both proxies, unless
// the arguments choose (--no-auth or their own --key-file).
const chosen = [...o.serverArgs, ...o.clientArgs].some((a) => a === "--no-auth" || a === "--key-file");
if (!chosen) {
  const keyDir = mkdtempSync(join(tmpdir(), "windowed-key-"));
  const keyFile = join(keyDir, "key");
  const { generateKey } = await import("../../src/secure/keys.ts");
  writeFileSync(keyFile, `${generateKey()}\n`, { mode: 0o600 });
  process.on("exit", () => rmSync(keyDir, { recursive: true, force: true }));
  o.serverArgs.push("--key-file", keyFile);
  o.clientArgs.push("--key-file", keyFile);
}
const specs: RunSpec[] = [];
const cap = o.rate * MB;
const baseRttMs = 2 * o.delay;
if (o.direct) specs.push({ kind: "direct", stripes: 1, window: o.window, label: "direct (1 connection, no proxies)", scp: false });
for (const n of o.stripes) {
  if (o.base) specs.push({ kind: "pair", stripes: n, window: o.block, label: `pair N=${n} stop-and-wait`, scp: false });
  specs.push({ kind: "pair", stripes: n, window: o.window, label: o.scp ? `pair N=${n} scp` : `pair N=${n}`, scp: o.scp > 0 });
}
const ssh = o.scp > 0 ? await sshSetup(o.scp) : undefined;
const all: Record<string, unknown>[] = [];
const fmt = (x: number, d = 1): string => (Number.isFinite(x) ? x.toFixed(d) : "-");
const KiB = (x: number): string => (Number.isFinite(x) ? `${Math.round(x / 1024)}K` : "-");
const rows: string[] = [];
try {
  for (const spec of specs) {
    const runs: Record<string, unknown>[] = [];
    for (let k = 0; k < o.runs; k++) {
      process.stderr.write(`${spec.label}, run ${k + 1}/${o.runs} ... `);
      const r = await runOnce(o, spec, ssh);
      const ideal = spec.scp ? spec.stripes * cap : Math.min(spec.stripes * cap, spec.window / (baseRttMs / 1000));
      const rec: Record<string, unknown> = { label: spec.label, kind: spec.kind, stripes: spec.stripes, window: spec.window, scp: spec.scp, dir: o.dir, linkRate: o.rate, linkDelay: o.delay, run: k + 1, ideal, ...r };
      rec.fraction = r.ok ? Number(r.rate) / ideal : 0;
      process.stderr.write(r.ok ? `${fmt(Number(r.rate) / MB)} MB/s (${fmt(Number(rec.fraction), 2)} of ideal)\n` : `FAILED: ${String(r.error)}\n`);
      if (!r.ok) process.stderr.write(`${JSON.stringify(r.logs)}\n`);
      process.stdout.write(`${JSON.stringify(rec)}\n`);
      runs.push(rec);
      all.push(rec);
    }
    const ok = runs.filter((r) => r.ok);
    if (ok.length === 0) continue;
    const med = (f: (r: Record<string, unknown>) => number): number => median(ok.map(f));
    const q = (r: Record<string, unknown>) => r.queues as ReturnType<typeof summarize> | undefined;
    const rtt = (r: Record<string, unknown>) => r.rtt as { p50: number; p95: number } | undefined;
    rows.push(
      [
        spec.label,
        `${fmt(med((r) => Number(r.rate)) / MB)} MB/s`,
        fmt(med((r) => Number(r.fraction)), 2),
        fmt(med((r) => rtt(r)?.p50 ?? NaN)),
        fmt(med((r) => rtt(r)?.p95 ?? NaN)),
        KiB(med((r) => q(r)?.inflight.medStripe ?? NaN)),
        fmt(med((r) => q(r)?.rtt.medStripe ?? NaN), 0),
        KiB(med((r) => q(r)?.store ?? NaN)),
        KiB(med((r) => q(r)?.kernelSenderSendQ.sum ?? NaN)),
        KiB(med((r) => q(r)?.kernelLinkRecvQ.sum ?? NaN)),
        KiB(med((r) => q(r)?.linkQueue.sum ?? NaN)),
        KiB(med((r) => q(r)?.linkWire.sum ?? NaN)),
      ].join(" | "),
    );
  }
} finally {
  if (ssh) rmSync(ssh.file, { force: true });
  cleanupSsh();
}
process.stderr.write(
  `\n${o.dir}, link ${o.rate} MB/s × ${o.delay} ms one way, window ${o.window} B, ${o.runs} run(s), medians\n` +
    "case | rate | of ideal | app rtt p50 | p95 | inflight/stripe | stripe srtt ms | store | k-send Σ | link k-recv Σ | link queue Σ | link wire Σ\n" +
    `${rows.join("\n")}\n`,
);
if (o.json) writeFileSync(o.json, `${JSON.stringify(all, null, 1)}\n`);
