#!/usr/bin/env bash
# Where the GPU time of one forward pass goes: every kernel of `hwcov bench` (one iteration, no
# warm-up) timed by Nsight Compute, summed by kernel name; and the same pass of transformers under
# torch.profiler, for comparison.
# With DECODE tokens, the pass is followed by that many decoding steps (generative models).
# Usage: tools/gpu/profile_cuda.sh HWCOV_BINARY CHECKPOINT_DIR PRECISION BATCH SEQ OUT_DIR [DECODE]
set -u
bin=$1; ckpt=$2; p=$3; b=$4; s=$5; out=$6; decode=${7:-0}
mkdir -p "$out"
source "$(dirname "$0")/cuda_libs.sh"
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
name=$(basename "$ckpt")-$p-b$b
"$ncu" --csv --print-units base --metrics gpu__time_duration.sum \
  "$bin" bench --platform cuda --model-dir "$ckpt" --precision "$p" --batch "$b" --seq "$s" --warmup 1 --iters 1 --decode "$decode" \
  > "$out/ncu-$name.csv" 2> "$out/ncu-$name.err"
python3 - "$out/ncu-$name.csv" > "$out/kernels-hwcov-$name.txt" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith('"'))]
head, rows = rows[0], rows[1:]
k, v = head.index("Kernel Name"), head.index("Metric Value")
tot = collections.Counter(); cnt = collections.Counter()
for r in rows:
    name = r[k].split("(")[0][:90]
    tot[name] += float(r[v].replace(',', '')) / 1e3; cnt[name] += 1
all_us = sum(tot.values())
print(f"{len(rows)} kernels, {all_us:.0f} us of GPU time (loading, the warm-up and timed passes, and any decoding steps)")
for name, us in tot.most_common(25):
    print(f"{us:10.0f} us {100 * us / all_us:5.1f}% {cnt[name]:5d}x  {name}")
PY
python3 - "$ckpt" "$p" "$b" "$s" > "$out/kernels-pytorch-$name.txt" 2>&1 <<'PY'
import sys, torch, transformers
from torch.profiler import profile, ProfilerActivity
ckpt, p, b, s = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
dt = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[p]
cfg = transformers.AutoConfig.from_pretrained(ckpt)
m = getattr(transformers, cfg.architectures[0]).from_pretrained(ckpt, dtype=dt, attn_implementation="eager").cuda().eval()
if cfg.model_type == "bert":
    x = {"input_ids": torch.randint(0, cfg.vocab_size, (b, s)).cuda()}
else:
    x = {"pixel_values": torch.randn(b, 3, cfg.image_size, cfg.image_size).cuda().to(dt)}
with torch.inference_mode():
    m(**x); torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        m(**x); torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=20))
PY
tail -n 30 "$out/kernels-hwcov-$name.txt"
