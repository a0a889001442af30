#!/usr/bin/env bash
# Device time of each WebGPU dispatch (HWCOV_WEBGPU_PROFILE=kernels: timestamp queries around every
# dispatch) on the benchmark's checkpoints, which tools/gpu/bench_webgpu.sh made. A few runs each:
# these rank kernels; the benchmark's numbers come from bench_webgpu.sh, which times whole runs.
# Writes OUT_DIR/kernels-webgpu.txt.
# Usage: tools/gpu/profile_webgpu.sh HWCOV_BINARY OUT_DIR [CHECKPOINT_DIR]
set -uo pipefail
bin=${1:?binary}; out=${2:?out dir}; ckpt=${3:-/tmp/hwcov-bench-checkpoints}
source "$(dirname "$0")/vulkan.sh"
txt="$out/kernels-webgpu.txt"
: > "$txt"
profile() {  # checkpoint batch seq decode
  [ -d "$ckpt/$1" ] || return 0
  echo "== $1 batch $2 seq $3 decode $4" >> "$txt"
  HWCOV_WEBGPU_PROFILE=kernels timeout 60 "$bin" bench --platform webgpu --model-dir "$ckpt/$1" --precision f32 \
    --batch "$2" --seq "$3" --decode "$4" --warmup 1 --iters 3 >> "$txt" 2>&1
  echo >> "$txt"
}
profile bert-base 32 128 0
profile qwen2-0.5b 1 512 16
profile whisper-tiny 1 0 16
profile bert-base 1 128 0
profile vit-base 32 0 0
