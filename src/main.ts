#!/usr/bin/env bun
/**
 * Command-line entry: reads the command line and config file, starts a mode's listeners, and hands
 * them to the daemon plumbing (src/ops/daemon.ts). No logic of its own.
 */

import { USAGE, sessionFlags, toArgv, ConfigFileError, type RunConfig, type Values } from "./cli/args.ts";
import { resolveAuth } from "./cli/auth.ts";
import { loadCommand } from "./cli/config.ts";
import { UsageError } from "./errors.ts";
import type { StripeAuth } from "./proxy/handshake.ts";
import { KeyError } from "./secure/errors.ts";
import { generateKey } from "./secure/keys.ts";
import { listenOrFail, runDaemon } from "./ops/daemon.ts";
import { processSignals, type Drainable } from "./ops/lifecycle.ts";
import { combineSources, type StatsSource } from "./ops/stats.ts";
import { startClient } from "./proxy/client.ts";
import { startRelay } from "./proxy/relay.ts";
import { startServer } from "./proxy/server.ts";
import { sessionStatsLine, stderrLog, type LogSink } from "./proxy/log.ts";
import { serveAsWorker, workerSpecOf, type WorkerServer, type WorkerSpec } from "./proxy/workers.ts";
import { balancersOf, runFleet, workerCount, workerLog, workerOptions } from "./ops/fleet.ts";
import { VERSION } from "./version.ts";

/** What main needs of a started listener. */
interface Started {
  unit: Drainable;
  source: StatsSource | undefined;
  statsLines: () => string[];
  stop: () => void;
  /** Takes keys re-read on SIGHUP (server and client). */
  rekey?: (auth: StripeAuth) => void;
  /** The server, in a worker process (for its reports to the primary). */
  server?: WorkerServer;
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
function authOf(cmd: RunConfig, warn = true): Map<Values, StripeAuth> {
  const out = new Map<Values, StripeAuth>();
  if (cmd.mode !== "server" && cmd.mode !== "client") return out;
  for (const l of cmd.listeners) {
    const r = resolveAuth({ keyFile: l["key-file"], noAuth: l["no-auth"] }, process.env);
    if (warn) for (const w of r.warnings) stderrLog(`warning: ${w}`);
    out.set(l, r.auth);
  }
  return out;
}

/**
 * Starts the listeners of `cmd`. In a worker of a server (`spec`), each server shares its port with the
 * other workers and opens a join port of its own; `log` then prefixes lines with the worker.
 */
function startMode(cmd: RunConfig, spec: WorkerSpec | undefined, log: LogSink): Started[] {
  const g = cmd.global;
  const auth = authOf(cmd, spec === undefined); // the primary has warned already
  switch (cmd.mode) {
    case "server":
      return startAll(cmd, (l) => {
        const scaling = workerOptions(l, cmd.listeners.indexOf(l), spec);
        const s = listenOrFail(scaling.listen, "", () =>
          startServer({
            ...scaling,
            balancers: balancersOf(l),
            log,
            target: l.target!,
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
          server: s,
        };
      });
    case "client":
      return startAll(cmd, (l) => {
        const c = listenOrFail(l.listen!, "", () =>
          startClient({
            listen: l.listen!,
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
  // A server of several worker processes: this is their primary (src/ops/fleet.ts).
  const spec = workerSpecOf(process.env);
  if (spec === undefined && workerCount(cmd) > 1) {
    await runFleet({ cmd, argv, workers: workerCount(cmd), checkKeys: (c) => authOf(c), log: stderrLog });
    return;
  }
  const log = spec === undefined ? stderrLog : workerLog(stderrLog, spec.index);
  const signals = processSignals(); // before any listener: no signal may find the default action
  const started = startMode(cmd, spec, log);
  const sources = started.map((s) => s.source);
  const source = sources.every((s) => s !== undefined) ? combineSources(sources) : undefined;
  const daemon = runDaemon({
    cmd,
    argv,
    units: started.map((s) => s.unit),
    source,
    statsLines: () => started.flatMap((s) => s.statsLines()),
    serveOps: spec === undefined, // a worker's figures are served by its primary
    log,
    // On SIGHUP the key files are read again (a key added or removed without a restart).
    apply: (next) => {
      let auth: Map<Values, StripeAuth>;
      try {
        auth = authOf(next);
      } catch (err) {
        if (!(err instanceof KeyError)) throw err;
        log(`SIGHUP: keys not reloaded, keeping the running ones: ${err.code} ${err.message}`);
        return;
      }
      next.listeners.forEach((l, i) => {
        const a = auth.get(l);
        if (a !== undefined) started[i]?.rekey?.(a);
      });
    },
    signals,
  });
  if (spec !== undefined) {
    serveAsWorker(
      spec,
      started.map((s) => s.server!),
      {
        stats: () => source && { sessions: [...source.sessions()], counters: source.counters(), budget: source.budget() },
        reload: () => {
          daemon.lifecycle.signal("SIGHUP");
          return daemon.lifecycle.reloading;
        },
        // The primary died: this worker must not outlive it. Its sessions are reset, never cut clean.
        orphaned: () => {
          if (daemon.lifecycle.state() !== "accepting") return;
          log("primary process gone: stopping");
          daemon.lifecycle.signal("SIGTERM");
          if (daemon.lifecycle.state() === "draining") daemon.lifecycle.signal("SIGTERM");
        },
      },
    );
  }
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
