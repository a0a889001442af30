#!/usr/bin/env python3
"""Finds where hwcov and transformers part at half precision, on cut-down copies of fixtures.

For each fixture it writes copies with fewer layers, some with parts of a layer switched off by
zeroing their weights (an output projection: no attention; the feed-forward's last projection: no
MLP; q_proj and k_proj: uniform attention; v_proj: attention adds nothing), runs transformers eager
on each at the precision as the reference (the recipe of tools/fixtures/reduced_precision.py), and
`hwcov verify --precision P` against it. A row at 0 is bit-identical to transformers; the first part
whose row is not 0 is where the two part.

Usage: python3 tools/gpu/rounding_probe.py HWCOV_BINARY [cuda|cpu] [bf16|f16] [FIXTURE...]
(writes into /tmp/rounding-probe)
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
DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16}

# Decoder-only LMs: the layer count in num_hidden_layers, weights under layers.N.
DECODER = [
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
]
# T5: encoder and decoder layer counts, weights under block.N.
T5 = [
    ("L0", 0, []),
    ("L1", 1, []),
    ("L1-noattn", 1, [".o.weight"]),
    ("L1-noff", 1, ["DenseReluDense.wo"]),
    ("L1-noattn-noff", 1, [".o.weight", "DenseReluDense.wo"]),
    ("L1-uniform-attn", 1, [".q.weight", ".k.weight", "relative_attention_bias"]),
]
# Whisper: encoder and decoder layer counts, weights under layers.N.
WHISPER = [
    ("L0", 0, []),
    ("L1", 1, []),
    ("L1-noattn", 1, ["self_attn.out_proj", "encoder_attn.out_proj"]),
    ("L1-noff", 1, ["fc2"]),
    ("L1-noattn-noff", 1, ["self_attn.out_proj", "encoder_attn.out_proj", "fc2"]),
]
# Wav2Vec2: encoder layers under encoder.layers.N; the feature encoder, its GroupNorm and the
# weight-normed positional convolution come before them.
WAV2VEC2 = [
    ("L0", 0, []),
    ("L0-nopos", 0, ["pos_conv_embed.conv.parametrizations.weight.original0"]),
    ("L0-nogroupnorm-scale", 0, ["conv_layers.0.layer_norm.weight"]),
    ("L1", 1, []),
    ("L1-noattn", 1, ["attention.out_proj"]),
    ("L1-noff", 1, ["feed_forward.output_dense"]),
    ("L1-noattn-noff", 1, ["attention.out_proj", "feed_forward.output_dense"]),
]
# DETR: encoder and decoder layer counts; the ResNet backbone and the input projection come first.
DETR = [
    ("L0", 0, []),
    ("L1", 1, []),
    ("L1-nocross", 1, ["encoder_attn.out_proj"]),
    ("L1-noencattn", 1, ["encoder.layers.0.self_attn.out_proj"]),
    ("L1-noencff", 1, ["encoder.layers.0.fc2"]),
    ("L1-noencattn-vzero", 1, ["encoder.layers.0.self_attn.v_proj"]),
    ("L1-encattn-uniform", 1, ["encoder.layers.0.self_attn.q_proj", "encoder.layers.0.self_attn.k_proj"]),
    ("L1-noenc", 1, ["encoder.layers.0.self_attn.out_proj", "encoder.layers.0.fc2"]),
    ("L1-noenc-nodecself", 1, ["encoder.layers.0.self_attn.out_proj", "encoder.layers.0.fc2",
                               "decoder.layers.0.self_attn.out_proj"]),
    ("L1-noenc-nodecself-nodecff", 1, ["encoder.layers.0.self_attn.out_proj", "encoder.layers.0.fc2",
                                       "decoder.layers.0.self_attn.out_proj", "decoder.layers.0.fc2"]),
    ("L1-noenc-nocross", 1, ["encoder.layers.0.self_attn.out_proj", "encoder.layers.0.fc2", "encoder_attn.out_proj"]),
]
# X-CLIP: every layer kept; the prompt generator's parts switched off (its output scale alpha, its
# cross-attention's and its MLP's last projections).
XCLIP = [
    ("full", 0, []),
    ("no-prompt", 0, ["prompts_generator.alpha"]),
    ("prompt-noattn", 0, ["cross_attn.proj"]),
    ("prompt-nomlp", 0, ["mlp.3."]),
]
# The weights of a layer beyond the count are dropped; the pattern names the transformer layers only
# (the layers of Wav2Vec2's convolutions or of DETR's ResNet stages are kept).
ANY_LAYER = r"(?:layers|block)\.(\d+)\."
TRANSFORMER_LAYER = r"(?<!conv_)(?:encoder|decoder)\.layers\.(\d+)\."
NO_LAYER = r"(?!)(\d)"
PROBES = {
    "qwen2": (DECODER, ["num_hidden_layers"], ANY_LAYER),
    "llama-gqa": (DECODER, ["num_hidden_layers"], ANY_LAYER),
    "llama": (DECODER, ["num_hidden_layers"], ANY_LAYER),
    "t5-v1_1": (T5, ["num_layers", "num_decoder_layers"], ANY_LAYER),
    "whisper-en": (WHISPER, ["encoder_layers", "decoder_layers"], ANY_LAYER),
    "wav2vec2": (WAV2VEC2, ["num_hidden_layers"], TRANSFORMER_LAYER),
    "detr": (DETR, ["encoder_layers", "decoder_layers"], TRANSFORMER_LAYER),
    "xclip": (XCLIP, [], NO_LAYER),
}


def variant(hwcov, device, precision, fixture, name, layers, zero, layer_keys, layer_pattern):
    src = Path("fixtures") / fixture
    out = WORK / f"{fixture}-{name}"
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(src, out)
    cfg = json.loads((out / "config.json").read_text())
    for key in layer_keys:
        cfg[key] = layers
    if layer_keys and "layer_types" in cfg:
        cfg["layer_types"] = cfg["layer_types"][:layers]
    (out / "config.json").write_text(json.dumps(cfg))
    w = st.load_file(str(out / "model.safetensors"))
    w = {k: v for k, v in w.items() if not (m := re.search(layer_pattern, k)) or int(m.group(1)) < layers}
    for pat in zero:
        for k in w:
            if pat in k:
                w[k] = torch.zeros_like(w[k])
    st.save_file(w, str(out / "model.safetensors"), metadata={"format": "pt"})
    io = st.load_file(str(src / "io.safetensors"))
    ref = {k: v for k, v in io.items() if k.startswith("in_") or (k.startswith("out_") and k != "out_generated")}
    ref.update(run(out, ref, DTYPES[precision], device))
    st.save_file(ref, str(out / "io.safetensors"))
    r = subprocess.run([hwcov, "verify", "--platform", device, "--precision", precision, "--json", "--model-dir",
                        str(out), "--io", str(out / "io.safetensors")], capture_output=True, text=True)
    try:
        outputs = json.loads(r.stdout)["outputs"]
        found = ", ".join(f"{o['name']} {o['max_abs_err']:.3e} ({o['mismatched']} outside)" for o in outputs)
        print(f"{fixture:10s} {precision:4s} {name:24s} {found}", flush=True)
    except (json.JSONDecodeError, KeyError, IndexError):
        print(f"{fixture:10s} {precision:4s} {name:24s} hwcov failed: {r.stderr[-300:]}", flush=True)


def main():
    hwcov = sys.argv[1]
    device = sys.argv[2] if len(sys.argv) > 2 else "cuda"
    precision = sys.argv[3] if len(sys.argv) > 3 else "bf16"
    fixtures = sys.argv[4:] or ["qwen2", "llama-gqa", "llama"]
    for fixture in fixtures:
        variants, layer_keys, layer_pattern = PROBES[fixture]
        for name, layers, zero in variants:
            variant(hwcov, device, precision, fixture, name, layers, zero, layer_keys, layer_pattern)


if __name__ == "__main__":
    main()
