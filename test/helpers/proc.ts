/**
 * Processes as users run them: spawned with piped output that is collected as it arrives, so a test
 * waits for a log line without losing what came before it.
 */

import type { Subprocess } from "bun";
import type { Cleanup } from "./util.ts";

/** A running process and everything it wrote to stderr so far. */
export class Proc {
  /** All of stderr so far. */
  text = "";
  /** Resolves with stdout once the process has exited. */
  readonly stdout: Promise<string>;
  private readonly waiters = new Set<() => void>();
  private ended = false;

  constructor(readonly p: Subprocess<"ignore", "pipe", "pipe">) {
    this.stdout = new Response(p.stdout).text();
    void (async () => {
      const decoder = new TextDecoder();
      for await (const chunk of p.stderr) {
        this.text += decoder.decode(chunk, { stream: true });
        for (const w of this.waiters) w();
      }
      this.ended = true;
      for (const w of this.waiters) w();
    })();
  }

  /** Spawns `cmd`; the process is killed by `cleanup` if the test leaves it running. */
  static spawn(cmd: string[], cleanup: Cleanup[], opts: { cwd?: string; env?: Record<string, string> } = {}): Proc {
    const p = Bun.spawn(cmd, { stdin: "ignore", stdout: "pipe", stderr: "pipe", cwd: opts.cwd, env: opts.env });
    cleanup.push(() => p.kill("SIGKILL"));
    return new Proc(p);
  }

  get exited(): Promise<number> {
    return this.p.exited;
  }

  kill(sig: NodeJS.Signals): void {
    this.p.kill(sig);
  }

  /**
   * Resolves with the first match of `re` in stderr after offset `from` (default: anywhere); fails
   * with what was written when it does not appear within `ms` or the output ends without it. The
   * default is a watchdog only a hang should reach: a process starts in well under a second idle, but a
   * loaded 2-core machine (issue 7) can take several.
   */
  waitFor(re: RegExp, ms = 60_000, from = 0): Promise<RegExpExecArray> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const m = re.exec(this.text.slice(from));
        if (m) {
          done();
          resolve(m);
          return true;
        }
        if (this.ended) {
          done();
          reject(new Error(`process output ended without ${re}; got:\n${this.text}`));
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no line matching ${re} within ${ms} ms; got:\n${this.text}`));
      }, ms);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      if (!check()) this.waiters.add(check);
    });
  }

  /** The port of the first "<what> listening on HOST:PORT" line. */
  async listeningPort(what: string): Promise<number> {
    const m = await this.waitFor(new RegExp(`${what} listening on (?:\\[[^\\]]+\\]|[^ :]+):(\\d+)`));
    return Number(m[1]);
  }
}
