/**
 * Loaded with --import by CLI test runs: resolves `@db-gateway/client` to the
 * SDK's source, as every other test imports it, so that they need no build in
 * client-sdk/dist (which sdk-package.test.ts removes and rebuilds while other
 * test files run).
 */
import { register } from "node:module";

const source = new URL("../../client-sdk/src/index.ts", import.meta.url).href;
// Handed on to the next resolver (tsx's), which marks TypeScript files for its loader.
const hooks = `export async function resolve(specifier, context, next) {
  return next(specifier === "@db-gateway/client" ? ${JSON.stringify(source)} : specifier, context);
}`;
register(`data:text/javascript,${encodeURIComponent(hooks)}`);
