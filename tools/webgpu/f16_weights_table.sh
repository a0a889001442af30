#!/usr/bin/env bash
# How far WebGPU's f16 weights (`--precision f16`: weights stored in f16, everything else f32) land
# from transformers' float32 outputs, beside how far transformers' own f16 run lands from them
# (measured as hwcov's f32 WebGPU run against the fixtures' io.f16.safetensors: that run is within
# 1e-4 of float32). One JSON line per fixture with an ONNX export and an f16 reference.
# Usage: tools/webgpu/f16_weights_table.sh HWCOV_BINARY > OUT.jsonl
set -uo pipefail
bin=${1:?binary}
cd "$(dirname "$0")/../.."
for d in fixtures/*/; do
  d=${d%/}
  [ -f "$d/io.safetensors" ] && [ -f "$d/io.f16.safetensors" ] || continue
  [ -f "$d/model.onnx" ] || [ -f "$d/onnx/encoder_model.onnx" ] || [ -f "$d/onnx/model.onnx" ] || continue
  ours=$("$bin" verify --platform webgpu --precision f16 --model-dir "$d" --io "$d/io.safetensors" --json 2>/dev/null)
  theirs=$("$bin" verify --platform webgpu --precision f32 --atol 5e-3 --rtol 5e-3 --model-dir "$d" \
    --io "$d/io.f16.safetensors" --json 2>/dev/null)
  OURS=$ours THEIRS=$theirs FIX=${d#fixtures/} python3 -c "
import json, os
def errs(s):
    r = json.loads(s)
    return r, {o['name']: o['max_abs_err'] for o in r['outputs'] if not o['exact']}
ours, o = errs(os.environ['OURS'])
_, t = errs(os.environ['THEIRS'])
print(json.dumps({'fixture': os.environ['FIX'], 'device': ours['device'],
    'f16_weights_vs_f32_within_5e-3': ours['passed'], 'f16_weights_vs_f32': o,
    'transformers_f16_vs_f32': t}))"
done
