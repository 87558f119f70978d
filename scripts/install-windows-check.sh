#!/usr/bin/env bash
# What the Windows clippy check needs: the x86_64-pc-windows-gnu target and,
# for librdkafka's C build, Debian's MinGW and CMake (only if missing).
set -euo pipefail
rustup target add x86_64-pc-windows-gnu
if ! command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || ! command -v cmake >/dev/null 2>&1; then
    echo "== installing mingw-w64 and cmake (apt)"
    if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends mingw-w64 cmake >/dev/null
fi
