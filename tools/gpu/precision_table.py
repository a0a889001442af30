#!/usr/bin/env python3
"""Turns the reduced-precision reports of tools/gpu/verify_cuda.sh into the Markdown table of
docs/platforms/cuda.md.

Per fixture and precision, side by side: hwcov against transformers run at the same precision (the
check, from precision-<p>.jsonl), hwcov against the float32 reference (precision-<p>-vs-f32.jsonl),
and how far transformers itself lands from the float32 reference at that precision (the fixture's
meta.json, written by tools/fixtures/reduced_precision.py).

Usage: python3 tools/gpu/precision_table.py VERIFY_OUT_DIR [FIXTURES_DIR] > table.md
"""

import json
import sys
from pathlib import Path


def reports(path):
    """`hwcov verify --json` reports written one after another."""
    text, dec, i, out = path.read_text(), json.JSONDecoder(), 0, []
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return out
        obj, i = dec.raw_decode(text, i)
        out.append(obj)


def fixture_of(report):
    return report["model_dir"].rstrip("/").split("/")[-1]


def errors(outputs, outside=True):
    return ", ".join(
        f"{o['name']} {o['max_abs_err']:.1e}" + (f" ({o['mismatched']} outside)" if outside and o["mismatched"] else "")
        for o in sorted((o for o in outputs if o["name"] != "generated"), key=lambda o: o["name"]))


def main():
    out_dir = Path(sys.argv[1])
    fixtures = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parents[2] / "fixtures"
    print("| fixture | precision | within tolerance of transformers at that precision | hwcov vs transformers at that "
          "precision, max abs error (elements outside) | hwcov vs float32 reference | transformers at that precision "
          "vs float32 reference | generated |")
    print("|---|---|---|---|---|---|---|")
    for p in ("f16", "bf16"):
        same = out_dir / f"precision-{p}.jsonl"
        if not same.exists():
            continue
        vs_f32 = {fixture_of(r): r for r in reports(out_dir / f"precision-{p}-vs-f32.jsonl")}
        for r in reports(same):
            name = fixture_of(r)
            meta = json.loads((fixtures / name / "meta.json").read_text()).get("reduced_precision", {}).get(p)
            if meta is None or not r["io"].endswith(f"io.{p}.safetensors"):
                sys.exit(f"{name}: no transformers reference at {p} (tools/fixtures/reduced_precision.py writes it)")
            drift = ", ".join(f"{k} {v:.1e}" for k, v in sorted(meta["max_abs_diff_from_float32"].items()))
            f32 = errors(vs_f32[name]["outputs"], outside=False) if name in vs_f32 else "-"
            gen = next((o for o in r["outputs"] if o["name"] == "generated"), None)
            generated = "-" if gen is None else (gen["problem"] or "identical")
            within = "within" if r["passed"] else "outside"
            print(f"| {name} | {p} | {within} | {errors(r['outputs'])} | {f32} | {drift} | {generated} |")


if __name__ == "__main__":
    main()
