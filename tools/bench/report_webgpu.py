#!/usr/bin/env python3
"""Turns bench-webgpu.jsonl (tools/gpu/bench_webgpu.sh) into the WebGPU table of docs/benchmarks.md:
for each model, batch and pass, hwcov's WebGPU platform, hwcov's CUDA platform and transformers eager
side by side, WebGPU's throughput as a share of CUDA's, and WebGPU's dispatches per pass or token.

Usage: python3 tools/bench/report_webgpu.py BENCH_WEBGPU_JSONL > table.md
"""

import json
import sys

SIDES = ("hwcov-webgpu", "hwcov-cuda", "pytorch")


def main():
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    by = {}
    for r in rows:
        by.setdefault((r["checkpoint"], r["batch"], r["seq"]), {})[r["side"]] = r.get("result")
    print("| model | batch | seq | pass | hwcov-webgpu ms | hwcov-cuda ms | transformers eager ms "
          "| webgpu throughput / cuda's | webgpu dispatches |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (ck, batch, seq), sides in by.items():
        first = next(s for s in sides.values() if s)
        passes = [(first.get("pass", "forward"), lambda x: x.get("mean_ms"), "dispatches_per_pass")]
        if any((s or {}).get("decode") for s in sides.values()):
            passes.append(("decode, per token", lambda x: (x.get("decode") or {}).get("ms_per_token_mean"),
                           "dispatches_per_token"))
        for name, get, disp in passes:
            ms = {side: (get(sides[side]) if sides.get(side) else None) for side in SIDES}
            cells = [f"{ms[s]:.2f}" if ms[s] else "not measured" for s in SIDES]
            share = f"{100 * ms['hwcov-cuda'] / ms['hwcov-webgpu']:.0f}%" if ms["hwcov-webgpu"] and ms["hwcov-cuda"] else ""
            w = sides.get("hwcov-webgpu") or {}
            d = w.get(disp) if disp == "dispatches_per_pass" else (w.get("decode") or {}).get(disp)
            print(f"| {ck} | {batch} | {seq or ''} | {name} | {' | '.join(cells)} | {share} | {int(d) if d else ''} |")


if __name__ == "__main__":
    main()
