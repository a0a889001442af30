#!/usr/bin/env bash
# A/B of two hwcov binaries on the CUDA platform of a GPU host, in one run: every fixture verified by
# both at f32 (against io.safetensors), f16 and bf16 (against transformers at that precision), with
# the errors compared to the last digit; then benchmark rows with the two binaries alternated, the
# order swapped each round (A B, B A, ...), so that both meet the same GPU state and neither always
# runs first. For a refactor that must not move the numbers. AB_ROUNDS rounds (default 3);
# AB_SKIP_VERIFY=1 reruns the benchmark only; AB_PLATFORM=webgpu benchmarks the WebGPU platform of the
# two binaries instead (NVIDIA's Vulkan driver; the checkpoints' ONNX exports are made first).
# Writes into OUT_DIR: cuda-run.json (B's coverage run of the cuda column, to merge into
# docs/coverage/runs/), verify-{a,b}.jsonl (`hwcov verify --json`, one line per fixture and precision,
# with `fixture` and `precision` added), bench-ab.jsonl (one line per run, `side` = a or b, `round`),
# and prints the comparison last (tools/gpu/ab_compare.py).
# Usage: tools/gpu/ab_cuda.sh BINARY_A BINARY_B OUT_DIR [CHECKPOINT_DIR]
set -uo pipefail
a=${1:?binary A}; b=${2:?binary B}; out=${3:?out dir}; ckpt=${4:-/tmp/hwcov-bench-checkpoints}
mkdir -p "$out"
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/gpu/cuda_libs.sh"
stamp() { echo "$(date -u +%H:%M:%S) $*" >> "$out/stages.txt"; }
stamp start
"$a" platforms > "$out/platforms-a.txt" 2>&1
"$b" platforms > "$out/platforms-b.txt" 2>&1
[ -n "${AB_SKIP_VERIFY:-}" ] || "$b" coverage --root . --platform cuda --out "$out/cuda-run.json" > "$out/coverage-b.log" 2>&1
stamp "coverage run of B"
for side in a b; do
  [ -z "${AB_SKIP_VERIFY:-}" ] || break
  bin=$a; [ $side = b ] && bin=$b
  : > "$out/verify-$side.jsonl"
  for d in fixtures/*/; do
    [ -f "$d/io.safetensors" ] || continue
    for p in f32 f16 bf16; do
      io="$d/io.safetensors"
      if [ $p != f32 ]; then io="$d/io.$p.safetensors"; [ -f "$io" ] || continue; fi
      r=$("$bin" verify --platform cuda --precision "$p" --json --model-dir "$d" --io "$io" 2>>"$out/verify-$side.err")
      FX=$(basename "$d") P=$p R="$r" python3 -c "import json, os
try: row = json.loads(os.environ['R'])
except Exception: row = {'error': os.environ['R'][-400:]}
row.update(fixture=os.environ['FX'], precision=os.environ['P'])
print(json.dumps(row))" >> "$out/verify-$side.jsonl"
    done
  done
  stamp "verified $side"
done
only=${BENCH_CHECKPOINTS:-bert-base,vit-base,whisper-tiny,qwen2-0.5b}
python3 "$here/bench/make_checkpoints.py" "$ckpt" --only "$only" > "$out/checkpoints.log" 2>&1
platform=${AB_PLATFORM:-cuda}
if [ "$platform" = webgpu ]; then
  source "$here/gpu/vulkan.sh"
  for c in ${only//,/ }; do
    [ -f "$ckpt/$c/model.onnx" ] || [ -f "$ckpt/$c/onnx/encoder_model.onnx" ] || python3 "$here/bench/export_onnx.py" "$ckpt/$c" >> "$out/checkpoints.log" 2>&1
  done
fi
stamp checkpoints
: > "$out/bench-ab.jsonl"
# checkpoint precision batch seq decode
rows=${AB_ROWS:-"bert-base:f32:1:128:0 bert-base:bf16:32:128:0 vit-base:f32:32:0:0 vit-base:bf16:1:0:0 whisper-tiny:bf16:1:0:64 qwen2-0.5b:bf16:1:512:64"}
for round in $(seq 1 "${AB_ROUNDS:-3}"); do
  order="a b"; [ $((round % 2)) = 0 ] && order="b a"
  for spec in $rows; do
    IFS=: read -r ck p bs s d <<< "$spec"
    for side in $order; do
      bin=$a; [ $side = b ] && bin=$b
      r=$(timeout 120 "$bin" bench --platform "$platform" --model-dir "$ckpt/$ck" --precision "$p" --batch "$bs" --seq "$s" --decode "$d" --json 2>>"$out/bench-ab.err")
      SIDE=$side ROUND=$round CK=$ck P=$p B=$bs S=$s D=$d R="$r" python3 -c "import json, os
row = {k.lower(): os.environ[k] for k in ('SIDE', 'CK', 'P')}
row.update(round=int(os.environ['ROUND']), batch=int(os.environ['B']), seq=int(os.environ['S']), decode=int(os.environ['D']))
try: row['result'] = json.loads(os.environ['R'])
except Exception: row['error'] = os.environ['R'][-400:]
print(json.dumps(row))" >> "$out/bench-ab.jsonl"
    done
  done
  stamp "bench round $round"
done
python3 "$here/gpu/ab_compare.py" "$out" | tee "$out/comparison.txt"
