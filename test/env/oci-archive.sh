#!/usr/bin/env bash
# Packs a root filesystem directory as a single-layer OCI image archive that
# `ctr -n k8s.io images import` accepts, without a registry or an image builder:
# a reproducible tar of the directory (the layer), the image config, the manifest and
# an index naming the image (`io.containerd.image.name`).
#
#   oci-archive.sh ROOTFS IMAGE-NAME OUT.tar [DOCKERFILE]
#
# With DOCKERFILE, the config (USER, WORKDIR, ENV, ENTRYPOINT, CMD) is read from the
# lines after its last FROM, so this archive and `docker build` of that file describe the
# same image. Without it the config is empty (e.g. the sandbox image sets its own entry
# point below).
set -euo pipefail

rootfs="${1:?usage: oci-archive.sh ROOTFS NAME OUT.tar [DOCKERFILE]}"
name="${2:?image name}"
out="${3:?output archive}"
dockerfile="${4:-}"

work="$(mktemp -d "$(dirname "$out")/.oci.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/blobs/sha256"

sha() { sha256sum "$1" | cut -d' ' -f1; }
blob() { # file -> moves it into blobs/, prints its digest
  local d; d="$(sha "$1")"
  mv "$1" "$work/blobs/sha256/$d"
  echo "$d"
}
json_str() { node -e 'process.stdout.write(JSON.stringify(process.argv[1]))' "$1"; }

# The layer: owners root, times zero, names sorted, so equal inputs give equal digests.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --format=posix \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -C "$rootfs" -cf "$work/layer.tar" .
layer_size="$(stat -c %s "$work/layer.tar")"
layer="$(blob "$work/layer.tar")"

# Image config from the Dockerfile's final stage.
user="" workdir="" entrypoint="null" cmd="null" env_json=""
if [[ -n "$dockerfile" ]]; then
  final="$(awk '/^FROM /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' "$dockerfile")"
  user="$(sed -n 's/^USER[[:space:]]\+//p' <<< "$final" | tail -n1)"
  workdir="$(sed -n 's/^WORKDIR[[:space:]]\+//p' <<< "$final" | tail -n1)"
  entrypoint="$(sed -n 's/^ENTRYPOINT[[:space:]]\+//p' <<< "$final" | tail -n1)"
  cmd="$(sed -n 's/^CMD[[:space:]]\+//p' <<< "$final" | tail -n1)"
  while read -r kv; do
    [[ -n "$kv" ]] && env_json+="${env_json:+,}$(json_str "$kv")"
  done < <(sed -n 's/^ENV[[:space:]]\+//p' <<< "$final")
  [[ -n "$entrypoint" ]] || entrypoint="null"
  [[ -n "$cmd" ]] || cmd="null"
fi
cat > "$work/config.json" <<EOF
{"architecture":"amd64","os":"linux","config":{"User":$(json_str "$user"),"WorkingDir":$(json_str "$workdir"),"Env":[$env_json],"Entrypoint":$entrypoint,"Cmd":$cmd},"rootfs":{"type":"layers","diff_ids":["sha256:$layer"]},"history":[{"created_by":"test/env/oci-archive.sh"}]}
EOF
node -e 'JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))' "$work/config.json" \
  || { echo "oci-archive: the config read from $dockerfile is not valid JSON" >&2; exit 1; }
config_size="$(stat -c %s "$work/config.json")"
config="$(blob "$work/config.json")"

cat > "$work/manifest.json" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$config","size":$config_size},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:$layer","size":$layer_size}]}
EOF
manifest_size="$(stat -c %s "$work/manifest.json")"
manifest="$(blob "$work/manifest.json")"

cat > "$work/index.json" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:$manifest","size":$manifest_size,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":$(json_str "$name"),"org.opencontainers.image.ref.name":$(json_str "${name##*:}")}}]}
EOF
printf '{"imageLayoutVersion":"1.0.0"}' > "$work/oci-layout"

tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$work" \
  -cf "$out.tmp" oci-layout index.json blobs
mv "$out.tmp" "$out"
