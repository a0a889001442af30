#!/usr/bin/env bash
# Benchmarks the WebGPU platform side by side with hwcov's CUDA platform and transformers eager
# (PyTorch) on the same GPU, in one run, on the same random-weight checkpoints at real sizes
# (tools/bench/make_checkpoints.py; their ONNX graphs by tools/bench/export_onnx.py, the KV-cache
# layouts for the decoders). PRECISION=f32 (default) or f16 for every side (at f16 the WebGPU
# platform keeps weights in f16 and computes in f32; hwcov-cuda and transformers run in f16), and
# BENCH_ROWS picks rows (default all: bert1,bert32,whisper,qwen2,vit1,vit32).
# Writes OUT_DIR/bench-webgpu.jsonl (one JSON line per measurement, `side` = hwcov-webgpu, hwcov-cuda
# or pytorch) and OUT_DIR/bench-webgpu-stderr.log (what each run printed: for the WebGPU side,
# HWCOV_WEBGPU_PROFILE=1's line per run, its time on the host and waiting for the device).
# Usage: tools/gpu/bench_webgpu.sh HWCOV_BINARY OUT_DIR [CHECKPOINT_DIR]
set -uo pipefail
bin=${1:?binary}; out=${2:?out dir}; ckpt=${3:-/tmp/hwcov-bench-checkpoints}
mkdir -p "$out"
source "$(dirname "$0")/vulkan.sh"
source "$(dirname "$0")/cuda_libs.sh"
here=$(cd "$(dirname "$0")/.." && pwd)
only=${BENCH_CHECKPOINTS:-bert-base,vit-base,whisper-tiny,qwen2-0.5b}
python3 "$here/bench/make_checkpoints.py" "$ckpt" --only "$only"
for c in ${only//,/ }; do
  [ -f "$ckpt/$c/model.onnx" ] || [ -f "$ckpt/$c/onnx/encoder_model.onnx" ] || python3 "$here/bench/export_onnx.py" "$ckpt/$c"
done

p=${PRECISION:-f32}
rows=",${BENCH_ROWS:-bert1,bert32,whisper,qwen2,vit1,vit32},"
jsonl="$out/bench-webgpu${SUFFIX:-}.jsonl"
: > "$jsonl"
err="$out/bench-webgpu${SUFFIX:-}-stderr.log"
: > "$err"
row() {  # checkpoint batch seq [decode tokens]: one line per side
  local dir="$ckpt/$1" b=$2 s=$3 d=${4:-0} r e
  for side in hwcov-webgpu hwcov-cuda pytorch; do
    echo "== $side $1 b$b s$s d$d" >> "$err"
    e=$(mktemp)
    case $side in
      hwcov-webgpu) r=$(HWCOV_WEBGPU_PROFILE=1 timeout 300 "$bin" bench --platform webgpu --model-dir "$dir" --precision "$p" --batch "$b" --seq "$s" --decode "$d" --json 2>"$e") ;;
      hwcov-cuda) r=$(timeout 300 "$bin" bench --platform cuda --model-dir "$dir" --precision "$p" --batch "$b" --seq "$s" --decode "$d" --json 2>"$e") ;;
      pytorch) r=$(timeout 300 python3 "$here/bench/pytorch_bench.py" --model-dir "$dir" --precision "$p" --batch "$b" --seq "$s" --decode "$d" 2>"$e" | tail -1) ;;
    esac
    cat "$e" >> "$err"
    SIDE=$side CK=$1 B=$b S=$s P=$p R="$r" E="$(tail -c 600 "$e")" python3 -c "import json, os
row = {'side': os.environ['SIDE'], 'checkpoint': os.environ['CK'], 'precision': os.environ['P'], 'batch': int(os.environ['B']), 'seq': int(os.environ['S'])}
try: row['result'] = json.loads(os.environ['R'])
except Exception: row['error'] = (os.environ['R'] + os.environ['E'])[-600:]
print(json.dumps(row))" >> "$jsonl"
    rm -f "$e"
  done
  echo "$1 b$b s$s done"
}
# The rows furthest from the target first, in case the stage runs out of its time.
want() { [[ $rows == *",$1,"* ]]; }
want whisper && row whisper-tiny 1 0 64
want qwen2 && row qwen2-0.5b 1 512 64
want vit32 && row vit-base 32 0
want bert32 && row bert-base 32 128
want vit1 && row vit-base 1 0
want bert1 && row bert-base 1 128
