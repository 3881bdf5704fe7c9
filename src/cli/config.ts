/**
 * The TOML config file (`--config FILE`): one key per option of the table in args.ts (the flag name
 * without `--`), read at run time with Bun.TOML.parse, so a user's file is never baked into a build.
 *
 *   mode = "server"                 # optional when the command line names the mode
 *   max-sessions = 512              # process-wide options at the top level
 *   window = 8388608                # listener options at the top level apply to every listener
 *   [[listener]]                    # several listeners: one table each (none: the top level is one)
 *   listen = "0.0.0.0:7000"
 *   target = "127.0.0.1:22"
 *
 * Flags given on the command line override the file. Every problem is one ConfigFileError line naming the
 * file, the line where it can be found, and the key.
 */

import { UsageError } from "../errors.ts";
import {
  type Command,
  ConfigFileError,
  type FileValues,
  MODES,
  type Mode,
  type OptionSpec,
  type OptionValue,
  type Values,
  OPTION_SPECS,
  cliValues,
  describeRange,
  mergeConfig,
  optionFor,
  parseCommandLine,
  parseValue,
} from "./args.ts";

export { ConfigFileError } from "./args.ts";

/** Most lines a file may have for the syntax-error line search (it re-parses prefixes). */
const MAX_LOCATE_LINES = 5000;
/** Most [[listener]] tables in one file. */
export const MAX_LISTENERS = 64;

/** The TOML type of a parsed value, for messages ("got a string"). */
function tomlType(v: unknown): string {
  if (typeof v === "string") return `a string "${v}"`;
  if (typeof v === "boolean") return `a boolean ${v}`;
  if (typeof v === "number") return Number.isInteger(v) ? `an integer ${v}` : Number.isFinite(v) ? `a float ${v}` : `${v}`;
  if (Array.isArray(v)) return "an array";
  return "a table or date";
}

/**
 * The 1-based line of a TOML syntax error: the shortest prefix of whole lines that fails with the same
 * message as the whole text. (Bun.TOML.parse reports no position; a shorter prefix that fails
 * differently is only cut off mid-value, so it does not count.)
 */
export function syntaxErrorLine(text: string, message: string): number | undefined {
  const lines = text.split("\n");
  if (lines.length > MAX_LOCATE_LINES) return undefined;
  for (let n = 1; n <= lines.length; n++) {
    try {
      // Keep the line's own newline: some errors (an unterminated string) are reported on reaching it.
      Bun.TOML.parse(lines.slice(0, n).join("\n") + (n < lines.length ? "\n" : ""));
    } catch (err) {
      if ((err as Error).message === message) return n;
    }
  }
  return undefined;
}

const escapeRe = (s: string): string => s.replace(/[.*+?^${}()|[\]\\-]/g, "\\$&");

/**
 * The 1-based line where `key` is set: at the top level (`listener` undefined: before the first table
 * header, or a table named `key`) or inside the `listener`-th (0-based) [[listener]] table, whose
 * header line is the answer when the key is not there. Bare and quoted keys; a best effort for
 * messages (Bun.TOML.parse gives no positions).
 */
export function keyLine(text: string, listener: number | undefined, key: string): number | undefined {
  const lines = text.split("\n");
  let section: number | undefined = undefined; // undefined: top level; n: the n-th [[listener]]; -1: another table
  let seen = -1;
  let header: number | undefined;
  const k = escapeRe(key);
  const keyRe = new RegExp(`^\\s*(?:${k}|"${k}"|'${k}')\\s*=`);
  for (let i = 0; i < lines.length; i++) {
    const h = /^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?/.exec(lines[i]!);
    if (h) {
      const name = h[2]!;
      if (listener === undefined && (name === key || name.startsWith(`${key}.`))) return i + 1;
      section = h[1] === "[[" && name === "listener" ? ++seen : -1;
      if (section === listener && listener !== undefined) header = i + 1;
      continue;
    }
    if (section === listener && keyRe.test(lines[i]!)) return i + 1;
  }
  return header;
}

/** Edit distance, for "did you mean". */
function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
  }
  return d[a.length]![b.length]!;
}

/** Converts one TOML value for `spec`; `label` names it in the error. Throws ConfigFileError. */
export function tomlValue(spec: OptionSpec, raw: unknown, label: string): OptionValue {
  const fail = (expected: string): never => {
    throw new ConfigFileError(`${label}: expected ${expected}, got ${tomlType(raw)}`);
  };
  const viaText = (text: string): OptionValue => {
    try {
      return parseValue(spec, text, label);
    } catch (err) {
      throw err instanceof UsageError ? new ConfigFileError(err.message) : err;
    }
  };
  const ranged = (n: number, min: number, max: number): number => {
    if (n < min || n > max) throw new ConfigFileError(`${label}: must be ${describeRange(min, max)}, got ${n}`);
    return n;
  };
  if (spec.repeatable) {
    const items = Array.isArray(raw) ? raw : [raw];
    return items.map((x) => tomlValue({ ...spec, repeatable: false }, x, label)) as readonly string[];
  }
  const t = spec.type;
  switch (t.kind) {
    case "address":
    case "enum":
    case "path":
    case "text":
    case "rule":
      return typeof raw === "string" ? viaText(raw) : fail(t.kind === "address" ? `a string "HOST:PORT"` : "a string");
    case "int":
      if (typeof raw !== "number" || !Number.isInteger(raw)) fail("a whole number");
      return ranged(raw as number, t.min, t.max);
    case "number":
      if (typeof raw !== "number" || !Number.isFinite(raw)) fail("a number");
      return ranged(raw as number, t.min, t.max);
    case "duration":
      if (typeof raw === "string") return viaText(raw);
      if (typeof raw !== "number" || !Number.isInteger(raw)) fail(`milliseconds or a string like "30s"`);
      return ranged(raw as number, t.min, t.max);
    case "numbers": {
      const items = Array.isArray(raw) ? raw : [raw];
      if (items.length === 0) fail("at least one number");
      return items.map((x) => {
        if (typeof x !== "number" || !Number.isFinite(x)) throw new ConfigFileError(`${label}: expected numbers, got ${tomlType(x)}`);
        return ranged(x, t.min, t.max);
      });
    }
    case "flag":
      return typeof raw === "boolean" ? raw : fail("true or false");
    default: {
      const never: never = t;
      throw new Error(`unhandled option kind ${JSON.stringify(never)}`);
    }
  }
}

/** Why `key` is not a config key of `mode` in this place (top level or a listener table). */
function keyProblem(mode: Mode, key: string, inListener: boolean): string {
  const spec = optionFor(mode, key);
  if (spec?.scope === "cli") return "only on the command line, not in a config file";
  if (spec?.scope === "process" && inListener) return "a process-wide option: set it at the top level, not in a [[listener]]";
  const other = OPTION_SPECS.filter((o) => o.name === key && o.scope !== "cli").flatMap((o) => o.modes);
  if (other.length > 0) return `not an option of ${mode} mode (it is one of ${[...new Set(other)].join(", ")})`;
  const names = [...new Set(OPTION_SPECS.filter((o) => o.modes.includes(mode) && o.scope !== "cli").map((o) => o.name))];
  const near = names.map((n) => [n, distance(n, key)] as const).sort((a, b) => a[1] - b[1])[0];
  const hint = near && near[1] <= 2 ? ` (did you mean ${near[0]}?)` : "";
  return `unknown key${hint}`;
}

/** A config file's text, parsed and validated for a mode named on the command line (or in the file). */
export function parseConfigText(text: string, path: string, cliMode: Mode | undefined): { mode: Mode; file: FileValues } {
  let doc: Record<string, unknown>;
  try {
    doc = Bun.TOML.parse(text) as Record<string, unknown>;
  } catch (err) {
    const message = (err as Error).message;
    const line = syntaxErrorLine(text, message);
    throw new ConfigFileError(`${path}${line ? `:${line}` : ""}: ${message.replace(/^TOML Parse error: /, "TOML syntax error: ")}`);
  }
  const where = (listener: number | undefined, key: string): string => {
    const line = keyLine(text, listener, key);
    const name = listener === undefined ? key : `${key} in listener ${listener + 1}`;
    return `${path}${line ? `:${line}` : ""}: ${name}`;
  };
  const fileMode = doc.mode;
  if (fileMode !== undefined && (typeof fileMode !== "string" || !(MODES as readonly string[]).includes(fileMode))) {
    throw new ConfigFileError(`${where(undefined, "mode")}: expected one of ${MODES.join(", ")}, got ${tomlType(fileMode)}`);
  }
  if (cliMode && fileMode && cliMode !== fileMode) {
    throw new ConfigFileError(`${where(undefined, "mode")}: the file is for ${fileMode} mode, the command line says ${cliMode}`);
  }
  const mode = cliMode ?? (fileMode as Mode | undefined);
  if (!mode) throw new ConfigFileError(`${path}: mode: not given (name it on the command line or put mode = "server" in the file)`);

  const values = (table: Record<string, unknown>, listener: number | undefined): Values => {
    const out: Record<string, OptionValue> = {};
    for (const [key, raw] of Object.entries(table)) {
      if (listener === undefined && (key === "mode" || key === "listener")) continue;
      const spec = optionFor(mode, key);
      if (!spec || spec.scope === "cli" || (spec.scope === "process" && listener !== undefined)) {
        throw new ConfigFileError(`${where(listener, key)}: ${keyProblem(mode, key, listener !== undefined)}`);
      }
      out[key] = tomlValue(spec, raw, where(listener, key));
    }
    return out as Values;
  };
  const top = values(doc, undefined);
  const rawListeners = doc.listener;
  let listeners: Values[] = [];
  if (rawListeners !== undefined) {
    if (!Array.isArray(rawListeners) || rawListeners.some((l) => typeof l !== "object" || l === null || Array.isArray(l))) {
      throw new ConfigFileError(`${where(undefined, "listener")}: expected [[listener]] tables (an array of tables)`);
    }
    if (rawListeners.length > MAX_LISTENERS) throw new ConfigFileError(`${where(undefined, "listener")}: at most ${MAX_LISTENERS} listeners, got ${rawListeners.length}`);
    listeners = rawListeners.map((l, i) => values(l as Record<string, unknown>, i));
  }
  return { mode, file: { top, listeners, where } };
}

/** Reads a config file's text; a missing or unreadable file is a ConfigFileError. */
export async function readConfigFile(path: string): Promise<string> {
  try {
    return await Bun.file(path).text();
  } catch (err) {
    const code = (err as { code?: string }).code;
    const why = code === "ENOENT" ? "no such file" : code === "EACCES" ? "permission denied" : code === "EISDIR" ? "is a directory" : (err as Error).message;
    throw new ConfigFileError(`${path}: cannot read the config file: ${why}`);
  }
}

/**
 * Parses the command line and, when it names one, the config file: the whole configuration of a run.
 * `read` is injectable for tests. Throws UsageError (command line) or ConfigFileError (file).
 */
export async function loadCommand(argv: string[], read: (path: string) => Promise<string> = readConfigFile): Promise<Command> {
  const cl = parseCommandLine(argv);
  if (cl.kind === "help") return { mode: "help", topic: cl.topic };
  if (cl.kind === "version") return { mode: "version" };
  if (cl.kind === "keygen") return { mode: "keygen" };
  if (cl.configPath === undefined) {
    if (cl.mode === undefined) throw new UsageError("no mode given");
    return mergeConfig(cl.mode, cliValues(cl.mode, cl.flags), undefined, cl);
  }
  const { mode, file } = parseConfigText(await read(cl.configPath), cl.configPath, cl.mode);
  return mergeConfig(mode, cliValues(mode, cl.flags), file, cl);
}
