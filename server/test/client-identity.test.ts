// Which principal a client certificate names: SPIFFE IDs before the CN, and the cases that name nobody.
import assert from "node:assert/strict";
import type { PeerCertificate } from "node:tls";
import { describe, it } from "node:test";
import { DEFAULT_CLIENT_IDENTITY, peerOf, type ClientIdentityOptions } from "../src/grpc/client-identity.js";

/** The identity `peerOf` reads from a certificate with this CN and these subjectAltName entries (as Node writes them). */
function identity(cn: string | string[] | undefined, altNames: string[] = [], options: ClientIdentityOptions = DEFAULT_CLIENT_IDENTITY): string | undefined {
  const cert = {
    subject: cn === undefined ? {} : { CN: cn },
    subjectaltname: altNames.length > 0 ? altNames.join(", ") : undefined,
  } as unknown as PeerCertificate;
  return peerOf("127.0.0.1:1", cert, options).identity;
}

describe("peerOf", () => {
  it("reads the SPIFFE ID of the trust domain, else the CN", () => {
    assert.equal(identity("x", ["URI:spiffe://db-gateway/platform/medstoreapp"]), "platform:medstoreapp");
    assert.equal(identity("x", ["URI:spiffe://db-gateway/admin"]), "admin");
    assert.equal(identity("medstoreapp"), "platform:medstoreapp");
    assert.equal(identity("admin"), "admin");
    assert.equal(identity("x", ["DNS:medstoreapp.internal", "URI:https://example.com/platform/y"]), "platform:x");
  });

  it("a certificate with a SPIFFE ID that names nobody here is not read from its CN", () => {
    assert.equal(identity("medstoreapp", ["URI:spiffe://elsewhere/platform/medstoreapp"]), undefined);
    assert.equal(identity("admin", ["URI:spiffe://db-gateway/platform/medstoreapp/worker"]), undefined);
    assert.equal(identity("a", ["URI:spiffe://db-gateway/platform/a", "URI:spiffe://db-gateway/platform/b"]), undefined);
    assert.equal(identity("a", ["URI:spiffe://db-gateway/platform/A"]), undefined);
    assert.equal(identity("a", ['URI:"spiffe://db-gateway/platform/a\\u002c"']), undefined);
  });

  it("names nobody from a CN that is not a platform name, or several CNs", () => {
    assert.equal(identity("test-client"), undefined);
    assert.equal(identity(["a", "b"]), undefined);
    assert.equal(identity(undefined), undefined);
  });

  it("follows TLS_CLIENT_IDENTITY's order and trust domain", () => {
    const cnFirst: ClientIdentityOptions = { sources: ["cn", "uri"], trustDomain: "db-gateway" };
    assert.equal(identity("a", ["URI:spiffe://db-gateway/platform/b"], cnFirst), "platform:a");
    const uriOnly: ClientIdentityOptions = { sources: ["uri"], trustDomain: "example.org" };
    assert.equal(identity("a", [], uriOnly), undefined);
    assert.equal(identity("a", ["URI:spiffe://example.org/platform/b"], uriOnly), "platform:b");
    assert.equal(identity("a", ["URI:spiffe://db-gateway/platform/b"], uriOnly), undefined);
    assert.equal(identity("a", ["URI:spiffe://db-gateway/platform/a"], { sources: "any", trustDomain: "db-gateway" }), undefined);
  });
});
