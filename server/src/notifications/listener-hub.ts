// LISTEN for the Listen call: one listening connection per database shared by all its subscribers, opened again with backoff when lost.
import { setMaxListeners } from "node:events";
import pg from "pg";
import { GatewayError, toGatewayError } from "../errors.js";
import type { Lease, PoolManager } from "../pool/pool-manager.js";

/** A notification as PostgreSQL delivered it. */
export interface Notification {
  channel: string;
  payload: string;
  /** The PostgreSQL process id of the notifying session. */
  senderPid: number;
}

/** What a subscriber is told. Calls come from the hub; none may throw. */
export interface Subscriber {
  /** Every channel is being listened to: notifications flow from now on. */
  started(): void;
  notify(notification: Notification): void;
  /** The listening connection was lost and is back: notifications sent in between may have been missed. */
  missed(): void;
  /** The subscription is over (the database was dropped, the gateway is closing, it could not start). */
  failed(err: GatewayError): void;
}

/** A subscriber's handle: `unsubscribe` stops its notifications; safe to call more than once. */
export interface Subscription {
  unsubscribe(): void;
}

/** Counts of what the hub holds. */
export interface ListenerStats {
  /** Databases with a listening connection (or one being opened). */
  databases: number;
  channels: number;
  subscribers: number;
}

/** Options of the hub. */
export interface ListenerHubOptions {
  /** First delay before a lost listening connection is opened again; doubled up to `maxRetryMillis`. */
  retryMillis: number;
  maxRetryMillis: number;
  /**
   * Whether the gateway still routes to the database: asked whenever a
   * listening connection is lost, so that subscribers of a dropped database
   * end with NOT_FOUND however the reconnection fails (its role may be gone
   * before PostgreSQL can say the database is).
   */
  exists(database: string): boolean;
  onError?(database: string, err: unknown): void;
}

/**
 * LISTEN for many subscribers through few connections: one listening
 * connection per database, leased from the pool manager (so it counts against
 * the global cap like any other), shared by every subscriber of that
 * database. Channels are reference-counted: LISTEN when the first subscriber
 * of a channel arrives, UNLISTEN when the last one leaves, and the connection
 * goes back to its pool (reset by DISCARD ALL) when no subscriber is left.
 * A lost listening connection is opened again with backoff; its subscribers
 * are then told that notifications may have been missed.
 */
export class ListenerHub {
  readonly #listeners = new Map<string, DatabaseListener>();
  readonly #closing = new AbortController();

  constructor(
    private readonly pools: PoolManager,
    private readonly options: ListenerHubOptions,
  ) {
    // Each listening connection's lease watches this signal: one listener per database listened to.
    setMaxListeners(0, this.#closing.signal);
  }

  /** Subscribes to channels of a database; `subscriber.started` is called once all are listened to. */
  subscribe(database: string, channels: readonly string[], subscriber: Subscriber): Subscription {
    if (this.#closing.signal.aborted) {
      subscriber.failed(new GatewayError("SHUTTING_DOWN", "the gateway is shutting down"));
      return { unsubscribe: () => undefined };
    }
    let listener = this.#listeners.get(database);
    if (listener === undefined) {
      listener = new DatabaseListener(database, this.pools, this.options, this.#closing.signal, () => this.#listeners.delete(database));
      this.#listeners.set(database, listener);
    }
    return listener.add(new Set(channels), subscriber);
  }

  /** Ends every subscription (UNAVAILABLE, SHUTTING_DOWN) and gives the listening connections back. */
  close(): void {
    this.#closing.abort();
    for (const listener of this.#listeners.values()) listener.failAll(new GatewayError("SHUTTING_DOWN", "the gateway is shutting down"));
  }

  stats(): ListenerStats {
    const stats = { databases: this.#listeners.size, channels: 0, subscribers: 0 };
    for (const listener of this.#listeners.values()) {
      stats.channels += listener.channels.size;
      stats.subscribers += listener.subscribers.size;
    }
    return stats;
  }
}

interface Member {
  readonly channels: ReadonlySet<string>;
  readonly subscriber: Subscriber;
  started: boolean;
}

/** The listening connection of one database and its subscribers. */
class DatabaseListener {
  /** Subscribers by channel. */
  readonly channels = new Map<string, Set<Member>>();
  readonly subscribers = new Set<Member>();
  /** The listening connection while it is up and not being given back. */
  #client: pg.Client | undefined;
  /** Channels LISTENed (or being LISTENed) on `#client`: a LISTEN is sent once per channel, and awaited by everyone who needs it. */
  #listening = new Map<string, Promise<void>>();
  /** Resolves when the last subscriber left, so the lease ends. */
  #empty: (() => void) | undefined;
  #running = false;

  constructor(
    readonly database: string,
    private readonly pools: PoolManager,
    private readonly options: ListenerHubOptions,
    private readonly closing: AbortSignal,
    private readonly forget: () => void,
  ) {}

  add(channels: ReadonlySet<string>, subscriber: Subscriber): Subscription {
    const member: Member = { channels, subscriber, started: false };
    this.subscribers.add(member);
    for (const channel of channels) {
      let members = this.channels.get(channel);
      if (members === undefined) {
        members = new Set();
        this.channels.set(channel, members);
      }
      members.add(member);
    }
    if (this.#client !== undefined) this.#startWhenListening(this.#client, member);
    else if (!this.#running) void this.#run();
    return { unsubscribe: () => this.#remove(member) };
  }

  /** LISTENs whichever of the channels are not yet listened to on `client`; resolves once all are (including those already on their way). */
  #ensureListening(client: pg.Client, channels: Iterable<string>): Promise<unknown> {
    const ready: Promise<void>[] = [];
    for (const channel of channels) {
      let listened = this.#listening.get(channel);
      if (listened === undefined) {
        listened = client.query(`LISTEN ${pg.escapeIdentifier(channel)}`).then(() => undefined);
        listened.catch(() => undefined); // failures reach whoever awaits it
        this.#listening.set(channel, listened);
      }
      ready.push(listened);
    }
    return Promise.all(ready);
  }

  /** Starts the member once its channels are listened to. */
  #startWhenListening(client: pg.Client, member: Member): void {
    this.#ensureListening(client, member.channels).then(
      () => {
        if (this.#client === client) this.#start(member);
      },
      (err: unknown) => {
        // A broken connection is the run loop's: it starts the member after reconnecting.
        if (err instanceof pg.DatabaseError && err.severity === "ERROR") this.#fail(member, toGatewayError(err));
      },
    );
  }

  failAll(err: GatewayError): void {
    for (const member of [...this.subscribers]) this.#fail(member, err);
  }

  #start(member: Member): void {
    if (!this.subscribers.has(member) || member.started) return;
    member.started = true;
    member.subscriber.started();
  }

  #fail(member: Member, err: GatewayError): void {
    if (!this.subscribers.has(member)) return;
    this.#remove(member);
    member.subscriber.failed(err);
  }

  #remove(member: Member): void {
    if (!this.subscribers.delete(member)) return;
    const dropped: string[] = [];
    for (const channel of member.channels) {
      const members = this.channels.get(channel);
      members?.delete(member);
      if (members?.size === 0) {
        this.channels.delete(channel);
        dropped.push(channel);
      }
    }
    if (this.subscribers.size === 0) {
      // The connection goes back to its pool: a subscriber arriving now waits for the next one.
      this.#client = undefined;
      this.#empty?.();
    } else if (this.#client !== undefined) {
      for (const channel of dropped) {
        this.#listening.delete(channel);
        this.#client.query(`UNLISTEN ${pg.escapeIdentifier(channel)}`).catch(() => undefined); // a broken connection is the run loop's
      }
    }
  }

  /** Holds a listening connection while there are subscribers, opening it again when it is lost. */
  async #run(): Promise<void> {
    this.#running = true;
    let delay = this.options.retryMillis;
    let lost = false;
    try {
      while (this.subscribers.size > 0 && !this.closing.aborted) {
        try {
          await this.pools.withConnection(this.database, (lease) => this.#hold(lease, lost), {
            deadline: Infinity,
            signal: this.closing,
            unmetered: true,
            held: true,
          });
          delay = this.options.retryMillis;
          lost = false;
        } catch (err) {
          const error = toGatewayError(err);
          if (error.reason === "DATABASE_NOT_FOUND" || this.closing.aborted) {
            this.failAll(error);
            return;
          }
          if (!this.options.exists(this.database)) {
            this.failAll(new GatewayError("DATABASE_NOT_FOUND", `database "${this.database}" was dropped`, { metadata: { database: this.database } }));
            return;
          }
          // Subscribers still waiting for their start fail now rather than hang; started ones wait for the reconnection.
          for (const member of [...this.subscribers]) if (!member.started) this.#fail(member, error);
          if (this.subscribers.size === 0) return;
          if (!lost) this.options.onError?.(this.database, err);
          lost = true;
          await new Promise((resolve) => setTimeout(resolve, delay));
          delay = Math.min(delay * 2, this.options.maxRetryMillis);
        }
      }
    } finally {
      this.#running = false;
      if (this.subscribers.size === 0) this.forget();
      else if (!this.closing.aborted) void this.#run(); // subscribed while the loop was ending
    }
  }

  /** Listens on the leased connection until no subscriber is left (resolves) or the connection breaks (rejects). */
  async #hold(lease: Lease, reconnected: boolean): Promise<void> {
    const { client } = lease;
    const onNotification = (message: pg.Notification) => {
      const notification = { channel: message.channel, payload: message.payload ?? "", senderPid: message.processId };
      for (const member of this.channels.get(message.channel) ?? []) if (member.started) member.subscriber.notify(notification);
    };
    let broken: (err: unknown) => void = () => undefined;
    const lost = new Promise<never>((_, reject) => (broken = reject));
    lost.catch(() => undefined);
    const onError = (err: unknown) => broken(err);
    const onEnd = () => broken(new Error("Connection terminated: the listening connection was closed"));
    client.on("notification", onNotification);
    client.on("error", onError);
    client.on("end", onEnd);
    try {
      this.#client = client;
      this.#listening = new Map();
      // Those started on a connection that was lost are told they may have missed notifications; the others start.
      const startedBefore = [...this.subscribers].filter((member) => member.started);
      const all = this.#ensureListening(client, this.channels.keys());
      for (const member of this.subscribers) if (!member.started) this.#startWhenListening(client, member);
      await Promise.race([all, lost]);
      if (reconnected) for (const member of startedBefore) if (this.subscribers.has(member)) member.subscriber.missed();
      const empty = new Promise<void>((resolve) => (this.#empty = resolve));
      if (this.subscribers.size > 0) await Promise.race([empty, lost, aborted(lease.signal)]);
    } finally {
      if (this.#client === client) this.#client = undefined;
      this.#empty = undefined;
      client.off("notification", onNotification);
      client.off("error", onError);
      client.off("end", onEnd);
    }
  }
}

function aborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
}

/** Channel names: what `validateChannels` accepts. */
const CHANNEL = /^[A-Za-z0-9_.:-]{1,63}$/;
/** The most channels one Listen call may name. */
export const MAX_CHANNELS = 100;

/**
 * Checks the channels of a Listen request: 1 to 100 distinct names of 1 to 63
 * letters, digits, `_`, `.`, `:` or `-` (PostgreSQL truncates longer names).
 * LISTEN takes an identifier, not a parameter: names are checked here and
 * quoted where they are used, so a name is matched exactly as `pg_notify`
 * spells it.
 */
export function validateChannels(channels: readonly string[]): string[] {
  if (channels.length === 0) throw new GatewayError("INVALID_CHANNEL", "name at least one channel");
  if (channels.length > MAX_CHANNELS) throw new GatewayError("INVALID_CHANNEL", `at most ${MAX_CHANNELS} channels per call`);
  for (const channel of channels) {
    if (!CHANNEL.test(channel)) {
      throw new GatewayError("INVALID_CHANNEL", "channel names are 1 to 63 letters, digits, '_', '.', ':' or '-'", {
        metadata: { channel: channel.slice(0, 63) },
      });
    }
  }
  return [...new Set(channels)];
}
