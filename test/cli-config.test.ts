/** The option table, the command line and the TOML config file: round trips, precedence, every error. */

import { describe, expect, test } from "bun:test";
import {
  ConfigFileError,
  MODES,
  OPTION_SPECS,
  USAGE,
  formatValue,
  optionsOf,
  parseArgs,
  sessionFlags,
  toArgv,
  type Mode,
  type OptionSpec,
  type OptionValue,
  type RunConfig,
} from "../src/cli/args.ts";
import { keyLine, loadCommand, syntaxErrorLine, tomlValue } from "../src/cli/config.ts";
import { UsageError } from "../src/errors.ts";
import { DEFAULT_MAX_BUFFER, DEFAULT_SESSION_OPTIONS, SESSION_LIMITS } from "../src/config.ts";

const FILE = "/etc/tcp-striper/test.toml";

/** Loads `text` as the config file with extra command-line arguments. */
async function load(text: string, argv: string[] = []): Promise<RunConfig> {
  const cmd = await loadCommand([...argv, "--config", FILE], async () => text);
  if (!("listeners" in cmd)) throw new Error(`not a run: ${JSON.stringify(cmd)}`);
  return cmd;
}

/** The error `fn` rejects with (fails the test when it resolves). */
async function failure(fn: () => Promise<unknown>): Promise<Error> {
  try {
    await fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error("expected a failure, got none");
}

async function configError(text: string, argv: string[] = []): Promise<string> {
  const err = await failure(() => load(text, argv));
  expect(err).toBeInstanceOf(ConfigFileError);
  expect((err as ConfigFileError).code).toBe("E_CONFIG_FILE");
  expect(err.message.split("\n").length).toBe(1);
  return err.message;
}

function usageError(argv: string[]): string {
  let caught: unknown;
  try {
    parseArgs(argv);
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(UsageError);
  return (caught as UsageError).message;
}

/** Required options of each mode, on the command line. */
const REQUIRED: Record<Mode, string[]> = {
  server: ["--listen", "127.0.0.1:1", "--target", "127.0.0.1:2"],
  client: ["--listen", "127.0.0.1:1", "--peer", "127.0.0.1:2"],
  relay: ["--listen", "127.0.0.1:1", "--target", "127.0.0.1:2"],
  link: ["--target", "127.0.0.1:2"],
  demo: [],
};

/** REQUIRED[mode] without `--name` and its value. */
function requiredExcept(mode: Mode, name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < REQUIRED[mode].length; i += 2) if (REQUIRED[mode][i] !== `--${name}`) out.push(REQUIRED[mode][i]!, REQUIRED[mode][i + 1]!);
  return out;
}

/** A valid value other than the default, for every kind (keepalive/dead-timeout kept consistent). */
function sample(o: OptionSpec): OptionValue {
  if (o.name === "keepalive") return 2000;
  if (o.name === "dead-timeout") return 7000;
  const t = o.type;
  switch (t.kind) {
    case "address":
      return { host: "::1", port: 4321 };
    case "int":
      return o.default === t.max ? t.min : t.max;
    case "number":
      return t.max === Infinity ? t.min + 2.5 : t.max;
    case "duration":
      return t.max;
    case "enum":
      return t.values.find((v) => v !== o.default)!;
    case "numbers":
      return [t.min + 4, t.min + 0.4];
    case "flag":
      return true;
    case "path":
      return "/tmp/x y";
    case "text":
      return o.name === "join-ports" ? "7001-7008" : ["10.0.0.0/8"];
    case "rule":
      return ["*.example.com:80,443"];
  }
}

/** A TOML literal for a value. */
function toml(o: OptionSpec, v: OptionValue): string {
  if (o.repeatable) return JSON.stringify(v);
  switch (o.type.kind) {
    case "address":
    case "enum":
    case "path":
      return JSON.stringify(formatValue(o, v));
    case "text":
      return Array.isArray(v) ? JSON.stringify(v) : JSON.stringify(formatValue(o, v));
    case "numbers":
      return `[${(v as number[]).join(", ")}]`;
    default:
      return String(v);
  }
}

const valueOf = (cfg: RunConfig, o: OptionSpec): unknown =>
  (o.scope === "process" ? cfg.global : cfg.listeners[0]!)[o.name as keyof RunConfig["global"]];

describe("the option table", () => {
  test("every row is well-formed: help text, a placeholder for valued options, defaults inside their range", () => {
    for (const o of OPTION_SPECS) {
      expect(o.help.length).toBeGreaterThan(5);
      if (o.type.kind !== "flag") expect(o.arg ?? "").not.toBe("");
      if (o.default !== undefined && "min" in o.type) {
        expect(o.default as number).toBeGreaterThanOrEqual(o.type.min);
        expect(o.default as number).toBeLessThanOrEqual(o.type.max);
      }
      // One row per name and mode.
      for (const m of o.modes) expect(OPTION_SPECS.filter((x) => x.name === o.name && x.modes.includes(m)).length).toBe(1);
    }
  });

  test("session ranges are src/config.ts's", () => {
    expect(optionsOf("client").find((o) => o.name === "window")!.type).toEqual({ kind: "int", ...SESSION_LIMITS.window });
    expect(optionsOf("server").find((o) => o.name === "dead-timeout")!.type).toEqual({ kind: "duration", ...SESSION_LIMITS.deadMs });
  });

  test("session defaults are the session's own defaults", () => {
    const cfg = parseArgs(["client", ...REQUIRED.client]) as RunConfig;
    expect(sessionFlags(cfg.listeners[0]!)).toEqual({
      scheduler: DEFAULT_SESSION_OPTIONS.scheduler,
      window: DEFAULT_SESSION_OPTIONS.window,
      graceMs: DEFAULT_SESSION_OPTIONS.graceMs,
      keepaliveMs: DEFAULT_SESSION_OPTIONS.keepaliveMs,
      deadMs: DEFAULT_SESSION_OPTIONS.deadMs,
    });
    expect(cfg.global["max-buffer"]).toBe(DEFAULT_MAX_BUFFER);
  });

  test("the usage of every mode lists every option of the mode, from the table", () => {
    for (const m of MODES) {
      for (const o of optionsOf(m)) expect(USAGE[m]).toContain(`--${o.name}`);
      for (const line of USAGE[m]!.split("\n")) expect(line.length).toBeLessThanOrEqual(100);
    }
    expect(USAGE.link).toContain("--rate MBPS[,MBPS...]");
    expect(USAGE.client).toContain("rate | until-congested | round-robin, default");
  });
});

describe("round trips", () => {
  for (const mode of MODES) {
    for (const o of optionsOf(mode).filter((r) => r.scope !== "cli")) {
      test(`${mode} --${o.name}: command line, toArgv and config file agree`, async () => {
        const v = sample(o);
        const required = requiredExcept(mode, o.name);
        const fromCli = parseArgs([mode, ...required, `--${o.name}=${formatValue(o, v)}`]) as RunConfig;
        expect(valueOf(fromCli, o)).toEqual(v);
        // toArgv renders a whole config back into flags that parse to the same values.
        const again = parseArgs([mode, ...toArgv(mode, fromCli.global), ...toArgv(mode, fromCli.listeners[0]!)]) as RunConfig;
        expect(again).toEqual(fromCli);
        const keys = [];
        for (let i = 0; i < required.length; i += 2) keys.push(`${required[i]!.slice(2)} = "${required[i + 1]}"`);
        const fromFile = await load([`mode = "${mode}"`, ...keys, `${o.name} = ${toml(o, v)}`].join("\n"));
        expect(fromFile.global).toEqual(fromCli.global);
        expect(fromFile.listeners).toEqual(fromCli.listeners);
      });
    }
  }

  test("durations take units on the command line and in the file", async () => {
    const cfg = parseArgs(["server", ...REQUIRED.server, "--grace", "2m", "--drain-timeout=1.5s", "--keepalive", "500ms"]) as RunConfig;
    expect(cfg.listeners[0]).toMatchObject({ grace: 120_000, keepalive: 500 });
    expect(cfg.global["drain-timeout"]).toBe(1500);
    const f = await load(`listen = "127.0.0.1:1"\ntarget = "127.0.0.1:2"\ndrain-timeout = "1h"\ngrace = 250`, ["server"]);
    expect(f.global["drain-timeout"]).toBe(3_600_000);
    expect(f.listeners[0]!.grace).toBe(250);
  });
});

describe("precedence and listeners", () => {
  const SERVER = `
mode = "server"
window = 1048576        # default for every listener
max-sessions = 10

[[listener]]
listen = "0.0.0.0:7000"
target = "127.0.0.1:22"

[[listener]]
listen = "[::]:7001"
target = "db.internal:5432"
window = 2097152
`;

  test("several listeners: top-level listener options are defaults, each table overrides them", async () => {
    const cfg = await load(SERVER);
    expect(cfg.mode).toBe("server");
    expect(cfg.global["max-sessions"]).toBe(10);
    expect(cfg.listeners.length).toBe(2);
    expect(cfg.listeners[0]).toMatchObject({ listen: { host: "0.0.0.0", port: 7000 }, target: { host: "127.0.0.1", port: 22 }, window: 1048576 });
    expect(cfg.listeners[1]).toMatchObject({ listen: { host: "::", port: 7001 }, target: { host: "db.internal", port: 5432 }, window: 2097152 });
    expect(cfg.listeners[1]!.grace).toBe(DEFAULT_SESSION_OPTIONS.graceMs);
  });

  test("command-line flags override the file, for every listener", async () => {
    const cfg = await load(SERVER, ["server", "--window", "65536", "--max-sessions", "3"]);
    expect(cfg.global["max-sessions"]).toBe(3);
    expect(cfg.listeners.map((l) => l.window)).toEqual([65536, 65536]);
  });

  test("a single-listener file is flat; the command line overrides its listen address", async () => {
    const cfg = await load(`mode = "client"\nlisten = "127.0.0.1:2222"\npeer = "relay.example:7000"\nstripes = 8`, ["--listen", "127.0.0.1:0"]);
    expect(cfg.listeners).toEqual([expect.objectContaining({ listen: { host: "127.0.0.1", port: 0 }, peer: { host: "relay.example", port: 7000 }, stripes: 8 })]);
  });

  test("the mode may come from the command line alone; --check-config is carried", async () => {
    const cfg = await load(`listen = "127.0.0.1:1"\ntarget = "127.0.0.1:2"`, ["relay", "--check-config"]);
    expect(cfg.mode).toBe("relay");
    expect(cfg.check).toBe(true);
    expect(cfg.configPath).toBe(FILE);
  });

  test("the example files in deploy/ are valid", async () => {
    for (const f of ["server", "client"]) {
      const path = new URL(`../deploy/${f}.toml`, import.meta.url).pathname;
      const cmd = await loadCommand(["--config", path]);
      expect(cmd).toMatchObject({ mode: f });
    }
  });
});

describe("command-line errors: one line naming the flag", () => {
  const cases: [string[], string][] = [
    [[], "no mode given"],
    [["--window", "1"], "no mode given"],
    [["bogus"], 'unknown mode "bogus"'],
    [["relay", "--bogus", "1"], "relay: unknown option --bogus"],
    [["server", "--peer", "h:1"], "server: unknown option --peer (an option of client)"],
    [["relay", "--listen"], "relay: --listen needs a value"],
    [["relay", "--listen", "--target"], "relay: --listen needs a value"],
    [["relay", "--listen", "a:1", "--listen", "b:2"], "relay: --listen given twice"],
    [["relay", "stray"], 'relay: unexpected argument "stray"'],
    [["relay", "--listen", "nope", "--target", "h:1"], '--listen: expected HOST:PORT or [IPv6]:PORT, got "nope"'],
    [["relay", "--listen", "h:70000", "--target", "h:1"], '--listen: port out of range in "h:70000"'],
    [["client", ...REQUIRED.client, "--stripes", "4.5"], '--stripes: expected a whole number, got "4.5"'],
    [["client", ...REQUIRED.client, "--stripes", "65"], "--stripes: must be between 1 and 64, got 65"],
    [["link", "--target", "h:1", "--rate", "-1"], "--rate: must be at least 0, got -1"],
    [["link", "--target", "h:1", "--rate", "4,x"], '--rate: expected a number, got "x"'],
    [["link", "--target", "h:1", "--delay", "soon"], '--delay: expected a number, got "soon"'],
    [["server", ...REQUIRED.server, "--grace", "10 minutes"], '--grace: expected milliseconds or a duration like 30s, 500ms, 2m, got "10 minutes"'],
    [["server", ...REQUIRED.server, "--grace", "0.5ms"], "--grace: must be a whole number of milliseconds, got 0.5"],
    [["server", ...REQUIRED.server, "--keepalive", "10"], "--keepalive: must be between 50 and 600000, got 10"],
    [["client", ...REQUIRED.client, "--scheduler", "fastest"], '--scheduler: expected one of rate, until-congested, round-robin, got "fastest"'],
    [["relay", ...REQUIRED.relay, "--check-config=maybe"], '--check-config: expected true or false, got "maybe"'],
    [["relay", ...REQUIRED.relay, "--config="], "--config: expected a file name"],
    [["server", "--listen", "127.0.0.1:1"], "--target: a server needs a target (--target), an allowlist (--allow), or both"],
    [["server", "--listen", "127.0.0.1:1", "--allow", "*:443", "--allow", "10.0.0.0/33:22"], '--allow: "10.0.0.0/33:22": "10.0.0.0/33" is not an IPv4 address or block (host bits must be zero)'],
    [["client", "--peer", "h:1"], "--listen: a client needs --listen (a port forward), --socks, or both"],
    [["client", "--peer", "h:1", "--socks", "127.0.0.1:1080", "--target", "h:2"], "--target: --target is where --listen's connections go: give --listen too"],
    [["server", ...REQUIRED.server, "--keepalive", "5000", "--dead-timeout", "5000"], "--dead-timeout: must be longer than keepalive (5000 ms), got 5000 ms"],
  ];
  for (const [argv, message] of cases) {
    test(`${JSON.stringify(argv)} → ${message}`, () => {
      expect(usageError(argv)).toBe(message);
    });
  }

  test("--help and --version win wherever they appear", () => {
    expect(parseArgs(["server", "--help"])).toEqual({ mode: "help", topic: "server" });
    expect(parseArgs(["--help"])).toEqual({ mode: "help", topic: "main" });
    expect(parseArgs(["--version"])).toEqual({ mode: "version" });
    expect(parseArgs(["link", "--target", "h:1", "--version"])).toEqual({ mode: "version" });
  });

  test("overriding one address for several listeners is refused", async () => {
    const text = `mode = "relay"\n[[listener]]\nlisten = "127.0.0.1:1"\ntarget = "h:1"\n[[listener]]\nlisten = "127.0.0.1:2"\ntarget = "h:2"\n`;
    const err = await failure(() => load(text, ["--target", "h:3"]));
    expect(err).toBeInstanceOf(UsageError);
    expect(err.message).toBe("--target: the config file has 2 listeners; change their target in the file");
  });
});

describe("config-file errors: one line with the file, the line and the key", () => {
  const T = `mode = "server"\nlisten = "127.0.0.1:1"\ntarget = "127.0.0.1:2"\n`; // 3 lines, valid
  const cases: [string, string][] = [
    // Syntax (the line is found by re-parsing prefixes).
    [`${T}window = \n`, `${FILE}:4: TOML syntax error: Missing value after '='; values must be on the same line`],
    [`${T}\n\nwindow = "unterminated\n`, `${FILE}:6: TOML syntax error: Unterminated string; newlines must be escaped in basic strings`],
    [`${T}listen = "127.0.0.1:3"\n`, `${FILE}:4: TOML syntax error: Cannot redefine key 'listen'`],
    [`${T}grace = 9007199254740993\n`, `${FILE}:4: TOML syntax error: Integer cannot be losslessly represented as a JavaScript number; it must be within +/-(2^53 - 1)`],
    // Keys.
    [`mode = "client"\nlisten = "127.0.0.1:1"\npeer = "h:1"\nstrpes = 4\n`, `${FILE}:4: strpes: unknown key (did you mean stripes?)`],
    [`${T}windw = 4\n`, `${FILE}:4: windw: unknown key (did you mean window?)`],
    [`${T}colour = "red"\n`, `${FILE}:4: colour: unknown key`],
    [`${T}peer = "h:1"\n`, `${FILE}:4: peer: not an option of server mode (it is one of client)`],
    [`${T}config = "other.toml"\n`, `${FILE}:4: config: only on the command line, not in a config file`],
    [`${T}check-config = true\n`, `${FILE}:4: check-config: only on the command line, not in a config file`],
    [`${T}[server]\nwindow = 1\n`, `${FILE}:4: server: unknown key`],
    [`mode = "server"\n[[listener]]\nlisten = "127.0.0.1:1"\ntarget = "h:2"\nmax-sessions = 4\n`, `${FILE}:5: max-sessions in listener 1: a process-wide option: set it at the top level, not in a [[listener]]`],
    // Types and values.
    [`${T}window = "16M"\n`, `${FILE}:4: window: expected a whole number, got a string "16M"`],
    [`${T}window = 65536.5\n`, `${FILE}:4: window: expected a whole number, got a float 65536.5`],
    [`${T}window = 1\n`, `${FILE}:4: window: must be between 65536 and 1073741824, got 1`],
    [`${T}max-sessions = true\n`, `${FILE}:4: max-sessions: expected a whole number, got a boolean true`],
    [`mode = "server"\nlisten = 7000\ntarget = "h:1"\n`, `${FILE}:2: listen: expected a string "HOST:PORT", got an integer 7000`],
    [`mode = "server"\nlisten = "7000"\ntarget = "h:1"\n`, `${FILE}:2: listen: expected HOST:PORT or [IPv6]:PORT, got "7000"`],
    [`${T}grace = "forever"\n`, `${FILE}:4: grace: expected milliseconds or a duration like 30s, 500ms, 2m, got "forever"`],
    [`${T}grace = 1.5\n`, `${FILE}:4: grace: expected milliseconds or a string like "30s", got a float 1.5`],
    [`${T}drain-timeout = [1]\n`, `${FILE}:4: drain-timeout: expected milliseconds or a string like "30s", got an array`],
    [`${T}metrics = { host = "x" }\n`, `${FILE}:4: metrics: expected a string "HOST:PORT", got a table or date`],
    [`mode = "client"\nlisten = "127.0.0.1:1"\npeer = "h:1"\nscheduler = "fast"\n`, `${FILE}:4: scheduler: expected one of rate, until-congested, round-robin, got "fast"`],
    [`mode = "client"\nlisten = "127.0.0.1:1"\npeer = "h:1"\nstripes = inf\n`, `${FILE}:4: stripes: expected a whole number, got Infinity`],
    [`mode = "link"\ntarget = "h:1"\nrate = [4, "x"]\n`, `${FILE}:3: rate: expected numbers, got a string "x"`],
    [`mode = "link"\ntarget = "h:1"\nrate = []\n`, `${FILE}:3: rate: expected at least one number, got an array`],
    [`mode = "link"\ntarget = "h:1"\nrate = -1\n`, `${FILE}:3: rate: must be at least 0, got -1`],
    [`mode = "demo"\nseconds = "4"\n`, `${FILE}:2: seconds: expected a number, got a string "4"`],
    // Mode.
    [`mode = "proxy"\n`, `${FILE}:1: mode: expected one of server, client, relay, link, demo, got a string "proxy"`],
    [`listen = "127.0.0.1:1"\n`, `${FILE}: mode: not given (name it on the command line or put mode = "server" in the file)`],
    // Listeners.
    [`mode = "server"\nlistener = 1\n`, `${FILE}:2: listener: expected [[listener]] tables (an array of tables)`],
    [`mode = "server"\n[listener]\nlisten = "127.0.0.1:1"\n`, `${FILE}:2: listener: expected [[listener]] tables (an array of tables)`],
    [`mode = "server"\n[[listener]]\nlisten = "127.0.0.1:1"\ntarget = "h:1"\n[[listener]]\nlisten = "127.0.0.1:2"\n`, `${FILE}:5: target in listener 2: a server needs a target (--target), an allowlist (--allow), or both`],
    [`mode = "server"\nlisten = "127.0.0.1:1"\n`, `${FILE}: target: a server needs a target (--target), an allowlist (--allow), or both`],
    [`mode = "server"\nlisten = "127.0.0.1:1"\nallow = ["*:443", "*.x:0"]\n`, `${FILE}:3: allow: "*.x:0": port range "0" must lie within 1-65535, low end first`],
    [`mode = "link"\n[[listener]]\ntarget = "h:1"\n[[listener]]\ntarget = "h:2"\n`, `${FILE}:2: listener: link mode runs one listener, the file has 2`],
    [`${T}keepalive = 3000\ndead-timeout = "2s"\n`, `${FILE}:5: dead-timeout: must be longer than keepalive (3000 ms), got 2000 ms`],
    [`mode = "server"\n${"[[listener]]\nlisten = \"127.0.0.1:1\"\ntarget = \"h:1\"\n".repeat(65)}`, `${FILE}:2: listener: at most 64 listeners, got 65`],
  ];
  for (const [text, message] of cases) {
    test(message.slice(FILE.length), async () => {
      expect(await configError(text)).toBe(message);
    });
  }

  test("the mode on the command line and in the file must agree", async () => {
    expect(await configError(T, ["client"])).toBe(`${FILE}:1: mode: the file is for server mode, the command line says client`);
  });

  test("a flag that does not belong to the file's mode is a command-line error", async () => {
    const err = await failure(() => load(T, ["--stripes", "3"]));
    expect(err).toBeInstanceOf(UsageError);
    expect(err.message).toBe("server: unknown option --stripes");
  });

  test("a file that cannot be read", async () => {
    const err = await failure(() => loadCommand(["server", "--config", "/nonexistent/striper.toml"]));
    expect(err).toBeInstanceOf(ConfigFileError);
    expect(err.message).toBe("/nonexistent/striper.toml: cannot read the config file: no such file");
  });
});

describe("kinds no row of today's table uses in a config file", () => {
  // Issues 9, 10 and 13 add a boolean (--no-auth) and a repeatable option (--allow): their TOML
  // forms are handled already.
  const allow: OptionSpec = { name: "allow", modes: ["server"], type: { kind: "path" }, arg: "RULE", scope: "listener", repeatable: true, help: "allowed destination" };
  const noAuth: OptionSpec = { name: "no-auth", modes: ["server"], type: { kind: "flag" }, scope: "process", help: "plain stripes" };

  test("a repeatable option takes an array or one value", () => {
    expect(tomlValue(allow, ["10.0.0.0/8:22", "db:5432"], "f:3: allow")).toEqual(["10.0.0.0/8:22", "db:5432"]);
    expect(tomlValue(allow, "db:5432", "f:3: allow")).toEqual(["db:5432"]);
    expect(() => tomlValue(allow, ["a", 1], "f:3: allow")).toThrow('f:3: allow: expected a string, got an integer 1');
  });

  test("a boolean takes true or false only", () => {
    expect(tomlValue(noAuth, true, "f:2: no-auth")).toBe(true);
    expect(tomlValue(noAuth, false, "f:2: no-auth")).toBe(false);
    expect(() => tomlValue(noAuth, "yes", "f:2: no-auth")).toThrow('f:2: no-auth: expected true or false, got a string "yes"');
  });
});

describe("locating lines", () => {
  test("keyLine finds top-level keys, keys in the n-th [[listener]], quoted keys and table headers", () => {
    const text = `a = 1\n"b" = 2\n[x]\na = 3\n[[listener]]\na = 4\n[[listener]]\n  a = 5\n[[listener]]\n`;
    expect(keyLine(text, undefined, "a")).toBe(1);
    expect(keyLine(text, undefined, "b")).toBe(2);
    expect(keyLine(text, undefined, "x")).toBe(3);
    expect(keyLine(text, 0, "a")).toBe(6);
    expect(keyLine(text, 1, "a")).toBe(8);
    expect(keyLine(text, 2, "a")).toBe(9); // absent: the table's header
    expect(keyLine(text, undefined, "zz")).toBeUndefined();
  });

  test("syntaxErrorLine skips prefixes that fail only because a value is cut off", () => {
    const text = `a = [\n  1,\n  2,\n]\nb = [\n  1,\n  oops,\n]\n`;
    let message = "";
    try {
      Bun.TOML.parse(text);
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).not.toBe("");
    expect(syntaxErrorLine(text, message)).toBe(7);
  });
});
