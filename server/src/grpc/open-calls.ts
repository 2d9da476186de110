/** The calls open on a gateway's services, for its drain: new calls refused, and the last ones ended with a status. */
import type { GatewayError } from "../errors.js";

/**
 * The calls open on the services registered with it (see `addService`), for
 * the gateway's shutdown. Once `refuse` is called, a new call fails at once
 * with its error, before it is authorized (no rate-limit token is taken).
 * `settled` tells when the last open call has ended; `endAll` ends the calls
 * still open with an error of their own, so that each client gets a status
 * before the gateway closes its connections.
 */
export class OpenCalls {
  readonly #ends = new Set<(err: GatewayError) => void>();
  readonly #waiting = new Set<() => void>();
  #refusal: GatewayError | undefined;

  /** The error a new call fails with: undefined until `refuse`. */
  get refusal(): GatewayError | undefined {
    return this.#refusal;
  }

  /** Calls open now. */
  get size(): number {
    return this.#ends.size;
  }

  /** From now on, new calls fail with `err`. */
  refuse(err: GatewayError): void {
    this.#refusal = err;
  }

  /**
   * Counts a call as open until the function returned is called (once it has
   * its status). `end` ends the call with an error (see `endAll`); it must
   * give the call its status at once and make its later outcome a no-op.
   */
  add(end: (err: GatewayError) => void): () => void {
    this.#ends.add(end);
    return () => {
      if (!this.#ends.delete(end) || this.#ends.size > 0) return;
      for (const wake of [...this.#waiting]) wake();
    };
  }

  /** Resolves true once no call is open, or false if some still are after `millis`. */
  settled(millis: number): Promise<boolean> {
    if (this.#ends.size === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const wake = (settled: boolean) => {
        clearTimeout(timer);
        this.#waiting.delete(done);
        resolve(settled);
      };
      const done = () => wake(true);
      const timer = setTimeout(() => wake(false), millis);
      this.#waiting.add(done);
    });
  }

  /** Ends every open call with `err`. */
  endAll(err: GatewayError): void {
    for (const end of [...this.#ends]) end(err);
  }
}
