#!/usr/bin/env python3
"""Turns tools/bench/cpu_bench.sh's cpu-bench.jsonl into the Markdown table of docs/benchmarks.md's
CPU section: per row and side, the median over the rounds of each run's mean and p90, and the ratio
of hwcov's cpu platform to each peer (above 1: hwcov is slower).

Usage: python3 tools/bench/report_cpu.py cpu-bench.jsonl > table.md
"""

import json
import statistics
import sys

SIDES = ["hwcov-cpu", "hwcov-cpu-baseline", "onnxruntime", "hwcov-openvino"]
NAMES = {
    "hwcov-cpu": "hwcov cpu",
    "hwcov-cpu-baseline": "hwcov cpu, plain candle ops",
    "onnxruntime": "ONNX Runtime",
    "hwcov-openvino": "hwcov openvino",
}


def main():
    runs = {}
    order = []
    for line in open(sys.argv[1]):
        r = json.loads(line)
        key = (r["checkpoint"], r["batch"], r["seq"])
        if key not in runs:
            order.append(key)
        x = r.get("result") or {}
        if "mean_ms" in x:
            runs.setdefault(key, {}).setdefault(r["side"], []).append((x["mean_ms"], x["p90_ms"]))
    sides = [s for s in SIDES if any(s in runs[k] for k in order)]
    rounds = max(len(v) for k in order for v in runs[k].values())
    head = ["model", "batch", "seq"]
    for s in sides:
        head += [f"{NAMES[s]} ms", "p90"]
    peers = [s for s in sides if s != "hwcov-cpu"]
    head += [f"hwcov cpu / {NAMES[s]}" for s in peers]
    print(f"Medians of {rounds} interleaved runs (each run's mean and p90 of its timed passes).\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for key in order:
        ck, batch, seq = key
        cells = [ck, str(batch), str(seq) if seq else ""]
        med = {}
        for s in sides:
            v = runs[key].get(s)
            if not v:
                cells += ["error", ""]
                continue
            med[s] = statistics.median(m for m, _ in v)
            cells += [f"{med[s]:.1f}", f"{statistics.median(p for _, p in v):.1f}"]
        for s in peers:
            cells.append(f"{med['hwcov-cpu'] / med[s]:.2f}x" if "hwcov-cpu" in med and s in med else "")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
