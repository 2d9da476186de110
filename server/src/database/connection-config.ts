// The administrative PostgreSQL connection's settings, from DATABASE_URL.
import type pg from "pg";
import { parse as parseConnectionString } from "pg-connection-string";

/** Connection settings from a URL: host, port, TLS, and the administrative user and database. */
export function connectionConfig(url: string): pg.ClientConfig {
  const parsed = parseConnectionString(url);
  const config: pg.ClientConfig = {};
  if (parsed.host) config.host = parsed.host;
  if (parsed.port) config.port = Number(parsed.port);
  if (parsed.user) config.user = parsed.user;
  if (parsed.password) config.password = parsed.password;
  if (parsed.database) config.database = parsed.database;
  if (parsed.ssl !== undefined && parsed.ssl !== null) config.ssl = parsed.ssl as pg.ClientConfig["ssl"];
  return config;
}
