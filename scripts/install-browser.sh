#!/usr/bin/env bash
# What the browser test of the HTML report needs: Debian's chromium (only
# if missing) and Playwright's Python package, which drives that chromium
# through `executable_path` and downloads no browser of its own.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
    echo "== installing chromium (apt)"
    if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq chromium >/dev/null
fi
python3 -m pip install --quiet --disable-pip-version-check playwright
