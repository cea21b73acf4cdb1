#!/usr/bin/env bash
# build.sh — configures (once) and builds the tree in build/ (CUDA code too where nvcc is found).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >&2
