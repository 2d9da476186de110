// Certificates for tests: a CA with server and client certificates (one per principal), and a client certificate from a CA the gateway does not trust.
import { principalNamed, spiffeIdOf } from "../../server/src/grpc/client-identity.js";
import { createCertificateAuthority, issueCertificate, type CertificateAndKey } from "../../server/src/pki/certificates.js";

/** Certificates for tests: the gateway's CA with a server and a client certificate, and an unrelated CA's client certificate. */
export interface TestPki {
  ca: CertificateAndKey;
  server: CertificateAndKey;
  /** A client certificate for no principal (CN=test-client): the gateway refuses it with any key. */
  client: CertificateAndKey;
  /** The client certificate of a principal ("admin" or a platform's name), as `db-gateway certs` issues it: made on first use, with `client`'s key. */
  clientFor(name: string): CertificateAndKey;
  /** Signed by a CA the gateway does not trust. */
  foreignClient: CertificateAndKey;
  foreignCa: CertificateAndKey;
}

let cached: TestPki | undefined;

/** Made once per test process (RSA keys take a moment). */
export function testPki(): TestPki {
  if (cached !== undefined) return cached;
  const ca = createCertificateAuthority("db-gateway test CA");
  const foreignCa = createCertificateAuthority("some other CA");
  const client = issueCertificate(ca, { commonName: "test-client", usage: "client" });
  const byName = new Map<string, CertificateAndKey>();
  cached = {
    ca,
    server: issueCertificate(ca, { commonName: "localhost", usage: "server", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1", "::1"] }),
    client,
    clientFor(name) {
      let issued = byName.get(name);
      if (issued === undefined) {
        const uri = spiffeIdOf(principalNamed(name));
        byName.set(name, (issued = issueCertificate(ca, { commonName: name, usage: "client", uris: [uri], key: client.key })));
      }
      return issued;
    },
    foreignCa,
    foreignClient: issueCertificate(foreignCa, { commonName: "test-client", usage: "client" }),
  };
  return cached;
}
