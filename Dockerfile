# syntax=docker/dockerfile:1
#
# kubearmor-relay-ts: build with the full Node toolchain, ship only the compiled relay,
# its protobuf schema and production dependencies on a distroless Node 24 base (no shell,
# no package manager), running as an unprivileged numeric user.
#
#   docker build -t kubearmor-relay-ts:0.1.0 .
#
# The ENTRYPOINT is node itself on the relay's main file (never npm/npx, which do not
# forward SIGTERM), so the Helm chart's container args (-tlsEnabled=... -tlsCertPath=...
# -tlsCertProvider=...) reach the relay unchanged.

FROM node:24-bookworm-slim AS build
WORKDIR /src
ENV NODE_ENV=development \
    npm_config_audit=false \
    npm_config_fund=false \
    npm_config_update_notifier=false
# Dependencies first, so this layer is reused while only the sources change. Install
# scripts are skipped: `prepare` would build before the sources are here, and no
# dependency needs a native build step.
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts
COPY tsconfig.json ./
COPY proto ./proto
# Only what the binary is made of (server/, its tools in server/tools/, certs/) and the
# build step; the benchmark, the demo and the test harness stay out of the image.
COPY server ./server
COPY certs ./certs
COPY scripts/postbuild.mjs ./scripts/postbuild.mjs
RUN npm run build \
 && npm prune --omit=dev --ignore-scripts \
 && rm -rf node_modules/.cache

FROM gcr.io/distroless/nodejs24-debian12:nonroot
WORKDIR /app
ENV NODE_ENV=production
# Root-owned and not writable by the relay's user: the image holds no state.
COPY --from=build --chown=0:0 --chmod=0444 /src/package.json ./package.json
COPY --from=build --chown=0:0 /src/node_modules ./node_modules
COPY --from=build --chown=0:0 /src/dist ./dist
COPY --from=build --chown=0:0 /src/proto ./proto
USER 65532:65532
# 32767: gRPC (feeder.LogService, grpc.health.v1); 8080: /metrics, /healthz, /readyz
EXPOSE 32767 8080
# A 1 MiB young generation keeps peak RSS inside the 128Mi limit when a node floods
# maximum-size events at stalled consumers (Node 24: 124-131 -> 108-113 MiB; see
# deploy/deployment.yaml) for ~4% of throughput, within run-to-run noise.
ENTRYPOINT ["/nodejs/bin/node", "--max-semi-space-size=1", "/app/dist/server/main.js"]
