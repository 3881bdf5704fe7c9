/**
 * deploy/: the systemd units pass `systemd-analyze verify` (offline, in a scratch root holding the
 * distribution's units and a stand-in binary), agree with the example configs, and their commands
 * are valid tcp-striper command lines.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadCommand } from "../src/cli/config.ts";
import { generateKey } from "../src/secure/keys.ts";
import { tool } from "./helpers/tools.ts";

const DEPLOY = new URL("../deploy/", import.meta.url).pathname;
const MAIN = new URL("../src/main.ts", import.meta.url).pathname;
const ROLES = ["server", "client"] as const;
let root = "";

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "striper-systemd-"));
  // verify resolves the units' dependencies (network-online.target...) and checks that ExecStart's
  // binary exists, all under --root.
  mkdirSync(join(root, "usr/lib/systemd"), { recursive: true });
  cpSync("/usr/lib/systemd/system", join(root, "usr/lib/systemd/system"), { recursive: true, verbatimSymlinks: true });
  mkdirSync(join(root, "usr/local/bin"), { recursive: true });
  writeFileSync(join(root, "usr/local/bin/tcp-striper"), "#!/bin/sh\n");
  chmodSync(join(root, "usr/local/bin/tcp-striper"), 0o755);
  mkdirSync(join(root, "etc/systemd/system"), { recursive: true });
});

afterAll(() => {
  if (root) rmSync(root, { recursive: true, force: true });
});

/** Runs systemd-analyze verify on `text` installed as `name`; returns exit code and output. */
async function verify(name: string, text: string): Promise<{ code: number; output: string }> {
  const path = join(root, "etc/systemd/system", name);
  writeFileSync(path, text);
  const p = Bun.spawn([tool("systemd-analyze", "systemd"), "verify", `--root=${root}`, path], { stdout: "pipe", stderr: "pipe" });
  const [code, out, err] = await Promise.all([p.exited, new Response(p.stdout).text(), new Response(p.stderr).text()]);
  return { code, output: (out + err).trim() };
}

/** `Key=value` lines of a unit (several values for repeated keys). */
function directives(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of text.split("\n")) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (m) out.set(m[1]!, [...(out.get(m[1]!) ?? []), m[2]!]);
  }
  return out;
}

describe("systemd units", () => {
  for (const role of ROLES) {
    test(`tcp-striper-${role}.service passes systemd-analyze verify with nothing to say`, async () => {
      const name = `tcp-striper-${role}.service`;
      const r = await verify(name, await Bun.file(join(DEPLOY, name)).text());
      expect(r.output).toBe("");
      expect(r.code).toBe(0);
    });
  }

  test("verify does complain about a broken unit (so the check above can fail)", async () => {
    const good = await Bun.file(join(DEPLOY, "tcp-striper-server.service")).text();
    const r = await verify("broken.service", good.replace("Type=exec", "Type=exex").replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"));
    expect(r.output).toContain("Failed to parse service type");
    expect(r.output).toContain("Unknown key 'NoNewPrivilege' in section [Service]");
  });

  for (const role of ROLES) {
    test(`${role}: the hardening daemons ship, a stop timeout longer than the drain, and valid commands`, async () => {
      const unit = directives(await Bun.file(join(DEPLOY, `tcp-striper-${role}.service`)).text());
      expect(unit.get("DynamicUser")).toEqual(["yes"]);
      expect(unit.get("NoNewPrivileges")).toEqual(["yes"]);
      expect(unit.get("ProtectSystem")).toEqual(["strict"]);
      expect(unit.get("CapabilityBoundingSet")).toEqual(["CAP_NET_BIND_SERVICE"]);
      expect(unit.get("AmbientCapabilities")).toEqual(["CAP_NET_BIND_SERVICE"]);
      expect(unit.get("Restart")).toEqual(["on-failure"]);
      // main.ts exits 2 on a bad command line or config: a restart cannot fix that.
      expect(unit.get("RestartPreventExitStatus")).toEqual(["2"]);
      expect(Number(unit.get("LimitNOFILE")![0])).toBeGreaterThanOrEqual(65536);
      expect(unit.get("ExecReload")!.at(-1)).toBe("/bin/kill -HUP $MAINPID");
      expect(unit.has("MemoryDenyWriteExecute")).toBe(false);

      // The example config, where ExecStart points, is what the unit's commands validate.
      const example = join(DEPLOY, `${role}.toml`);
      const cfg = await loadCommand(["--config", example]);
      if (!("listeners" in cfg)) throw new Error("not a run");
      expect(cfg.mode).toBe(role);
      expect(Number(unit.get("TimeoutStopSec")![0]) * 1000).toBeGreaterThan(cfg.global["drain-timeout"]! + 5000);

      // The key is read from a file in /etc/tcp-striper that the config names (re-read on SIGHUP), never
      // a credential copied once at start. The service runs as the static user that owns it.
      expect(unit.has("LoadCredential")).toBe(false);
      expect(unit.get("User")).toEqual(["tcp-striper"]);
      expect(cfg.listeners[0]!["key-file"]).toBe(`/etc/tcp-striper/${role}.key`);
      // The unit's commands are valid command lines; here the key file is one of our own.
      const key = join(root, `${role}.key`);
      writeFileSync(key, `${generateKey()}\n`, { mode: 0o600 });
      for (const cmd of [unit.get("ExecStart")![0]!, unit.get("ExecReload")![0]!]) {
        const argv = cmd.split(" ");
        expect(argv[0]).toBe("/usr/local/bin/tcp-striper");
        const args = argv.slice(1).map((a) => (a === `/etc/tcp-striper/${role}.toml` ? example : a));
        const p = Bun.spawn([process.execPath, MAIN, ...args.filter((a) => a !== "--check-config"), "--key-file", key, "--check-config"], { stdout: "pipe", stderr: "pipe" });
        const [code, out, err] = await Promise.all([p.exited, new Response(p.stdout).text(), new Response(p.stderr).text()]);
        expect(err).toBe("");
        expect(out).toBe(`config ok: ${role} mode, 1 listener (${example})\n`);
        expect(code).toBe(0);
      }
    });
  }
});
