// Database names: (platform, tenant) to `{platform}_main` and `{platform}_{tenant_id}` and back; reserved and oversized tenant ids refused.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { GatewayError } from "../src/errors.js";
import { databaseName, parseDatabaseName } from "../src/tenancy/naming.js";

describe("database naming", () => {
  it("maps (platform, tenant) to {platform}_main and {platform}_{tenant_id}", () => {
    assert.equal(databaseName("medstoreapp", ""), "medstoreapp_main");
    assert.equal(databaseName("medstoreapp", "clinic_001"), "medstoreapp_clinic_001");
  });

  it("parses names back, unambiguously", () => {
    assert.deepEqual(parseDatabaseName("medstoreapp_main"), { platform: "medstoreapp", tenantId: "" });
    assert.deepEqual(parseDatabaseName("medstoreapp_clinic_001"), { platform: "medstoreapp", tenantId: "clinic_001" });
    assert.equal(parseDatabaseName("postgres"), undefined);
    assert.equal(parseDatabaseName("Bad_x"), undefined);
  });

  it("rejects reserved and oversized tenant ids", () => {
    assert.throws(
      () => databaseName("p", "main"),
      (e: GatewayError) => e.reason === "INVALID_TENANT_ID",
    );
    assert.throws(
      () => databaseName("p", "x".repeat(62)),
      (e: GatewayError) => e.reason === "INVALID_TENANT_ID",
    );
    assert.equal(databaseName("p", "x".repeat(61)).length, 63);
  });
});
