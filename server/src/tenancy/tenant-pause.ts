// Holds a tenant's new calls on this gateway while its database is switched to another cluster, each within its own deadline.
import { GatewayError } from "../errors.js";

/** What a held call brings: its deadline (epoch ms, Infinity for none) and cancellation. */
interface HeldCall {
  deadline: number;
  signal?: AbortSignal;
}

interface Pause {
  released: Promise<void>;
  release(): void;
  waiting: number;
}

/**
 * The databases whose new calls wait (a move's switch). A call for a paused
 * database waits until the pause ends, then goes on (to wherever the database
 * is served from then); one whose deadline passes or that is cancelled
 * meanwhile fails with DEADLINE_EXCEEDED or CANCELLED, before any statement
 * was sent. Calls already holding a connection are not held.
 */
export class TenantPauses {
  readonly #paused = new Map<string, Pause>();

  /** Pauses a database's new calls; returns what resumes them (idempotent). Throws if it is paused already. */
  pause(database: string): () => void {
    if (this.#paused.has(database)) throw new GatewayError("MOVE_IN_PROGRESS", `calls to "${database}" are paused already`, { metadata: { database } });
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const pause: Pause = { released, release, waiting: 0 };
    this.#paused.set(database, pause);
    return () => {
      if (this.#paused.get(database) === pause) this.#paused.delete(database);
      release();
    };
  }

  /** Calls waiting now for a paused database (0 when it is not paused). */
  waiting(database: string): number {
    return this.#paused.get(database)?.waiting ?? 0;
  }

  /** What a call for `database` waits for: undefined when it is not paused. */
  hold(database: string, call: HeldCall): Promise<void> | undefined {
    const pause = this.#paused.get(database);
    if (pause === undefined) return undefined;
    pause.waiting++;
    return new Promise<void>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      let settled = false;
      const done = () => {
        if (settled) return false;
        settled = true;
        pause.waiting--;
        clearTimeout(timer);
        call.signal?.removeEventListener("abort", cancelled);
        return true;
      };
      const cancelled = () => {
        if (done()) reject(new GatewayError("CANCELLED", "the call was cancelled while its tenant was being moved"));
      };
      if (call.signal?.aborted === true) return cancelled();
      call.signal?.addEventListener("abort", cancelled, { once: true });
      if (Number.isFinite(call.deadline)) {
        timer = setTimeout(
          () => {
            if (done())
              reject(new GatewayError("DEADLINE_EXCEEDED", "the call's deadline passed while its tenant was being moved to another cluster: it was not run"));
          },
          Math.max(0, call.deadline - Date.now()),
        );
      }
      void pause.released.then(() => {
        if (done()) resolve();
      });
    });
  }
}
