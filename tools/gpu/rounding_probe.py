#!/usr/bin/env python3
"""Finds where hwcov and transformers part at half precision, on cut-down copies of decoder fixtures.

For each fixture (qwen2, llama-gqa, llama) it writes copies with 0, 1 or 2 decoder layers, some with
parts of the layer switched off by zeroing their weights (o_proj: no attention; down_proj: no MLP;
q_proj and k_proj: uniform attention; v_proj: attention adds nothing), runs transformers eager on each
at bf16 as the reference (the recipe of tools/fixtures/reduced_precision.py), and `hwcov verify --precision bf16` against it. A row at 0 is bit-identical
to transformers; the first part whose row is not 0 is where the two part.

Usage: python3 tools/gpu/rounding_probe.py HWCOV_BINARY [cuda|cpu]   (writes into /tmp/rounding-probe)
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import safetensors.torch as st
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from reduced_precision import run  # noqa: E402  (transformers at a precision, as the fixtures' references)

WORK = Path("/tmp/rounding-probe")


def variant(hwcov, device, fixture, name, layers, zero):
    src = Path("fixtures") / fixture
    out = WORK / f"{fixture}-{name}"
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(src, out)
    cfg = json.loads((out / "config.json").read_text())
    cfg["num_hidden_layers"] = layers
    if "layer_types" in cfg:
        cfg["layer_types"] = cfg["layer_types"][:layers]
    (out / "config.json").write_text(json.dumps(cfg))
    w = st.load_file(str(out / "model.safetensors"))
    w = {k: v for k, v in w.items() if not (m := re.search(r"layers\.(\d+)\.", k)) or int(m.group(1)) < layers}
    for pat in zero:
        for k in w:
            if pat in k:
                w[k] = torch.zeros_like(w[k])
    st.save_file(w, str(out / "model.safetensors"), metadata={"format": "pt"})
    io = st.load_file(str(src / "io.safetensors"))
    ref = {k: v for k, v in io.items() if k.startswith("in_") or k == "out_logits"}
    ref.update(run(out, ref, torch.bfloat16, device))
    st.save_file(ref, str(out / "io.safetensors"))
    r = subprocess.run([hwcov, "verify", "--platform", device, "--precision", "bf16", "--json", "--model-dir", str(out),
                        "--io", str(out / "io.safetensors")], capture_output=True, text=True)
    try:
        o = json.loads(r.stdout)["outputs"][0]
        print(f"{fixture:10s} {name:28s} max_abs {o['max_abs_err']:.3e} outside {o['mismatched']}", flush=True)
    except (json.JSONDecodeError, KeyError, IndexError):
        print(f"{fixture:10s} {name:28s} hwcov failed: {r.stderr[-300:]}", flush=True)


def main():
    hwcov, device = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "cuda"
    for fixture in ["qwen2", "llama-gqa", "llama"]:
        for name, layers, zero in [
            ("L0", 0, []),
            ("L1", 1, []),
            ("L1-noattn", 1, ["o_proj"]),
            ("L1-nomlp", 1, ["down_proj"]),
            ("L1-nomlp-no-qk-bias", 1, ["q_proj.bias", "k_proj.bias", "down_proj"]),
            ("L1-noattn-no-mlp-bias", 1, ["o_proj", "gate_proj.bias", "up_proj.bias", "down_proj.bias"]),
            ("L1-noattn-nomlp", 1, ["o_proj", "down_proj"]),
            ("L1-uniform-attn-nomlp", 1, ["q_proj", "k_proj", "down_proj"]),
            ("L1-attn-nomlp-vzero", 1, ["v_proj", "down_proj"]),
            ("L2", 2, []),
        ]:
            variant(hwcov, device, fixture, name, layers, zero)


if __name__ == "__main__":
    main()
