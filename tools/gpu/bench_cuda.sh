#!/usr/bin/env bash
# Benchmarks hwcov's CUDA platform side by side with transformers eager (PyTorch) on the same GPU, in
# one run: the same random-weight checkpoints at real sizes, dtypes, shapes and iteration counts.
# Writes OUT_DIR/bench.jsonl (one JSON line per measurement, `side` = hwcov or pytorch) and
# OUT_DIR/copy_bandwidth.json (the card's measured device-to-device copy bandwidth).
# Usage: tools/gpu/bench_cuda.sh HWCOV_BINARY OUT_DIR [CHECKPOINT_DIR]
set -uo pipefail
bin=${1:?binary}; out=${2:?out dir}; ckpt=${3:-/tmp/hwcov-bench-checkpoints}
mkdir -p "$out"
source "$(dirname "$0")/cuda_libs.sh"
here=$(cd "$(dirname "$0")/.." && pwd)
python3 "$here/bench/make_checkpoints.py" "$ckpt" --only "${BENCH_CHECKPOINTS:-bert-base,vit-base,whisper-tiny,qwen2-0.5b,qwen2-7b}"

python3 - > "$out/copy_bandwidth.json" <<'PY'
import json, torch
x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda"); y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
s.record(); n = 20
for _ in range(n): y.copy_(x)
e.record(); torch.cuda.synchronize()
sec = s.elapsed_time(e) / 1e3 / n
# Host <-> device copies of 19 MB (ViT-base's pixel values at batch 32) from and to pageable memory,
# as transformers' inputs and outputs are, and from and to page-locked memory, as hwcov stages them.
import time
h = torch.randn(32, 3, 224, 224); d = h.cuda(); p = torch.empty_like(h).pin_memory(); torch.cuda.synchronize()
def rate(f):
    f(); torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(10): f()
    torch.cuda.synchronize(); return h.numel() * 4 * 10 / (time.perf_counter() - t) / 1e9
print(json.dumps({"device": torch.cuda.get_device_name(), "bytes": x.numel(), "read_plus_write_GBps": 2 * x.numel() / sec / 1e9,
                  "host_to_device_pageable_GBps": rate(lambda: h.cuda()), "device_to_host_pageable_GBps": rate(lambda: d.cpu()),
                  "host_to_device_pinned_GBps": rate(lambda: d.copy_(p, non_blocking=True)),
                  "device_to_host_pinned_GBps": rate(lambda: p.copy_(d, non_blocking=True))}))
PY

: > "$out/bench.jsonl"
row() {  # checkpoint precision batch seq [decode tokens]: one line per side, with the row's parameters
  local dir="$ckpt/$1" p=$2 b=$3 s=$4 d=${5:-0}
  local h t
  h=$("$bin" bench --platform cuda --model-dir "$dir" --precision "$p" --batch "$b" --seq "$s" --decode "$d" --json 2>&1)
  t=$(python3 "$here/bench/pytorch_bench.py" --model-dir "$dir" --precision "$p" --batch "$b" --seq "$s" --decode "$d" 2>&1 | tail -1)
  for side in hwcov pytorch; do
    if [ $side = hwcov ]; then r=$h; else r=$t; fi
    SIDE=$side CK=$1 P=$p B=$b S=$s R="$r" python3 -c "import json, os
row = {'side': os.environ['SIDE'], 'checkpoint': os.environ['CK'], 'precision': os.environ['P'], 'batch': int(os.environ['B']), 'seq': int(os.environ['S'])}
try: row['result'] = json.loads(os.environ['R'])
except Exception: row['error'] = os.environ['R'][-600:]
print(json.dumps(row))" >> "$out/bench.jsonl"
  done
  echo "$1 $p b$b s$s done"
}
for p in ${BENCH_PRECISIONS:-f32 bf16}; do
  [ -d "$ckpt/bert-base" ] || continue
  row bert-base $p 1 128
  row bert-base $p 32 128
  row vit-base $p 1 0
  row vit-base $p 32 0
done
if [ -d "$ckpt/whisper-tiny" ]; then
  row whisper-tiny f32 1 0 64
  row whisper-tiny bf16 1 0 64
fi
if [ -d "$ckpt/qwen2-0.5b" ]; then
  row qwen2-0.5b bf16 1 512 64
  row qwen2-0.5b f32 1 512 64
fi
if [ -d "$ckpt/qwen2-7b" ]; then
  row qwen2-7b bf16 1 512 64
fi
