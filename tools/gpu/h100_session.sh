#!/usr/bin/env bash
# One call on a GPU host: CUDA verification, the benchmark against transformers, and a cross-check
# that the host's transformers regenerates the committed fixtures. Everything lands in
# $1/results.tar.gz (the device tool brings back few files).
# PROFILE="bert-base:bf16:32:128 whisper-tiny:bf16:1:0:4" adds a kernel profile of those rows
# (checkpoint:precision:batch:seq[:decode tokens], from the benchmark's checkpoints); SKIP_VERIFY=1
# skips verification. KERNEL_TESTS=PATH runs that test executable first (the cuda_kernels tests of
# hwcov-cuda, built with `cargo test --release -p hwcov-cuda --features cuda --target-dir target/cuda
# --test cuda_kernels --no-run`).
# Usage: tools/gpu/h100_session.sh OUT_DIR HWCOV_BINARY
set -u
out=${1:?out}; bin=${2:?binary}
work=/tmp/hwcov-results; rm -rf "$work"; mkdir -p "$work"
export PYTHONUNBUFFERED=1
{ nvidia-smi; python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"; } > "$work/host.txt" 2>&1
if [ -n "${KERNEL_TESTS:-}" ]; then
  (source "$(dirname "$0")/cuda_libs.sh" && timeout 300 "$KERNEL_TESTS" > "$work/kernel-tests.log" 2>&1)
fi
[ -n "${SKIP_VERIFY:-}" ] || timeout 200 tools/gpu/verify_cuda.sh "$bin" "$work/verify" > "$work/verify.log" 2>&1
timeout "${BENCH_TIMEOUT:-240}" tools/gpu/bench_cuda.sh "$bin" "$work/bench" > "$work/bench.log" 2>&1
for spec in ${PROFILE:-}; do
  IFS=: read -r ck p b s d <<< "$spec"
  timeout 90 tools/gpu/profile_cuda.sh "$bin" "/tmp/hwcov-bench-checkpoints/$ck" "$p" "$b" "$s" "$work/profiles" "${d:-0}" \
    > "$work/profile-$ck-$p-b$b.log" 2>&1
done
if [ -z "${SKIP_FIXTURE_CHECK:-}" ]; then
  timeout 150 python3 tools/fixtures/generate.py --out /tmp/fx > "$work/regenerate.log" 2>&1
  python3 tools/fixtures/compare.py fixtures /tmp/fx > "$work/fixture_compare.txt" 2>&1
fi
tar -czf "$out/results.tar.gz" -C "$work" .
tail -n 5 "$work"/*.log
