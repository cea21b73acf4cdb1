#!/usr/bin/env bash
# test.sh — builds the tree and runs every CPU test suite: unit (tiny generated models, under
# ASan/UBSan too), model (the real default model, fetched on first use) and integration (the daemon
# on loopback with the official openai client, curl, wrk and promtool). With nvcc present the
# CUDA code is compiled as well, and a second tree without CUDA proves the CPU build stands alone;
# the gpu suite runs and skips where there is no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

FLEXQ_MODEL=$(scripts/fetch-model.sh)
export FLEXQ_MODEL

setup() { # dir, options...
    local dir=$1
    shift
    if [ -f "$dir/build.ninja" ]; then
        meson setup --reconfigure "$dir" "$@" >/dev/null
    else
        meson setup "$dir" "$@" >/dev/null
    fi
    ninja -C "$dir" -j "$jobs"
}

echo "== build (CUDA auto) and all suites"
setup build
meson test -C build --print-errorlogs --num-processes "$jobs" --suite unit --suite model \
    --suite integration --suite gpu

echo "== unit suite under ASan + UBSan, without CUDA"
setup build-asan -Dcuda=disabled -Db_sanitize=address,undefined -Db_lundef=false
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    meson test -C build-asan --print-errorlogs --num-processes "$jobs" --suite unit
