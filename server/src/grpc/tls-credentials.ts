// The gRPC server's TLS: its certificate and key, the CA client certificates must chain to, and a revocation list, as grpc-js server credentials.
import * as grpc from "@grpc/grpc-js";
import { createSecureContext, type SecureContextOptions } from "node:tls";

/** The server's TLS material, read from the settings' files. */
export interface TlsMaterial {
  /** The server's certificate chain. */
  cert: Buffer;
  key: Buffer;
  /** The CA that every client certificate must chain to. */
  clientCa: Buffer;
  /** Revoked client certificates (a PEM CRL from that CA): a revoked certificate fails the handshake. */
  crl?: Buffer;
}

/**
 * Server credentials that require a client certificate from `clientCa`, not
 * revoked by `crl`. grpc-js's `createSsl` takes no CRL; its credentials
 * class takes any of node's secure context options.
 */
export class MutualTlsCredentials extends grpc.ServerCredentials {
  /** `handshakeTimeoutMillis`: a connection that has not completed its handshake this long after it was accepted is destroyed (node's default: 120 s). */
  constructor(material: TlsMaterial, handshakeTimeoutMillis?: number) {
    // GRPC_SSL_CIPHER_SUITES, as grpc-js's own credentials read it.
    const ciphers = process.env.GRPC_SSL_CIPHER_SUITES;
    // grpc-js passes these options to the node TLS server it makes at bindAsync.
    super(
      {
        requestCert: true,
        rejectUnauthorized: true,
        ...(ciphers ? { ciphers } : {}),
        ...(handshakeTimeoutMillis === undefined ? {} : { handshakeTimeout: handshakeTimeoutMillis }),
      },
      contextOptions(material),
    );
  }

  _equals(other: grpc.ServerCredentials): boolean {
    return other === this;
  }

  /**
   * New material for the handshakes from now on (connections already open keep
   * theirs). Checked first: material node refuses (a key that is not the
   * certificate's, a file that is not PEM) throws, and the old stays.
   */
  update(material: TlsMaterial): void {
    const options = contextOptions(material);
    createSecureContext(options);
    this.updateSecureContextOptions(options);
  }
}

/** grpc-js server credentials for `material`: mutual TLS, with a handshake timeout when one is given. */
export function serverCredentials(material: TlsMaterial, handshakeTimeoutMillis?: number): MutualTlsCredentials {
  return new MutualTlsCredentials(material, handshakeTimeoutMillis);
}

/** Node's secure context options for `material` (the CLI checks them with `createSecureContext` before starting). */
export function contextOptions(material: TlsMaterial): SecureContextOptions {
  return { cert: material.cert, key: material.key, ca: material.clientCa, ...(material.crl === undefined ? {} : { crl: material.crl }) };
}
