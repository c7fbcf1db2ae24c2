#!/usr/bin/env bash
# Builds the local platform's upstream binaries once and caches them outside git, keyed by version.
# Prints the bin directory on stdout. Safe to run concurrently with itself (a lock serialises builds).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

KWOK_VERSION=v0.8.0
REGISTRY_VERSION=v3.1.2
HELM3_VERSION=v3.22.0
HELM4_VERSION=v4.3.1
KREW_VERSION=v0.4.3
CRANE_VERSION=v0.22.1

# The cache key covers what decides the binaries: the Kubernetes and etcd versions (and the replace block that
# pins the staging modules), the Go toolchain and the versions above. Other edits to go.mod/go.sum (the
# launcher's or azemu's dependencies) do not force a rebuild. Bump FORMAT when this script builds differently.
FORMAT=2
K8S_VERSION=v1.36.3
key=$( { echo "format $FORMAT"; go env GOVERSION; sed -n '/^replace (/,/^)/p' "$here/go.mod";
  grep -E '^[[:space:]]*(k8s\.io/kubernetes|go\.etcd\.io/etcd/server/v3) v' "$here/go.mod";
  echo "$KWOK_VERSION $REGISTRY_VERSION $HELM3_VERSION $HELM4_VERSION $KREW_VERSION $CRANE_VERSION"; } | sha256sum | cut -c1-16)
cache=${MLPLUGINS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mlplugins-platform}
bin=$cache/$key/bin
# Complete when every tool is there: a cache made before a tool was added gains it without a rebuild of the rest.
TOOLS="kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok registry helm helm4 krew validate-krew-manifest crane"
complete() { [ -f "$bin/.complete" ] || return 1; for t in $TOOLS; do [ -x "$bin/$t" ] || return 1; done; }
if complete; then echo "$bin"; exit 0; fi

mkdir -p "$bin"
exec 9>"$cache/$key.lock"
flock 9
if complete; then echo "$bin"; exit 0; fi

log() { printf '[tools] %s\n' "$*" >&2; }
start=$(date +%s)
export CGO_ENABLED=0
# Upstream Kubernetes and etcd come from this module's tool directives (pinned in go.mod/go.sum).
# Stamp the version as the upstream release does: clients (helm's kubeVersion check, kubectl version) read it.
kv=k8s.io/component-base/version
k8s_ldflags="-X $kv.gitVersion=$K8S_VERSION -X $kv.gitMajor=1 -X $kv.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) -X $kv.gitTreeState=clean -X $kv.buildDate=1970-01-01T00:00:00Z"
k8s_ldflags="$k8s_ldflags -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2)"
# kubectl too: the tests and the demo drive the cluster with the kubectl of its own release, not
# whatever the machine has (a client more than one minor away from the server is unsupported).
for t in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  [ -x "$bin/$t" ] || { log "building $t"; (cd "$here" && go build -trimpath -ldflags "$k8s_ldflags" -o "$bin/$t" "k8s.io/kubernetes/cmd/$t"); }
done
[ -x "$bin/etcd" ] || { log "building etcd"; (cd "$here" && go build -trimpath -o "$bin/etcd" go.etcd.io/etcd/server/v3); }
# The others have no replace directives: go install at an exact version, each in its own module graph.
inst() { # name pkg@version [ldflags]
  [ -x "$bin/$1" ] && return 0
  log "installing $2"
  tmp=$(mktemp -d); GOBIN=$tmp go install -trimpath -ldflags "${3:-}" "$2"; mv "$tmp/$(basename "${2%@*}")" "$bin/$1"; rm -rf "$tmp"
}
inst kwok sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION
inst registry github.com/distribution/distribution/v3/cmd/registry@$REGISTRY_VERSION
# As helm's own Makefile does: its version, and the Kubernetes version it assumes without a cluster (client-go's minor).
inst helm helm.sh/helm/v3/cmd/helm@$HELM3_VERSION "-X helm.sh/helm/v3/internal/version.version=$HELM3_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=37"
inst helm4 helm.sh/helm/v4/cmd/helm@$HELM4_VERSION "-X helm.sh/helm/v4/internal/version.version=$HELM4_VERSION -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
inst krew sigs.k8s.io/krew/cmd/krew@$KREW_VERSION
inst validate-krew-manifest sigs.k8s.io/krew/cmd/validate-krew-manifest@$KREW_VERSION
inst crane github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION
# kwok's stage and CRD files ship inside its module.
moddir=$(go mod download -json sigs.k8s.io/kwok@$KWOK_VERSION | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
mkdir -p "$bin/../kwok"
cp -r "$moddir/kustomize/stage" "$moddir/kustomize/crd" "$bin/../kwok/" && chmod -R u+w "$bin/../kwok"
# Read by the platform benchmark: the seconds spent building this cache, a tool added later included.
prev=$(cat "$bin/../build-seconds" 2>/dev/null || echo 0)
echo "$(( prev + $(date +%s) - start ))" >"$bin/../build-seconds"
touch "$bin/.complete"
log "built in $(( $(date +%s) - start ))s into $bin"
echo "$bin"
