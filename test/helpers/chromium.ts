/**
 * Headless Chromium (Debian's `chromium`) driven over the Chrome DevTools Protocol: open a page,
 * evaluate expressions in it, take a screenshot. No browser download: the system binary only.
 */

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { tool } from "./tools.ts";

/** The flags the probe used, plus a fresh profile and a DevTools port chosen by the browser. */
function flags(profile: string): string[] {
  return [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    `--user-data-dir=${profile}`,
    "--remote-debugging-port=0",
    "--window-size=1280,900",
  ];
}

/** One page in a headless Chromium. Close it (or `await using`) to end the browser. */
export class Page implements AsyncDisposable {
  private seq = 0;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  private constructor(
    private readonly proc: Subprocess<"ignore", "ignore", "pipe">,
    private readonly ws: WebSocket,
    private readonly profile: string,
    private readonly browserUrl: string,
  ) {
    ws.onmessage = (ev) => {
      const msg = JSON.parse(String(ev.data)) as { id?: number; result?: unknown; error?: { message: string } };
      const w = msg.id === undefined ? undefined : this.waiting.get(msg.id);
      if (!w) return;
      this.waiting.delete(msg.id!);
      if (msg.error) w.reject(new Error(`CDP: ${msg.error.message}`));
      else w.resolve(msg.result);
    };
  }

  /** Starts Chromium on `url` and connects to its page. */
  static async open(url: string, ms = 30_000): Promise<Page> {
    const profile = mkdtempSync(join(tmpdir(), "striper-chromium-"));
    const proc = Bun.spawn([tool("chromium", "chromium"), ...flags(profile), url], { stdin: "ignore", stdout: "ignore", stderr: "pipe" });
    try {
      // Chromium writes its DevTools port into the profile once it listens.
      const end = performance.now() + ms;
      let port = 0;
      let browserPath = "";
      while (port === 0) {
        if (performance.now() > end) throw new Error(`chromium did not open its DevTools port within ${ms} ms`);
        if (proc.exitCode !== null) throw new Error(`chromium exited with ${proc.exitCode}: ${await new Response(proc.stderr).text()}`);
        const f = Bun.file(join(profile, "DevToolsActivePort"));
        if (await f.exists()) [port, browserPath] = (await f.text()).split("\n").map((x, i) => (i === 0 ? Number(x) || 0 : x)) as [number, string];
        if (port === 0) await Bun.sleep(50);
      }
      type Target = { type: string; url: string; webSocketDebuggerUrl: string };
      let target: Target | undefined;
      while (!target) {
        if (performance.now() > end) throw new Error(`chromium opened no page for ${url} within ${ms} ms`);
        const list = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as Target[];
        target = list.find((t) => t.type === "page");
        if (!target) await Bun.sleep(50);
      }
      const ws = new WebSocket(target.webSocketDebuggerUrl);
      await new Promise<void>((resolve, reject) => {
        ws.onopen = () => resolve();
        ws.onerror = () => reject(new Error("cannot connect to the page's DevTools socket"));
      });
      return new Page(proc, ws, profile, `ws://127.0.0.1:${port}${browserPath}`);
    } catch (err) {
      proc.kill("SIGKILL");
      rmSync(profile, { recursive: true, force: true });
      throw err;
    }
  }

  /** Sends one CDP command. */
  send<T>(method: string, params: Record<string, unknown> = {}): Promise<T> {
    const id = ++this.seq;
    this.ws.send(JSON.stringify({ id, method, params }));
    return new Promise<T>((resolve, reject) => this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject }));
  }

  /** Evaluates `expression` in the page and returns its value (promises awaited). */
  async evaluate<T>(expression: string): Promise<T> {
    const r = await this.send<{ result: { value: T }; exceptionDetails?: { text: string; exception?: { description?: string } } }>("Runtime.evaluate", {
      expression,
      returnByValue: true,
      awaitPromise: true,
    });
    if (r.exceptionDetails) throw new Error(`in the page: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
    return r.result.value;
  }

  /** A PNG of the page as it is now. */
  async screenshot(): Promise<Uint8Array> {
    const r = await this.send<{ data: string }>("Page.captureScreenshot", { format: "png" });
    return Buffer.from(r.data, "base64");
  }

  /**
   * Ends the browser with Browser.close, so its helper processes exit and stop writing to the
   * profile before it is removed (a SIGKILL of the main process left profiles behind); SIGKILL only
   * if it has not exited within 5 s.
   */
  async close(): Promise<void> {
    this.ws.close();
    try {
      const browser = new WebSocket(this.browserUrl);
      await new Promise<void>((resolve, reject) => {
        browser.onopen = () => resolve();
        browser.onerror = () => reject(new Error("no browser socket"));
      });
      browser.send(JSON.stringify({ id: 1, method: "Browser.close" }));
    } catch {
      // Already gone: nothing to ask.
    }
    const exited = await Promise.race([this.proc.exited.then(() => true), Bun.sleep(5000).then(() => false)]);
    if (!exited) {
      this.proc.kill("SIGKILL");
      await this.proc.exited;
    }
    rmSync(this.profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
