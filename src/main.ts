#!/usr/bin/env bun
/** Command-line entry: parses arguments and starts a mode. No logic of its own. */

import { parseArgs, USAGE, type Command } from "./cli/args.ts";
import { resolveAuth, type AuthFlags } from "./cli/auth.ts";
import { UsageError } from "./errors.ts";
import { KeyError } from "./secure/errors.ts";
import { generateKey } from "./secure/keys.ts";
import { startClient } from "./proxy/client.ts";
import { startRelay } from "./proxy/relay.ts";
import { startServer } from "./proxy/server.ts";
import { sessionStatsLine, stderrLog } from "./proxy/log.ts";

/** SIGUSR1 prints one statistics line per live session (rates, in flight, RTT per stripe). */
function onStatsSignal(lines: () => string[]): void {
  process.on("SIGUSR1", () => {
    const all = lines();
    if (all.length === 0) stderrLog("no live sessions");
    for (const l of all) stderrLog(l);
  });
}

function onSignals(stop: () => void): void {
  const handler = (): void => {
    stop();
    // Give shutdown frames a moment to leave, then exit cleanly.
    setTimeout(() => process.exit(0), 200).unref();
  };
  process.once("SIGINT", handler);
  process.once("SIGTERM", handler);
}

/** Stripe authentication from the flags and STRIPER_KEY; warnings (a key file others may read) are logged. */
function authOf(flags: AuthFlags) {
  const r = resolveAuth(flags, process.env);
  for (const w of r.warnings) stderrLog(`warning: ${w}`);
  return r.auth;
}

async function run(cmd: Command, authFlags: AuthFlags): Promise<void> {
  switch (cmd.mode) {
    case "help":
      process.stdout.write(`${USAGE[cmd.topic] ?? USAGE.main}\n`);
      return;
    case "server": {
      const s = startServer({
        listen: cmd.listen,
        target: cmd.target,
        auth: authOf(authFlags),
        session: cmd.session,
        maxSessions: cmd.maxSessions,
        maxBuffer: cmd.maxBuffer,
      });
      onSignals(() => s.stop());
      onStatsSignal(() => [...s.sessions].map(([id, x]) => sessionStatsLine(id.slice(0, 12), x.metrics())));
      return;
    }
    case "client": {
      const c = startClient({
        listen: cmd.listen,
        peer: cmd.peer,
        auth: authOf(authFlags),
        stripes: cmd.stripes,
        session: cmd.session,
        maxBuffer: cmd.maxBuffer,
      });
      onSignals(() => c.stop());
      onStatsSignal(() => [...c.sessions].map((x) => sessionStatsLine(x.id, x.metrics())));
      return;
    }
    case "relay": {
      const r = startRelay({ listen: cmd.listen, target: cmd.target });
      onSignals(() => r.stop());
      return;
    }
    case "link": {
      const { runLinkCli } = await import("./cli/link.ts");
      await runLinkCli(cmd.argv);
      return;
    }
    case "demo": {
      const { runDemo } = await import("./cli/demo.ts");
      await runDemo(cmd);
      process.exit(0);
    }
  }
}

/** Takes --key-file PATH and --no-auth out of the arguments (interim: the option table will own them). */
function takeAuthFlags(args: string[]): { rest: string[]; flags: AuthFlags } {
  const rest: string[] = [];
  const flags: AuthFlags = {};
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--no-auth") flags.noAuth = true;
    else if (a === "--key-file") flags.keyFile = args[++i];
    else if (a.startsWith("--key-file=")) flags.keyFile = a.slice("--key-file=".length);
    else rest.push(a);
  }
  return { rest, flags };
}

const argv = process.argv.slice(2);
try {
  if (argv[0] === "keygen") {
    process.stdout.write(`${generateKey()}\n`);
    process.exit(0);
  }
  const { rest, flags } = takeAuthFlags(argv);
  await run(parseArgs(rest), flags);
} catch (err) {
  if (err instanceof KeyError) {
    process.stderr.write(`error: ${err.code} ${err.message}\n`);
    process.exit(2);
  }
  if (err instanceof UsageError) {
    process.stderr.write(`error: ${err.message}\n\n${USAGE[argv[0] ?? "main"] ?? USAGE.main}\n`);
    process.exit(2);
  }
  const e = err as { code?: string; message?: string };
  // A listener that cannot bind (port in use, bad address) is the common case here.
  stderrLog(`fatal: ${e.code ?? "E_START"} ${e.message ?? String(err)}`);
  process.exit(1);
}
