/**
 * The dashboard open in a browser, for the `ops` scenario: starts headless Chromium (the system's
 * `chromium`) on the URL and keeps it open, rendering and polling as a user's tab would.
 *
 *   bun bench/tools/dashboard-viewer.ts --url http://127.0.0.1:P/?interval=1000 [--settle-ms 5000]
 *
 * stdout, JSON lines: {"event":"ready"} once the page has polled /api/sessions at least once (read
 * over the DevTools protocol: <body data-polls>) and then --settle-ms have passed: a browser's first
 * seconds (its own start, the page's first layout and paints) take ~20 % of a core and then fall to
 * ~1–2 %; "open" means the steady state a user's tab is in, not the launch.
 * {"event":"stats","polls":N,"cpuSeconds":C,"seconds":S}
 * on SIGTERM — C is the CPU time of chromium and its helper processes since "ready", S the wall time —
 * after which the browser is closed and the process exits 0.
 */

import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { emit, parseFlags } from "../lib/data.ts";

const USAGE = "usage: dashboard-viewer.ts --url URL [--settle-ms MS]";
const f = parseFlags(process.argv.slice(2), ["--url", "--settle-ms"], USAGE);
const url = f.get("--url");
const settleMs = Number(f.get("--settle-ms") ?? 5000);
const bin = Bun.which("chromium") ?? Bun.which("chromium-browser");
if (!url || !bin || !(settleMs >= 0)) {
  process.stderr.write(bin ? `${USAGE}\n` : "chromium not found (Debian package chromium)\n");
  process.exit(2);
}

const profile = mkdtempSync(join(tmpdir(), "bench-chromium-"));
const browser = Bun.spawn(
  [bin, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", `--user-data-dir=${profile}`, "--remote-debugging-port=0", "--window-size=1280,900", url],
  { stdin: "ignore", stdout: "ignore", stderr: "ignore" },
);
const cleanup = (): void => {
  browser.kill("SIGKILL");
  rmSync(profile, { recursive: true, force: true });
};
process.on("exit", cleanup);

/** The page's DevTools socket. */
async function connect(): Promise<WebSocket> {
  const end = performance.now() + 30_000;
  let port = 0;
  while (port === 0) {
    if (performance.now() > end) throw new Error("chromium opened no DevTools port");
    const file = Bun.file(join(profile, "DevToolsActivePort"));
    if (await file.exists()) port = Number((await file.text()).split("\n")[0]) || 0;
    if (port === 0) await Bun.sleep(50);
  }
  for (;;) {
    if (performance.now() > end) throw new Error("chromium opened no page");
    const list = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as { type: string; webSocketDebuggerUrl: string }[];
    const page = list.find((t) => t.type === "page");
    if (page) {
      const ws = new WebSocket(page.webSocketDebuggerUrl);
      await new Promise<void>((res, rej) => {
        ws.onopen = () => res();
        ws.onerror = () => rej(new Error("cannot open the page's DevTools socket"));
      });
      return ws;
    }
    await Bun.sleep(50);
  }
}

const ws = await connect();
let seq = 0;
const waiting = new Map<number, (v: unknown) => void>();
ws.onmessage = (ev) => {
  const m = JSON.parse(String(ev.data)) as { id?: number; result?: { result?: { value?: unknown } } };
  if (m.id !== undefined) waiting.get(m.id)?.(m.result?.result?.value);
};
const polls = (): Promise<number> =>
  new Promise((res) => {
    const id = ++seq;
    waiting.set(id, (v) => res(Number(v) || 0));
    ws.send(JSON.stringify({ id, method: "Runtime.evaluate", params: { expression: "Number(document.body && document.body.dataset.polls)", returnByValue: true } }));
  });

/** CPU ticks (utime + stime) of chromium and every process under it: what the open tab costs the machine. */
function treeTicks(root: number): number {
  const parent = new Map<number, number>();
  const ticks = new Map<number, number>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const s = readFileSync(`/proc/${name}/stat`, "utf8");
      const f = s.slice(s.lastIndexOf(")") + 2).split(" "); // proc(5): ppid is field 4, utime 14, stime 15
      parent.set(Number(name), Number(f[1]));
      ticks.set(Number(name), Number(f[11]) + Number(f[12]));
    } catch {
      // gone meanwhile
    }
  }
  let sum = 0;
  for (const [pid, t] of ticks) {
    for (let p: number | undefined = pid, hops = 0; p !== undefined && p > 1 && hops < 64; p = parent.get(p), hops++) {
      if (p === root) {
        sum += t;
        break;
      }
    }
  }
  return sum;
}
let ticks0 = 0;
let since = 0;

process.on("SIGTERM", async () => {
  const cpuSeconds = (treeTicks(browser.pid) - ticks0) / 100; // USER_HZ
  emit({ event: "stats", polls: await polls(), cpuSeconds, seconds: (performance.now() - since) / 1000 });
  process.exit(0);
});
const end = performance.now() + 30_000;
while ((await polls()) < 1) {
  if (performance.now() > end) throw new Error("the dashboard never polled");
  await Bun.sleep(50);
}
await Bun.sleep(settleMs);
ticks0 = treeTicks(browser.pid);
since = performance.now();
emit({ event: "ready" });
// Nothing more to do: the page polls by itself until SIGTERM.
setInterval(() => {}, 1 << 30);
