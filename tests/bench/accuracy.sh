#!/usr/bin/env bash
# accuracy.sh — the README's accuracy table: perplexity of the default model on WikiText-2 in every
# FlexQ mode, on the same windows, plus bits per weight, file size and the sensitivity table.
# Usage: tests/bench/accuracy.sh [CTX [WINDOWS]] (defaults 2048 and 4). Writes
# tests/bench/results/accuracy-cpu-DATE.json and prints it. Takes a while on a CPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
ctx=${1:-2048}
windows=${2:-4}
scripts/build.sh
model=$(scripts/fetch-model.sh)
text=../shared/data/wikitext-2-raw-test.txt
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

build/runtime/flexq-quant --in "$model" --out "$work/flex.fq6.safetensors" \
    --report "$work/report.json"
for mode in fp w6a16 w6a8 w6a6 flex; do
    src=$work/flex.fq6.safetensors
    [ "$mode" = fp ] && src=$model
    build/runtime/flexq-ppl --model "$src" --text "$text" --ctx "$ctx" --max-windows "$windows" \
        --mode "$mode" > "$work/$mode.json"
done

out=tests/bench/results/accuracy-cpu-$(date -u +%Y-%m-%d).json
python3 - "$work" "$model" "$(git rev-parse --short HEAD)" > "$out" <<'PY'
import json, os, sys
work, model, commit = sys.argv[1:]
rep = json.load(open(os.path.join(work, "report.json")))
rows = {m: json.load(open(os.path.join(work, m + ".json")))
        for m in ("fp", "w6a16", "w6a8", "w6a6", "flex")}
fp = rows["fp"]["ppl"]
out = {"date": os.popen("date -u +%Y-%m-%dT%H:%M:%SZ").read().strip(), "commit": commit,
       "machine": "CPU reference backend, " + os.popen("nproc").read().strip() + " threads",
       "model": os.path.basename(model), "text": "WikiText-2 test, CR stripped, rows joined with \\n\\n",
       "ctx": rows["fp"]["ctx"], "windows": rows["fp"]["windows"], "tokens": rows["fp"]["tokens"],
       "source_file_bytes": os.path.getsize(model), "int6_file_bytes": rep["file_bytes"],
       "int6_bits_per_weight": rep["bits_per_weight"], "sensitivity": rep["sensitivity"],
       "rows": [{"mode": m, "ppl": r["ppl"], "delta": r["ppl"] - fp,
                 "delta_pct": 100 * (r["ppl"] / fp - 1), "seconds": r["seconds"]}
                for m, r in rows.items()]}
print(json.dumps(out, indent=1))
PY
cat "$out"
