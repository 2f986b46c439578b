# syntax=docker/dockerfile:1
# Images of a Switchboard deployment, all static binaries run as non-root:
#
#   docker build -t switchboard .                            # a node (the default, last stage)
#   docker build --target webserver -t switchboard-web .      # the example Go web server
#
# deploy/compose.yaml builds both targets.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .

FROM build AS build-switchboard
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/switchboard ./cmd/switchboard

FROM build AS build-webserver
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/webserver ./examples/webserver

# The example web server. Alpine rather than distroless: its busybox wget
# is the health check.
FROM alpine:3.20 AS webserver
COPY --from=build-webserver /out/webserver /webserver
ENV LISTEN_ADDR=:3000
EXPOSE 3000
USER 65532:65532
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \
    CMD wget -q -O /dev/null "http://127.0.0.1:${LISTEN_ADDR##*:}/healthz" || exit 1
ENTRYPOINT ["/webserver"]

# One Switchboard node: primary, or standby with SWITCHBOARD_PRIMARY_ADDR.
FROM gcr.io/distroless/static-debian12:nonroot AS switchboard
COPY --from=build-switchboard /out/switchboard /switchboard
# Browsers: /ws on 8080. Web servers: gRPC on 9090, reachable from other
# containers only with SWITCHBOARD_API_TOKEN set (or SWITCHBOARD_INSECURE).
EXPOSE 8080 9090
USER nonroot:nonroot
# The image has no shell and no curl: the binary checks itself. It GETs
# /healthz on SWITCHBOARD_HTTP_ADDR (alive), which a standby passes while
# its primary serves; "healthcheck --ready" probes /readyz (takes browsers
# now) for those who want that instead.
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/switchboard", "healthcheck"]
ENTRYPOINT ["/switchboard"]
