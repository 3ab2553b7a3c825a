#!/usr/bin/env bash
# Builds the Go-based test servers into the cache, keyed by version. Sourced by
# test-env.sh; can also be run alone: bash test/env/build-go.sh kube|helm|versitygw|etcd
set -euo pipefail

: "${ABACUS_CACHE_DIR:=$HOME/.cache/abacus}"
KUBE_VERSION="${ABACUS_KUBE_VERSION:-v1.34.4}"
HELM_VERSION="${ABACUS_HELM_VERSION:-v3.20.2}"
VERSITYGW_VERSION="${ABACUS_VERSITYGW_VERSION:-v1.8.0}"
ETCD_VERSION="${ABACUS_ETCD_VERSION:-v3.6.4}"
# Prometheus 2.55.1 (its Go module is versioned v0.55.1). Debian's build lacks Kubernetes
# service discovery, which the test node's scraping needs.
PROMETHEUS_VERSION="${ABACUS_PROMETHEUS_VERSION:-v0.55.1}"

# Builds into the shared cache hold a per-artifact lock, so two checkouts (or
# two CI jobs) building the same thing at once do not trip over each other.
cache_locked() { # lockname function args...
  mkdir -p "$ABACUS_CACHE_DIR/locks"
  (
    exec 8> "$ABACUS_CACHE_DIR/locks/$1.lock"
    flock 8
    "${@:2}"
  )
}

go_env() {
  export GOPATH="$ABACUS_CACHE_DIR/go/path"
  export GOMODCACHE="$ABACUS_CACHE_DIR/go/mod"
  export GOCACHE="$ABACUS_CACHE_DIR/go/build"
  export GOFLAGS="-mod=mod"
  export CGO_ENABLED=0
  # Two cores: keep one free-ish for everything else running meanwhile.
  mkdir -p "$GOPATH" "$GOMODCACHE" "$GOCACHE"
}

# kube-apiserver, kube-controller-manager and kubectl from k8s.io/kubernetes, via a
# wrapper module that pins each k8s.io staging module to its published v0.X.Y.
build_kube() { cache_locked kube _build_kube; }
_build_kube() {
  local out="$ABACUS_CACHE_DIR/bin/kubernetes-$KUBE_VERSION"
  if [[ -x "$out/kube-apiserver" && -x "$out/kube-controller-manager" && -x "$out/kubectl" ]]; then
    echo "$out"; return 0
  fi
  KUBE_WORK="kube-$KUBE_VERSION" KUBE_CMDS="kube-apiserver kube-controller-manager kubectl" \
    kube_wrapper_build "$out"
}

# The node's binaries (kubelet, kube-scheduler, kube-proxy) from the same wrapper
# module as the control plane, in their own work directory and cache entry so the
# control plane's cached build stays valid; the Go build cache is shared.
build_kube_node() { cache_locked kube-node _build_kube_node; }
_build_kube_node() {
  local out="$ABACUS_CACHE_DIR/bin/kubernetes-node-$KUBE_VERSION"
  if [[ -x "$out/kubelet" && -x "$out/kube-scheduler" && -x "$out/kube-proxy" ]]; then
    echo "$out"; return 0
  fi
  KUBE_WORK="kube-node-$KUBE_VERSION" KUBE_CMDS="kubelet kube-scheduler kube-proxy" \
    kube_wrapper_build "$out"
}

# A wrapper module requiring k8s.io/kubernetes@$KUBE_VERSION with every staging module
# replaced by its published version; builds $KUBE_CMDS into $1.
kube_wrapper_build() { # outdir
  local out="$1"
  go_env
  local staging="v0.${KUBE_VERSION#v1.}"
  local work="$ABACUS_CACHE_DIR/work/$KUBE_WORK"
  rm -rf "$work"; mkdir -p "$work"
  (
    cd "$work"
    printf 'module abacus.local/kubebuild\n\ngo 1.24\n' > go.mod
    {
      printf '//go:build tools\n\npackage tools\n\nimport (\n'
      local c
      for c in $KUBE_CMDS; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done
      printf ')\n'
    } > tools.go
    go mod edit -require "k8s.io/kubernetes@$KUBE_VERSION"
    # The staging modules the kubernetes go.mod replaces with local paths.
    local modfile
    modfile="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
    local mods
    mods="$(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$modfile")"
    [[ -n "$mods" ]] || { echo "no staging replaces found in $modfile" >&2; exit 1; }
    local m
    for m in $mods; do go mod edit -replace "$m=$m@$staging"; done
    go mod tidy -e >/dev/null 2>&1 || true
    local ld="-s -w"
    local kv="k8s.io/component-base/version"
    local cv="k8s.io/client-go/pkg/version"
    local date; date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    local minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
    for p in "$kv" "$cv"; do
      ld+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
      ld+=" -X $p.gitTreeState=clean -X $p.buildDate=$date"
    done
    mkdir -p "$work/bin"
    for c in $KUBE_CMDS; do
      echo "building $c $KUBE_VERSION (cached after the first time)..." >&2
      go build -trimpath -ldflags "$ld" -o "$work/bin/$c" "k8s.io/kubernetes/cmd/$c" >&2
    done
  )
  mkdir -p "$out.tmp"
  mv "$work/bin/"* "$out.tmp/"
  rm -rf "$out" "$work/bin"; mv "$out.tmp" "$out"
  echo "$out"
}

go_install_cached() { # name module version [ldflags] [cache-key suffix] -> prints dir
  local name="$1" mod="$2" ver="$3"
  local out="$ABACUS_CACHE_DIR/bin/$name-$ver${5:-}"
  if [[ -x "$out/$name" ]]; then echo "$out"; return 0; fi
  go_env
  echo "building $name $ver (cached after the first time)..." >&2
  mkdir -p "$out.tmp"
  GOBIN="$out.tmp" go install -trimpath -ldflags "-s -w ${4:-}" "$mod@$ver" >&2
  rm -rf "$out"; mv "$out.tmp" "$out"
  echo "$out"
}

# etcd's server module replaces its sibling modules with local paths, so
# `go install` refuses it; a wrapper module requiring it builds fine.
build_etcd() { cache_locked etcd _build_etcd; }
_build_etcd() {
  local out="$ABACUS_CACHE_DIR/bin/etcd-$ETCD_VERSION"
  if [[ -x "$out/etcd" ]]; then echo "$out"; return 0; fi
  go_env
  local work="$ABACUS_CACHE_DIR/work/etcd-$ETCD_VERSION"
  rm -rf "$work"; mkdir -p "$work"
  (
    cd "$work"
    printf 'module abacus.local/etcdbuild\n\ngo 1.24\n' > go.mod
    printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3/etcdmain"\n' > tools.go
    go mod edit -require "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    go mod tidy -e >/dev/null 2>&1 || true
    echo "building etcd $ETCD_VERSION (cached after the first time)..." >&2
    go build -trimpath -ldflags "-s -w" -o "$work/etcd" go.etcd.io/etcd/server/v3 >&2
  )
  mkdir -p "$out.tmp"; mv "$work/etcd" "$out.tmp/etcd"
  rm -rf "$out"; mv "$out.tmp" "$out"
  echo "$out"
}

# helm's default Kubernetes version (what `helm template` renders for without a
# cluster) is 1.20 unless set at link time: make it the control plane's.
build_helm() { cache_locked helm _build_helm; }
_build_helm() {
  local minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  go_install_cached helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" \
    "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor" \
    "-kube$KUBE_VERSION"
}

# Its go.mod replaces klog with a go-kit shim, so `go install` refuses it: built in a
# wrapper module that repeats those replace directives.
build_prometheus() { cache_locked prometheus _build_prometheus; }
_build_prometheus() {
  local out="$ABACUS_CACHE_DIR/bin/prometheus-$PROMETHEUS_VERSION"
  if [[ -x "$out/prometheus" && -x "$out/promtool" ]]; then echo "$out"; return 0; fi
  go_env
  local work="$ABACUS_CACHE_DIR/work/prometheus-$PROMETHEUS_VERSION"
  local v="2.${PROMETHEUS_VERSION#v0.}"
  local ld="-s -w -X github.com/prometheus/common/version.Version=$v -X github.com/prometheus/common/version.Branch=release"
  rm -rf "$work"; mkdir -p "$work/bin"
  (
    cd "$work"
    printf 'module abacus.local/prometheusbuild\n\ngo 1.24\n' > go.mod
    printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "github.com/prometheus/prometheus/cmd/prometheus"\n\t_ "github.com/prometheus/prometheus/cmd/promtool"\n)\n' > tools.go
    go mod edit -require "github.com/prometheus/prometheus@$PROMETHEUS_VERSION"
    # Its own replace directives (klog -> the go-kit shim its main package calls into).
    local modfile r
    modfile="$(go mod download -json "github.com/prometheus/prometheus@$PROMETHEUS_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
    for r in $(go mod edit -json "$modfile" | node -e 'const m=JSON.parse(require("fs").readFileSync(0,"utf8"));for(const r of m.Replace??[])console.log(`${r.Old.Path}=${r.New.Path}@${r.New.Version}`)'); do
      go mod edit -replace "$r"
    done
    go mod tidy -e >/dev/null 2>&1 || true
    local c
    for c in prometheus promtool; do
      echo "building $c $v (cached after the first time)..." >&2
      go build -trimpath -ldflags "$ld" -o "$work/bin/$c" "github.com/prometheus/prometheus/cmd/$c" >&2
    done
  )
  rm -rf "$out.tmp"; mv "$work/bin" "$out.tmp"
  rm -rf "$out"; mv "$out.tmp" "$out"
  echo "$out"
}

build_versitygw() { cache_locked versitygw _build_versitygw; }
_build_versitygw() {
  go_install_cached versitygw github.com/versity/versitygw/cmd/versitygw "$VERSITYGW_VERSION"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  for what in "$@"; do "build_$what"; done
fi
