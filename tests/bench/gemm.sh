#!/usr/bin/env bash
# gemm.sh — runs the GEMM benchmark (bench_gemm: our INT6 kernels vs cuBLAS int8 / fp16) and writes
# its JSON as OUT_DIR/gemm-<gpu>-<UTC date>.json (gpu: h100, h200, ... from nvidia-smi).
# Usage: tests/bench/gemm.sh BUILD_DIR OUT_DIR [extra bench_gemm args, e.g. --quick]
# The commit is `git rev-parse --short HEAD`, or $FLEXQ_COMMIT where there is no git checkout.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 BUILD_DIR OUT_DIR [bench_gemm args...]" >&2
    exit 2
fi
build=$1
out_dir=$2
shift 2
bin=$build/tests/bench/bench_gemm
if [ ! -x "$bin" ]; then
    echo "gemm.sh: $bin not found (build it: ninja -C $build tests/bench/bench_gemm)" >&2
    exit 1
fi

src=$(cd "$(dirname "$0")/../.." && pwd)
commit=$(git -C "$src" rev-parse --short HEAD 2>/dev/null || true)
commit=${commit:-${FLEXQ_COMMIT:-unknown}}

driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n1 || true)
name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1 || true)
# Short GPU name: the known model token in the name (H100, H200, A100, ...), else the name's first
# word after "NVIDIA", lowercased; "gpu" when nvidia-smi says nothing.
gpu=$(printf '%s\n' "$name" | grep -oiE '\b(GH200|GB200|H100|H200|H800|H20|B200|B100|A100|A800|A10G|A10|A30|A40|L40S|L40|L4|V100|T4)\b' | head -n1 || true)
if [ -z "$gpu" ]; then
    gpu=$(printf '%s\n' "$name" | sed -e 's/^NVIDIA //' | awk '{print $1}')
fi
gpu=$(printf '%s' "${gpu:-gpu}" | tr '[:upper:]' '[:lower:]' | tr -c 'a-z0-9\n' '-')

mkdir -p "$out_dir"
out=$out_dir/gemm-$gpu-$(date -u +%F).json
echo "gemm.sh: $bin -> $out (commit $commit, driver ${driver:-unknown}, gpu '$name')" >&2
exec "$bin" --commit "$commit" --driver "$driver" --out "$out" "$@"
