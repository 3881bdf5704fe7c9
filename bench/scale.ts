/**
 * Scaling benchmarks (issue 14), short runs, printed as a Markdown table; not part of bench/e2e.ts.
 *
 *   bun bench/scale.ts [--mib 512] [--sessions 8] [--only workers|haproxy]
 *
 * workers: uncapped, `--sessions` concurrent sessions each uploading `--mib` MiB (app → client → server →
 *   sink target), with `server --workers 1` and then `--workers 2`; CPU seconds per GiB of every process
 *   (from /proc/PID/stat: server primary, each worker, client, app load generator, target).
 * haproxy: the cost of the HAProxy hop (haproxy on PATH): one session uncapped, and one session of 8
 *   stripes through a link capped at 4 MB/s per connection, each direct and through HAProxy
 *   (deploy/haproxy.cfg with this run's addresses), in the same run.
 *
 * The load generators share the machine's cores with the proxies: on a 2-core machine they are part of
 * what limits the rate. Keyed stripes (the default), so the figures include sealing.
 */

import { readFileSync, writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import type { Subprocess } from "bun";
import { cpuTicks, CLK_TCK } from "./lib/proc.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const MAIN = join(ROOT, "src/main.ts");
const args = process.argv.slice(2);
const opt = (name: string, dflt: string): string => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : dflt;
};
const MIB = Number(opt("--mib", "512"));
const SESSIONS = Number(opt("--sessions", "8"));
const ONLY = opt("--only", "all");
const GiB = 1024 ** 3;
const env = { ...process.env, STRIPER_KEY: randomBytes(32).toString("base64") } as Record<string, string>;
const dir = mkdtempSync(join(tmpdir(), "striper-scale-"));
const procs: Subprocess[] = [];
process.on("exit", () => {
  for (const p of procs) p.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

/** A child process whose stderr and stdout lines are kept; `wait(re)` resolves with the first match. */
function start(cmd: string[]): { p: Subprocess<"ignore", "pipe", "pipe">; wait: (re: RegExp, ms?: number) => Promise<RegExpExecArray>; text: () => string } {
  const p = Bun.spawn(cmd, { stdin: "ignore", stdout: "pipe", stderr: "pipe", env });
  procs.push(p);
  let text = "";
  const waiters = new Set<() => void>();
  const pump = async (s: ReadableStream<Uint8Array>) => {
    const d = new TextDecoder();
    for await (const c of s) {
      text += d.decode(c, { stream: true });
      for (const w of waiters) w();
    }
  };
  void pump(p.stdout);
  void pump(p.stderr);
  const wait = (re: RegExp, ms = 60_000) =>
    new Promise<RegExpExecArray>((resolve, reject) => {
      const check = () => {
        const m = re.exec(text);
        if (m) {
          waiters.delete(check);
          clearTimeout(t);
          resolve(m);
        }
      };
      const t = setTimeout(() => reject(new Error(`no ${re} in ${ms} ms:\n${text.slice(-2000)}`)), ms);
      waiters.add(check);
      check();
    });
  return { p, wait, text: () => text };
}

const cpu = (pid: number): number => (cpuTicks(pid) ?? 0) / CLK_TCK;

function freePort(): number {
  const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = l.port;
  l.stop(true);
  return port;
}

async function target(): Promise<{ port: number; pid: number; stop: () => void }> {
  const t = start([process.execPath, join(ROOT, "bench/tools/target.ts"), "--port", "0", "--mode", "sink", "--hash", "0"]);
  const port = Number((await t.wait(/"port":(\d+)/))[1]);
  return { port, pid: t.p.pid, stop: () => t.p.kill("SIGKILL") };
}

async function server(targetPort: number, extra: string[]) {
  const s = start([process.execPath, MAIN, "server", "--listen", "127.0.0.1:0", "--target", `127.0.0.1:${targetPort}`, "--metrics", "127.0.0.1:0", ...extra]);
  const port = Number((await s.wait(/server listening on 127\.0\.0\.1:(\d+)/))[1]);
  const metrics = Number((await s.wait(/metrics on http:\/\/127\.0\.0\.1:(\d+)\//))[1]);
  let pids: { name: string; pid: number }[] = [{ name: "server", pid: s.p.pid }];
  const workers = extra.includes("--workers") ? Number(extra[extra.indexOf("--workers") + 1]) : 1;
  if (workers > 1) {
    const ws = (await (await fetch(`http://127.0.0.1:${metrics}/api/workers`)).json()) as { index: number; pid: number }[];
    pids = [{ name: "server primary", pid: s.p.pid }, ...ws.map((w) => ({ name: `server worker ${w.index}`, pid: w.pid }))];
  }
  return { port, pids, stop: () => s.p.kill("SIGKILL") };
}

async function client(peer: string, stripes = 8) {
  const c = start([process.execPath, MAIN, "client", "--listen", "127.0.0.1:0", "--peer", peer, "--stripes", String(stripes), "--grow-after", "0"]);
  const port = Number((await c.wait(/client listening on 127\.0\.0\.1:(\d+)/))[1]);
  return { port, pid: c.p.pid, stop: () => c.p.kill("SIGKILL") };
}

async function link(targetPort: number, rate: number) {
  const l = start([process.execPath, MAIN, "link", "--listen", "127.0.0.1:0", "--target", `127.0.0.1:${targetPort}`, "--rate", String(rate)]);
  const port = Number((await l.wait(/listening on 127\.0\.0\.1:(\d+)/))[1]);
  return { port, pid: l.p.pid, stop: () => l.p.kill("SIGKILL") };
}

async function haproxy(backendPort: number) {
  const port = freePort();
  const cfg = readFileSync(join(ROOT, "deploy/haproxy.cfg"), "utf8")
    .replace(/^\s*bind .*$/m, `    bind 127.0.0.1:${port}`)
    .replace(/^(\s*maxconn) \d+/m, "$1 4000")
    .replace(/^\s*log stdout .*$/m, "")
    .replace(/^(\s*default-server) .*$/m, "$1 send-proxy-v2")
    .replace(/(^\s*server relay\d .*\n?)+/m, `    server relay1 127.0.0.1:${backendPort} id 1\n`);
  const file = join(dir, "haproxy.cfg");
  writeFileSync(file, cfg);
  const h = start(["haproxy", "-db", "-f", file]);
  // Ready once it accepts.
  for (let i = 0; ; i++) {
    const ok = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {}, open(s) { s.end(); } } }).then(() => true, () => false);
    if (ok) break;
    if (i === 200) throw new Error(`haproxy did not start:\n${h.text()}`);
    await Bun.sleep(25);
  }
  return { port, pid: h.p.pid, stop: () => h.p.kill("SIGKILL") };
}

/** Runs the app load generator: `conns` uploads of `bytes` each; returns seconds and its CPU seconds. */
async function upload(port: number, conns: number, bytes: number): Promise<{ seconds: number; appCpu: number; ok: boolean }> {
  const a = start([process.execPath, join(ROOT, "bench/tools/app.ts"), "--port", String(port), "--mode", "upload", "--bytes", String(bytes), "--conns", String(conns), "--hash", "0", "--timeout-ms", "600000"]);
  const m = await a.wait(/\{"event":"done".*\}/, 600_000);
  const done = JSON.parse(m[0]) as { t0: number; tEnd: number; cpuSeconds: number; conns: { sent: number; error: string | null }[] };
  return { seconds: (done.tEnd - done.t0) / 1000, appCpu: done.cpuSeconds, ok: done.conns.every((c) => c.error === null && c.sent === bytes) };
}

const rows: string[] = [];
const row = (cells: (string | number)[]) => rows.push(`| ${cells.join(" | ")} |`);

if (ONLY === "all" || ONLY === "workers") {
  rows.push(`\n### ${SESSIONS} concurrent sessions × ${MIB} MiB upload, 8 stripes, uncapped, keyed\n`);
  rows.push("| server | MB/s | wall s | CPU s/GiB per process |", "|---|---:|---:|---|");
  for (const workers of [1, 2]) {
    const t = await target();
    const s = await server(t.port, ["--workers", String(workers)]);
    const c = await client(`127.0.0.1:${s.port}`);
    const all = [...s.pids, { name: "client", pid: c.pid }, { name: "target", pid: t.pid }];
    const before = all.map((p) => cpu(p.pid));
    const bytes = MIB * 1024 * 1024;
    const r = await upload(c.port, SESSIONS, bytes);
    const gib = (SESSIONS * bytes) / GiB;
    const per = all.map((p, i) => `${p.name} ${((cpu(p.pid) - before[i]!) / gib).toFixed(2)}`);
    per.push(`app ${(r.appCpu / gib).toFixed(2)}`);
    row([`--workers ${workers}${r.ok ? "" : " (INCOMPLETE)"}`, ((SESSIONS * bytes) / 1e6 / r.seconds).toFixed(0), r.seconds.toFixed(1), per.join(", ")]);
    for (const x of [c, s, t]) x.stop();
    await Bun.sleep(300);
  }
}

if (ONLY === "all" || ONLY === "haproxy") {
  rows.push(`\n### The HAProxy hop (one session, 8 stripes, keyed; server --workers 1 --proxy-protocol-from 127.0.0.1 behind HAProxy)\n`);
  rows.push("| run | path | MB/s | wall s | HAProxy CPU s/GiB |", "|---|---|---:|---:|---:|");
  const t = await target();
  const direct = await server(t.port, ["--workers", "1"]);
  const behind = await server(t.port, ["--workers", "1", "--advertise-join", "off", "--proxy-protocol-from", "127.0.0.1"]);
  const hp = await haproxy(behind.port);
  const bigBytes = MIB * 1024 * 1024;
  const capBytes = 96 * 1024 * 1024;
  for (const [name, port] of [["direct", direct.port], ["via HAProxy", hp.port]] as const) {
    const c = await client(`127.0.0.1:${port}`);
    const h0 = cpu(hp.pid);
    const r = await upload(c.port, 1, bigBytes);
    const hcpu = name === "direct" ? "–" : ((cpu(hp.pid) - h0) / (bigBytes / GiB)).toFixed(2);
    row([`uncapped ${MIB} MiB${r.ok ? "" : " (INCOMPLETE)"}`, name, (bigBytes / 1e6 / r.seconds).toFixed(0), r.seconds.toFixed(1), hcpu]);
    c.stop();
  }
  for (const [name, port] of [["direct", direct.port], ["via HAProxy", hp.port]] as const) {
    const l = await link(port, 4);
    const c = await client(`127.0.0.1:${l.port}`);
    const r = await upload(c.port, 1, capBytes);
    row([`8 × 4 MB/s caps, 96 MiB${r.ok ? "" : " (INCOMPLETE)"}`, name, (capBytes / 1e6 / r.seconds).toFixed(1), r.seconds.toFixed(1), ""]);
    c.stop();
    l.stop();
  }
  for (const x of [hp, behind, direct, t]) x.stop();
}

console.log(`tcp-striper scale benchmarks, ${navigator.hardwareConcurrency} CPUs, ${new Date().toISOString()}`);
console.log(rows.join("\n"));
process.exit(0);
