#!/usr/bin/env bash
# Verifies every fixture on the WebGPU platform of a GPU host (NVIDIA's Vulkan driver), with the binary
# that `cargo xtask build --platform cuda` made (the default features include webgpu). Writes into
# OUT_DIR: platforms.txt (what the binary sees) and webgpu-run.json (the coverage run of the webgpu
# column: merge it into docs/coverage/runs/).
# Usage: tools/gpu/verify_webgpu.sh HWCOV_BINARY OUT_DIR
set -uo pipefail
bin=${1:?binary}; out=${2:?out dir}
mkdir -p "$out"
source "$(dirname "$0")/vulkan.sh"
source "$(dirname "$0")/cuda_libs.sh"
"$bin" platforms | tee "$out/platforms.txt"
"$bin" coverage --root . --platform webgpu --out "$out/webgpu-run.json"
