#!/usr/bin/env bash
# What the Sarama interop test needs: Debian's Go and its Sarama package
# (only if missing). The test builds in GOPATH mode against the package's
# sources, so no Go module is downloaded (the machine reaches no Go proxy).
set -euo pipefail
if ! command -v go >/dev/null 2>&1 || [ ! -d /usr/share/gocode/src/github.com/Shopify/sarama ]; then
    echo "== installing Go and Sarama (apt)"
    if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        golang-go golang-github-shopify-sarama-dev >/dev/null
fi
