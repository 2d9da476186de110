/** X.509 certificates with node-forge: a CA, and server and client certificates it signs (`db-gateway certs`, development mode, tests). */
import { randomBytes } from "node:crypto";
import forge from "node-forge";

/** A certificate and its private key, both PEM. */
export interface CertificateAndKey {
  cert: string;
  key: string;
}

const DAY_MS = 86_400_000;

/**
 * Makes a self-signed certificate authority: for `db-gateway certs`, which
 * operators without a PKI of their own use, for development mode and tests.
 */
export function createCertificateAuthority(commonName: string, validDays = 825): CertificateAndKey {
  const keys = forge.pki.rsa.generateKeyPair({ bits: 2048 });
  const cert = baseCertificate(keys.publicKey, commonName, validDays);
  cert.setIssuer(cert.subject.attributes);
  cert.setExtensions([
    { name: "basicConstraints", cA: true, critical: true },
    { name: "keyUsage", keyCertSign: true, cRLSign: true, critical: true },
    { name: "subjectKeyIdentifier" },
  ]);
  cert.sign(keys.privateKey, forge.md.sha256.create());
  return { cert: forge.pki.certificateToPem(cert), key: forge.pki.privateKeyToPem(keys.privateKey) };
}

/** What a leaf certificate is for. */
export interface LeafOptions {
  commonName: string;
  /** "server" adds serverAuth and the alternative names; "client" adds clientAuth. */
  usage: "server" | "client";
  /** DNS names and IP addresses the server certificate is valid for. */
  dnsNames?: string[];
  ipAddresses?: string[];
  /** URI names of a client certificate: its SPIFFE ID, which names the principal it is for (see grpc/client-identity.ts). */
  uris?: string[];
  validDays?: number;
  /** A private key (PEM) to certify instead of a new one: tests issue many certificates, and a key pair takes a while to make. */
  key?: string;
}

/** Issues a certificate signed by the given CA. */
export function issueCertificate(ca: CertificateAndKey, options: LeafOptions): CertificateAndKey {
  const caCert = forge.pki.certificateFromPem(ca.cert);
  const caKey = forge.pki.privateKeyFromPem(ca.key);
  const keys = options.key === undefined ? forge.pki.rsa.generateKeyPair({ bits: 2048 }) : keyPairOf(options.key);
  const cert = baseCertificate(keys.publicKey, options.commonName, options.validDays ?? 825);
  cert.setIssuer(caCert.subject.attributes);
  const extensions: object[] = [
    { name: "basicConstraints", cA: false },
    { name: "keyUsage", digitalSignature: true, keyEncipherment: true, critical: true },
    { name: "extKeyUsage", serverAuth: options.usage === "server", clientAuth: options.usage === "client" },
  ];
  if (options.usage === "server") {
    extensions.push({
      name: "subjectAltName",
      altNames: [...(options.dnsNames ?? []).map((value) => ({ type: 2, value })), ...(options.ipAddresses ?? []).map((ip) => ({ type: 7, ip }))],
    });
  }
  if (options.usage === "client" && options.uris !== undefined && options.uris.length > 0) {
    extensions.push({ name: "subjectAltName", altNames: options.uris.map((value) => ({ type: 6, value })) });
  }
  cert.setExtensions(extensions);
  cert.sign(caKey, forge.md.sha256.create());
  return { cert: forge.pki.certificateToPem(cert), key: forge.pki.privateKeyToPem(keys.privateKey) };
}

function keyPairOf(pem: string): { privateKey: forge.pki.rsa.PrivateKey; publicKey: forge.pki.rsa.PublicKey } {
  const privateKey = forge.pki.privateKeyFromPem(pem);
  return { privateKey, publicKey: forge.pki.setRsaPublicKey(privateKey.n, privateKey.e) };
}

function baseCertificate(publicKey: forge.pki.PublicKey, commonName: string, validDays: number): forge.pki.Certificate {
  const cert = forge.pki.createCertificate();
  cert.publicKey = publicKey;
  // A positive serial: the high bit of the first byte clear.
  cert.serialNumber = "01" + randomBytes(15).toString("hex");
  cert.validity.notBefore = new Date(Date.now() - DAY_MS);
  cert.validity.notAfter = new Date(Date.now() + validDays * DAY_MS);
  cert.setSubject([{ name: "commonName", value: commonName }]);
  return cert;
}
