#!/usr/bin/env bash
# Builds the local broker image: FROM scratch, holding this crate's own binary
# (plus the few shared libraries it links) and running its embedded broker.
# The container tests use it because this machine's Docker can pull nothing.
#
#   scripts/build-image.sh [--release]      -> image kafka-trace-harness:local
set -euo pipefail
cd "$(dirname "$0")/.."

profile=debug
cargo_flags=()
if [[ "${1:-}" == "--release" ]]; then
    profile=release
    cargo_flags+=(--release)
fi
image="${KAFKA_TRACE_HARNESS_LOCAL_IMAGE:-kafka-trace-harness:local}"
target_dir="${CARGO_TARGET_DIR:-target}"

cargo build --locked "${cargo_flags[@]}" --bin kafka-trace-harness
binary="$target_dir/$profile/kafka-trace-harness"

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/rootfs"
# Debug info is useless inside the image and makes it ten times larger.
objcopy --strip-debug "$binary" "$context/rootfs/kafka-trace-harness"
# The dynamic loader and every library the binary links, at their own paths.
ldd "$binary" | awk '/=> \// { print $3 } /ld-linux/ && !/=>/ { print $1 }' |
    while read -r lib; do
        cp --parents -L "$lib" "$context/rootfs"
    done
cat > "$context/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
ENTRYPOINT ["/kafka-trace-harness"]
CMD ["broker", "--host", "0.0.0.0", "--port", "9092"]
DOCKERFILE
docker build --quiet --tag "$image" "$context" >/dev/null 2>&1 || docker build --tag "$image" "$context"
echo "built $image"
