// Asserts that a call fails with a GatewayError of the given gRPC code and reason, and returns the error.
import assert from "node:assert/strict";
import { Code, GatewayError } from "../../client-sdk/src/index.js";

/** Asserts that a promise rejects with a GatewayError of this gRPC code and reason, and returns it. */
export async function rejectsWith(promise: Promise<unknown>, code: Code, reason: string): Promise<GatewayError> {
  try {
    await promise;
  } catch (err) {
    const error = GatewayError.from(err);
    assert.equal(Code[error.code], Code[code], `code of "${error.message}"`);
    assert.equal(error.reason, reason, `reason of "${error.message}"`);
    return error;
  }
  assert.fail(`expected ${Code[code]} ${reason}, but the call succeeded`);
}
