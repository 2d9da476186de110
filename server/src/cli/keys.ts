/** `db-gateway keys`: random API keys and the gateway secret, printed for an env file or written one per file for the *_FILE settings. */
import { randomBytes } from "node:crypto";
import { join, resolve } from "node:path";
import { MIN_API_KEY_LENGTH, MIN_SECRET_LENGTH } from "../config.js";
import { EXIT_OK, UsageError, fail, output, parseCommandArgs, type Command } from "./command.js";
import { PRIVATE_FILE, ensurePrivateDirectory, existingFiles, platformNames, writeFileSafely } from "./private-files.js";

/** Bytes of randomness in every key: 256 bits, 43 base64url characters, more than MIN_API_KEY_LENGTH and MIN_SECRET_LENGTH ask. */
const KEY_BYTES = 32;

/** One secret to make: its setting (API_KEY_MEDSTOREAPP) and the file that holds it with --out. */
interface Secret {
  setting: string;
  file: string;
  value: string;
}

export const keysCommand: Command = {
  name: "keys",
  summary: "make API keys and the gateway secret",
  help: `Usage: db-gateway keys [--platform NAME]... [--admin] [--secret] [--out DIR [--force]] [--json]

Makes random keys (${KEY_BYTES} random bytes each, base64url): an API key per --platform,
the admin key with --admin, and the gateway secret with --secret.

Without --out, prints them as settings, one per line, for an env file:
  API_KEY_MEDSTOREAPP=…   API_KEY_ADMIN=…   GATEWAY_SECRET=…
This is the one command that prints secrets, because it is asked to: they go to
stdout only. Redirect it to a file only you can read:
  (umask 077; db-gateway keys --platform medstoreapp --admin --secret > gateway.env)

With --out, writes each to its own file in DIR (made mode 0700 when missing),
mode 0600, without a trailing newline: api-key-NAME, api-key-admin,
gateway-secret; and prints the settings that point the gateway at them:
  API_KEY_MEDSTOREAPP_FILE=DIR/api-key-medstoreapp
  API_KEY_ADMIN_FILE=DIR/api-key-admin
  GATEWAY_SECRET_FILE=DIR/gateway-secret
No file is replaced without --force. Keep the gateway secret stable: every tenant
role's password is derived from it.

Options:
  --platform NAME   an API key for platform NAME (repeatable)
  --admin           the admin key (AdminService)
  --secret          the gateway secret
  --out DIR         write files instead of printing the keys
  --force           with --out: replace files that exist
  --json            one JSON object: {"env": {SETTING: value}} without --out,
                    {"dir", "written": [paths], "env": {SETTING_FILE: path}} with it
  -h, --help        this text`,
  async run(args) {
    const { values } = parseCommandArgs(args, {
      platform: { type: "string", multiple: true },
      admin: { type: "boolean" },
      secret: { type: "boolean" },
      out: { type: "string" },
      force: { type: "boolean" },
    });
    const platforms = platformNames(values.platform);
    if (platforms.length === 0 && !values.admin && !values.secret) throw new UsageError("nothing to make: give --platform NAME, --admin or --secret");
    if (values.force && values.out === undefined) throw new UsageError("--force replaces files: it needs --out");
    const secrets: Secret[] = [
      ...platforms.map((p) => ({ setting: `API_KEY_${p.toUpperCase()}`, file: `api-key-${p}`, value: randomKey(MIN_API_KEY_LENGTH) })),
      ...(values.admin ? [{ setting: "API_KEY_ADMIN", file: "api-key-admin", value: randomKey(MIN_API_KEY_LENGTH) }] : []),
      ...(values.secret ? [{ setting: "GATEWAY_SECRET", file: "gateway-secret", value: randomKey(MIN_SECRET_LENGTH) }] : []),
    ];

    if (values.out === undefined) {
      const env = Object.fromEntries(secrets.map((s) => [s.setting, s.value]));
      output(values.json, { env }, () => secrets.map((s) => `${s.setting}=${s.value}`).join("\n"));
      return EXIT_OK;
    }

    const dir = resolve(values.out);
    const paths = secrets.map((s) => join(dir, s.file));
    const existing = existingFiles(paths);
    if (existing.length > 0 && !values.force) {
      return fail(values.json, `not replacing ${existing.join(", ")}: use --force to replace them (a replaced key must be given to its clients again)`, {
        existing,
      });
    }
    await ensurePrivateDirectory(dir);
    for (const [i, secret] of secrets.entries()) await writeFileSafely(paths[i]!, secret.value, PRIVATE_FILE, values.force === true);
    const env = Object.fromEntries(secrets.map((s, i) => [`${s.setting}_FILE`, paths[i]!]));
    output(values.json, { dir, written: paths, env }, () =>
      Object.entries(env)
        .map(([name, path]) => `${name}=${path}`)
        .join("\n"),
    );
    return EXIT_OK;
  },
};

/** A random key of at least `minLength` characters (and at least KEY_BYTES of randomness), printable and safe in env files and headers. */
function randomKey(minLength: number): string {
  return randomBytes(Math.max(KEY_BYTES, Math.ceil((minLength * 3) / 4))).toString("base64url");
}
