#!/usr/bin/env bash
# The CPU benchmark of issue-sized models on this machine, one run, three columns: hwcov's cpu
# platform (candle), hwcov's openvino platform, and ONNX Runtime from Python, on the same
# random-weight checkpoints at real sizes. Needs python3 with torch + transformers + onnxruntime
# (tools/fixtures/requirements.txt) to make the checkpoints and run ONNX Runtime, and a release
# build of hwcov (`cargo build --release -p hwcov`).
# Writes OUT_DIR/cpu-bench.jsonl. ROUNDS=N (default 1) runs every row N times, the sides interleaved
# within each round (a `round` field says which); BASELINE=BINARY adds a fourth column, side
# `hwcov-cpu-baseline`: another hwcov build on the cpu platform, for a before/after in one run.
# Usage: tools/bench/cpu_bench.sh HWCOV_BINARY OUT_DIR [CHECKPOINT_DIR] [PYTHON]
set -u
bin=${1:?binary}; out=${2:?out}; ckpt=${3:-/tmp/hwcov-bench-checkpoints}; py=${4:-python3}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
specs=${CPU_BENCH_ROWS:-"bert-base 1 128;bert-base 8 128;vit-base 1 0;vit-base 8 0;whisper-tiny 1 0"}
# The checkpoints the rows name (CPU_BENCH_ROWS="minilm-l6 4 128" for all-MiniLM-L6-v2's size).
checkpoints=$(tr ';' '\n' <<< "$specs" | awk '{print $1}' | sort -u)
"$py" "$here/make_checkpoints.py" "$ckpt" --only "$(paste -sd, <<< "$checkpoints")"
for c in $checkpoints; do
  [ -f "$ckpt/$c/model.onnx" ] || [ -f "$ckpt/$c/onnx/encoder_model.onnx" ] || "$py" "$here/export_onnx.py" "$ckpt/$c"
done
[ -n "${CPU_BENCH_APPEND:-}" ] || : > "$out/cpu-bench.jsonl"
emit() {  # side checkpoint batch seq json
  SIDE=$1 CK=$2 B=$3 S=$4 R="$5" ROUND=$round "$py" -c "import json, os
row = {'side': os.environ['SIDE'], 'checkpoint': os.environ['CK'], 'precision': 'f32', 'batch': int(os.environ['B']), 'seq': int(os.environ['S']), 'round': int(os.environ['ROUND'])}
try: row['result'] = json.loads(os.environ['R'])
except Exception: row['error'] = os.environ['R'][-600:]
print(json.dumps(row))" >> "$out/cpu-bench.jsonl"
}
IFS=';' read -ra rows <<< "$specs"
iters=${ITERS:-20}
for round in $(seq 1 "${ROUNDS:-1}"); do
  for spec in "${rows[@]}"; do
    set -- $spec
    for p in cpu openvino; do
      # --precision pins OpenVINO to f32: on a CPU with AMX its own default is bf16 (OPENVINO_PRECISION=
      # leaves it that default).
      emit "hwcov-$p" "$1" "$2" "$3" "$("$bin" bench --platform $p --model-dir "$ckpt/$1" --batch "$2" --seq "$3" \
        --iters "$iters" ${OPENVINO_PRECISION---precision f32} --json 2>&1)"
    done
    if [ -n "${BASELINE:-}" ]; then
      emit hwcov-cpu-baseline "$1" "$2" "$3" "$("$BASELINE" bench --platform cpu --model-dir "$ckpt/$1" --batch "$2" --seq "$3" --iters "$iters" --json 2>&1)"
    fi
    emit onnxruntime "$1" "$2" "$3" "$("$py" "$here/onnxruntime_bench.py" --model-dir "$ckpt/$1" --batch "$2" --seq "$3" --iters "$iters" 2>&1 | tail -1)"
    echo "round $round: $spec done"
  done
done
