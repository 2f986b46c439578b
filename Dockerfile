# syntax=docker/dockerfile:1
# Builds a small static image of one Switchboard node.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/switchboard ./cmd/switchboard

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/switchboard /switchboard
# Browsers: /ws on 8080. Web servers: gRPC on 9090, reachable from other
# containers only with SWITCHBOARD_API_TOKEN set (or SWITCHBOARD_INSECURE).
EXPOSE 8080 9090
USER nonroot:nonroot
ENTRYPOINT ["/switchboard"]
