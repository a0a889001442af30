#!/usr/bin/env python3
"""Exports ONNX graphs next to the weights of a benchmark checkpoint (tools/bench/make_checkpoints.py), with the
exporter settings of the fixtures (torch.onnx TorchScript exporter, opset 17, dynamic axes), so that the graph
platforms (OpenVINO, WebGPU) and onnxruntime run the same weights as hwcov's eager platforms. What it writes,
by the checkpoint's model_type:

  bert, vit  model.onnx: the model's outputs (last_hidden_state and pooler_output; logits), dynamic batch (and
             sequence for BERT).
  qwen2      model.onnx: optimum's decoder with past, as tools/fixtures/export_with_past.py writes it for the
             qwen2 fixture (its functions, imported): input_ids, attention_mask, position_ids,
             past_key_values.{i}.key/value -> logits, present.{i}.key/value; dynamic batch, sequence and
             past_sequence; one graph for the first step (a past of length 0) and every later one. Where the graph
             would pass protobuf's 2 GB (qwen2-0.5b in float32), its tensors go into one file next to it,
             model.onnx_data, at a relative location.
  whisper    optimum's seq2seq with past, under onnx/, as export_with_past.py writes it for the whisper fixture:
             encoder_model.onnx (input_features -> last_hidden_state); decoder_model.onnx, the first step
             (input_ids, encoder_hidden_states -> logits, present.{i}.decoder.key/value,
             present.{i}.encoder.key/value); decoder_with_past_model.onnx, the later steps (input_ids,
             past_key_values.{i}.decoder.key/value, past_key_values.{i}.encoder.key/value -> logits,
             present.{i}.decoder.key/value).

qwen2 and whisper are loaded with eager attention (as export_with_past.py loads the fixtures), bert and vit with
transformers' default. Checkpoints whose weights pass MAX_FLOAT32_BYTES in float32 are skipped with a message
(qwen2-7b: 7.6B parameters, 28 GiB): the graphs are exported and checked in float32.

Every graph passes onnx.checker (given its path, so that external data is checked too) and is run with
onnxruntime (CPU) against the PyTorch module it was exported from (export_with_past.py's Graph) on random inputs,
every output within atol = rtol = 1e-4: bert and vit on the traced inputs and on another batch (and sequence);
qwen2 on the traced step (a past of 5 and 3 new tokens, batch 2 and 1), then as generate() decodes: a past of
length 0 over a left-padded prompt, then one-token steps, the presents fed back as the pasts; whisper's encoder
on batch 1 and 2, its decoder over a prompt of 4 tokens on the encoder states onnxruntime computed, then
decoder_with_past_model.onnx one token a step (the encoder presents of the first step kept). Random weights decode
nothing meaningful: the steps feed back the argmax. The script prints, per file, what it ran and the largest
difference per output (presents grouped). Everything is exported and checked in a temporary folder inside the
checkpoint; nothing of the checkpoint is replaced unless all its checks pass.

Usage: python3 tools/bench/export_onnx.py CHECKPOINT_DIR [CHECKPOINT_DIR ...]
Needs: what tools/fixtures/export_with_past.py needs (tools/fixtures/requirements.txt).
"""

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))

import export_with_past as ewp  # noqa: E402 - tools/fixtures/export_with_past.py: wrappers, export, Graph

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

MAX_FLOAT32_BYTES = 8 * 2**30
EAGER = {"qwen2", "whisper"}  # loaded as export_with_past.py loads the fixtures


class Forward(torch.nn.Module):
    def __init__(self, model, names, outputs):
        super().__init__()
        self.model, self.names, self.outputs = model, names, outputs

    def forward(self, *args):
        out = self.model(**dict(zip(self.names, args)))
        return tuple(out[o] for o in self.outputs)


def checked(graph, what):
    """What a Graph ran, for the printout: the description and the largest error per output (presents grouped)."""
    groups = {}
    for n, e in graph.errs.items():
        key = n
        if n.startswith("present."):
            key = ("presents (decoder)" if ".decoder." in n else "presents (encoder)" if ".encoder." in n
                   else "presents")
        groups[key] = max(groups.get(key, 0.0), e)
    return {"runs": len(graph.shapes), "what": what, "max_abs_err": groups}


# ---------------------------------------------------------------------------------------------------
# One recipe per model_type: exports into `tmp` (files named as they go into the checkpoint) and checks
# them there. Returns {relative path: checked(...)}.


def plain(model, cfg, tmp, rng):
    """bert, vit: model.onnx, the model's outputs, as this script has always exported them."""
    if cfg.model_type == "bert":
        def feeds(batch, seq, pad):
            ids = rng.integers(0, cfg.vocab_size, (batch, seq), dtype=np.int64)
            mask = np.ones_like(ids)
            mask[1:, seq - pad:] = 0  # the rows after the first padded at the right, as a tokenizer pads them
            return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        traced, other = feeds(1, 128, 0), feeds(2, 64, 20)
        outputs = ["last_hidden_state", "pooler_output"]
        axes = {k: {0: "batch", 1: "sequence"} for k in traced}
        what = "input_ids etc. [1, 128] (traced), [2, 64] with row 1 padded"
    else:
        def feeds(batch):
            return {"pixel_values": rng.standard_normal((batch, 3, cfg.image_size, cfg.image_size), dtype=np.float32)}
        traced, other = feeds(1), feeds(2)
        outputs = ["logits"]
        axes = {"pixel_values": {0: "batch"}}
        what = "pixel_values of batch 1 (traced) and 2"
    names = list(traced)
    wrapper = Forward(model, names, outputs).eval()
    path = tmp / "model.onnx"
    ewp.export(wrapper, [torch.from_numpy(v) for v in traced.values()], path, names, outputs, axes,
               external_data=True)
    graph = ewp.Graph(path, wrapper, names, outputs)
    graph(traced)
    graph(other)
    return {"model.onnx": checked(graph, what)}


def qwen2(model, cfg, tmp, rng, batch=2, seq=8, steps=4):
    """model.onnx, the decoder with past of export_with_past.py's do_decoder."""
    ids = rng.integers(0, cfg.vocab_size, (batch, seq), dtype=np.int64)
    mask = np.ones_like(ids)
    mask[1, :3] = 0  # row 1 left-padded, as generate() pads a batch
    graph, _, _ = ewp.export_decoder_with_past(model, ewp.causal_lm, cfg, True, ids, mask, tmp / "model.onnx",
                                               external_data=True)
    n_layers, heads, head_dim = ewp.kv_geometry(cfg)
    _, past_names, _ = ewp.decoder_names(n_layers, True)

    def run(ids_, mask_, pos, pasts):
        return graph({"input_ids": ids_, "attention_mask": mask_, "position_ids": pos, **pasts})

    # generate(): an empty past over the prompt, then one token a step, presents fed back, the mask grown by 1,
    # position_ids from the mask; no end token (greedy_decoder makes `steps` + 1 tokens, `steps` of them by steps).
    ewp.greedy_decoder(lambda i, m, p: run(i, m, p, ewp.empty_pasts(past_names, batch, heads, head_dim)),
                       lambda t, m, p, out: run(t, m, p, ewp.pasts_of(out)),
                       ids, mask, steps + 1, [], 0)
    what = (f"the traced step (past {seq - 3}, 3 new tokens; batch {batch} and 1); past of length 0 over a "
            f"prompt of {seq} tokens (batch {batch}, row 1 left-padded by 3), then {steps} one-token steps "
            "feeding the presents back (argmax tokens, position_ids from the mask)")
    return {"model.onnx": checked(graph, what)}


def whisper(model, cfg, tmp, rng, batch=2, prompt=4, steps=4):
    """onnx/encoder_model.onnx (the encoder's last_hidden_state, with the dynamic axes of generate.py's
    export_split), and the decoder_model.onnx and decoder_with_past_model.onnx of export_with_past.py's
    do_seq2seq."""
    (tmp / "onnx").mkdir()
    n_layers = cfg.decoder_layers
    feats = rng.standard_normal((batch, cfg.num_mel_bins, 2 * cfg.max_source_positions), dtype=np.float32)
    enc = Forward(model.get_encoder(), ["input_features"], ["last_hidden_state"]).eval()
    enc_path = tmp / "onnx" / "encoder_model.onnx"
    ewp.export(enc, [torch.from_numpy(feats[:1])], enc_path, ["input_features"], ["last_hidden_state"],
               {"input_features": {0: "batch"}, "last_hidden_state": {0: "batch"}}, external_data=True)
    eg = ewp.Graph(enc_path, enc, ["input_features"], ["last_hidden_state"])
    eg({"input_features": feats[:1]})
    states = eg({"input_features": feats})["last_hidden_state"]  # what the decoder graphs get below
    with torch.no_grad():
        ref_states = enc(torch.from_numpy(feats))[0].numpy()  # what they are traced on

    ids = np.concatenate([np.full((batch, 1), cfg.decoder_start_token_id, np.int64),
                          rng.integers(0, cfg.vocab_size, (batch, prompt - 1), dtype=np.int64)], 1)
    fg, _, _ = ewp.export_seq2seq_decoder(model, False, n_layers, ids, ref_states, None,
                                          tmp / "onnx" / "decoder_model.onnx", external_data=True)
    pg, _, _ = ewp.export_seq2seq_decoder_with_past(model, False, n_layers, cfg.d_model, fg.wrapper, ids, ref_states,
                                                    None, tmp / "onnx" / "decoder_with_past_model.onnx",
                                                    external_data=True)
    # The decoding loop: decoder_model.onnx over the prompt on onnxruntime's encoder states, then
    # decoder_with_past_model.onnx one token a step with the encoder presents of the first step.
    fg({"input_ids": ids[:1], "encoder_hidden_states": states[:1]})
    out = fg({"input_ids": ids, "encoder_hidden_states": states})
    encoder_pasts = {k: v for k, v in ewp.pasts_of(out).items() if ".encoder." in k}
    for _ in range(steps):
        nxt = out["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
        out = pg({"input_ids": nxt, **ewp.pasts_of(out), **encoder_pasts})
    return {
        "onnx/encoder_model.onnx": checked(eg, f"input_features of batch 1 (traced) and {batch} "
                                               f"({cfg.num_mel_bins} x {2 * cfg.max_source_positions})"),
        "onnx/decoder_model.onnx": checked(fg, f"a prompt of {prompt} tokens (decoder_start_token_id, then random) "
                                               f"on the encoder's states: PyTorch's (traced, batch {batch}), "
                                               f"onnxruntime's (batch 1 and {batch})"),
        "onnx/decoder_with_past_model.onnx": checked(
            pg, f"the traced step (past {prompt - 2}, 2 new tokens; batch {batch} and 1); {steps} one-token steps "
                "after decoder_model.onnx, feeding its presents back (argmax tokens, the encoder presents of the "
                "first step kept)"),
    }


RECIPES = {"bert": plain, "vit": plain, "qwen2": qwen2, "whisper": whisper}


# ---------------------------------------------------------------------------------------------------


def size(path):
    b = path.stat().st_size
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB"


def export_checkpoint(d):
    cfg = transformers.AutoConfig.from_pretrained(d)
    recipe = RECIPES.get(cfg.model_type)
    if recipe is None:
        sys.exit(f"{d}: no export recipe for {cfg.model_type}")
    cls = getattr(transformers, cfg.architectures[0])
    with torch.device("meta"):
        n_params = sum(p.numel() for p in cls._from_config(cfg).parameters())
    if 4 * n_params > MAX_FLOAT32_BYTES:
        print(f"{d}: skipped: {n_params / 1e9:.1f}B parameters, {4 * n_params / 2**30:.0f} GiB in float32, over the "
              f"{MAX_FLOAT32_BYTES / 2**30:.0f} GiB this script exports")
        return
    t0 = time.perf_counter()
    kw = {"attn_implementation": "eager"} if cfg.model_type in EAGER else {}
    model = cls.from_pretrained(d, dtype=torch.float32, **kw).eval()
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix=".export-onnx-", dir=d))
    try:
        report = recipe(model, cfg, tmp, np.random.default_rng(0))
        del model
        for rel in report:
            src, dst = tmp / rel, d / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            data = ewp.external_data_name(src)
            if (src.parent / data).exists():
                shutil.move(str(src.parent / data), str(dst.parent / data))
            else:
                (dst.parent / data).unlink(missing_ok=True)  # of an earlier export
            shutil.move(str(src), str(dst))
            onnx.checker.check_model(str(dst))  # in place, with its external data
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{d} ({cfg.model_type}, {n_params / 1e6:.3g}M parameters): {time.perf_counter() - t0:.0f} s")
    for rel, r in report.items():
        data = d / Path(rel).parent / ewp.external_data_name(Path(rel))
        files = size(d / rel) + (f" + {data.name} {size(data)}" if data.exists() else "")
        errs = ", ".join(f"{k} {v:.2e}" for k, v in r["max_abs_err"].items())
        print(f"  {rel} ({files}): onnx.checker passed; onnxruntime vs PyTorch, {r['runs']} runs: {r['what']}; "
              f"max abs err: {errs} (atol = rtol = {ewp.ATOL:g})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", type=Path, metavar="CHECKPOINT_DIR")
    args = ap.parse_args()
    for d in args.checkpoints:
        export_checkpoint(d)


if __name__ == "__main__":
    main()
