#!/usr/bin/env bash
# setup.sh — installs what building and testing need on a fresh Debian machine: the compiler
# toolchain and -dev packages from Debian, the pinned Python test tools from PyPI. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(build-essential meson ninja-build pkg-config libjansson-dev libcmocka-dev
              libuv1-dev libmicrohttpd-dev libssl-dev python3 python3-pip fortunes
              prometheus curl wrk)
# fortunes: the default calibration text of flexq-quant; prometheus: promtool for the metrics
# tests; curl + wrk: the integration suite.
missing=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd=sudo
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Python tools the reference checks use (tests/requirements.txt pins them).
python3 -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt 2>&1 |
    grep -v -i "running pip as the 'root' user" || true
python3 -c "import tokenizers, gguf, numpy, safetensors, openai" # fail here, clearly, if the install did not work
