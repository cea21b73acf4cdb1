#!/usr/bin/env bash
# serve.sh — the main job: build, fetch the default model (SmolLM2-135M-Instruct), and serve it with
# flexq-serve on 127.0.0.1:8000 (CPU backend). Extra arguments go to flexq-serve (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
model=$(scripts/fetch-model.sh)
exec build/server/flexq-serve --model "$model" "$@"
