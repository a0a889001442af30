#!/usr/bin/env python3
"""Turns the output of tools/gpu/bench_cuda.sh (bench.jsonl, copy_bandwidth.json) into the Markdown
tables of docs/benchmarks.md: hwcov and transformers eager side by side, with the ratio; then, for the
decoders, token-by-token decoding with the bandwidth bound.

Usage: python3 tools/bench/report.py RESULT_DIR DATE > tables.md
"""

import json
import sys
from pathlib import Path

# Parameters read per decoded token, from the configs in make_checkpoints.py (counted on the meta
# device): every decoder weight and the LM head once; not the encoder, not Whisper's cross-attention
# key and value projections (computed once per prompt), not an untied input embedding (one row).
PARAMS_READ_PER_TOKEN = {"whisper-tiny": 27_013_248, "qwen2-0.5b": 494_032_768, "qwen2-7b": 7_070_619_136}
BYTES = {"f32": 4, "bf16": 2, "f16": 2}


def stats(x):
    if "mean_ms" not in x:
        return ["error"] + [""] * 4
    return [f"{x[k]:.3f}" for k in ("mean_ms", "p50_ms", "p90_ms", "p99_ms", "stdev_ms")]


def mib(v):
    return f"{v / 2**20:.0f}" if v else ""


def main():
    d, date = Path(sys.argv[1]), sys.argv[2]
    rows = [json.loads(l) for l in (d / "bench.jsonl").read_text().splitlines() if l.strip()]
    bw = json.loads((d / "copy_bandwidth.json").read_text())
    by = {}
    for r in rows:
        seq = r["seq"] or None
        by.setdefault((r["checkpoint"], r["precision"], r["batch"], seq), {})[r["side"]] = r
    gbps = bw["read_plus_write_GBps"]
    print(f"Card: {bw['device']}, measured {date}. Device-to-device copy: {gbps:.0f} GB/s (read + write); "
          f"pageable host-to-device {bw.get('host_to_device_pageable_GBps', 0):.1f} GB/s, device-to-host "
          f"{bw.get('device_to_host_pageable_GBps', 0):.1f} GB/s"
          + (f"; page-locked host-to-device {bw['host_to_device_pinned_GBps']:.1f} GB/s, device-to-host "
             f"{bw['device_to_host_pinned_GBps']:.1f} GB/s" if "device_to_host_pinned_GBps" in bw else "")
          + ".\n")
    print("| model | dtype | batch | seq | pass | hwcov mean ms | p50 | p90 | p99 | stdev | transformers eager mean ms | p50 | p90 | p99 | stdev "
          "| speedup (mean) | speedup (p50) | hwcov samples/s | transformers samples/s | hwcov load s | transformers load s "
          "| hwcov peak MiB | transformers peak MiB |")
    print("|" + "---|" * 23)
    decoders = []
    for (ck, p, b, s), sides in by.items():
        h = (sides.get("hwcov") or {}).get("result") or {}
        t = (sides.get("pytorch") or {}).get("result") or {}
        both = "mean_ms" in h and "mean_ms" in t
        ratio = f"{t['mean_ms'] / h['mean_ms']:.2f}x" if both else "n/a"
        ratio50 = f"{t['p50_ms'] / h['p50_ms']:.2f}x" if both else "n/a"
        rate = lambda x: f"{x['throughput_per_s']:.1f}" if "throughput_per_s" in x else ""
        print("| " + " | ".join([ck, p, str(b), str(s or ""), h.get("pass", "forward"), *stats(h), *stats(t), ratio, ratio50,
                                 rate(h), rate(t), f"{h.get('load_seconds', 0):.2f}", f"{t.get('load_seconds', 0):.2f}",
                                 mib(h.get("peak_memory_bytes")), mib(t.get("peak_memory_bytes"))]) + " |")
        if h.get("decode") and t.get("decode"):
            decoders.append((ck, p, b, h["decode"], t["decode"]))
    if decoders:
        print("\n| model | dtype | batch | tokens | hwcov ms/token mean | p50 | transformers ms/token mean | p50 "
              "| speedup (mean) | speedup (p50) | hwcov tokens/s | bandwidth bound tokens/s |")
        print("|" + "---|" * 12)
        for ck, p, b, hd, td in decoders:
            weights = PARAMS_READ_PER_TOKEN.get(ck, 0) * BYTES[p]
            bound = f"{gbps * 1e9 / weights:.0f}" if weights else ""
            print("| " + " | ".join([ck, p, str(b), str(hd["new_tokens"]),
                                     f"{hd['ms_per_token_mean']:.2f}", f"{hd['ms_per_token_p50']:.2f}",
                                     f"{td['ms_per_token_mean']:.2f}", f"{td['ms_per_token_p50']:.2f}",
                                     f"{td['ms_per_token_mean'] / hd['ms_per_token_mean']:.2f}x",
                                     f"{td['ms_per_token_p50'] / hd['ms_per_token_p50']:.2f}x",
                                     f"{hd['tokens_per_s']:.0f}", bound]) + " |")
    for r in (r for r in rows if "error" in r):
        print(f"\n- {r['side']} {r['checkpoint']} {r['precision']} batch {r['batch']}: {r['error'][:300]}")


if __name__ == "__main__":
    main()
