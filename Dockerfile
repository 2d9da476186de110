# The db-gateway image: the compiled gateway and its production dependencies on Node 20, run as a non-root user.
#
#   docker build -t db-gateway .
#   docker build --build-arg BASE_IMAGE=db-gateway-local/node:20-bookworm-slim -t db-gateway .   (the container test's local base)
#
# The root filesystem may be read-only (docker run --read-only): the gateway writes nothing but its
# output; `certs` writes only into the directory given to it.
ARG BASE_IMAGE=node:20-bookworm-slim

FROM ${BASE_IMAGE} AS build
# Marks this stage's untagged images, which the classic builder keeps as cache, so that they can be found and pruned.
LABEL db-gateway.stage=build
WORKDIR /src
# Dependencies first, in their own layer: they change less often than the code.
COPY package.json package-lock.json ./
COPY wire/package.json wire/
COPY server/package.json server/
COPY client-sdk/package.json client-sdk/
# No install scripts: the root's prepare would build before the sources are here, and the build needs only tsc.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY . .
RUN npm run build

FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="db-gateway" \
      org.opencontainers.image.description="A multi-tenant PostgreSQL gateway that speaks gRPC" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="README.md (section Containers)"
ENV NODE_ENV=production \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=9000 \
    METRICS_PORT=9464
WORKDIR /app
COPY package.json package-lock.json ./
COPY wire/package.json wire/
COPY server/package.json server/
COPY server/bin server/bin
COPY client-sdk/package.json client-sdk/
# Production dependencies only, no install scripts (none is needed to run), and no npm cache left in the image.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && npm cache clean --force \
 && rm -rf /root/.npm /tmp/*
COPY --from=build /src/server/dist server/dist
COPY --from=build /src/client-sdk/dist client-sdk/dist
# (wire/ is compiled into both: server/dist/wire and client-sdk/dist/*/wire.)
# A numeric user, so that runtimes can check it is not root (Kubernetes' runAsNonRoot).
RUN groupadd --system --gid 10001 dbgateway \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin dbgateway
USER 10001:10001
EXPOSE 9000 9464
# /health on the metrics port: 200 while the gateway serves and PostgreSQL answers. Node's fetch: no curl in the image.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "const h=process.env.METRICS_HOST||process.env.GATEWAY_HOST||'';const a=!h||h==='0.0.0.0'||h==='::'?'127.0.0.1':h;fetch('http://'+(a.includes(':')?'['+a+']':a)+':'+(process.env.METRICS_PORT||9464)+'/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# SIGTERM drains: calls in flight get SHUTDOWN_GRACE_SECS (20) to finish; give `docker stop -t` at least that plus 5.
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "/app/server/dist/server/src/main.js"]
CMD ["serve"]
