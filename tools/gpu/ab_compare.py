"""Compares the two sides of tools/gpu/ab_cuda.sh: every verified output's errors (max abs, max rel,
nmse, mismatches, pass) must be the same number for both binaries, and each benchmark row's median
of the alternated runs is printed side by side with its spread.

Usage: python3 tools/gpu/ab_compare.py OUT_DIR   (exits 1 where an error differs)
"""

import json
import statistics
import sys
from pathlib import Path

out = Path(sys.argv[1])


def lines(name):
    path = out / name
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def errors(row):
    """(output name, the error fields) of a verify row, or its failure."""
    if "outputs" not in row:
        return {"(run)": row.get("error", "no outputs")}
    return {
        o["name"]: (o["max_abs_err"], o["max_rel_err"], o["nmse"], o["mismatched"], o["passed"], o["problem"])
        for o in row["outputs"]
    }


a = {(r["fixture"], r["precision"]): r for r in lines("verify-a.jsonl")}
b = {(r["fixture"], r["precision"]): r for r in lines("verify-b.jsonl")}
same = differ = 0
for key in sorted(set(a) | set(b)):
    ea, eb = errors(a.get(key, {})), errors(b.get(key, {}))
    if ea == eb:
        same += 1
    else:
        differ += 1
        print(f"DIFFERENT {key[0]} {key[1]}:\n  a {ea}\n  b {eb}")
passed = sum(1 for r in b.values() if r.get("passed"))
print(f"verification: {same} fixture-precision runs with identical errors, {differ} different; "
      f"{passed} of {len(b)} passed on B")

runs = {}
for r in lines("bench-ab.jsonl"):
    key = (r["ck"], r["p"], r["batch"], r["seq"], r["decode"])
    x = r.get("result") or {}
    dec = x.get("decode") or {}
    value = dec.get("ms_per_token_mean") if r["decode"] else x.get("mean_ms")
    runs.setdefault(key, {}).setdefault(r["side"], []).append(value)
print("benchmark (median of the rounds; ms a pass, or ms a decoded token; min-max in brackets):")
for key, sides in runs.items():
    cells = []
    for side in ("a", "b"):
        values = [v for v in sides.get(side, []) if v is not None]
        cells.append(f"{side} {statistics.median(values):8.3f} [{min(values):.3f}-{max(values):.3f}]" if values else f"{side} failed")
    ck, p, batch, seq, decode = key
    what = f"decode {decode} tokens" if decode else "forward"
    print(f"  {ck:13} {p:4} b{batch:<3} s{seq:<4} {what:16} " + "   ".join(cells))
sys.exit(1 if differ else 0)
