#!/usr/bin/env bash
# Builds the roomcast binary and, beside it, the load generator
# roomcast-bench (which `roomcast bench` runs): the `go build` lines that
# both the Dockerfile and .ci/run use, so CI proves the image's build works
# without a Docker engine.
#
#   VERSION  stamped into `roomcast version` (default: git describe, else dev)
#   OUT      output path, relative to the repository root (default: roomcast);
#            roomcast-bench is written to the same directory
#   GOOS, GOARCH and other go env variables pass through to go build.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${VERSION:-}" ] && command -v git >/dev/null 2>&1; then
  VERSION=$(git describe --always --dirty 2>/dev/null || true)
fi

out=${OUT:-roomcast}
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION:-dev}" -o "$out" .
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$(dirname "$out")/roomcast-bench" ./cmd/roomcast-bench
