#!/usr/bin/env bash
# gpu-pack.sh — prepares a GPU session's payload for the device machine (Ubuntu 24.04, CUDA 13,
# no libmicrohttpd/libuv/jansson): builds the tree with CUDA in build-gpu/, packs the GPU tests,
# the benchmark, the CLIs and the daemon with the shared libraries that machine lacks (and the
# evaluation and calibration texts) into .devcarry/pack/pack.tar.xz, and splits the default model
# into .devcarry/m1 and m2, one part per call (a call carries at most 64 MiB: m2 goes with the pack).
# tests/gpu/device_run.sh is what runs there; its header says how the calls go.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f build-gpu/build.ninja ] || meson setup build-gpu -Dcuda=enabled >/dev/null
ninja -C build-gpu >&2
model=$(scripts/fetch-model.sh)

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib" "$stage/data"
bins=$(ls build-gpu/tests/gpu/test_* build-gpu/tests/bench/bench_gemm build-gpu/tests/bench/bench_stream build-gpu/runtime/flexq-ppl \
    build-gpu/runtime/flexq-quant build-gpu/runtime/flexq-bench build-gpu/runtime/flexq-generate build-gpu/server/flexq-serve \
    2>/dev/null | grep -v '\.p$' || true)
for b in $bins; do
    [ -x "$b" ] && [ -f "$b" ] || continue
    strip -o "$stage/bin/$(basename "$b")" "$b"
done
# Every shared library the binaries need except the C runtime and CUDA's own (the GPU machine
# has those): Debian 12's builds run on Ubuntu 24.04's newer glibc.
for b in "$stage"/bin/*; do
    ldd "$b" | awk '/=> \// {print $3}'
done | sort -u | grep -Ev '/(libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|ld-linux[^/]*|libcuda|libcublas[^/]*)\.so' |
    while read -r lib; do cp -L "$lib" "$stage/lib/"; done
cp ../shared/data/wikitext-2-raw-test.txt "$stage/data/"
cp /usr/share/games/fortunes/literature "$stage/data/calib-literature.txt"
rm -rf .devcarry
mkdir -p .devcarry/pack .devcarry/m1 .devcarry/m2
tar -C "$stage" -cJf .devcarry/pack/pack.tar.xz bin lib data
sha256sum "$model" | cut -d' ' -f1 > .devcarry/pack/model.sha256
split -n 2 -d "$model" "$stage/part."
mv "$stage/part.00" .devcarry/m1/part
mv "$stage/part.01" .devcarry/m2/part
grep -qx '/.devcarry/' .git/info/exclude 2>/dev/null || echo '/.devcarry/' >> .git/info/exclude
grep -qx '/.devcache/' .git/info/exclude 2>/dev/null || echo '/.devcache/' >> .git/info/exclude
du -sh .devcarry/* >&2
