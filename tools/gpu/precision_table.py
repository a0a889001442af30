#!/usr/bin/env python3
"""Turns the reduced-precision reports of tools/gpu/verify_cuda.sh (precision-f16.jsonl,
precision-bf16.jsonl: `hwcov verify --json` reports, one after another) into the Markdown table of
docs/platforms/cuda.md.

Usage: python3 tools/gpu/precision_table.py REPORT... > table.md
"""

import json
import sys


def reports(path):
    text, dec, i, out = open(path).read(), json.JSONDecoder(), 0, []
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return out
        obj, i = dec.raw_decode(text, i)
        out.append(obj)


def main():
    print("| fixture | precision | within tolerance | max abs error per output (elements outside) | generated |")
    print("|---|---|---|---|---|")
    for path in sys.argv[1:]:
        for r in reports(path):
            fixture = r["model_dir"].rstrip("/").split("/")[-1]
            outs = sorted((o for o in r["outputs"] if o["name"] != "generated"), key=lambda o: o["name"])
            errors = ", ".join(
                f"{o['name']} {o['max_abs_err']:.1e}" + (f" ({o['mismatched']} outside)" if o["mismatched"] else "")
                for o in outs)
            gen = next((o for o in r["outputs"] if o["name"] == "generated"), None)
            generated = "-" if gen is None else (gen["problem"] or "identical")
            print(f"| {fixture} | {r['precision']} | {'within' if r['passed'] else 'outside'} | {errors} | {generated} |")


if __name__ == "__main__":
    main()
