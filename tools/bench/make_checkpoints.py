#!/usr/bin/env python3
"""Writes random-weight checkpoints at the real sizes of the representative models, for benchmarks.

The configs are those of the Hub checkpoints (transformers' defaults for BertConfig, ViTConfig and
WhisperConfig-tiny sizes; all-MiniLM-L6-v2's BERT sizes; Qwen2-0.5B and Qwen2-7B from their config.json). Weights are random: speed
does not depend on their values. Both `hwcov bench` and tools/bench/pytorch_bench.py load these folders.

Usage: python3 tools/bench/make_checkpoints.py OUT_DIR [--only bert-base,vit-base,...]
"""

import argparse
import sys
from pathlib import Path

import torch
import transformers

CONFIGS = {
    "bert-base": lambda: (transformers.BertModel, transformers.BertConfig()),
    # sentence-transformers/all-MiniLM-L6-v2's encoder (its config.json): the Hub's most downloaded model.
    "minilm-l6": lambda: (
        transformers.BertModel,
        transformers.BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
    ),
    "vit-base": lambda: (
        transformers.ViTForImageClassification,
        transformers.ViTConfig(num_labels=1000),
    ),
    "whisper-tiny": lambda: (
        transformers.WhisperForConditionalGeneration,
        transformers.WhisperConfig(
            d_model=384, encoder_layers=4, decoder_layers=4, encoder_attention_heads=6, decoder_attention_heads=6,
            encoder_ffn_dim=1536, decoder_ffn_dim=1536, vocab_size=51865, num_mel_bins=80,
        ),
    ),
    "qwen2-0.5b": lambda: (
        transformers.Qwen2ForCausalLM,
        transformers.Qwen2Config(
            vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
            num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1000000.0, tie_word_embeddings=True,
        ),
    ),
    "qwen2-7b": lambda: (
        transformers.Qwen2ForCausalLM,
        transformers.Qwen2Config(
            vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
            num_key_value_heads=4, max_position_embeddings=32768, rope_theta=1000000.0, tie_word_embeddings=False,
        ),
    ),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--only")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else list(CONFIGS)
    for n in names:
        if n not in CONFIGS:
            sys.exit(f"unknown checkpoint {n}; known: {', '.join(CONFIGS)}")
        d = Path(args.out) / n
        if (d / "config.json").exists():
            print(f"{n}: exists")
            continue
        cls, cfg = CONFIGS[n]()
        # Large models are written in bf16 (what they run in); the rest in f32.
        dtype = torch.bfloat16 if n == "qwen2-7b" else torch.float32
        torch.manual_seed(0)
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = cls._from_config(cfg, torch_dtype=dtype)
        model.save_pretrained(d)
        print(f"{n}: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters -> {d}")


if __name__ == "__main__":
    main()
