// Who may call and how: the API keys of each platform and the admin, the platforms' signing secrets and statement classes, read from the settings.
import { STATEMENT_CLASSES, type StatementClass } from "./execution/statement-policy.js";
import { validatePlatform } from "./tenancy/naming.js";

/** The shortest API key accepted: shorter keys can be guessed. */
export const MIN_API_KEY_LENGTH = 16;

/** The shortest gateway or signing secret accepted. */
export const MIN_SECRET_LENGTH = 32;

/** Keys per API_KEY_ setting: the one in use and the next, so that a key is rotated with no call refused. */
export const MAX_KEYS_PER_PRINCIPAL = 2;

/** Reserved: the gateway's catalog database would be this platform's. */
export const RESERVED_PLATFORM = "dbgateway";

const API_KEY_PREFIX = "API_KEY_";

/** Printable ASCII without spaces: what a gRPC metadata value can be, less the spaces that separate a setting's two keys. */
const API_KEY_CHARACTERS = /^[\x21-\x7e]+$/;

/** Reads a secret setting (`name`, or the file `name_FILE` names); reports its problems itself. */
type SecretReader = (name: string) => string | undefined;

/**
 * API_KEY_<PLATFORM> and API_KEY_ADMIN (or their _FILE forms): one key or two
 * each (separated by white space), every key different. `keyNames` are the
 * settings found, whatever their problems.
 */
export function apiKeysOf(
  env: NodeJS.ProcessEnv,
  secret: SecretReader,
  problems: string[],
): { platformKeys: Map<string, readonly string[]>; adminKeys: readonly string[]; keyNames: ReadonlySet<string> } {
  const platformKeys = new Map<string, readonly string[]>();
  let adminKeys: readonly string[] = [];
  const seen = new Map<string, string>();
  const keyNames = new Set(
    Object.keys(env)
      .filter((name) => name.toUpperCase().startsWith(API_KEY_PREFIX) && env[name])
      .map((name) => name.replace(/_FILE$/, ""))
      .filter((name) => name.length > API_KEY_PREFIX.length),
  );
  for (const name of [...keyNames].sort()) {
    const value = secret(name);
    if (value === undefined) continue;
    const suffix = name.slice(API_KEY_PREFIX.length).toUpperCase();
    // Two keys are separated by spaces or a line break: a key file's second line is the next key.
    const keys = value.split(/\s+/);
    if (keys.length > MAX_KEYS_PER_PRINCIPAL) {
      problems.push(`${name} holds ${keys.length} keys: at most ${MAX_KEYS_PER_PRINCIPAL} (the key in use and the next)`);
      continue;
    }
    if (!keys.every((key) => API_KEY_CHARACTERS.test(key))) {
      problems.push(
        `${name} must be printable ASCII: one key, or two separated by a space or a line break, with nothing around them (no client could send it)`,
      );
      continue;
    }
    if (keys.some((key) => key.length < MIN_API_KEY_LENGTH)) {
      problems.push(`${name} must be at least ${MIN_API_KEY_LENGTH} characters${keys.length > 1 ? " per key" : ""}`);
      continue;
    }
    const other = keys.map((key) => seen.get(key)).find((found) => found !== undefined) ?? (keys[0] === keys[1] ? name : undefined);
    if (other !== undefined) {
      problems.push(`${name} has a key that ${other === name ? "it holds twice" : `${other} holds too`}: every key must be different`);
      continue;
    }
    for (const key of keys) seen.set(key, name);
    if (suffix === "ADMIN") {
      adminKeys = keys;
      continue;
    }
    const platform = suffix.toLowerCase();
    if (platform === RESERVED_PLATFORM) {
      problems.push(`${name}: the platform name "${RESERVED_PLATFORM}" is reserved for the gateway's own catalog`);
      continue;
    }
    try {
      validatePlatform(platform);
      if (platformKeys.has(platform)) {
        problems.push(`${name}: another API_KEY_ variable already names platform "${platform}" (names are case-insensitive)`);
        continue;
      }
      platformKeys.set(platform, keys);
    } catch {
      problems.push(`${name}: platform names are letters and digits starting with a letter (API_KEY_MEDSTOREAPP)`);
    }
  }
  return { platformKeys, adminKeys, keyNames };
}

/** SIGNING_SECRET_<PLATFORM> (or _FILE): the platforms whose calls must be signed, each with its secret. */
export function signingSecretsOf(
  env: NodeJS.ProcessEnv,
  secret: SecretReader,
  platformKeys: ReadonlyMap<string, unknown>,
  problems: string[],
): Map<string, string> {
  const signingSecrets = new Map<string, string>();
  for (const name of new Set(Object.keys(env).map((n) => n.replace(/_FILE$/, "")))) {
    const match = /^SIGNING_SECRET_([A-Za-z0-9]+)$/i.exec(name);
    if (match === null) continue;
    const platform = match[1]!.toLowerCase();
    const value = secret(name);
    if (value === undefined) continue;
    if (value.length < MIN_SECRET_LENGTH) problems.push(`${name} must be at least ${MIN_SECRET_LENGTH} characters`);
    else if (!platformKeys.has(platform)) problems.push(`${name}: no platform "${platform}" has an API key (API_KEY_${platform.toUpperCase()})`);
    else signingSecrets.set(platform, value);
  }
  return signingSecrets;
}

/**
 * STATEMENT_CLASSES_<PLATFORM>: the statement classes (`STATEMENT_CLASSES`) a
 * platform may run, comma-separated, or "all"; a platform without one runs
 * any statement.
 */
export function statementClassesOf(env: NodeJS.ProcessEnv, platformKeys: ReadonlyMap<string, unknown>, problems: string[]): Map<string, StatementClass[]> {
  const policies = new Map<string, StatementClass[]>();
  for (const [name, raw] of Object.entries(env)) {
    const match = /^STATEMENT_CLASSES_([A-Za-z0-9]+)$/i.exec(name);
    if (match === null || !raw?.trim()) continue;
    const platform = match[1]!.toLowerCase();
    const value = raw.trim().toLowerCase();
    const classes = value === "all" ? [...STATEMENT_CLASSES] : value.split(",").map((c) => c.trim());
    const unknown = classes.filter((c) => !(STATEMENT_CLASSES as readonly string[]).includes(c));
    if (unknown.length > 0)
      problems.push(`${name}: unknown statement class ${unknown.map((c) => `"${c}"`).join(", ")} (classes: ${STATEMENT_CLASSES.join(", ")}, or all)`);
    else if (!platformKeys.has(platform)) problems.push(`${name}: no platform "${platform}" has an API key (API_KEY_${platform.toUpperCase()})`);
    else policies.set(platform, classes as StatementClass[]);
  }
  return policies;
}
