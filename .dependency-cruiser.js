// The import rules of wire/src, server/src and client-sdk/src (npm run lint:layers): layers that import one way, no cycles, SDK and server apart.
//
// wire/src (the generated messages and the hand codecs) is below everything: the server and the SDK both import it, it imports neither.
//
// server/src, from the top down (a layer may import the layers below it, never those above):
//   composition  main.ts, gateway.ts, config.ts, access-settings.ts, cli/, dev/, database/: builds the gateway; may import anything
//   transport    grpc/: serves the services on grpc-js, authenticates calls
//   services     services/ (their contract with grpc/: services/service-contract.ts), and beside them tenancy/, coordination/,
//                notifications/, audit/, telemetry/ (but tracing.ts and logger.ts)
//   execution    execution/ (but its base modules): runs statements on a leased connection
//   pool         pool/: connections to PostgreSQL
//   base         what every layer shares: errors.ts, client-errors.ts, principal.ts, cleanup-stack.ts, pki/, execution/'s message streams
//                and response-encoding.ts (wire's encoders bound to its errors), telemetry's tracing.ts and logger.ts

/** Builds one regular expression matching any of `paths`, each relative to the repository and taken literally but for a trailing "/" (a folder). */
const any = (...paths) => `^(?:${paths.map((p) => p.replaceAll(".", "\\.") + (p.endsWith("/") ? "" : "$")).join("|")})`;

const S = "server/src/";
const BASE = any(
  `${S}errors.ts`,
  `${S}client-errors.ts`,
  `${S}principal.ts`,
  `${S}cleanup-stack.ts`,
  `${S}pki/`,
  `${S}execution/response-encoding.ts`,
  `${S}execution/call-streams.ts`,
  `${S}telemetry/tracing.ts`,
  `${S}telemetry/logger.ts`,
);
const POOL = any(`${S}pool/`);
const EXECUTION = any(`${S}execution/`); // with its base modules: rules that use it exclude BASE where it matters
const SERVICES = any(`${S}services/`);
const BESIDE_SERVICES = any(`${S}tenancy/`, `${S}notifications/`, `${S}audit/`, `${S}telemetry/`, `${S}coordination/`);
const TRANSPORT = any(`${S}grpc/`);
const COMPOSITION = any(`${S}main.ts`, `${S}gateway.ts`, `${S}config.ts`, `${S}access-settings.ts`, `${S}cli/`, `${S}dev/`, `${S}database/`);
/** Every module of server/src. */
const SERVER = `^${S}`;
const SDK = "^client-sdk/src/";
const WIRE = "^wire/src/";

/** A rule that modules matching `from` import no module matching `to` (dependency-cruiser's conditions). */
const forbid = (name, comment, from, to) => ({ name, comment, severity: "error", from, to });

export default {
  forbidden: [
    forbid("resolvable", "Every import resolves to a file, so that none escapes these rules unseen.", { path: [WIRE, SERVER, SDK] }, { couldNotResolve: true }),
    forbid(
      "no-circular",
      "Modules that import each other, directly or around a longer loop: move what both need below them.",
      { path: [WIRE, SERVER, SDK] },
      { circular: true },
    ),

    forbid(
      "base-imports-only-base",
      "The shared base (errors, principal, message streams, response encoding, tracing, logging) is below every layer.",
      { path: BASE },
      { path: SERVER, pathNot: BASE },
    ),
    forbid(
      "pool-imports-only-base",
      "pool/ is the lowest layer above the base: it knows nothing of statements, services or calls.",
      { path: POOL },
      { path: SERVER, pathNot: [POOL, BASE] },
    ),
    forbid(
      "execution-not-upward",
      "execution/ runs statements on a connection: it knows nothing of services, transport or composition (its sinks are defined in execution/call-streams.ts).",
      { path: EXECUTION, pathNot: BASE },
      { path: [SERVICES, BESIDE_SERVICES, TRANSPORT, COMPOSITION], pathNot: BASE },
    ),
    forbid(
      "beside-services-not-upward",
      "tenancy/, notifications/, audit/ and telemetry/ sit beside services/: they serve it and the transport, never import them.",
      { path: BESIDE_SERVICES, pathNot: BASE },
      { path: [SERVICES, TRANSPORT, COMPOSITION] },
    ),
    forbid(
      "services-not-upward",
      "services/ implement the handlers that grpc/ serves (the contract is services/service-contract.ts): they never import the transport.",
      { path: SERVICES },
      { path: [TRANSPORT, COMPOSITION] },
    ),
    forbid(
      "transport-not-to-composition",
      "grpc/ is built by the composition (gateway.ts, cli/), not the other way round.",
      { path: TRANSPORT },
      { path: COMPOSITION },
    ),

    forbid(
      "wire-below-all",
      "wire/src (generated messages, hand codecs) is compiled into both the server and the published SDK: it imports neither.",
      { path: WIRE },
      { path: ["^server/", "^client-sdk/"] },
    ),
    forbid(
      "wire-packages",
      "wire/src ships inside the published SDK, whose installs have only the SDK's dependencies: of packages, it imports @bufbuild/protobuf alone.",
      { path: WIRE },
      { path: "node_modules/", pathNot: "node_modules/@bufbuild/protobuf/" },
    ),
    forbid(
      "server-not-into-sdk-source",
      "The server uses the SDK as the package @db-gateway/client, never its files by a relative path.",
      { path: SERVER },
      { path: SDK, dependencyTypes: ["local"], dependencyTypesNot: ["aliased"] },
    ),
    forbid(
      "sdk-not-to-server",
      "The SDK is a package of its own, published without the server: it never imports server code.",
      { path: SDK },
      { path: "^server/" },
    ),
  ],
  options: {
    // Type-only imports count: a type is part of the layer that defines it.
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    doNotFollow: { path: "node_modules" },
    // Packages' subpath exports (@bufbuild/protobuf/wkt) resolve as Node resolves them.
    enhancedResolveOptions: { exportsFields: ["exports"], conditionNames: ["import", "require", "node", "default", "types"] },
  },
};
