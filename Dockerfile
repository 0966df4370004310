# syntax=docker/dockerfile:1
# roomcast container image: a static binary on distroless, run as non-root.
#
#   docker build --build-arg VERSION="$(git describe --always --dirty)" -t roomcast .
#   docker run -p 8080:8080 roomcast
#
# Both images are pinned by tag only: no digest could be verified from the
# machines this was written on (they cannot reach the registries). Pin them
# by digest (image:tag@sha256:...) once you can check one.

# The builder runs on the build machine's platform and cross-compiles for the
# target one: the build is pure Go (CGO_ENABLED=0), so no emulation is needed.
FROM --platform=$BUILDPLATFORM golang:1.26.8-bookworm AS build
WORKDIR /src

# Modules first, so that their layer is reused while only the code changes.
# The cache mounts (BuildKit) keep the module and build caches between
# builds without putting them in any layer: a code change recompiles only
# the packages it touches.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download

COPY . .
# Empty VERSION lets scripts/build.sh fall back to "dev" (.git is not in the context).
ARG VERSION=""
ARG TARGETOS
ARG TARGETARCH
# scripts/build.sh holds the one go build line; .ci/run runs the same script.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS="$TARGETOS" GOARCH="$TARGETARCH" VERSION="$VERSION" OUT=/out/roomcast bash scripts/build.sh

# Static distroless: no shell, no package manager; CA certificates (for
# rediss://) and tzdata are included. The nonroot variant runs as uid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/roomcast /roomcast
# The load generator, which `/roomcast bench` runs from beside it.
COPY --from=build /out/roomcast-bench /roomcast-bench
USER nonroot:nonroot

# Listen on every interface of the container. This is the one place the
# deployment sets the address (fly.toml's internal_port follows it, which
# relay/config/platform_test.go checks). ROOMCAST_ADDR wins over PORT:
# on a platform that assigns the port through PORT, set ROOMCAST_ADDR to ""
# (or to ":$PORT") so that PORT applies.
ENV ROOMCAST_ADDR=:8080
EXPOSE 8080

# /readyz fails only while the relay starts or drains, so this never marks
# a working instance unhealthy. The image has no curl: the binary checks itself.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/roomcast", "healthcheck"]

# SIGTERM starts the graceful drain (ROOMCAST_DRAIN_TIMEOUT, 10s by default);
# give `docker stop` a longer --time than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/roomcast"]
