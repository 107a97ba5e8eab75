# syntax=docker/dockerfile:1
# recstream container image: one static binary (CGO off) on distroless/static, non-root, no
# shell. Build: docker build -t recstream:$(git describe --tags --always) .
# The same image runs every subcommand; ECS task definitions pick it with `command`
# (deploy/ecs). deploy/image_test.go builds the binaries with exactly the flags below and
# checks they are static and run as a non-root user (no Docker engine is needed for that).
#
# Reproducible: the Go toolchain is the one go.mod names (the test checks GO_VERSION against
# go.mod), modules come from go.sum (-mod=readonly), -trimpath and an empty build id remove
# machine paths, and -buildvcs=false keeps the .git state out. Pin the two base images by
# digest (FROM image@sha256:...) in your registry mirror for bit-for-bit rebuilds.

ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOOS=linux GOFLAGS=-mod=readonly GOTOOLCHAIN=local
# Dependencies first, so the module layer is cached while only sources change.
COPY go.mod go.sum ./
RUN go mod download && go mod verify
COPY . .
RUN go build -trimpath -buildvcs=false -ldflags="-s -w -buildid=" -o /out/recstream ./cmd/recstream
RUN go build -trimpath -buildvcs=false -ldflags="-s -w -buildid=" -o /out/healthcheck ./deploy/healthcheck

# distroless/static: CA certificates, tzdata, /etc/passwd with nonroot (65532), /tmp; no shell.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/recstream /out/healthcheck /usr/local/bin/
# Defaults for every key; the deployment overrides with RECSTREAM_* variables (deploy/ecs).
COPY config.yaml /etc/recstream/config.yaml
WORKDIR /etc/recstream
ENV RECSTREAM_LOG_FORMAT=json RECSTREAM_METRICS_LISTEN=0.0.0.0:9108
USER 65532:65532
# /metrics, /healthz, /readyz of `recstream worker` (config: metrics.listen).
EXPOSE 9108
# The worker drains on SIGTERM within worker.shutdown_timeout (25 s), under ECS's stopTimeout.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/recstream"]
CMD ["--help"]
