// The Redis that gateway instances share (REDIS_URL): one connection whose every command is bounded, and whether it answers, warned once per outage.
import { Redis } from "ioredis";
import { loggableError, type Logger } from "../telemetry/logger.js";

/** How `SharedRedis` connects and reports. */
export interface SharedRedisOptions {
  /** redis:// or rediss:// URL (it may hold a password: it is never logged). */
  url: string;
  /** Put before every key, so that several deployments can share one Redis. */
  keyPrefix: string;
  /** The longest any one command may take before it counts as Redis being unreachable (default 250 ms). */
  commandTimeoutMillis?: number;
  log: Logger;
}

/** While Redis is unreachable, how often it is asked again (besides the client's own reconnections). */
const PROBE_MILLIS = 1_000;
const DEFAULT_COMMAND_TIMEOUT_MILLIS = 250;

/**
 * The Redis shared by the gateways serving the same clusters (rate limits,
 * statements in flight, signed-request nonces). No call ever waits for Redis beyond the command
 * timeout: commands are not queued while it is disconnected (they fail at
 * once), nor retried after a reconnection. Any failure marks it unreachable:
 * the users fall back to this process's own state, a warning is logged once
 * for the outage, and a probe (PING every second) or the client's
 * reconnection brings it back, logged once too. `epoch` counts the returns,
 * so that state kept beside Redis while it was away can be dropped.
 */
export class SharedRedis {
  readonly #client: Redis;
  readonly #log: Logger;
  #state: "connecting" | "up" | "down" = "connecting";
  #epoch = 0;
  #probe: NodeJS.Timeout | undefined;
  #closed = false;
  /** Told when the first connection settles, up or down (see `ready`). */
  #settled: (() => void) | undefined;

  constructor(readonly options: SharedRedisOptions) {
    this.#log = options.log.child({ component: "redis" });
    const timeout = options.commandTimeoutMillis ?? DEFAULT_COMMAND_TIMEOUT_MILLIS;
    this.#client = new Redis(options.url, {
      keyPrefix: options.keyPrefix,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      commandTimeout: timeout,
      connectTimeout: Math.max(timeout, 1_000),
      // Reconnects forever, at most a second apart: the gateway serves meanwhile on its own limits.
      retryStrategy: (attempt) => Math.min(attempt * 100, PROBE_MILLIS),
    });
    this.#client.on("ready", () => this.#up());
    this.#client.on("error", (err: unknown) => this.#down(err));
    this.#client.on("close", () => this.#down(new Error("the connection to Redis closed")));
  }

  /** Whether Redis answered last: the shared state is used only then. */
  get available(): boolean {
    return this.#state === "up";
  }

  /** Counts Redis's returns after an outage: state kept while it was away is stale once this changes. */
  get epoch(): number {
    return this.#epoch;
  }

  /** The client, for the users' own commands; run them through `run`. */
  get client(): Redis {
    return this.#client;
  }

  /** Waits until Redis answers, fails, or `millis` pass (a gateway starts either way: shared from when Redis answers); whether it answers. */
  async ready(millis: number): Promise<boolean> {
    if (this.#state === "connecting") {
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        this.#settled = resolve;
        timer = setTimeout(resolve, millis);
      });
      clearTimeout(timer);
      this.#settled = undefined;
    }
    if (this.#state === "connecting") this.#down(new Error(`Redis did not answer within ${millis} ms`));
    return this.available;
  }

  /**
   * Runs `command` if Redis is available: its result, or undefined when Redis
   * is unavailable or the command fails (it then counts as unreachable). Never
   * rejects, and settles within the command timeout.
   */
  async run<T>(command: (client: Redis) => Promise<T>): Promise<T | undefined> {
    if (!this.available) return undefined;
    try {
      return await command(this.#client);
    } catch (err) {
      this.#down(err);
      return undefined;
    }
  }

  /** Closes the connection; nothing is shared from then on. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#probe);
    this.#state = "down";
    await this.#client.quit().catch(() => this.#client.disconnect());
  }

  #up(): void {
    if (this.#closed || this.#state === "up") return;
    const was = this.#state;
    this.#state = "up";
    this.#epoch++;
    this.#settled?.();
    clearInterval(this.#probe);
    this.#probe = undefined;
    if (was === "down") this.#log.warn("Redis answers again: rate limits, statements in flight and signed-request nonces are shared again");
    else this.#log.info("Redis answers: rate limits, statements in flight and signed-request nonces are shared with the other gateways");
  }

  #down(err: unknown): void {
    if (this.#closed || this.#state === "down") return;
    this.#state = "down";
    this.#settled?.();
    this.#log.warn(
      { err: loggableError(err) },
      "Redis is unreachable: rate limits, statements in flight and signed-request nonces are this gateway's own (per process) until it answers again",
    );
    // A server that stopped answering on an open connection sends no "ready": ask it.
    this.#probe = setInterval(() => {
      if (this.#client.status !== "ready") return; // reconnecting: its "ready" will say
      this.#client.ping().then(
        () => this.#up(),
        () => undefined,
      );
    }, PROBE_MILLIS);
    this.#probe.unref();
  }
}
