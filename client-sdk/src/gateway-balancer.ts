// Balances a client's calls over several gateways round-robin, skipping those without a connection.
import type { DescMessage, DescMethodStreaming, DescMethodUnary, MessageInitShape } from "@bufbuild/protobuf";
import type { ContextValues } from "@connectrpc/connect";
import { connectivityState } from "@grpc/grpc-js";
import type { ClosableTransport, GatewayTransport } from "./grpc-js-transport.js";

/** A transport over several gateways: each call goes to the next one that can take it (see `pick`). */
export interface BalancedTransport extends ClosableTransport {
  /** The gateways' own transports, in the order given. */
  readonly gateways: readonly GatewayTransport[];
  /**
   * The index of the gateway the next call goes to: the next in turn that has
   * a connection; when none has, the next in turn that is connecting or idle
   * (the call waits for its connection); when every one has failed to
   * connect, simply the next (the call fails at once with UNAVAILABLE, "No
   * connection established", which the SDK retries as not sent). Idle
   * gateways are asked to connect, so that a gateway that is back is used
   * again.
   */
  pick(): number;
}

/**
 * Balances calls over `gateways` round-robin, per call (a stream is one call,
 * and stays on its gateway). A gateway whose connection is lost (killed, or
 * drained: its GOAWAY) is skipped until grpc-js has connected to it again
 * (with backoff); calls already on it end as their gateway ends them.
 */
export function createBalancedTransport(gateways: readonly GatewayTransport[]): BalancedTransport {
  let next = 0;
  const pick = (): number => {
    const n = gateways.length;
    if (n === 1) return 0;
    let fallback = -1;
    for (let k = 0; k < n; k++) {
      const i = (next + k) % n;
      const state = gateways[i]!.connectivity(false);
      if (state === connectivityState.READY) {
        next = i + 1;
        return i;
      }
      if (state === connectivityState.IDLE) gateways[i]!.connectivity(true);
      if (fallback < 0 && state !== connectivityState.TRANSIENT_FAILURE) fallback = i;
    }
    const chosen = fallback < 0 ? next % n : fallback;
    next = chosen + 1;
    return chosen;
  };
  return {
    gateways,
    pick,
    unary<I extends DescMessage, O extends DescMessage>(
      method: DescMethodUnary<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: HeaderInit | undefined,
      input: MessageInitShape<I>,
      contextValues?: ContextValues,
    ) {
      return gateways[pick()]!.unary(method, signal, timeoutMs, header, input, contextValues);
    },
    stream<I extends DescMessage, O extends DescMessage>(
      method: DescMethodStreaming<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: HeaderInit | undefined,
      input: AsyncIterable<MessageInitShape<I>>,
      contextValues?: ContextValues,
    ) {
      return gateways[pick()]!.stream(method, signal, timeoutMs, header, input, contextValues);
    },
    close() {
      for (const gateway of gateways) gateway.close();
    },
  };
}

/** What Connect passes as call headers (the DOM's HeadersInit). */
type HeaderInit = ConstructorParameters<typeof Headers>[0];
