#!/bin/sh
# Install hook of the acrpush Helm plugin. A release archive already holds bin/helm-acrpush next
# to plugin.yaml, and then there is nothing to do. In a source checkout (plugins/helm-acrpush of
# the repository) the binary is built with the Go toolchain. Nothing is downloaded.
set -eu
if [ -x bin/helm-acrpush ]; then
  exit 0
fi
# Helm links local plugins: resolve the link so that go finds the repository's go.mod.
cd -P .
if [ -f main.go ] && command -v go >/dev/null 2>&1 && gomod=$(go env GOMOD 2>/dev/null) && [ -n "$gomod" ] && [ "$gomod" != /dev/null ]; then
  mkdir -p bin
  CGO_ENABLED=0 go build -trimpath -o bin/helm-acrpush .
  exit 0
fi
echo "acrpush: bin/helm-acrpush is missing: install a release archive, or install from a checkout of the repository with Go on PATH (or run 'make build' and copy bin/helm-acrpush to $PWD/bin/)" >&2
exit 1
