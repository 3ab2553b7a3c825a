#!/usr/bin/env bash
# Builds the native counting kernel (native/hotpath: Rust behind napi-rs) into
# dist/native/abacus-kernel.node, which worker/native/kernel.ts loads. Run by
# scripts/ensure-ready.sh (so by `npm test`, `npm run demo` and `npm run bench`).
#
#   scripts/build-native.sh            (a no-op when the .node file is up to date)
#   scripts/build-native.sh --force    (rebuild anyway, e.g. after a Rust upgrade)
#   scripts/build-native.sh --test     (run the kernel's Rust tests: cargo test --release)
#
# Up to date: dist/native/abacus-kernel.node is newer than every file of native/hotpath/src,
# Cargo.toml, Cargo.lock and build.rs. Otherwise `cargo build --release` (with --locked when
# Cargo.lock matches Cargo.toml) with the crates and the build cached under
# $ABACUS_CACHE_DIR/cargo (default ~/.cache/abacus/cargo): home/ is CARGO_HOME (the crates.io
# index and downloaded crates), target-hotpath/ is CARGO_TARGET_DIR. A cold build downloads
# the crates from crates.io and compiles them (about 3 minutes on 2 cores); later ones reuse
# the cache. Cargo's output is shown only when the build fails. Builds hold a lock under
# $ABACUS_CACHE_DIR/locks, so concurrent runs (two checkouts, two CI jobs) wait for each other.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CRATE="$ROOT/native/hotpath"
OUT="$ROOT/dist/native/abacus-kernel.node"
: "${ABACUS_CACHE_DIR:=$HOME/.cache/abacus}"
CARGO_CACHE="$ABACUS_CACHE_DIR/cargo"

force=0
test=0
case "${1:-}" in
  --force) force=1 ;;
  --test) test=1 ;;
  "") ;;
  *) echo "usage: scripts/build-native.sh [--force | --test]" >&2; exit 2 ;;
esac

fail() { echo "abacus: $*" >&2; exit 1; }

[[ -f "$CRATE/Cargo.toml" ]] || fail "native/hotpath/Cargo.toml is missing: the native kernel cannot be built from this checkout"

inputs=("$CRATE/src" "$CRATE/Cargo.toml")
for f in Cargo.lock build.rs; do [[ -e "$CRATE/$f" ]] && inputs+=("$CRATE/$f"); done

# The .node file exists and no input (nor the src directory itself: a file added or removed)
# is newer than it.
up_to_date() {
  ((force == 0)) && [[ -f "$OUT" ]] && [[ -z "$(find "${inputs[@]}" -newer "$OUT" -print -quit)" ]]
}
((test == 1)) || ! up_to_date || exit 0

# Cargo: on PATH, else where rustup installs it. Its directory goes first on PATH so that
# cargo runs the rustc beside it (rustup's proxy or the toolchain's own), also when
# ~/.cargo/bin is not on PATH; rustup finds its toolchains in RUSTUP_HOME, not CARGO_HOME.
cargo="$(command -v cargo || true)"
if [[ -z "$cargo" ]]; then
  for c in "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" "$HOME/.cargo/bin/cargo"; do
    if [[ -x "$c" ]]; then cargo="$c"; break; fi
  done
fi
[[ -n "$cargo" ]] || fail "the native kernel (native/hotpath) is built with Rust's cargo, which is not installed (not on PATH, not in ~/.cargo/bin).
  Fix: install stable Rust with rustup: curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  (Rust 1.88 or newer, which the crates need; distribution packages are often older), then run: bash scripts/build-native.sh"
cargo="$(cd "$(dirname "$cargo")" && pwd)/$(basename "$cargo")"
user_cargo_home="${CARGO_HOME:-$HOME/.cargo}"
export PATH="$(dirname "$cargo"):$PATH"

# The crates and the build live in the cache. The user's cargo configuration (registry
# mirrors, proxies, network settings) is kept: it lives in the user's CARGO_HOME, which
# cargo no longer reads once CARGO_HOME moves, so it is linked into the cached one.
export CARGO_HOME="$CARGO_CACHE/home"
export CARGO_TARGET_DIR="$CARGO_CACHE/target-hotpath"
mkdir -p "$CARGO_HOME" "$CARGO_TARGET_DIR" "$ABACUS_CACHE_DIR/locks" "$(dirname "$OUT")"

build() {
  # Another run may have built it while this one waited for the lock.
  up_to_date && return 0
  local f
  for f in config.toml config; do
    if [[ -f "$user_cargo_home/$f" && "$user_cargo_home" != "$CARGO_HOME" ]]; then
      ln -sfn "$user_cargo_home/$f" "$CARGO_HOME/$f"
    elif [[ -L "$CARGO_HOME/$f" ]]; then
      rm -f "$CARGO_HOME/$f"
    fi
  done

  echo "abacus: building the native kernel (cargo, first time ~3 min)..." >&2
  log="$(mktemp "${TMPDIR:-/tmp}/abacus-cargo.XXXXXX")"
  # The .node file gets the time the build started: a source edited during the build leaves
  # it out of date, so the next run builds again.
  started="$(mktemp "$(dirname "$OUT")/.build-started.XXXXXX")"
  tmp="$OUT.tmp.$$"
  trap 'rm -f "${log:-}" "${started:-}" "${tmp:-}"' EXIT

  local locked=()
  [[ -f "$CRATE/Cargo.lock" ]] && locked=(--locked)
  local ok=0
  (cd "$CRATE" && "$cargo" build --release "${locked[@]}") > "$log" 2>&1 && ok=1
  if ((ok == 0)) && ((${#locked[@]})) && grep -qE 'needs to be updated but --locked|because --locked was passed' "$log"; then
    echo "abacus: native/hotpath/Cargo.lock does not match Cargo.toml: building without --locked (cargo updates Cargo.lock; commit it)" >&2
    (cd "$CRATE" && "$cargo" build --release) > "$log" 2>&1 && ok=1
  fi
  if ((ok == 0)); then
    # Cargo's own output, without its progress lines.
    grep -vE '^ +(Compiling|Downloaded|Downloading|Updating|Locking|Adding|Checking|Fresh) ' "$log" >&2 || cat "$log" >&2
    if grep -qiE 'failed to download|download of .* failed|failed to query replaced source|failed to get .* as a dependency|failed to load source for dependency|unable to update registry|could not resolve host|couldn.t resolve host|network failure|spurious network error|failed to connect|ssl connect error|timed out' "$log"; then
      fail "building the native kernel failed: cargo could not download the crates it needs (above).
  Fix: the first build needs network access to crates.io (https://index.crates.io and https://static.crates.io;
  cargo honours HTTPS_PROXY); later builds use the cache in $CARGO_CACHE. Then run: bash scripts/build-native.sh"
    fi
    fail "building the native kernel failed (cargo's output above).
  Fix: a current stable Rust (rustup update stable; Rust 1.88 or newer), a C toolchain for the build scripts (apt-get install build-essential);
  an error in native/hotpath/src is the kernel's own. Then run: bash scripts/build-native.sh"
  fi

  local lib=""
  for f in libabacus_hotpath.so libabacus_hotpath.dylib; do
    if [[ -f "$CARGO_TARGET_DIR/release/$f" ]]; then lib="$CARGO_TARGET_DIR/release/$f"; break; fi
  done
  [[ -n "$lib" ]] || fail "cargo built native/hotpath but $CARGO_TARGET_DIR/release/libabacus_hotpath.so is not there"
  # A rename, never a write over the file: a running process may have the old one mapped.
  cp "$lib" "$tmp"
  touch -r "$started" "$tmp"
  mv -f "$tmp" "$OUT"
}

# The kernel's own tests (rules, segment format, malformed input), with the build's cache.
unit_tests() {
  local log
  log="$(mktemp "${TMPDIR:-/tmp}/abacus-cargo-test.XXXXXX")"
  if (cd "$CRATE" && "$cargo" test --release --locked) > "$log" 2>&1; then
    grep -E '^test result:' "$log" | sed 's/^/native kernel: /' >&2
    rm -f "$log"
  else
    cat "$log" >&2
    rm -f "$log"
    fail "the native kernel's Rust tests failed (output above)"
  fi
}

task=build
((test == 1)) && task=unit_tests
if command -v flock >/dev/null; then
  (
    exec 8> "$ABACUS_CACHE_DIR/locks/cargo-hotpath.lock"
    flock 8
    "$task"
  )
else
  "$task"
fi
