#!/usr/bin/env bash
# One call on a GPU host for the WebGPU platform: the Vulkan loader unpacked (Debian's packages,
# carried in .gl/), every fixture verified on NVIDIA's Vulkan driver, and the benchmark against hwcov's
# CUDA platform and transformers eager. Prints a summary last.
# Usage: tools/gpu/webgpu_session.sh OUT_DIR HWCOV_BINARY
set -u
out=${1:?out}; bin=${2:?binary}
export PYTHONUNBUFFERED=1
for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$out/gpu.txt" 2>&1
stamp() { echo "$(date -u +%H:%M:%S) $*" >> "$out/stages.txt"; }
stamp start
[ -n "${SKIP_VERIFY:-}" ] || timeout "${VERIFY_TIMEOUT:-120}" tools/gpu/verify_webgpu.sh "$bin" "$out" > "$out/verify-webgpu.log" 2>&1
stamp verified
[ -n "${SKIP_BENCH:-}" ] || timeout "${BENCH_TIMEOUT:-360}" tools/gpu/bench_webgpu.sh "$bin" "$out" > "$out/bench-webgpu.log" 2>&1
stamp benchmarked
# f16 rows (F16_ROWS, as BENCH_ROWS names them) into bench-webgpu-f16.jsonl.
[ -z "${F16_ROWS:-}" ] || PRECISION=f16 SUFFIX=-f16 BENCH_ROWS=$F16_ROWS timeout "${F16_TIMEOUT:-240}" \
  tools/gpu/bench_webgpu.sh "$bin" "$out" > "$out/bench-webgpu-f16.log" 2>&1
stamp f16-benchmarked
[ -n "${SKIP_PROFILE:-}" ] || timeout "${PROFILE_TIMEOUT:-70}" tools/gpu/profile_webgpu.sh "$bin" "$out" > "$out/profile-webgpu.log" 2>&1
stamp profiled
cat "$out/stages.txt" "$out/gpu.txt"; head -12 "$out/platforms.txt" 2>/dev/null
grep -E "webgpu" "$out/verify-webgpu.log" | tail -16
tail -5 "$out/bench-webgpu.log"
python3 - "$out"/bench-webgpu*.jsonl <<'PY'
import json, sys
for line in (l for f in sys.argv[1:] for l in open(f)):
    r = json.loads(line)
    x = r.get("result") or {}
    d = x.get("decode") or {}
    print(f"{r['side']:13} {r['checkpoint']:13} {r['precision']} b{r['batch']:<3} s{r['seq']:<4} "
          + (f"mean {x['mean_ms']:9.3f} ms  p50 {x['p50_ms']:9.3f}" if 'mean_ms' in x else "ERROR " + r.get('error', '')[-300:].replace(chr(10), ' '))
          + (f"  decode {d['ms_per_token_mean']:8.3f} ms/tok" if d else "")
          + (f"  disp {x.get('dispatches_per_pass')}/{d.get('dispatches_per_token')}" if x.get('dispatches_per_pass') else ""))
PY
