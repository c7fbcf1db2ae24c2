#!/bin/sh
# Install hook of the acrpush Helm plugin. A release archive already holds bin/helm-acrpush next
# to plugin.yaml, and then there is nothing to do. From a source checkout the binary is built with
# the Go toolchain. Nothing is downloaded.
set -eu
if [ -x bin/helm-acrpush ]; then
  exit 0
fi
if [ -f main.go ] && command -v go >/dev/null 2>&1; then
  mkdir -p bin
  CGO_ENABLED=0 go build -trimpath -o bin/helm-acrpush .
  exit 0
fi
echo "acrpush: bin/helm-acrpush is missing; install a release archive or run 'make build' and copy bin/helm-acrpush into $PWD/bin" >&2
exit 1
