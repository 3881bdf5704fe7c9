/** The command line as users run it: real processes, real signals, real sockets. */

import { describe, expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { parseAddress, parseArgs } from "../src/cli/args.ts";
import { parseLinkArgs } from "../src/cli/link.ts";
import { UsageError } from "../src/errors.ts";
import { generateKey } from "../src/secure/keys.ts";
import { appExchange, randomData, sha256, startTarget } from "./helpers/net.ts";
import { cleanups } from "./helpers/util.ts";

const MAIN = new URL("../src/main.ts", import.meta.url).pathname;
const cleanup = cleanups();

/** One key for the server and client processes, in STRIPER_KEY (cli-keys.test.ts tests the other ways). */
const KEY_ENV = { ...process.env, STRIPER_KEY: generateKey() };

function spawn(args: string[]): Subprocess<"ignore", "pipe", "pipe"> {
  const p = Bun.spawn([process.execPath, MAIN, ...args], { stdin: "ignore", stdout: "pipe", stderr: "pipe", env: KEY_ENV });
  cleanup.push(() => p.kill("SIGKILL"));
  return p;
}

/** Reads stderr until a line matching `re` appears; returns all text so far. */
async function waitFor(p: Subprocess<"ignore", "pipe", "pipe">, re: RegExp, ms = 10_000): Promise<string> {
  const reader = p.stderr.getReader();
  let text = "";
  const end = performance.now() + ms;
  try {
    while (!re.test(text)) {
      const left = end - performance.now();
      if (left <= 0) throw new Error(`no line matching ${re} within ${ms} ms; got:\n${text}`);
      const r = await Promise.race([reader.read(), Bun.sleep(left).then(() => ({ done: true, value: undefined }))]);
      if (r.done) {
        if (!re.test(text)) throw new Error(`process output ended without ${re}; got:\n${text}`);
        break;
      }
      text += new TextDecoder().decode(r.value);
    }
  } finally {
    reader.releaseLock();
  }
  return text;
}

describe("argument parsing", () => {
  test("addresses: IPv4, hostname, bracketed IPv6; errors are UsageError", () => {
    expect(parseAddress("127.0.0.1:80", "--x")).toEqual({ host: "127.0.0.1", port: 80 });
    expect(parseAddress("localhost:0", "--x")).toEqual({ host: "localhost", port: 0 });
    expect(parseAddress("[::1]:9000", "--x")).toEqual({ host: "::1", port: 9000 });
    for (const bad of ["::1:80", "host", "host:", "host:65536", "[::1]", ":80", "a:b"]) {
      expect(() => parseAddress(bad, "--x")).toThrow(UsageError);
    }
  });

  test("modes parse with defaults and reject unknown or missing options", () => {
    const c = parseArgs(["client", "--listen", "127.0.0.1:1", "--peer", "[::1]:2"]);
    expect(c).toMatchObject({ mode: "client", stripes: 4, peer: { host: "::1", port: 2 } });
    expect(parseArgs(["client", "--listen=127.0.0.1:1", "--peer", "h:2", "--scheduler", "round-robin"])).toMatchObject({
      session: { scheduler: "round-robin" },
    });
    expect(() => parseArgs(["server", "--listen", "127.0.0.1:1"])).toThrow("--target is required");
    expect(() => parseArgs(["client", "--listen", "127.0.0.1:1", "--peer", "h:2", "--stripes", "65"])).toThrow(UsageError);
    expect(() => parseArgs(["relay", "--listen", "127.0.0.1:1", "--target", "h:2", "--bogus", "1"])).toThrow("unknown option");
    expect(() => parseArgs(["relay", "--listen"])).toThrow("needs a value");
    expect(() => parseArgs([])).toThrow(UsageError);
    expect(parseArgs(["server", "--help"])).toEqual({ mode: "help", topic: "server" });
  });

  test("link arguments follow the same rules as the other modes", () => {
    expect(parseLinkArgs(["--target", "[::1]:9", "--rate", "4,0.4", "--delay=10"])).toMatchObject({
      targetHost: "::1",
      targetPort: 9,
      listenHost: "127.0.0.1",
      listenPort: 0,
      rates: [4e6, 4e5],
      delayMs: 10,
    });
    expect(() => parseLinkArgs(["--rate", "1"])).toThrow("--target is required");
    expect(() => parseLinkArgs(["--target", "h:1", "--rate", "4,x"])).toThrow(UsageError);
    expect(() => parseLinkArgs(["--target", "h:1", "--delay", "-1"])).toThrow(UsageError);
    expect(() => parseLinkArgs(["--target", "h:1", "--bogus", "1"])).toThrow("unknown option");
  });
});

describe("processes", () => {
  test("bad arguments: one-line error, usage, exit code 2", async () => {
    for (const args of [["client", "--listen", "nope"], ["bogus"], ["server", "--listen", "127.0.0.1:1"], []]) {
      const p = spawn(args);
      const [code, err] = await Promise.all([p.exited, new Response(p.stderr).text()]);
      expect(code).toBe(2);
      expect(err.split("\n")[0]).toMatch(/^error: /);
      expect(err).toContain("usage:");
    }
  });

  test("--help exits 0 with the usage", async () => {
    const p = spawn(["client", "--help"]);
    const [code, out] = await Promise.all([p.exited, new Response(p.stdout).text()]);
    expect(code).toBe(0);
    expect(out).toContain("--stripes N");
  });

  test("server and client processes carry a transfer, log each session, and exit 0 on SIGTERM/SIGINT", async () => {
    const target = startTarget({ mode: "echo" });
    try {
      const server = spawn(["server", "--listen", "127.0.0.1:0", "--target", `127.0.0.1:${target.port}`]);
      const sLog = await waitFor(server, /server listening on 127\.0\.0\.1:(\d+)/);
      const serverPort = Number(/listening on 127\.0\.0\.1:(\d+)/.exec(sLog)![1]);
      const client = spawn(["client", "--listen", "127.0.0.1:0", "--peer", `127.0.0.1:${serverPort}`, "--stripes", "3"]);
      const cLog = await waitFor(client, /client listening on 127\.0\.0\.1:(\d+)/);
      const clientPort = Number(/listening on 127\.0\.0\.1:(\d+)/.exec(cLog)![1]);
      const data = randomData(8 * 1024 * 1024, 77);
      const r = await appExchange(clientPort, data);
      expect(r.error).toBeUndefined();
      expect(sha256(r.received)).toBe(sha256(data));
      const end = await waitFor(client, /session \w+ end .* reason ok/);
      expect(end).toMatch(/session \w+ start app/);
      expect(end).toMatch(/up 8\.0 MiB down 8\.0 MiB/);
      // SIGUSR1: live statistics, one line per session, every stripe listed.
      const held = appExchange(clientPort, randomData(1000, 78), { shutdown: false, timeoutMs: 10_000 });
      await Bun.sleep(300);
      client.kill("SIGUSR1");
      const stats = await waitFor(client, /session \w+ stats stripes 3\/3 .*#0 .*#1 .*#2 /);
      expect(stats).toMatch(/rtt \d+ms/);
      client.kill("SIGTERM");
      const heldResult = await held;
      expect(heldResult.cleanEnd).toBe(false); // shutdown resets open sessions, never a clean EOF
      server.kill("SIGINT");
      expect(await client.exited).toBe(0);
      expect(await server.exited).toBe(0);
    } finally {
      target.stop();
    }
  });

  test("a port already in use is a one-line fatal error, exit 1", async () => {
    const target = startTarget({ mode: "echo" });
    try {
      const p = spawn(["relay", "--listen", `127.0.0.1:${target.port}`, "--target", "127.0.0.1:1"]);
      const [code, err] = await Promise.all([p.exited, new Response(p.stderr).text()]);
      expect(code).toBe(1);
      expect(err.trim().split("\n").length).toBe(1);
      expect(err).toContain("fatal:");
    } finally {
      target.stop();
    }
  });
});
