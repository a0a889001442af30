#!/usr/bin/env python3
"""Exports model.onnx next to the weights of a benchmark checkpoint (tools/bench/make_checkpoints.py),
with the same exporter settings as the fixtures (torch.onnx TorchScript exporter, opset 17, dynamic
batch and sequence), so that graph platforms and onnxruntime run the same weights as hwcov's eager
platforms.

Whisper is exported as optimum lays out seq2seq models (onnx/encoder_model.onnx +
onnx/decoder_model.onnx), with the fixture generator's own `export_split`.

Usage: python3 tools/bench/export_onnx.py CHECKPOINT_DIR [CHECKPOINT_DIR ...]
"""

import sys
from pathlib import Path

import torch
import transformers


class Forward(torch.nn.Module):
    def __init__(self, model, names, outputs):
        super().__init__()
        self.model, self.names, self.outputs = model, names, outputs

    def forward(self, *args):
        out = self.model(**dict(zip(self.names, args)))
        return tuple(out[o] for o in self.outputs)


def main():
    for d in map(Path, sys.argv[1:]):
        cfg = transformers.AutoConfig.from_pretrained(d)
        model = getattr(transformers, cfg.architectures[0]).from_pretrained(d, dtype=torch.float32).eval()
        if cfg.model_type == "bert":
            ids = torch.randint(0, cfg.vocab_size, (1, 128))
            inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
            outputs = ["last_hidden_state", "pooler_output"]
            dynamic = {k: {0: "batch", 1: "sequence"} for k in inputs}
        elif cfg.model_type == "vit":
            inputs = {"pixel_values": torch.randn(1, 3, cfg.image_size, cfg.image_size)}
            outputs = ["logits"]
            dynamic = {"pixel_values": {0: "batch"}}
        elif cfg.model_type == "whisper":
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
            from generate import export_split

            feats = torch.randn(1, cfg.num_mel_bins, 2 * cfg.max_source_positions)
            info = export_split(model, {"input_features": feats}, torch.tensor([[cfg.decoder_start_token_id]]), d / "onnx")
            print(f"{d / 'onnx'}: {info['onnxruntime_max_abs_err']}")
            continue
        else:
            sys.exit(f"{d}: no export recipe for {cfg.model_type}")
        names = list(inputs)
        torch.onnx.export(Forward(model, names, outputs), tuple(inputs.values()), str(d / "model.onnx"),
                          input_names=names, output_names=outputs, dynamic_axes=dynamic, opset_version=17,
                          dynamo=False)
        print(f"{d / 'model.onnx'}: {(d / 'model.onnx').stat().st_size / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
