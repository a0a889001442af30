//! `hwcov bench`: time a model's forward() on a platform, with inputs made from its config, and
//! report the statistics optimum-benchmark reports (mean, p50, p90, p99, stdev, throughput, load time,
//! memory). Speed claims live here, next to a named peer measured in the same run
//! (tools/bench/pytorch_bench.py), never in tests.

use std::path::Path;
use std::time::Instant;

use hwcov_core::{Error, HostTensor, LoadOptions, ModelClass, ModelFiles, NamedTensors, PlatformId, Result};
use serde::Serialize;

use crate::platforms;

/// The shape of the synthetic inputs.
#[derive(Debug, Clone, Copy)]
pub struct BenchShape {
    pub batch: usize,
    /// Tokens per sequence, for text models.
    pub seq: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model_dir: String,
    pub model_type: String,
    pub platform: PlatformId,
    pub device: String,
    pub precision: String,
    /// Whether the runtime was held to `precision`, or free to pick its own for speed.
    pub precision_pinned: bool,
    pub batch: usize,
    pub seq: Option<usize>,
    pub warmup: usize,
    pub iterations: usize,
    pub load_seconds: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub stdev_ms: f64,
    /// Samples (sequences or images) per second at the mean latency.
    pub throughput_per_s: f64,
    /// Device memory in use (whole device) after loading and after the timed runs, where the
    /// platform can tell.
    pub memory_after_load_bytes: Option<u64>,
    pub memory_after_run_bytes: Option<u64>,
    /// The most device memory the process's tensors held at once (weights included), where the
    /// platform can tell; on CUDA the allocation pool's high-water mark, the analogue of torch's
    /// `max_memory_allocated`.
    pub peak_memory_bytes: Option<u64>,
    /// For generative models: what the timed passes measure ("prefill": the prompt through the
    /// decoder, returning the next-token logits; "forward": forward() with all outputs).
    pub pass: String,
    /// Token-by-token decoding after a prefill, where asked (`--decode N`).
    pub decode: Option<DecodeReport>,
    /// Device kernels dispatched per timed pass, where the platform counts them.
    pub dispatches_per_pass: Option<f64>,
}

/// Decoding speed: `new_tokens` steps of one token per row after the prompt, greedy.
#[derive(Debug, Clone, Serialize)]
pub struct DecodeReport {
    pub new_tokens: usize,
    pub tokens_per_s: f64,
    pub ms_per_token_mean: f64,
    pub ms_per_token_p50: f64,
    pub ms_per_token_p90: f64,
    pub ms_per_token_p99: f64,
    /// Device kernels dispatched per decoded token, where the platform counts them.
    pub dispatches_per_token: Option<f64>,
}

/// The greedy choice of each row of (batch, vocab) logits.
fn argmax_rows(logits: &HostTensor) -> Vec<u32> {
    let v = logits.to_f64_vec();
    let vocab = logits.shape().last().copied().unwrap_or(1).max(1);
    v.chunks(vocab)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold(
                    (0usize, f64::NEG_INFINITY),
                    |best, (i, &x)| if x > best.1 { (i, x) } else { best },
                )
                .0 as u32
        })
        .collect()
}

struct Stats {
    mean: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    stdev: f64,
}

fn stats(times: &[f64]) -> Stats {
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let var = times.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / times.len() as f64;
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    Stats {
        mean,
        p50: percentile(&sorted, 50.0),
        p90: percentile(&sorted, 90.0),
        p99: percentile(&sorted, 99.0),
        stdev: var.sqrt(),
    }
}

/// A small deterministic generator (xorshift), so that inputs are the same run to run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Roughly normal values (sum of uniforms), enough for timing.
    fn normal(&mut self) -> f32 {
        let s: f64 = (0..4).map(|_| (self.next() >> 11) as f64 / (1u64 << 53) as f64).sum();
        ((s - 2.0) * 1.7) as f32
    }
}

fn config_usize(files: &ModelFiles, field: &str, default: Option<usize>) -> Result<usize> {
    match files.config.get(field).and_then(|v| v.as_u64()) {
        Some(v) => Ok(v as usize),
        None => default.ok_or_else(|| Error::config(&files.config_path, field, "missing")),
    }
}

/// The most input elements `hwcov bench` makes (2^32): past it a mistyped `--batch` would ask for
/// more memory than the host has.
const MAX_INPUT_ELEMENTS: usize = 1 << 32;

/// Refuses a shape the model cannot take, by the flag at fault: no rows, no tokens, more tokens
/// (with `decode` more after them) than the model's positions, more input elements than
/// `MAX_INPUT_ELEMENTS`.
pub fn check_shape(files: &ModelFiles, shape: BenchShape, decode: usize) -> Result<()> {
    if shape.batch == 0 {
        return Err(Error::Usage("--batch must be at least 1".to_string()));
    }
    let text = matches!(
        files.class,
        ModelClass::Llama | ModelClass::Qwen2 | ModelClass::Qwen3 | ModelClass::Opt | ModelClass::Bert
    );
    if text && shape.seq == 0 {
        return Err(Error::Usage("--seq must be at least 1".to_string()));
    }
    if text && let Some(max) = files.config.get("max_position_embeddings").and_then(|v| v.as_u64()) {
        let wanted = shape.seq.saturating_add(decode);
        if wanted as u64 > max {
            return Err(Error::Usage(format!(
                "--seq {}{} needs {wanted} positions; the model has {max} (max_position_embeddings of {})",
                shape.seq,
                if decode > 0 {
                    format!(" and --decode {decode}")
                } else {
                    String::new()
                },
                files.config_path.display()
            )));
        }
    }
    let per_row = match files.class {
        ModelClass::Whisper => config_usize(files, "num_mel_bins", Some(80))?
            .saturating_mul(2 * config_usize(files, "max_source_positions", Some(1500))?),
        ModelClass::Vit => {
            let size = config_usize(files, "image_size", Some(224))?;
            config_usize(files, "num_channels", Some(3))?.saturating_mul(size.saturating_mul(size))
        }
        _ => shape.seq,
    };
    if shape.batch.saturating_mul(per_row) > MAX_INPUT_ELEMENTS {
        return Err(Error::Usage(format!(
            "--batch {} makes more than {MAX_INPUT_ELEMENTS} input elements ({per_row} a row); lower it",
            shape.batch
        )));
    }
    Ok(())
}

/// Inputs of the right names and shapes for the class (`check_shape` first).
pub fn synthetic_inputs(files: &ModelFiles, shape: BenchShape) -> Result<NamedTensors> {
    check_shape(files, shape, 0)?;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut inputs = NamedTensors::new();
    match files.class {
        ModelClass::Llama | ModelClass::Qwen2 | ModelClass::Qwen3 | ModelClass::Opt => {
            let vocab = config_usize(files, "vocab_size", None)? as u64;
            let n = shape.batch * shape.seq;
            let ids = (0..n).map(|_| (rng.next() % vocab) as i64).collect();
            inputs.insert("input_ids".into(), HostTensor::i64(vec![shape.batch, shape.seq], ids)?);
            inputs.insert(
                "attention_mask".into(),
                HostTensor::i64(vec![shape.batch, shape.seq], vec![1; n])?,
            );
        }
        ModelClass::Whisper => {
            // 30 s of log-mel features (2 * max_source_positions frames) and the decoder's start token.
            let mels = config_usize(files, "num_mel_bins", Some(80))?;
            let frames = 2 * config_usize(files, "max_source_positions", Some(1500))?;
            let start = config_usize(files, "decoder_start_token_id", Some(50258))? as i64;
            let n = shape.batch * mels * frames;
            let feats = (0..n).map(|_| rng.normal()).collect();
            inputs.insert(
                "input_features".into(),
                HostTensor::f32(vec![shape.batch, mels, frames], feats)?,
            );
            inputs.insert(
                "decoder_input_ids".into(),
                HostTensor::i64(vec![shape.batch, 1], vec![start; shape.batch])?,
            );
        }
        ModelClass::Bert => {
            let vocab = config_usize(files, "vocab_size", None)? as u64;
            let n = shape.batch * shape.seq;
            let ids = (0..n).map(|_| (rng.next() % vocab) as i64).collect();
            inputs.insert("input_ids".into(), HostTensor::i64(vec![shape.batch, shape.seq], ids)?);
            inputs.insert(
                "attention_mask".into(),
                HostTensor::i64(vec![shape.batch, shape.seq], vec![1; n])?,
            );
            inputs.insert(
                "token_type_ids".into(),
                HostTensor::i64(vec![shape.batch, shape.seq], vec![0; n])?,
            );
        }
        ModelClass::Vit => {
            let size = config_usize(files, "image_size", Some(224))?;
            let channels = config_usize(files, "num_channels", Some(3))?;
            let n = shape.batch * channels * size * size;
            let px = (0..n).map(|_| rng.normal()).collect();
            inputs.insert(
                "pixel_values".into(),
                HostTensor::f32(vec![shape.batch, channels, size, size], px)?,
            );
        }
        other => {
            return Err(Error::NotImplemented {
                platform: "bench".to_string(),
                reason: format!("`hwcov bench` makes no inputs for {} models yet", other.name()),
            });
        }
    }
    Ok(inputs)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Loads the model, runs `warmup` untimed and `iterations` timed forward passes (host tensors in,
/// host tensors out: what a user of the Handler gets), and summarises.
#[allow(clippy::too_many_arguments)]
pub fn bench(
    model_dir: &Path,
    platform: PlatformId,
    opts: &LoadOptions,
    shape: BenchShape,
    warmup: usize,
    iterations: usize,
    decode_tokens: usize,
) -> Result<BenchReport> {
    if iterations == 0 {
        return Err(Error::Usage("--iters must be at least 1".to_string()));
    }
    let files = ModelFiles::open(model_dir)?;
    check_shape(&files, shape, decode_tokens)?;
    let p = platforms::get(platform)?;
    let device = match p.probe() {
        hwcov_core::Availability::Available { device } => device,
        hwcov_core::Availability::Unavailable { reason } => {
            return Err(Error::Unavailable {
                platform: platform.to_string(),
                reason,
            });
        }
    };
    let inputs = synthetic_inputs(&files, shape)?;
    let started = Instant::now();
    let mut handler = p.load(&files, opts)?;
    let load_seconds = started.elapsed().as_secs_f64();
    let memory_after_load_bytes = p.memory_in_use(opts.device_index);
    // Generative models are timed through their decoder: the prompt in, the next-token logits out
    // (forward() would copy the logits of every position back to the host).
    let generative = handler.decoder().is_some();
    let once = |h: &mut Box<dyn hwcov_core::Handler>| -> Result<Option<HostTensor>> {
        match h.decoder() {
            Some(d) => d.start(&inputs).map(Some),
            None => h.forward(&inputs).map(|_| None),
        }
    };
    for _ in 0..warmup {
        once(&mut handler)?;
    }
    // Bounded: the count is the user's, and reserving it all at once could fail.
    let mut times = Vec::with_capacity(iterations.min(1 << 20));
    let dispatched_before = handler.dispatches();
    for _ in 0..iterations {
        let t = Instant::now();
        once(&mut handler)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let dispatches_per_pass = handler
        .dispatches()
        .zip(dispatched_before)
        .map(|(after, before)| (after - before) as f64 / iterations as f64);
    let decode = if decode_tokens > 0 {
        let mut logits = once(&mut handler)?.ok_or_else(|| {
            Error::Usage(format!(
                "--decode needs a generative model; {} is not one",
                files.class.name()
            ))
        })?;
        let before = handler.dispatches();
        let decoder = handler
            .decoder()
            .ok_or_else(|| Error::Usage("the model has no decoder".to_string()))?;
        let mut steps = Vec::with_capacity(decode_tokens.min(1 << 20));
        for _ in 0..decode_tokens {
            let next = argmax_rows(&logits);
            let t = Instant::now();
            logits = decoder.step(&next)?;
            steps.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let dispatches_per_token = handler
            .dispatches()
            .zip(before)
            .map(|(after, before)| (after - before) as f64 / decode_tokens as f64);
        let st = stats(&steps);
        Some(DecodeReport {
            new_tokens: decode_tokens,
            tokens_per_s: shape.batch as f64 * 1e3 / st.mean,
            ms_per_token_mean: st.mean,
            ms_per_token_p50: st.p50,
            ms_per_token_p90: st.p90,
            ms_per_token_p99: st.p99,
            dispatches_per_token,
        })
    } else {
        None
    };
    let memory_after_run_bytes = p.memory_in_use(opts.device_index);
    let peak_memory_bytes = p.peak_memory(opts.device_index);
    let st = stats(&times);
    let text = matches!(
        files.class,
        ModelClass::Bert | ModelClass::Llama | ModelClass::Qwen2 | ModelClass::Qwen3 | ModelClass::Opt
    );
    Ok(BenchReport {
        model_dir: model_dir.display().to_string(),
        model_type: files.class.model_type().to_string(),
        platform,
        device,
        precision: opts.precision.to_string(),
        precision_pinned: opts.pin_precision,
        batch: shape.batch,
        seq: text.then_some(shape.seq),
        warmup,
        iterations,
        load_seconds,
        mean_ms: st.mean,
        p50_ms: st.p50,
        p90_ms: st.p90,
        p99_ms: st.p99,
        stdev_ms: st.stdev,
        throughput_per_s: shape.batch as f64 / (st.mean / 1e3),
        memory_after_load_bytes,
        memory_after_run_bytes,
        peak_memory_bytes,
        pass: if generative { "prefill" } else { "forward" }.to_string(),
        decode,
        dispatches_per_pass,
    })
}
