#!/usr/bin/env bun
/**
 * Command-line entry: reads the command line and config file, starts a mode's listeners, and hands
 * them to the daemon plumbing (src/ops/daemon.ts). No logic of its own.
 */

import { USAGE, sessionFlags, toArgv, ConfigFileError, type RunConfig, type Values } from "./cli/args.ts";
import { resolveAuth } from "./cli/auth.ts";
import { loadCommand } from "./cli/config.ts";
import { StriperError, UsageError } from "./errors.ts";
import type { StripeAuth } from "./proxy/handshake.ts";
import { KeyError } from "./secure/errors.ts";
import { generateKey } from "./secure/keys.ts";
import { listenOrFail, runDaemon } from "./ops/daemon.ts";
import { processSignals, type Drainable } from "./ops/lifecycle.ts";
import { combineSources, type StatsSource } from "./ops/stats.ts";
import { startClient } from "./proxy/client.ts";
import { startRelay } from "./proxy/relay.ts";
import { startServer } from "./proxy/server.ts";
import { loadUsers, type SocksUsers } from "./proxy/users.ts";
import { sessionStatsLine, stderrLog } from "./proxy/log.ts";
import { VERSION } from "./version.ts";

/** What main needs of a started listener. */
interface Started {
  unit: Drainable;
  source: StatsSource | undefined;
  statsLines: () => string[];
  stop: () => void;
  /** Takes keys re-read on SIGHUP (server and client). */
  rekey?: (auth: StripeAuth) => void;
  /** Takes the listener's options re-read on SIGHUP (the server's allowlist). */
  reload?: (l: Values) => void;
}

/**
 * Adapts a proxy of today's interface (stop() resets everything) to the lifecycle. The proxies of
 * issue 8 implement Drainable (and `stats: StatsSource`) themselves; until then a drain resets at once.
 */
function legacyUnit(name: string, p: { stop(): void; readonly live: number }): Drainable {
  return {
    get liveSessions() {
      return p.live;
    },
    async drain() {
      if (p.live > 0) stderrLog(`${name}: this build's proxy cannot drain yet; resetting ${p.live} session(s)`);
      p.stop();
    },
    stop: () => p.stop(),
  };
}

/** The StatsSource a proxy exposes, when it does. */
const statsOf = (p: object): StatsSource | undefined => ("stats" in p ? (p.stats as StatsSource) : undefined);

/** Starts every listener of `cmd`; if one cannot bind, stops those already started and throws. */
function startAll(cmd: RunConfig, start: (l: RunConfig["listeners"][number]) => Started): Started[] {
  const started: Started[] = [];
  try {
    for (const l of cmd.listeners) started.push(start(l));
  } catch (err) {
    for (const s of started) s.stop();
    throw err;
  }
  return started;
}

/**
 * The stripe authentication of every listener, loaded before any starts: a missing or malformed key is a
 * one-line KeyError (exit 2), a key file others may read a warning line.
 */
function authOf(cmd: RunConfig): Map<Values, StripeAuth> {
  const out = new Map<Values, StripeAuth>();
  if (cmd.mode !== "server" && cmd.mode !== "client") return out;
  for (const l of cmd.listeners) {
    const r = resolveAuth({ keyFile: l["key-file"], noAuth: l["no-auth"] }, process.env);
    for (const w of r.warnings) stderrLog(`warning: ${w}`);
    out.set(l, r.auth);
  }
  return out;
}

/** The SOCKS users of a client listener (`--socks-users`), loaded before it starts; a bad file exits 2. */
function usersOf(l: Values): SocksUsers | undefined {
  const path = l["socks-users"];
  if (path === undefined) return undefined;
  try {
    const r = loadUsers(path);
    for (const w of r.warnings) stderrLog(`warning: ${w}`);
    return r.users;
  } catch (err) {
    throw err instanceof StriperError ? new ConfigFileError(err.message) : err;
  }
}

function startMode(cmd: RunConfig): Started[] {
  const g = cmd.global;
  const auth = authOf(cmd);
  switch (cmd.mode) {
    case "server":
      return startAll(cmd, (l) => {
        const s = listenOrFail(l.listen!, "", () =>
          startServer({
            listen: l.listen!,
            target: l.target,
            allow: l.allow,
            connectTimeoutMs: l["connect-timeout"],
            maxStandby: g["max-standby"],
            auth: auth.get(l)!,
            session: sessionFlags(l),
            handshakeTimeoutMs: l["handshake-timeout"],
            maxUnauthenticated: g["max-unauthenticated"],
            handshakeRate: g["handshake-rate"],
            handshakeBurst: g["handshake-burst"],
            maxSessions: g["max-sessions"],
            maxBuffer: g["max-buffer"],
          }),
        );
        return {
          unit: legacyUnit("server", { stop: () => s.stop(), get live() { return s.sessions.size; } }),
          source: statsOf(s),
          statsLines: () => [...s.sessions].map(([id, x]) => sessionStatsLine(id.slice(0, 12), x.metrics())),
          stop: () => s.stop(),
          rekey: (a) => s.setKeys(a),
          reload: (next) => s.setAllow(next.allow ?? []),
        };
      });
    case "client":
      return startAll(cmd, (l) => {
        const users = usersOf(l);
        const c = listenOrFail((l.listen ?? l.socks)!, "", () =>
          startClient({
            listen: l.listen,
            target: l.target,
            socks: l.socks === undefined ? undefined : { listen: l.socks, users, waits: l["socks-reply"] !== "immediate" },
            pool: l.pool,
            growAfter: l["grow-after"],
            peer: l.peer!,
            auth: auth.get(l)!,
            stripes: l.stripes,
            session: sessionFlags(l),
            handshakeTimeoutMs: l["handshake-timeout"],
            maxBuffer: g["max-buffer"],
          }),
        );
        return {
          unit: legacyUnit("client", { stop: () => c.stop(), get live() { return c.sessions.size; } }),
          source: statsOf(c),
          statsLines: () => [...c.sessions].map((x) => sessionStatsLine(x.id, x.metrics())),
          stop: () => c.stop(),
          rekey: (a) => c.setKeys(a),
        };
      });
    case "relay":
      return startAll(cmd, (l) => {
        const r = listenOrFail(l.listen!, "", () => startRelay({ listen: l.listen!, target: l.target! }));
        return {
          unit: legacyUnit("relay", { stop: () => r.stop(), get live() { return r.active.size; } }),
          source: undefined,
          statsLines: () => [`relay on port ${r.port}: ${r.active.size} connection(s) open`],
          stop: () => r.stop(),
        };
      });
    case "link":
    case "demo":
      throw new Error(`${cmd.mode} is not a daemon mode`);
    default: {
      const never: never = cmd.mode;
      throw new Error(`unhandled mode ${String(never)}`);
    }
  }
}

async function run(argv: string[]): Promise<void> {
  const cmd = await loadCommand(argv);
  switch (cmd.mode) {
    case "help":
      process.stdout.write(`${USAGE[cmd.topic] ?? USAGE.main}\n`);
      return;
    case "version":
      process.stdout.write(`tcp-striper ${VERSION} (bun ${Bun.version}, ${process.platform}-${process.arch})\n`);
      return;
    case "keygen":
      process.stdout.write(`${generateKey()}\n`);
      return;
  }
  if (cmd.check) {
    authOf(cmd); // the keys are part of what is checked
    const n = cmd.listeners.length;
    process.stdout.write(`config ok: ${cmd.mode} mode, ${n} listener${n === 1 ? "" : "s"}${cmd.configPath ? ` (${cmd.configPath})` : ""}\n`);
    return;
  }
  switch (cmd.mode) {
    case "link": {
      // The link has no sessions to report or config to reload: these signals must not kill it.
      process.on("SIGUSR1", () => stderrLog("link: connection totals are logged as each connection closes"));
      process.on("SIGHUP", () => stderrLog("link: SIGHUP ignored (nothing to reload)"));
      const { runLinkCli } = await import("./cli/link.ts");
      await runLinkCli(toArgv("link", cmd.listeners[0]!));
      return;
    }
    case "demo": {
      process.on("SIGUSR1", () => {});
      process.on("SIGHUP", () => {});
      const { runDemo } = await import("./cli/demo.ts");
      const g = cmd.global;
      await runDemo({ cap: g.cap!, delayMs: g.delay!, stripes: g.stripes!, seconds: g.seconds! });
      process.exit(0);
    }
  }
  const signals = processSignals(); // before any listener: no signal may find the default action
  const started = startMode(cmd);
  const sources = started.map((s) => s.source);
  runDaemon({
    cmd,
    argv,
    units: started.map((s) => s.unit),
    source: sources.every((s) => s !== undefined) ? combineSources(sources) : undefined,
    statsLines: () => started.flatMap((s) => s.statsLines()),
    log: stderrLog,
    // On SIGHUP the key files are read again (a key added or removed without a restart).
    apply: (next) => {
      let auth: Map<Values, StripeAuth>;
      try {
        auth = authOf(next);
      } catch (err) {
        if (!(err instanceof KeyError)) throw err;
        stderrLog(`SIGHUP: keys not reloaded, keeping the running ones: ${err.code} ${err.message}`);
        return;
      }
      next.listeners.forEach((l, i) => {
        const a = auth.get(l);
        if (a !== undefined) started[i]?.rekey?.(a);
        try {
          started[i]?.reload?.(l);
        } catch (err) {
          if (!(err instanceof StriperError)) throw err;
          stderrLog(`SIGHUP: options not reloaded, keeping the running ones: ${err.code} ${err.message}`);
        }
      });
    },
    signals,
  });
}

const argv = process.argv.slice(2);
try {
  await run(argv);
} catch (err) {
  if (err instanceof KeyError) {
    process.stderr.write(`error: ${err.code} ${err.message}\n`);
    process.exit(2);
  }
  if (err instanceof ConfigFileError) {
    process.stderr.write(`error: ${err.message}\n`);
    process.exit(2);
  }
  if (err instanceof UsageError) {
    const mode = argv[0] !== undefined && !argv[0].startsWith("-") ? argv[0] : "main";
    process.stderr.write(`error: ${err.message}\n\n${USAGE[mode] ?? USAGE.main}\n`);
    process.exit(2);
  }
  const e = err as { code?: string; message?: string };
  stderrLog(`fatal: ${e.code ?? "E_START"} ${e.message ?? String(err)}`);
  process.exit(1);
}
