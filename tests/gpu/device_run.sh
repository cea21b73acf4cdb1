#!/usr/bin/env bash
# device_run.sh — one GPU session on the device machine, in phases (one `run` call each, issued
# back to back while the machine is warm), from the payload scripts/gpu-pack.sh makes:
#   part 1   carry .devcarry/m1 — keeps the model's first half in /var/tmp/flexq-devcache
#   check    carry .devcarry/m2 and .devcarry/pack — assembles the model (sha256 checked),
#            unpacks the binaries, runs every GPU test, writes $OUT/summary.txt and
#            $OUT/logs.tar.gz
#   model    carry .devcarry/m2 and .devcarry/pack — only the model assembly and the unpacking
#   memcheck compute-sanitizer memcheck over the backend test (every kernel kind on the model)
#   bench    the GEMM benchmark: $OUT/gemm-<gpu>-<date>.json
#   profile  carry .devcarry/pack — Nsight Compute over the GEMM kernels on two shapes (decode and
#            prefill): stall reasons, memory and pipe use, $OUT/ncu-*.txt
#   profile1 NAME REGEX SHAPES M  one such profile: kernels matching REGEX while bench_gemm runs
#            SHAPES at m = M ($OUT/ncu-NAME.txt)
#   stream   carry .devcarry/pack — bench_stream: weight-read speed by access pattern alone
#   e2e P [MODES]  a synthetic model of preset P (flexq-quant --synthetic, written in the cache),
#            then flexq-bench in each mode (default: flex w8a8 fp16; MODE-eager: without CUDA
#            graphs): $OUT/e2e-P.jsonl
#   serve P [KV]  ($FLEXQ_LOADGEN_ARGS: more loadgen.py options, e.g. --temperature 1 --top-p 0.9)
#            flexq-serve --backend cuda (KV cache KV, default 14GiB: 64 x 384 tokens of 7B
#            need 12.6 GB, of 13B 19.7 GB) on the synthetic model of preset P (made by e2e P) under
#            tests/bench/loadgen.py at concurrency 1, 8, 32, 64, beside flexq-bench's offline rate
#            at the same batch sizes: $OUT/serve-P.jsonl
#   stepprof P B [SKIP]  ncu times 300 kernel launches after the first SKIP (default 1300: into the
#            warm-up's decode steps at batch 64) of flexq-bench decoding at batch B on an 8-layer
#            synthetic model of preset P (mode flex): $OUT/stepprof-P-B.csv (one row per launch)
#   hf P [ARGS]  the HF transformers fp16 peer (tests/bench/hf_peer.py) on preset P: $OUT/hf-P.jsonl
#   ppl [W]  perplexity on the GPU in every mode (W windows of 2048, default all), flex from an
#            INT6 file quantized there: $OUT/ppl-cuda-wW.json (one JSON object per line)
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
cache=${FLEXQ_DEVCACHE:-/var/tmp/flexq-devcache} # outside the tree: the tree is re-synced per call
out=${OUT:-$root/out}
mkdir -p "$cache" "$out/logs"
export LD_LIBRARY_PATH=$cache/pack/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export FLEXQ_MODEL=$cache/model.gguf
export FLEXQ_WIKITEXT=$cache/pack/data/wikitext-2-raw-test.txt
bin=$cache/pack/bin
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)

phase_part() {
    cp ".devcarry/m$1/part" "$cache/part$1" && ls -la "$cache"
}

# The model from part 1 (in the cache) and part 2 (carried), sha256 checked; the pack unpacked.
phase_model() {
    cat "$cache/part1" .devcarry/m2/part > "$FLEXQ_MODEL"
    want=$(cat .devcarry/pack/model.sha256)
    got=$(sha256sum "$FLEXQ_MODEL" | cut -d' ' -f1)
    [ "$want" = "$got" ] || { echo "model sha256 $got, want $want" | tee "$out/summary.txt"; exit 1; }
    unpack
}

phase_check() {
    phase_model
    nvidia-smi > "$out/logs/nvidia-smi.txt" 2>&1
    : > "$out/summary.txt"
    local fails=0
    for t in test_gpu_device test_gemm_w6_decode test_gemm_w6_mma test_gemm_w6_prefill \
        test_gemm_w6_wgmma test_btc test_k_ops test_k_attn test_k_sample test_cuda_backend; do
        [ -x "$bin/$t" ] || { echo "MISSING $t" >> "$out/summary.txt"; continue; }
        local t0=$SECONDS
        timeout 300 "$bin/$t" > "$out/logs/$t.log" 2>&1
        local rc=$?
        echo "$t rc=$rc $((SECONDS - t0))s" >> "$out/summary.txt"
        grep -E 'FAIL|ok  mode|mismatch' "$out/logs/$t.log" | head -20 >> "$out/summary.txt"
        [ $rc -eq 0 ] || fails=$((fails + 1))
    done
    tar -C "$out" -czf "$out/logs.tar.gz" logs && rm -rf "$out/logs"
    cat "$out/summary.txt"
    return $fails
}

phase_memcheck() {
    [ -n "$sanitizer" ] || { echo "compute-sanitizer not found"; return 1; }
    local t0=$SECONDS
    timeout 540 "$sanitizer" --tool memcheck --error-exitcode 9 "$bin/test_cuda_backend" \
        > "$out/memcheck_cuda_backend.log" 2>&1
    echo "memcheck test_cuda_backend rc=$? $((SECONDS - t0))s"
    tail -5 "$out/memcheck_cuda_backend.log"
}

phase_bench() {
    local gpu
    [ -d "$cache/pack/bin" ] || unpack
    gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr 'A-Z' 'a-z' |
        grep -oE 'h100|h200|a100|l40s|[a-z][0-9]+' | head -1)
    "$bin/bench_gemm" --out "$out/gemm-${gpu:-gpu}-$(date -u +%F).json" \
        --commit "${FLEXQ_COMMIT:-unknown}" \
        --driver "$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)" \
        "$@" 2>&1 | tee "$out/bench.log" | tail -80
}

unpack() {
    rm -rf "$cache/pack" && mkdir -p "$cache/pack" && tar -C "$cache/pack" -xJf .devcarry/pack/pack.tar.xz
}

# ncu over the kernels matching $1 while bench_gemm runs $2 (shapes) and $3 (token counts).
profile_one() {
    local ncu name=$1 re=$2 shapes=$3 ms=$4
    ncu=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
    [ -n "$ncu" ] || { echo "ncu not found"; return 1; }
    timeout 240 "$ncu" --clock-control none -k "regex:$re" --launch-skip 3 --launch-count 1 \
        --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
        --section SchedulerStats --section ComputeWorkloadAnalysis --section LaunchStats \
        --section Occupancy "$bin/bench_gemm" --out /tmp/ncu-bench.json --shapes "$shapes" \
        --ms "$ms" > "$out/ncu-$name.txt" 2>&1
    echo "ncu $name rc=$?"
}

phase_profile() {
    [ -d "$cache/pack/bin" ] || unpack
    profile_one gemv-m1 gemv_kernel 8192x28672 1
    profile_one gemv-m8 gemv_kernel 8192x28672 8
    profile_one wgmma-m2048 wgmma 8192x28672 2048
    grep -h -E "^  [a-z_].*\(|Duration|DRAM Throughput|Memory Throughput|L2 Cache Throughput|Stall|Issued Warp|Registers|Achieved Occupancy|Compute \(SM\)|No Eligible|Warp Cycles" \
        "$out"/ncu-*.txt | head -120
}

phase_e2e() {
    local preset=$1 modes=${2:-flex w8a8 fp16} file=$cache/synth-$1.fq6.safetensors
    [ -d "$cache/pack/bin" ] || unpack
    if [ ! -f "$file" ]; then
        local t0=$SECONDS
        "$bin/flexq-quant" --synthetic "$preset" --tokenizer "$FLEXQ_MODEL" --out "$file" \
            2>&1 | tail -2 || return 1
        echo "synthetic $preset: $((SECONDS - t0)) s"
    fi
    for mode in $modes; do
        local extra=() # MODE-eager: the same mode with every step run eagerly (no CUDA graphs)
        [ "${mode%-eager}" != "$mode" ] && extra=(--no-graphs)
        timeout 300 "$bin/flexq-bench" --model "$file" --backend cuda --mode "${mode%-eager}" \
            --label "$preset" "${extra[@]}" >> "$out/e2e-$preset.jsonl" 2>> "$out/e2e-$preset.log" ||
            echo "{\"model\": \"$preset\", \"mode\": \"$mode\", \"error\": true}" >> "$out/e2e-$preset.jsonl"
        tail -4 "$out/e2e-$preset.log"
    done
    nvidia-smi --query-gpu=name,driver_version,memory.used --format=csv >> "$out/e2e-$preset.log"
    cat "$out/e2e-$preset.jsonl"
}

phase_serve() {
    local preset=$1 kv=${2:-14GiB} file=$cache/synth-$1.fq6.safetensors port=18123
    [ -d "$cache/pack/bin" ] || unpack
    [ -f "$file" ] || phase_e2e "$preset" flex > /dev/null
    "$bin/flexq-bench" --model "$file" --backend cuda --mode flex --prefill 0 --label "$preset" \
        > "$out/serve-offline-$preset.jsonl" 2>> "$out/serve-$preset.log" || return 1
    "$bin/flexq-serve" --model "$file" --backend cuda --served-model-name "$preset" --port $port \
        --max-num-seqs 64 --max-num-batched-tokens 2048 --kv-cache-memory "$kv" \
        --max-model-len 4096 >> "$out/serve-$preset.log" 2>&1 &
    local pid=$! i
    for i in $(seq 1 120); do
        python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/ready', timeout=1)" \
            2> /dev/null && break
        sleep 1
    done
    timeout 400 python3 tests/bench/loadgen.py --url "http://127.0.0.1:$port" --model "$preset" \
        --offline "$out/serve-offline-$preset.jsonl" --out "$out/serve-$preset.jsonl" \
        ${FLEXQ_LOADGEN_ARGS:-}
    kill -TERM $pid
    wait $pid
    echo "flexq-serve exit $?"
    tail -3 "$out/serve-$preset.log"
}

phase_stepprof() {
    local preset=$1 batch=$2 skip=${3:-1300} file=$cache/synth8-$1.fq6.safetensors ncu
    [ -d "$cache/pack/bin" ] || unpack
    [ -f "$file" ] || "$bin/flexq-quant" --synthetic "$preset" --layers 8 --tokenizer "$FLEXQ_MODEL" \
        --out "$file" 2>&1 | tail -1
    ncu=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
    # warm-up run: 16 prefill steps of 512 tokens (64 x 128, ~76 kernels each) then 7 decode steps: skip
    # into its second decode step
    timeout 400 "$ncu" --clock-control none --launch-skip "$skip" --launch-count 300 --csv \
        --metrics gpu__time_duration.sum "$bin/flexq-bench" --model "$file" --backend cuda \
        --mode flex --batches "$batch" --prompt 128 --output 16 --prefill 0 \
        > "$out/stepprof-$preset-$batch.csv" 2> "$out/stepprof-$preset-$batch.log"
    echo "ncu rc=$? rows $(grep -c gpu__time_duration "$out/stepprof-$preset-$batch.csv")"
}

phase_ppl() {
    local windows=${1:-0} text=$cache/pack/data/wikitext-2-raw-test.txt
    local flex=$cache/flex.fq6.safetensors
    [ -f "$flex" ] || "$bin/flexq-quant" --in "$FLEXQ_MODEL" --out "$flex" \
        --calib "$cache/pack/data/calib-literature.txt" --report "$out/quant-report.json" \
        > "$out/quant.log" 2>&1 || { tail -5 "$out/quant.log"; return 1; }
    : > "$out/ppl-cuda-w$windows.json"
    for mode in fp w6a16 w6a8 w6a6 flex; do
        local src=$flex
        [ "$mode" = fp ] && src=$FLEXQ_MODEL
        "$bin/flexq-ppl" --model "$src" --text "$text" --ctx 2048 --max-windows "$windows" \
            --mode "$mode" --backend cuda >> "$out/ppl-cuda-w$windows.json" 2>> "$out/ppl.log" ||
            echo "{\"mode\": \"$mode\", \"error\": true}" >> "$out/ppl-cuda-w$windows.json"
    done
    cat "$out/ppl-cuda-w$windows.json"
}

case "${1:-}" in
part) phase_part "$2" ;;
check) phase_check ;;
model) phase_model && echo "model and pack ready" ;;
memcheck) phase_memcheck ;;
profile) phase_profile ;;
profile1)
    shift
    [ -d "$cache/pack/bin" ] || unpack
    profile_one "$@"
    grep -E "Duration|DRAM Throughput|L1/TEX Hit|L2 Hit|L1/TEX Cache Throughput|L2 Cache Throughput|Registers|Achieved Occupancy|Stall|No Eligible|Issued Warp|Local" \
        "$out/ncu-$1.txt" | head -40
    ;;
e2e) shift; phase_e2e "$@" ;;
serve) phase_serve "$2" "${3:-}" ;;
stepprof) phase_stepprof "$2" "$3" "${4:-}" ;;
hf)
    shift
    p=$1
    shift
    PYTHONUNBUFFERED=1 timeout 560 python3 tests/bench/hf_peer.py --preset "$p" "$@" \
        2> "$out/hf-$p.log" | tee -a "$out/hf-$p.jsonl"
    tail -3 "$out/hf-$p.log"
    ;;
stream)
    [ -d "$cache/pack/bin" ] || unpack
    "$bin/bench_stream" | tee "$out/stream.jsonl"
    ;;
bench) shift; phase_bench "$@" ;;
ppl) phase_ppl "${2:-0}" ;;
*) echo "usage: device_run.sh part 1 | check | memcheck | profile | profile1 NAME RE SHAPES M | stream | e2e P [MODES] | serve P | stepprof P B | hf P [ARGS] | bench [ARGS] | ppl [WINDOWS]" >&2; exit 2 ;;
esac
