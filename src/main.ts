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
import { Logger, stderrLog, type LogEvent, type LogSink } from "./proxy/log.ts";
import { statsEvents } from "./proxy/stats.ts";
import { serveAsWorker, workerSpecOf, type WorkerServer, type WorkerSpec } from "./proxy/workers.ts";
import { balancersOf, runFleet, workerCount, workerLog, workerOptions } from "./ops/fleet.ts";
import { ConnectionGate, connectionLimits, readNofileLimit, setConnectionGate, setConnectionGateLog } from "./util/fdlimit.ts";
import { VERSION } from "./version.ts";
import { writeSync } from "node:fs";

/** Where lines go: text on stderr until the command line has said otherwise (--log-format). */
let log: LogSink = stderrLog;

/** What main needs of a started listener. */
interface Started {
  unit: Drainable;
  source: StatsSource | undefined;
  /** SIGUSR1: what to log. */
  stats: () => LogEvent[];
  stop: () => void;
  /**
   * Takes a reloaded listener's values and its keys (SIGHUP): new sessions use them, live ones keep
   * theirs. The place for further live settings (issue 13: the allowlist).
   */
  reload?: (values: Values, auth: StripeAuth) => void;
  /** The server, in a worker process (for its reports to the primary). */
  server?: WorkerServer;
}

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
    if (warn) for (const w of r.warnings) log(`warning: ${w}`);
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

/**
 * Starts the listeners of `cmd`. In a worker of a server (`spec`), each server shares its port with the
 * other workers and opens a join port of its own (src/ops/fleet.ts).
 */
function startMode(cmd: RunConfig, spec: WorkerSpec | undefined): Started[] {
  const g = cmd.global;
  const auth = authOf(cmd, spec === undefined); // a worker's primary has warned already
  switch (cmd.mode) {
    case "server":
      return startAll(cmd, (l) => {
        const scaling = workerOptions(l, cmd.listeners.indexOf(l), spec);
        const s = listenOrFail(scaling.listen, "", () =>
          startServer({
            ...scaling,
            balancers: balancersOf(l),
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
            maxSessionsPerSource: g["max-sessions-per-source"],
            maxStripesPerSource: g["max-stripes-per-source"],
            maxBuffer: g["max-buffer"],
            maxReceiveBuffer: g["max-receive-buffer"],
            log,
          }),
        );
        return {
          unit: s,
          source: s.stats,
          stats: () => statsEvents(s.stats.sessions()),
          stop: () => s.stop(),
          reload: (next, a) => {
            s.setKeys(a);
            s.setAllow(next.allow ?? []); // the rules were checked when the file was read
          },
          server: s,
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
            maxReceiveBuffer: g["max-receive-buffer"],
            log,
          }),
        );
        return {
          unit: c,
          source: c.stats,
          stats: () => statsEvents(c.stats.sessions()),
          stop: () => c.stop(),
          reload: (_l, a) => c.setKeys(a),
        };
      });
    case "relay":
      return startAll(cmd, (l) => {
        const r = listenOrFail(l.listen!, "", () => startRelay({ listen: l.listen!, target: l.target!, log }));
        return {
          unit: r,
          source: undefined,
          stats: () => [{ event: "stats.relay", msg: `relay on port ${r.port}: ${r.active.size} connection(s) open`, fields: { connections: r.active.size } }],
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
      writeOut(`${USAGE[cmd.topic] ?? USAGE.main}\n`);
      return;
    case "version":
      writeOut(`tcp-striper ${VERSION} (bun ${Bun.version}, ${process.platform}-${process.arch})\n`);
      return;
    case "keygen":
      writeOut(`${generateKey()}\n`);
      return;
  }
  if (cmd.global["log-format"] === "json") log = new Logger({ format: "json" }).sink;
  if (cmd.check) {
    authOf(cmd); // the keys are part of what is checked
    const n = cmd.listeners.length;
    writeOut(`config ok: ${cmd.mode} mode, ${n} listener${n === 1 ? "" : "s"}${cmd.configPath ? ` (${cmd.configPath})` : ""}\n`);
    return;
  }
  switch (cmd.mode) {
    case "link": {
      const { runLinkCli } = await import("./cli/link.ts");
      await runLinkCli(toArgv("link", cmd.listeners[0]!), log);
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
    await runFleet({ cmd, argv, workers: workerCount(cmd), checkKeys: (c) => authOf(c), log });
    return;
  }
  if (spec !== undefined) log = workerLog(log, spec.index);
  const signals = processSignals(); // before any listener: no signal may find the default action
  // Every connection of the process counts against one gate below the descriptor limit (issue 10).
  setConnectionGateLog(log);
  const maxConnections = cmd.global["max-connections"];
  if (maxConnections !== undefined) setConnectionGate(new ConnectionGate(connectionLimits(readNofileLimit()?.soft, maxConnections), (line) => log(line)));
  const started = startMode(cmd, spec);
  const sources = started.map((s) => s.source);
  const source = sources.every((s) => s !== undefined) ? combineSources(sources) : undefined;
  // Keys loaded by a reload's check, applied when the reload is (see runDaemon's prepare and apply).
  const reloaded = new WeakMap<RunConfig, Map<Values, StripeAuth>>();
  const daemon = runDaemon({
    cmd,
    argv,
    units: started.map((s) => s.unit),
    source,
    stats: () => started.flatMap((s) => s.stats()),
    serveOps: spec === undefined, // a worker's figures are served by its primary
    log,
    // On SIGHUP the key files are read again (a key added or removed without a restart); a key file that
    // cannot be read or parsed refuses the reload.
    prepare: (next) => {
      try {
        reloaded.set(next, authOf(next));
      } catch (err) {
        if (err instanceof KeyError) throw new Error(`${err.code} ${err.message}`);
        throw err;
      }
    },
    apply: (next) => {
      const auth = reloaded.get(next);
      next.listeners.forEach((l, i) => {
        const a = auth?.get(l);
        if (a !== undefined) started[i]?.reload?.(l, a);
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

/**
 * Writes a command's answer to standard output. Synchronous, so a reader that has gone away (`keygen |
 * head -c0`, a closed descriptor) is an error caught here — one line and exit 1 — and not an 'error'
 * event on process.stdout that Bun reports with a stack trace.
 */
function writeOut(text: string): void {
  const bytes = Buffer.from(text);
  for (let at = 0; at < bytes.byteLength; ) {
    try {
      at += writeSync(1, bytes, at);
      continue;
    } catch (err) {
      const code = (err as { code?: string }).code ?? "E_OUTPUT";
      if (code === "EAGAIN") {
        Bun.sleepSync(1); // a non-blocking pipe that is full: its reader is slow, not gone
        continue;
      }
      failOutput(code);
    }
  }
}

/** One line on standard error (when it is still there) and exit 1. */
function failOutput(code: string): never {
  try {
    writeSync(2, `error: E_OUTPUT cannot write to standard output: ${code}\n`);
  } catch {
    // standard error is gone too: the exit code is all that is left
  }
  process.exit(1);
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
  log(`fatal: ${e.code ?? "E_START"} ${e.message ?? String(err)}`);
  process.exit(1);
}
