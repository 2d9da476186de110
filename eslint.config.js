// Lint rules: eslint's and typescript-eslint's recommended sets, and a guard that keeps pg's internals in one module. Generated code is not linted.
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["**/src/gen/**", "**/node_modules/**", "**/dist/**", ".data/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { process: "readonly", console: "readonly", Buffer: "readonly" } },
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_" }],
    },
  },
  {
    // pg, pg-cursor and pg-protocol internals are reached in one module only, which server/test/pg-internals.test.ts checks against each upgrade.
    files: ["server/src/**/*.ts"],
    ignores: ["server/src/pool/pg-internals.ts"],
    rules: {
      "no-restricted-syntax": [
        "error",
        ...[
          "MemberExpression[property.name=/^(_queryable|_getActiveQuery|_activeQuery|_queryQueue|_sentQueryQueue|_ending|_connected|_result|_emitMessage|activeQuery|attachListeners|handlePacket|processID|secretKey|pipeline|connectionParameters|sendCopyFail)$/]",
          "MemberExpression[object.property.name='connection'][property.name='stream']",
          "MemberExpression[object.property.name='Query'][property.name='prototype']",
        ].map((selector) => ({
          selector,
          message:
            "pg internals are reached through server/src/pool/pg-internals.ts only (add a function there, and its check to server/test/pg-internals.test.ts)",
        })),
      ],
      "no-restricted-imports": [
        "error",
        {
          patterns: [
            {
              group: ["pg/lib/*", "pg-cursor/*", "pg-protocol/dist/*"],
              message: "pg's packages' own modules are imported in server/src/pool/pg-internals.ts only",
            },
            {
              group: ["@grpc/grpc-js/build/*"],
              message: "grpc-js's own modules are imported in server/src/grpc/grpc-js-internals.ts only",
            },
          ],
        },
      ],
    },
  },
);
