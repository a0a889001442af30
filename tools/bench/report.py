#!/usr/bin/env python3
"""Turns the output of tools/gpu/bench_cuda.sh (bench.jsonl, copy_bandwidth.json, gpu.txt) into the
Markdown table of docs/benchmarks.md: hwcov and transformers eager side by side, with the ratio.

Usage: python3 tools/bench/report.py RESULT_DIR DATE > table.md
"""

import json
import sys
from pathlib import Path


def main():
    d, date = Path(sys.argv[1]), sys.argv[2]
    rows = [json.loads(l) for l in (d / "bench.jsonl").read_text().splitlines() if l.strip()]
    bw = json.loads((d / "copy_bandwidth.json").read_text())
    by = {}
    for r in rows:
        seq = r["seq"] if r["checkpoint"].startswith("bert") else None
        by.setdefault((r["checkpoint"], r["precision"], r["batch"], seq), {})[r["side"]] = r
    print(f"Card: {bw['device']}, measured {date}. Device-to-device copy: {bw['read_plus_write_GBps']:.0f} GB/s (read + write).\n")
    print("| model | dtype | batch | seq | hwcov mean ms | p50 | p90 | p99 | stdev | transformers eager mean ms | p50 | p90 | p99 | stdev | speedup (transformers / hwcov) | hwcov load s | transformers load s | transformers peak GPU MiB | hwcov GPU MiB in use after run |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (ck, p, b, s), sides in by.items():
        h = (sides.get("hwcov") or {}).get("result") or {}
        t = (sides.get("pytorch") or {}).get("result") or {}
        def cells(x):
            if "mean_ms" not in x:
                return ["error"] + [""] * 4
            return [f"{x['mean_ms']:.3f}", f"{x['p50_ms']:.3f}", f"{x['p90_ms']:.3f}", f"{x['p99_ms']:.3f}", f"{x['stdev_ms']:.3f}"]
        ratio = f"{t['mean_ms'] / h['mean_ms']:.2f}x" if "mean_ms" in h and "mean_ms" in t else "n/a"
        mib = lambda v: f"{v / 2**20:.0f}" if v else ""
        print("| " + " | ".join([ck, str(p), str(b), str(s or ""), *cells(h), *cells(t), ratio,
                                 f"{h.get('load_seconds', 0):.2f}", f"{t.get('load_seconds', 0):.2f}",
                                 mib(t.get("peak_memory_bytes")), mib(h.get("memory_after_run_bytes"))]) + " |")
    for r in (r for r in rows if "error" in r):
        print(f"\n- {r['side']} {r['checkpoint']} {r['precision']} batch {r['batch']}: {r['error'][:300]}")


if __name__ == "__main__":
    main()
