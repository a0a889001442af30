#!/usr/bin/env python3
"""Writes every step of the DETR fixture's first encoder self-attention, as transformers runs it at a
precision on the GPU, for `attention_stages` (crates/hwcov-cuda/examples) to redo step by step.

A forward hook takes the inputs and output of `model.encoder.layers[0].self_attn` from transformers'
own run of the fixture (the recipe of tools/fixtures/reduced_precision.py); the steps are then taken
again with the module's own weights and the same torch calls as DetrSelfAttention and
eager_attention_forward, and must give the hooked output bit for bit. Each step's input is torch's, so a
step at which hwcov parts from torch shows up on its own, not as the sum of the steps before it.

Usage: python3 tools/gpu/detr_attention_stages.py OUT.safetensors [bf16|f16] [FIXTURE_DIR]
"""

import sys
from pathlib import Path

import safetensors.torch as st
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
import transformers  # noqa: E402
from reduced_precision import load_model, model_inputs  # noqa: E402  (the recipe of the fixtures' references)

DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16}


def main():
    out_path = sys.argv[1]
    dtype = DTYPES[sys.argv[2] if len(sys.argv) > 2 else "bf16"]
    d = Path(sys.argv[3] if len(sys.argv) > 3 else Path(__file__).resolve().parents[2] / "fixtures" / "detr")
    model = load_model(d, dtype, "cuda")
    inputs = model_inputs(st.load_file(str(d / "io.safetensors")), dtype, "cuda")

    layer = model.model.encoder.layers[0]
    attn = layer.self_attn
    seen = {}

    def hook(_module, _args, kwargs, output):
        seen.update(h=kwargs["hidden_states"], pos=kwargs["position_embeddings"], mask=kwargs.get("attention_mask"))
        seen["out"] = output[0]

    handle = attn.register_forward_hook(hook, with_kwargs=True)
    with torch.no_grad():
        model(**inputs)
    handle.remove()

    with torch.no_grad():
        h, pos, mask = seen["h"], seen["pos"], seen["mask"]
        shape = (*h.shape[:-1], -1, attn.head_dim)
        steps = {"h": h, "pos": pos}
        steps["qk_in"] = h + pos
        steps["q"] = attn.q_proj(steps["qk_in"])
        steps["k"] = attn.k_proj(steps["qk_in"])
        steps["v"] = attn.v_proj(h)
        qh, kh, vh = (steps[n].view(shape).transpose(1, 2) for n in ("q", "k", "v"))
        steps["scores"] = torch.matmul(qh, kh.transpose(2, 3))
        scaled = steps["scores"] * attn.scaling
        if mask is not None:
            scaled = scaled + mask
        steps["probs"] = torch.nn.functional.softmax(scaled, dim=-1)
        steps["ctx"] = torch.matmul(steps["probs"], vh)
        steps["ctx_rows"] = steps["ctx"].transpose(1, 2).contiguous().reshape(*h.shape[:-1], -1)
        steps["out"] = attn.o_proj(steps["ctx_rows"])
        if not torch.equal(steps["out"], seen["out"]):
            sys.exit("the steps taken again do not give the hooked self-attention output")
        steps["residual"] = h + steps["out"]
        steps["normed"] = layer.self_attn_layer_norm(steps["residual"])

    tensors = {k: v.contiguous().cpu() for k, v in steps.items()}
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        lin = getattr(attn, name)
        tensors[f"{name}.weight"] = lin.weight.detach().cpu().contiguous()
        tensors[f"{name}.bias"] = lin.bias.detach().cpu().contiguous()
    ln = layer.self_attn_layer_norm
    tensors["layer_norm.weight"] = ln.weight.detach().cpu().contiguous()
    tensors["layer_norm.bias"] = ln.bias.detach().cpu().contiguous()
    meta = {
        "heads": str(attn.config.encoder_attention_heads),
        "scaling": repr(attn.scaling),
        "eps": repr(ln.eps),
        "mask": "none" if mask is None else "additive",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": torch.cuda.get_device_name(0),
    }
    st.save_file(tensors, out_path, metadata=meta)
    print(f"wrote {out_path}: {', '.join(f'{k} {list(v.shape)}' for k, v in steps.items())}; {meta}")


if __name__ == "__main__":
    main()
