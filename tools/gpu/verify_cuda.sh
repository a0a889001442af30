#!/usr/bin/env bash
# Verifies every fixture on the CUDA platform of a GPU host, with the binary that
# `cargo xtask build --platform cuda` made. Writes into OUT_DIR:
#   platforms.txt           what the binary sees
#   cuda-run.json           the coverage run of the cuda column (merge it: docs/coverage/runs/)
#   precision-<p>.jsonl     `hwcov verify --json` of every fixture at f16 and bf16 (VERIFY_PRECISIONS),
#                           against transformers at that precision (io.<p>.safetensors, written by
#                           tools/fixtures/reduced_precision.py), for the fixtures that have it
#   precision-<p>-vs-f32.jsonl  the same runs against the float32 reference (io.safetensors)
# Usage: tools/gpu/verify_cuda.sh HWCOV_BINARY OUT_DIR
set -uo pipefail
bin=${1:?binary}; out=${2:?out dir}
mkdir -p "$out"
source "$(dirname "$0")/cuda_libs.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
"$bin" platforms | tee "$out/platforms.txt"
"$bin" coverage --root . --platform cuda --out "$out/cuda-run.json"
for p in ${VERIFY_PRECISIONS-f16 bf16}; do
  : > "$out/precision-$p.jsonl"; : > "$out/precision-$p-vs-f32.jsonl"
  for d in fixtures/*/; do
    [ -f "$d/io.safetensors" ] || continue
    # A fixture without a reference at the precision is run once, against float32.
    pairs="$d/io.safetensors:precision-$p-vs-f32"
    [ -f "$d/io.$p.safetensors" ] && pairs="$d/io.$p.safetensors:precision-$p $pairs"
    for pair in $pairs; do
      "$bin" verify --platform cuda --precision "$p" --json --model-dir "$d" --io "${pair%%:*}" \
        >> "$out/${pair#*:}.jsonl" 2>> "$out/precision-$p.err"
      echo "$d $p ${pair#*:} exit $?"
    done
  done
done
