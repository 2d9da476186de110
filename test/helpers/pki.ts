// Certificates for tests: a CA with server and client certificates, and a client certificate from a CA the gateway does not trust.
import { createCertificateAuthority, issueCertificate, type CertificateAndKey } from "../../server/src/pki/certificates.js";

/** Certificates for tests: the gateway's CA with a server and a client certificate, and an unrelated CA's client certificate. */
export interface TestPki {
  ca: CertificateAndKey;
  server: CertificateAndKey;
  client: CertificateAndKey;
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
  cached = {
    ca,
    server: issueCertificate(ca, { commonName: "localhost", usage: "server", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1", "::1"] }),
    client: issueCertificate(ca, { commonName: "test-client", usage: "client" }),
    foreignCa,
    foreignClient: issueCertificate(foreignCa, { commonName: "test-client", usage: "client" }),
  };
  return cached;
}
