#!/usr/bin/env bash
# One call on a GPU host: CUDA verification, the benchmark against transformers, and a cross-check
# that the host's transformers regenerates the committed fixtures. Everything lands in
# $1/results.tar.gz (the device tool brings back few files).
# Usage: tools/gpu/h100_session.sh OUT_DIR HWCOV_BINARY
set -u
out=${1:?out}; bin=${2:?binary}
work=/tmp/hwcov-results; rm -rf "$work"; mkdir -p "$work"
export PYTHONUNBUFFERED=1
{ nvidia-smi; python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"; } > "$work/host.txt" 2>&1
timeout 200 tools/gpu/verify_cuda.sh "$bin" "$work/verify" > "$work/verify.log" 2>&1
timeout 240 tools/gpu/bench_cuda.sh "$bin" "$work/bench" > "$work/bench.log" 2>&1
if [ -z "${SKIP_FIXTURE_CHECK:-}" ]; then
  timeout 150 python3 tools/fixtures/generate.py --out /tmp/fx > "$work/regenerate.log" 2>&1
  python3 tools/fixtures/compare.py fixtures /tmp/fx > "$work/fixture_compare.txt" 2>&1
fi
tar -czf "$out/results.tar.gz" -C "$work" .
tail -n 5 "$work"/*.log
