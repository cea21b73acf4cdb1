#!/usr/bin/env bash
# generate.sh — the main job for now: build, fetch the default model (SmolLM2-135M-Instruct), and
# generate a greedy continuation on the CPU. Usage: scripts/generate.sh ["PROMPT" [flexq-generate
# options...]]; without a prompt it asks the model a chat question in its ChatML format.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
model=$(scripts/fetch-model.sh)
prompt=${1:-$'<|im_start|>user\nWhat is the capital of France? Answer in one sentence.<|im_end|>\n<|im_start|>assistant\n'}
shift || true
exec build/runtime/flexq-generate --model "$model" --prompt "$prompt" --max-tokens 64 "$@"
