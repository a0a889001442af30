#!/usr/bin/env python3
"""The PyTorch side of `hwcov bench`: transformers in eager mode (no torch.compile, eager attention),
same checkpoint folder, dtype, device, input shapes, warm-up and iteration counts, and the same
statistics. Like `hwcov bench`, each iteration starts from host tensors and ends with the outputs on
the host, so both sides time the same work.

Usage: python3 tools/bench/pytorch_bench.py --model-dir DIR --precision bf16 --batch 1 --seq 128 [--iters 30]
Prints one JSON line.
"""

import argparse
import json
import statistics
import time

import torch
import transformers

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def synthetic_inputs(config, batch, seq):
    g = torch.Generator().manual_seed(0)
    mt = config.model_type
    if mt == "bert":
        ids = torch.randint(0, config.vocab_size, (batch, seq), generator=g)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    if mt in ("llama", "qwen2", "qwen3", "opt"):
        ids = torch.randint(0, config.vocab_size, (batch, seq), generator=g)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if mt == "whisper":
        frames = 2 * config.max_source_positions
        feats = torch.randn(batch, config.num_mel_bins, frames, generator=g)
        return {"input_features": feats, "decoder_input_ids": torch.full((batch, 1), config.decoder_start_token_id)}
    if mt == "vit":
        size = config.image_size
        return {"pixel_values": torch.randn(batch, config.num_channels, size, size, generator=g)}
    raise SystemExit(f"no synthetic inputs for {mt}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--precision", default="f32", choices=DTYPES)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--attn", default="eager", help="attention implementation (eager, sdpa)")
    ap.add_argument("--decode", type=int, default=0, help="also time this many greedy decoding steps")
    args = ap.parse_args()

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    config = transformers.AutoConfig.from_pretrained(args.model_dir)
    arch = getattr(transformers, config.architectures[0])
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    model = arch.from_pretrained(args.model_dir, dtype=DTYPES[args.precision], attn_implementation=args.attn)
    model = model.to(dev).eval()
    torch.cuda.synchronize()
    load = time.perf_counter() - t0
    inputs = synthetic_inputs(config, args.batch, args.seq)
    floats = {k for k, v in inputs.items() if v.is_floating_point()}
    generative = config.model_type in ("llama", "qwen2", "qwen3", "opt", "whisper")
    seq2seq = config.model_type == "whisper"

    same_outputs_as_hwcov = None
    if config.architectures[0] == "ViTForImageClassification":
        # hwcov returns the base model's last_hidden_state next to the logits (its fixtures check
        # both); so that both sides copy the same outputs to the host, this side computes them as
        # ViTForImageClassification.forward does and returns both.
        def same_outputs_as_hwcov(x):
            hidden = model.vit(**x).last_hidden_state
            logits = model.classifier(hidden[:, 0, :])
            logits.float().cpu()
            hidden.float().cpu()
            return logits

    def once():
        # Like `hwcov bench`: host tensors in; the outputs (for generative models, the next-token
        # logits of the prompt, as a prefill returns them) back on the host.
        with torch.inference_mode():
            x = {k: (v.to(dev, DTYPES[args.precision]) if k in floats else v.to(dev)) for k, v in inputs.items()}
            if seq2seq:
                out = model(**x, use_cache=True)
                out.logits[:, -1].float().cpu()
                return out
            if generative:
                out = model(**x, use_cache=True, logits_to_keep=1)
                out.logits[:, -1].float().cpu()
                return out
            if same_outputs_as_hwcov is not None:
                return same_outputs_as_hwcov(x)
            out = model(**x)
            for v in out.values():
                if isinstance(v, torch.Tensor):
                    v.float().cpu()
            return out

    for _ in range(args.warmup):
        once()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.iters):
        t = time.perf_counter()
        once()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    decode = None
    if args.decode:
        # A plain greedy loop over the KV cache, one token per step, as hwcov's decoder steps.
        with torch.inference_mode():
            out = once()
            past = out.past_key_values
            mask = None if seq2seq else inputs["attention_mask"].to(dev)
            enc = getattr(out, "encoder_last_hidden_state", None)
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            steps = []
            for _ in range(args.decode):
                torch.cuda.synchronize()
                t = time.perf_counter()
                if seq2seq:
                    out = model(encoder_outputs=(enc,), decoder_input_ids=nxt, past_key_values=past, use_cache=True)
                else:
                    mask = torch.cat([mask, torch.ones_like(nxt)], 1)
                    out = model(input_ids=nxt, attention_mask=mask, past_key_values=past, use_cache=True)
                past = out.past_key_values
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
                nxt.cpu()
                steps.append((time.perf_counter() - t) * 1e3)
        ss = sorted(steps)
        pc = lambda q: ss[min(len(ss) - 1, round(q / 100 * (len(ss) - 1)))]
        m = statistics.fmean(steps)
        decode = {"new_tokens": args.decode, "tokens_per_s": args.batch * 1e3 / m, "ms_per_token_mean": m,
                  "ms_per_token_p50": pc(50), "ms_per_token_p90": pc(90), "ms_per_token_p99": pc(99)}
    s = sorted(times)
    pct = lambda p: s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]
    mean = statistics.fmean(times)
    print(json.dumps({
        "model_dir": args.model_dir, "model_type": config.model_type, "peer": f"transformers {transformers.__version__} eager ({args.attn} attention), torch {torch.__version__}",
        "device": torch.cuda.get_device_name(), "precision": args.precision, "batch": args.batch,
        "seq": args.seq if config.model_type != "vit" else None, "warmup": args.warmup, "iterations": args.iters,
        "load_seconds": load, "mean_ms": mean, "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99),
        "stdev_ms": statistics.pstdev(times), "throughput_per_s": args.batch / (mean / 1e3),
        "peak_memory_bytes": torch.cuda.max_memory_allocated(), "pass": "prefill" if generative else "forward",
        "decode": decode,
    }))


if __name__ == "__main__":
    main()
