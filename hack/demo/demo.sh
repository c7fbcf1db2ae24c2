#!/usr/bin/env bash
# make demo: the whole release story of the design on the local platform, narrated.
#   build -> push to ACR (Entra sign-in) -> helm install from ACR -> health -> canary v2 (promoted)
#   -> canary v3 (fails its checks, rolled back) -> health.
# Exits 0 only when every step behaved as described. `bash hack/demo/demo.sh down` tears it down.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
NS=${DEMO_NAMESPACE:-mlapp-demo}
RELEASE=mlapp
export PLATFORM_DIR=${PLATFORM_DIR:-$root/.platform}
work=$PLATFORM_DIR/demo
# The chart's artifacthub.io/images annotation also lists its optional images (placeholders in contoso.azurecr.io,
# the helm-test image in mcr.microsoft.com); the demo pushes only the model server.
EXCLUDE='contoso\.azurecr\.io/|mcr\.microsoft\.com/'

if [ -t 1 ] && [ -z "${NO_COLOR:-}" ] && [ "${TERM:-}" != dumb ]; then B=$'\e[1m'; G=$'\e[32m'; R=$'\e[31m'; D=$'\e[2m'; N=$'\e[0m'; else B= G= R= D= N=; fi
step() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }
say() { printf '%s%s%s\n' "$D" "$*" "$N"; }
ok() { printf '%s✔ %s%s\n' "$G" "$*" "$N"; }
die() { printf '%s✘ %s%s\n' "$R" "$*" "$N" >&2; exit 1; }
run() { printf '%s$ %s%s\n' "$B" "$*" "$N" >&2; "$@"; }

if [ "${1:-}" = down ]; then
  if [ -f "$PLATFORM_DIR/env" ]; then
    . "$PLATFORM_DIR/env"
    kubectl delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
  go -C "$root/test/platform" run . down
  exit 0
fi

command -v jq >/dev/null || die "jq is needed (apt-get install -y jq)"
start=$(date +%s)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
bg() { "$@" >>"$work/background.log" 2>&1 & pids+=($!); }
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

step "1. The plugins are built (make build); bring the local platform up"
say "A real kube-apiserver, etcd, scheduler and controller-manager with kwok nodes, two OCI registries (one speaking"
say "ACR's sign-in protocol), an Entra ID emulator, and Prometheus, all on 127.0.0.1."
run "$root/bin/platform" up
. "$PLATFORM_DIR/env"
export PATH="$root/bin:$PLATFORM_BIN:$PATH"
rm -rf "$work"; mkdir -p "$work"
kubectl get nodes

step "2. Build the model server images (no Docker engine) and push them to the source registry"
say "v1: the model in production; v2: a better model that agrees with v1; v3: a broken model (wrong predictions, 500s)."
run go run ./examples/model-server/cmd/build-image --registry "$SOURCE_REGISTRY" >"$work/images.json"
for v in v1 v2 v3; do
  printf '  %s  %s\n' "$v" "$(jq -r --arg v "$v" '.images[] | select(.tag==$v) | .reference' "$work/images.json")"
done

step "3. helm acrpush: the chart and its image to ACR, signed in through Entra ID"
acr="$ACR_LOGIN_SERVER/demo-$(date +%Y%m%d-%H%M%S)"   # a prefix per run: reruns never meet an older chart
say "Installed as a real Helm plugin; the only credentials are AZURE_TENANT_ID / AZURE_CLIENT_ID / AZURE_CLIENT_SECRET."
export HELM_PLUGINS=$work/helm-plugins
plugin_src=$work/acrpush-plugin
mkdir -p "$plugin_src/bin" "$plugin_src/scripts"
cp plugins/helm-acrpush/plugin.yaml "$plugin_src/"; cp plugins/helm-acrpush/scripts/install-binary.sh "$plugin_src/scripts/"
cp bin/helm-acrpush "$plugin_src/bin/"
run helm plugin install "$plugin_src" >/dev/null
run helm acrpush charts/mlapp "$acr" --auth azure \
  --set image.registry="$SOURCE_REGISTRY" --set image.tag=v1 --exclude "$EXCLUDE" \
  --values-out "$work/acr-values.yaml"
say "The values overlay written for the install pins the image in ACR by digest:"
sed 's/^/  /' "$work/acr-values.yaml"
helm acrpush charts/mlapp "$acr" --auth azure --set image.registry="$SOURCE_REGISTRY" --set image.tag=v1 \
  --exclude "$EXCLUDE" -o json >"$work/push-again.json"
[ "$(jq '[.images[], .chart] | map(select(.action != "skipped")) | length' "$work/push-again.json")" = 0 ] \
  || die "a second push should skip everything"
ok "a second push skips every artifact (nothing uploaded)"
[ "$(jq -r '[.supersededAnnotationImages[]?.container] | join(",")' "$work/push-again.json")" = model-server ] \
  || die "the chart's annotation image for model-server should give way to the image the values set"

step "4. helm install from ACR; pods answered by real model-server processes"
say "Helm signs in like 'az acr login --expose-token' does: Entra token -> /oauth2/exchange -> ACR refresh token."
entra=$(curl -sf --cacert "$SSL_CERT_FILE" "${AZURE_AUTHORITY_HOST%/}/$AZURE_TENANT_ID/oauth2/v2.0/token" \
  --data-urlencode grant_type=client_credentials --data-urlencode client_id="$AZURE_CLIENT_ID" \
  --data-urlencode client_secret="$AZURE_CLIENT_SECRET" --data-urlencode scope=https://containerregistry.azure.net/.default | jq -r .access_token)
refresh=$(curl -sf --cacert "$SSL_CERT_FILE" "https://$ACR_LOGIN_SERVER/oauth2/exchange" \
  --data-urlencode grant_type=access_token --data-urlencode service="$ACR_LOGIN_SERVER" \
  --data-urlencode tenant="$AZURE_TENANT_ID" --data-urlencode access_token="$entra" | jq -r .refresh_token)
printf '%s' "$refresh" | helm registry login "$ACR_LOGIN_SERVER" --username 00000000-0000-0000-0000-000000000000 --password-stdin >/dev/null
unset entra refresh
ok "helm registry login $ACR_LOGIN_SERVER (token not shown)"
if kubectl get namespace "$NS" >/dev/null 2>&1; then
  say "removing the previous run's namespace $NS"
  kubectl delete namespace "$NS" --wait=true --timeout=120s >/dev/null
fi
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl label --local -f - -o yaml \
  pod-security.kubernetes.io/enforce=restricted | kubectl apply -f - >/dev/null
chart_version=$(jq -r .chart.version "$work/push-again.json")
run helm install "$RELEASE" "oci://$acr/mlapp" --version "$chart_version" -n "$NS" \
  -f "$work/acr-values.yaml" --set replicaCount=3 --wait --timeout 2m

digest() { jq -r --arg v "$1" '.images[] | select(.tag==$v) | .digest' "$work/images.json"; }
declare -A port
go build -o "$work/model-server" ./examples/model-server
go build -o "$work/loadgen" ./examples/model-server/cmd/loadgen
for v in v1 v2 v3; do
  port[$v]=$(freeport)
  bg "$work/model-server" -model-path "examples/model-server/models/$v.json" -port "${port[$v]}"
  # Pods running image version v (by tag or digest) are answered by this process, and scraped under their own names.
  bg "$root/bin/platform" route -n "$NS" -l "app.kubernetes.io/instance=$RELEASE" --image ":$v\$|@$(digest "$v")\$" \
    --port 8080 --target "127.0.0.1:${port[$v]}" --scrape
done
say "traffic: the load generator sends predict requests to the model servers, as the Service would"
bg "$work/loadgen" -url "http://127.0.0.1:${port[v1]}" -url "http://127.0.0.1:${port[v2]}" \
  -url "http://127.0.0.1:${port[v3]}" -rps 30 -duration 30m
pod=$(kubectl get pods -n "$NS" -l "app.kubernetes.io/instance=$RELEASE" -o jsonpath='{.items[0].metadata.name}')
for i in $(seq 1 60); do
  out=$(curl -sf "$PROMETHEUS_URL/api/v1/query" --data-urlencode "query=sum(rate(http_requests_total{namespace=\"$NS\",pod=\"$pod\"}[30s]))" | jq -r '.data.result[0].value[1] // empty')
  [ -n "$out" ] && [ "$out" != 0 ] && break
  sleep 1
done
[ -n "$out" ] || die "Prometheus has no request metrics for $pod"
ok "Prometheus scrapes the pods: $pod serves $(printf '%.1f' "$out") req/s"

step "5. kubectl mlhealth: the app is Healthy, with request metrics"
run kubectl mlhealth "$RELEASE" -n "$NS" --prometheus-url "$PROMETHEUS_URL" || die "mlhealth should report Healthy (exit 0)"

step "6. kubectl mlrollout: canary to v2 with checks (error rate, p95 vs stable, predictions vs stable) -> promoted"
set +e
run kubectl mlrollout start "$RELEASE" -n "$NS" --image "model-server=$acr/mlapp/model-server:v2" \
  --plan hack/demo/plan.yaml --prometheus-url "$PROMETHEUS_URL" --timeout 4m
code=$?
set -e
[ $code = 0 ] || die "the v2 canary should be promoted (exit 0), got exit $code"
img=$(kubectl get deploy "$RELEASE" -n "$NS" -o jsonpath='{.spec.template.spec.containers[0].image}')
[[ $img == *:v2 ]] || die "stable should run v2 after promotion, runs $img"
ok "promoted: the stable Deployment runs $img, no canary left"

step "7. kubectl mlrollout: canary to v3 (a broken model) -> its checks fail -> rolled back"
set +e
run kubectl mlrollout start "$RELEASE" -n "$NS" --image "model-server=$acr/mlapp/model-server:v3" \
  --plan hack/demo/plan.yaml --prometheus-url "$PROMETHEUS_URL" --timeout 4m
code=$?
set -e
[ $code = 2 ] || die "the v3 canary should fail its checks and roll back (exit 2), got exit $code"
img=$(kubectl get deploy "$RELEASE" -n "$NS" -o jsonpath='{.spec.template.spec.containers[0].image}')
[[ $img == *:v2 ]] || die "stable should still run v2 after the rollback, runs $img"
kubectl get deploy "$RELEASE-canary" -n "$NS" >/dev/null 2>&1 && die "the canary should be gone"
ok "exit 2 is the expected outcome: v3 rolled back, stable still runs v2"
run kubectl mlrollout history "$RELEASE" -n "$NS"

step "8. kubectl mlhealth: the verdict after the rollback"
say "Every replica runs v2 again. The rolled-back canary's Warning events stay in the window: a warning, not a"
say "critical finding, so a release gate with --fail-on critical passes (exit 0)."
kubectl rollout status deploy/"$RELEASE" -n "$NS" --timeout 60s >/dev/null
run kubectl mlhealth "$RELEASE" -n "$NS" --prometheus-url "$PROMETHEUS_URL" --fail-on critical \
  || die "mlhealth should pass a --fail-on critical gate after the rollback"
ok "release gate passed"

step "Done in $(( $(date +%s) - start ))s"
say "Explore: . $PLATFORM_DIR/env; kubectl describe deploy/$RELEASE -n $NS (Events show every rollout step)."
say "Tear down: make demo-down"
