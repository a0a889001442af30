#!/usr/bin/env python3
"""ONNX Runtime (CPUExecutionProvider) on a checkpoint's model.onnx, with the inputs, warm-up,
iteration count and statistics of `hwcov bench`: the third column of the CPU benchmark.

Usage: python3 tools/bench/onnxruntime_bench.py --model-dir DIR --batch 1 --seq 128 [--iters 30]
"""

import argparse
import json
import os
import statistics
import time

import numpy as np
import onnxruntime as ort
import transformers


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=30)
    args = ap.parse_args()
    cfg = transformers.AutoConfig.from_pretrained(args.model_dir)
    rng = np.random.default_rng(0)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = os.cpu_count() or 1
    session = lambda f: ort.InferenceSession(os.path.join(args.model_dir, f), opts, providers=["CPUExecutionProvider"])
    t0 = time.perf_counter()
    if cfg.model_type == "whisper":
        # Like `hwcov bench` on Whisper: the encoder on 30 s, then the decoder's first step.
        enc, dec = session("onnx/encoder_model.onnx"), session("onnx/decoder_model.onnx")
        feats = rng.standard_normal((args.batch, cfg.num_mel_bins, 2 * cfg.max_source_positions), dtype=np.float32)
        ids = np.full((args.batch, 1), cfg.decoder_start_token_id, dtype=np.int64)

        def once():
            states = enc.run(None, {"input_features": feats})[0]
            dec.run(None, {"input_ids": ids, "encoder_hidden_states": states})
    else:
        if cfg.model_type == "bert":
            ids = rng.integers(0, cfg.vocab_size, (args.batch, args.seq), dtype=np.int64)
            feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        else:
            feed = {"pixel_values": rng.standard_normal((args.batch, 3, cfg.image_size, cfg.image_size), dtype=np.float32)}
        sess = session("model.onnx")

        def once():
            sess.run(None, feed)
    load = time.perf_counter() - t0
    for _ in range(args.warmup):
        once()
    times = []
    for _ in range(args.iters):
        t = time.perf_counter()
        once()
        times.append((time.perf_counter() - t) * 1e3)
    s = sorted(times)
    pc = lambda p: s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]
    mean = statistics.fmean(times)
    print(json.dumps({"model_type": cfg.model_type, "peer": f"onnxruntime {ort.__version__} CPUExecutionProvider",
                      "batch": args.batch, "seq": args.seq if cfg.model_type == "bert" else None,
                      "warmup": args.warmup, "iterations": args.iters, "load_seconds": load, "mean_ms": mean,
                      "p50_ms": pc(50), "p90_ms": pc(90), "p99_ms": pc(99), "stdev_ms": statistics.pstdev(times),
                      "throughput_per_s": args.batch / (mean / 1e3)}))


if __name__ == "__main__":
    main()
