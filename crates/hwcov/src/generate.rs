//! Generation, written once above the Handler for every generative class (decoder-only LMs,
//! encoder-decoders, and later vision- or audio-conditioned decoders): the loop of transformers'
//! `generate()` with greedy decoding or sampling, its logits processors, stopping on EOS or length,
//! and padding of the rows that finished. The model side is a [`Decoder`] (start, then one step per
//! token, with its own KV cache).

pub mod whisper;

use std::path::{Path, PathBuf};

use hwcov_core::error::read_json;
use hwcov_core::{Decoder, Error, HostTensor, ModelFiles, NamedTensors, Result};
use serde_json::Value;

/// The generation settings of a model folder: `generation_config.json`, each special token falling
/// back to config.json (and its `text_config`) as transformers fills them in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationConfig {
    /// Where the settings came from (for error messages).
    pub path: PathBuf,
    pub is_encoder_decoder: bool,
    /// Every id that ends a row.
    pub eos_token_id: Vec<u32>,
    /// What finished rows are filled with; the first EOS id when unset.
    pub pad_token_id: Option<u32>,
    pub bos_token_id: Option<u32>,
    pub decoder_start_token_id: Option<u32>,
    pub max_new_tokens: Option<usize>,
    pub max_length: Option<usize>,
    pub min_length: usize,
    pub min_new_tokens: usize,
    pub repetition_penalty: Option<f32>,
    pub no_repeat_ngram_size: usize,
    pub forced_bos_token_id: Option<u32>,
    pub forced_eos_token_id: Vec<u32>,
    pub suppress_tokens: Vec<u32>,
    pub begin_suppress_tokens: Vec<u32>,
    pub do_sample: bool,
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    /// Settings that change what `generate()` returns but that this loop does not implement
    /// (beam search, sequence bias, ...), as `field = value`.
    pub unsupported: Vec<(String, String)>,
}

/// Reads an id or a list of ids (`eos_token_id: 2` or `[2, 7]`); null is none.
fn ids(path: &Path, field: &str, v: &Value) -> Result<Vec<u32>> {
    let one = |x: &Value| {
        x.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| Error::config(path, field, format!("expected a token id, got {x}")))
    };
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(a) => a.iter().map(one).collect(),
        x => Ok(vec![one(x)?]),
    }
}

impl GenerationConfig {
    /// The generation settings of a model folder.
    pub fn from_model(files: &ModelFiles) -> Result<Self> {
        let gen_path = files.file("generation_config.json");
        let gen_json = if gen_path.is_file() {
            let v = read_json(&gen_path)?;
            if !v.is_object() {
                return Err(Error::format(&gen_path, "must hold a JSON object"));
            }
            Some(v)
        } else {
            None
        };
        let model = &files.config;
        let text = model.get("text_config");
        // A special token: generation_config.json, else config.json, else its text_config.
        let special = |name: &str| -> Result<(Vec<u32>, PathBuf)> {
            if let Some(g) = &gen_json
                && let Some(v) = g.get(name)
                && !v.is_null()
            {
                return Ok((ids(&gen_path, name, v)?, gen_path.clone()));
            }
            for c in [Some(model), text].into_iter().flatten() {
                if let Some(v) = c.get(name)
                    && !v.is_null()
                {
                    return Ok((ids(&files.config_path, name, v)?, files.config_path.clone()));
                }
            }
            Ok((Vec::new(), files.config_path.clone()))
        };
        let single = |name: &str| -> Result<Option<u32>> {
            let (v, path) = special(name)?;
            match v.as_slice() {
                [] => Ok(None),
                [x] => Ok(Some(*x)),
                _ => Err(Error::config(path, name, "expected one token id, got a list")),
            }
        };
        let path = if gen_json.is_some() {
            gen_path.clone()
        } else {
            files.config_path.clone()
        };
        let empty = serde_json::Map::new();
        let g = gen_json.as_ref().and_then(|g| g.as_object()).unwrap_or(&empty);
        let get = |name: &str| g.get(name).filter(|v| !v.is_null());
        let usize_field = |name: &str| -> Result<Option<usize>> {
            match get(name) {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(|n| Some(n as usize))
                    .ok_or_else(|| Error::config(&gen_path, name, format!("expected a count, got {v}"))),
            }
        };
        let f32_field = |name: &str| -> Result<Option<f32>> {
            match get(name) {
                None => Ok(None),
                Some(v) => v
                    .as_f64()
                    .map(|n| Some(n as f32))
                    .ok_or_else(|| Error::config(&gen_path, name, format!("expected a number, got {v}"))),
            }
        };
        let id_list = |name: &str| -> Result<Vec<u32>> {
            match get(name) {
                None => Ok(Vec::new()),
                Some(v) => ids(&gen_path, name, v),
            }
        };
        let mut unsupported = Vec::new();
        for (name, is_default) in [
            (
                "num_beams",
                &(|v: &Value| v.as_u64() == Some(1)) as &dyn Fn(&Value) -> bool,
            ),
            ("num_beam_groups", &|v: &Value| v.as_u64() == Some(1)),
            ("penalty_alpha", &|_: &Value| false),
            ("sequence_bias", &|_: &Value| false),
            ("bad_words_ids", &|_: &Value| false),
            ("force_words_ids", &|_: &Value| false),
            ("encoder_repetition_penalty", &|v: &Value| v.as_f64() == Some(1.0)),
            ("encoder_no_repeat_ngram_size", &|v: &Value| v.as_u64() == Some(0)),
            ("exponential_decay_length_penalty", &|_: &Value| false),
            ("guidance_scale", &|v: &Value| v.as_f64() == Some(1.0)),
            ("forced_decoder_ids", &|_: &Value| false),
            ("renormalize_logits", &|v: &Value| v.as_bool() == Some(false)),
            ("remove_invalid_values", &|v: &Value| v.as_bool() == Some(false)),
            ("num_return_sequences", &|v: &Value| v.as_u64() == Some(1)),
            ("assistant_model", &|_: &Value| false),
            ("prompt_lookup_num_tokens", &|_: &Value| false),
        ] {
            if let Some(v) = get(name)
                && !is_default(v)
            {
                unsupported.push((name.to_string(), v.to_string()));
            }
        }
        let is_encoder_decoder = model
            .get("is_encoder_decoder")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        Ok(GenerationConfig {
            path,
            is_encoder_decoder,
            eos_token_id: special("eos_token_id")?.0,
            pad_token_id: single("pad_token_id")?,
            bos_token_id: single("bos_token_id")?,
            decoder_start_token_id: single("decoder_start_token_id")?,
            max_new_tokens: usize_field("max_new_tokens")?,
            max_length: usize_field("max_length")?,
            min_length: usize_field("min_length")?.unwrap_or(0),
            min_new_tokens: usize_field("min_new_tokens")?.unwrap_or(0),
            repetition_penalty: f32_field("repetition_penalty")?.filter(|&p| p != 1.0),
            no_repeat_ngram_size: usize_field("no_repeat_ngram_size")?.unwrap_or(0),
            forced_bos_token_id: match get("forced_bos_token_id") {
                None => None,
                Some(v) => ids(&gen_path, "forced_bos_token_id", v)?.first().copied(),
            },
            forced_eos_token_id: id_list("forced_eos_token_id")?,
            suppress_tokens: id_list("suppress_tokens")?,
            begin_suppress_tokens: id_list("begin_suppress_tokens")?,
            do_sample: get("do_sample").and_then(|v| v.as_bool()).unwrap_or(false),
            temperature: f32_field("temperature")?,
            top_k: usize_field("top_k")?,
            top_p: f32_field("top_p")?,
            unsupported,
        })
    }

    /// The pad id of finished rows: `pad_token_id`, else the first EOS id (as transformers warns
    /// and does).
    pub fn pad(&self) -> Option<u32> {
        self.pad_token_id.or(self.eos_token_id.first().copied())
    }
}

/// Sampling settings; `None` in [`GenerateOptions`] means greedy decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// Divides the logits (1.0: unchanged).
    pub temperature: f32,
    /// Keep the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches top_p (1.0: all).
    pub top_p: f32,
    /// The random seed: the same seed, model and prompt give the same text.
    pub seed: u64,
}

impl Sampling {
    /// transformers' defaults for what the generation config leaves unset (temperature 1.0,
    /// top_k 50, top_p 1.0).
    pub fn from_config(config: &GenerationConfig, seed: u64) -> Self {
        Sampling {
            temperature: config.temperature.unwrap_or(1.0),
            top_k: config.top_k.unwrap_or(50),
            top_p: config.top_p.unwrap_or(1.0),
            seed,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct GenerateOptions {
    /// The most new tokens per row.
    pub max_new_tokens: usize,
    /// Greedy when `None`.
    pub sampling: Option<Sampling>,
    /// Fail on generation settings this loop does not implement (verify); otherwise they are
    /// reported in [`Generation::ignored`].
    pub strict: bool,
}

/// Why a row stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// It produced an EOS token.
    Eos,
    /// It reached the most new tokens asked for.
    MaxNewTokens,
    /// It reached the most positions the model can hold.
    MaxPositions,
}

/// What [`generate`] returns.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Per row: the prompt (decoder prompt for encoder-decoders) and the new tokens, finished rows
    /// padded with the pad id, as `generate()` returns them.
    pub sequences: Vec<Vec<u32>>,
    /// The length of the prompt part of each sequence.
    pub prompt_len: usize,
    /// Per row, the number of new tokens up to and including its EOS.
    pub new_tokens: Vec<usize>,
    pub stop: Vec<StopReason>,
    /// Settings of the generation config that this loop left out (when not strict).
    pub ignored: Vec<(String, String)>,
}

impl Generation {
    /// The sequences as one (batch, length) i64 tensor, as transformers returns them.
    pub fn to_tensor(&self) -> Result<HostTensor> {
        let len = self.sequences.first().map(|s| s.len()).unwrap_or(0);
        let values = self.sequences.iter().flatten().map(|&t| t as i64).collect();
        HostTensor::i64(vec![self.sequences.len(), len], values)
    }
}

/// A small, seedable random generator (SplitMix64) for sampling.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Reads a (batch, seq) integer input as rows.
fn rows_of(inputs: &NamedTensors, name: &str) -> Result<Vec<Vec<u32>>> {
    let t = inputs
        .get(name)
        .ok_or_else(|| Error::tensor(name, "missing input: generation needs a prompt"))?;
    let [b, l] = t.shape() else {
        return Err(Error::tensor(
            name,
            format!("has shape {:?}; a rank-2 tensor is needed", t.shape()),
        ));
    };
    let values = t
        .to_i64_vec()
        .ok_or_else(|| Error::tensor(name, format!("dtype {} where an integer tensor is needed", t.dtype())))?;
    let values = values
        .into_iter()
        .map(|v| u32::try_from(v).map_err(|_| Error::tensor(name, format!("value {v} is not a valid token id"))))
        .collect::<Result<Vec<u32>>>()?;
    Ok((0..*b).map(|i| values[i * l..(i + 1) * l].to_vec()).collect())
}

/// Generates from `inputs` (the model's forward arguments: `input_ids` and `attention_mask` for a
/// decoder-only LM, plus pixel or audio features for conditioned ones). Encoder-decoders decode
/// from `decoder_input_ids` when the caller gives them (forced prompts), else from
/// `decoder_start_token_id`.
pub fn generate(
    decoder: &mut dyn Decoder,
    inputs: &NamedTensors,
    config: &GenerationConfig,
    opts: &GenerateOptions,
) -> Result<Generation> {
    if opts.strict
        && let Some((field, value)) = config.unsupported.first()
    {
        return Err(Error::config(
            &config.path,
            field,
            format!(
                "{value} is not supported by hwcov's generation loop (greedy or sampling, one sequence per prompt)"
            ),
        ));
    }
    let mut start_inputs = inputs.clone();
    let mut sequences = if config.is_encoder_decoder {
        if inputs.contains_key("decoder_input_ids") {
            rows_of(inputs, "decoder_input_ids")?
        } else {
            let start = config.decoder_start_token_id.or(config.bos_token_id).ok_or_else(|| {
                Error::config(
                    &config.path,
                    "decoder_start_token_id",
                    "missing (and no bos_token_id): an encoder-decoder needs the token its decoder starts from",
                )
            })?;
            let batch = rows_of(inputs, "input_ids").map(|r| r.len()).or_else(|_| {
                inputs
                    .values()
                    .next()
                    .map(|t| t.shape()[0])
                    .ok_or_else(|| Error::tensor("input_ids", "missing input"))
            })?;
            let start_ids = HostTensor::i64(vec![batch, 1], vec![start as i64; batch])?;
            start_inputs.insert("decoder_input_ids".into(), start_ids);
            vec![vec![start]; batch]
        }
    } else {
        rows_of(inputs, "input_ids")?
    };
    let batch = sequences.len();
    let prompt_len = sequences.first().map(|s| s.len()).unwrap_or(0);
    if batch == 0 || prompt_len == 0 {
        return Err(Error::tensor(
            if config.is_encoder_decoder {
                "decoder_input_ids"
            } else {
                "input_ids"
            },
            "is empty: there is no prompt to continue",
        ));
    }
    let pad = config.pad();
    let mut unfinished = vec![true; batch];
    let mut new_tokens = vec![0usize; batch];
    let mut stop = vec![StopReason::MaxNewTokens; batch];
    let ignored = if opts.strict {
        Vec::new()
    } else {
        config.unsupported.clone()
    };
    let done = |sequences, new_tokens, stop| Generation {
        sequences,
        prompt_len,
        new_tokens,
        stop,
        ignored: ignored.clone(),
    };
    if opts.max_new_tokens == 0 {
        return Ok(done(sequences, new_tokens, stop));
    }
    // Saturating: a limit near usize::MAX means no limit, never a wrapped one.
    let max_length = prompt_len.saturating_add(opts.max_new_tokens);
    let max_positions = decoder.max_positions();
    if let Some(max) = max_positions
        && prompt_len >= max
    {
        let stop = vec![StopReason::MaxPositions; batch];
        return Ok(done(sequences, new_tokens, stop));
    }
    let mut rng = opts.sampling.as_ref().map(|s| Rng(s.seed));
    let mut logits = decoder.start(&start_inputs)?;
    loop {
        let cur_len = sequences[0].len();
        let mut scores = logits_rows(&logits, batch)?;
        for (row, seq) in scores.iter_mut().zip(&sequences) {
            process(row, seq, cur_len, prompt_len, max_length, config);
        }
        let mut next = Vec::with_capacity(batch);
        for (i, row) in scores.iter_mut().enumerate() {
            let token = match (&opts.sampling, rng.as_mut()) {
                (Some(s), Some(rng)) => sample(row, s, rng),
                _ => argmax(row),
            };
            let token = if unfinished[i] {
                new_tokens[i] += 1;
                token
            } else {
                // transformers requires a pad id once a row can finish before the others.
                pad.ok_or_else(|| {
                    Error::config(
                        &config.path,
                        "pad_token_id",
                        "missing (and no eos_token_id): finished rows need a pad id",
                    )
                })?
            };
            next.push(token);
        }
        for (i, (&t, seq)) in next.iter().zip(sequences.iter_mut()).enumerate() {
            seq.push(t);
            if unfinished[i] && config.eos_token_id.contains(&t) {
                unfinished[i] = false;
                stop[i] = StopReason::Eos;
            }
        }
        let cur_len = cur_len + 1;
        if !unfinished.iter().any(|&u| u) || cur_len >= max_length {
            break;
        }
        if let Some(max) = max_positions
            && cur_len >= max
        {
            for (s, &u) in stop.iter_mut().zip(&unfinished) {
                if u {
                    *s = StopReason::MaxPositions;
                }
            }
            break;
        }
        logits = decoder.step(&next)?;
    }
    Ok(done(sequences, new_tokens, stop))
}

fn logits_rows(logits: &HostTensor, batch: usize) -> Result<Vec<Vec<f32>>> {
    let [b, v] = logits.shape() else {
        return Err(Error::tensor(
            "logits",
            format!(
                "the decoder returned shape {:?}; (batch, vocab) is needed",
                logits.shape()
            ),
        ));
    };
    if *b != batch || *v == 0 {
        return Err(Error::tensor(
            "logits",
            format!("the decoder returned shape {:?} for a batch of {batch}", logits.shape()),
        ));
    }
    let values: Vec<f32> = logits.to_f64_vec().into_iter().map(|x| x as f32).collect();
    Ok(values.chunks(*v).map(|c| c.to_vec()).collect())
}

/// The logits processors of `_get_logits_processor` that the config turns on, in its order.
fn process(
    scores: &mut [f32],
    seq: &[u32],
    cur_len: usize,
    prompt_len: usize,
    max_length: usize,
    config: &GenerationConfig,
) {
    let ninf = f32::NEG_INFINITY;
    let vocab = scores.len();
    let set = |scores: &mut [f32], id: u32, v: f32| {
        if (id as usize) < vocab {
            scores[id as usize] = v;
        }
    };
    if let Some(p) = config.repetition_penalty {
        let mut seen = vec![false; vocab];
        for &t in seq {
            if (t as usize) < vocab {
                seen[t as usize] = true;
            }
        }
        for (s, _) in scores.iter_mut().zip(&seen).filter(|(_, seen)| **seen) {
            *s = if *s < 0.0 { *s * p } else { *s / p };
        }
    }
    let n = config.no_repeat_ngram_size;
    if n > 0 && cur_len + 1 >= n {
        // Tokens that would repeat an n-gram already in the sequence.
        let prefix = &seq[cur_len + 1 - n..];
        for w in seq.windows(n) {
            if &w[..n - 1] == prefix {
                set(scores, w[n - 1], ninf);
            }
        }
    }
    if cur_len < config.min_length {
        for &e in &config.eos_token_id {
            set(scores, e, ninf);
        }
    }
    if cur_len - prompt_len < config.min_new_tokens {
        for &e in &config.eos_token_id {
            set(scores, e, ninf);
        }
    }
    if let Some(bos) = config.forced_bos_token_id
        && cur_len == 1
    {
        scores.iter_mut().for_each(|s| *s = ninf);
        set(scores, bos, 0.0);
    }
    if !config.forced_eos_token_id.is_empty() && cur_len == max_length - 1 {
        scores.iter_mut().for_each(|s| *s = ninf);
        for &e in &config.forced_eos_token_id {
            set(scores, e, 0.0);
        }
    }
    for &t in &config.suppress_tokens {
        set(scores, t, ninf);
    }
    if !config.begin_suppress_tokens.is_empty() {
        let begin_index = if prompt_len > 1 || config.forced_bos_token_id.is_none() {
            prompt_len
        } else {
            prompt_len + 1
        };
        if cur_len == begin_index {
            for &t in &config.begin_suppress_tokens {
                set(scores, t, ninf);
            }
        }
    }
}

/// The first index of the largest score, as `torch.argmax`.
fn argmax(scores: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s > scores[best] || (scores[best].is_nan() && !s.is_nan()) {
            best = i;
        }
    }
    best as u32
}

/// Temperature, top-k and top-p (transformers' warpers, in that order), then a draw from the
/// softmax.
fn sample(scores: &mut [f32], s: &Sampling, rng: &mut Rng) -> u32 {
    let ninf = f32::NEG_INFINITY;
    if s.temperature > 0.0 && s.temperature != 1.0 {
        scores.iter_mut().for_each(|x| *x /= s.temperature);
    }
    if s.top_k > 0 && s.top_k < scores.len() {
        let mut sorted: Vec<f32> = scores.to_vec();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let kth = sorted[s.top_k - 1];
        scores.iter_mut().filter(|x| **x < kth).for_each(|x| *x = ninf);
    }
    if s.top_p < 1.0 {
        let probs = softmax(scores);
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| probs[a].total_cmp(&probs[b]));
        // Remove the least likely tokens whose cumulative probability stays within 1 - top_p,
        // keeping at least the most likely one.
        let mut cum = 0.0f32;
        for (rank, &i) in order.iter().enumerate() {
            cum += probs[i];
            if cum <= 1.0 - s.top_p && rank + 1 < order.len() {
                scores[i] = ninf;
            }
        }
    }
    let probs = softmax(scores);
    let r = rng.next_f64() as f32;
    let mut cum = 0.0f32;
    let mut last = argmax(scores);
    for (i, &p) in probs.iter().enumerate() {
        if p > 0.0 {
            last = i as u32;
            cum += p;
            if r < cum {
                return i as u32;
            }
        }
    }
    last
}

fn softmax(scores: &[f32]) -> Vec<f32> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = scores.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decoder whose next-token logits are fixed per step, so the loop's own behaviour shows.
    struct Scripted {
        /// Per step, the token each row prefers.
        steps: Vec<Vec<u32>>,
        vocab: usize,
        at: usize,
        fed: Vec<Vec<u32>>,
        max: Option<usize>,
    }

    impl Scripted {
        fn logits(&self) -> HostTensor {
            let rows = &self.steps[self.at.min(self.steps.len() - 1)];
            let mut v = vec![0f32; rows.len() * self.vocab];
            for (i, &t) in rows.iter().enumerate() {
                v[i * self.vocab + t as usize] = 1.0;
                // A runner-up, so that suppressing the favourite has a visible effect.
                v[i * self.vocab + (t as usize + 1) % self.vocab] = 0.5;
            }
            HostTensor::f32(vec![rows.len(), self.vocab], v).unwrap()
        }
    }

    impl Decoder for Scripted {
        fn start(&mut self, _inputs: &NamedTensors) -> Result<HostTensor> {
            self.at = 0;
            Ok(self.logits())
        }
        fn step(&mut self, tokens: &[u32]) -> Result<HostTensor> {
            self.fed.push(tokens.to_vec());
            self.at += 1;
            Ok(self.logits())
        }
        fn max_positions(&self) -> Option<usize> {
            self.max
        }
    }

    fn prompt(rows: &[&[i64]]) -> NamedTensors {
        let l = rows[0].len();
        let mut t = NamedTensors::new();
        t.insert(
            "input_ids".into(),
            HostTensor::i64(vec![rows.len(), l], rows.concat()).unwrap(),
        );
        t
    }

    fn config(eos: &[u32], pad: Option<u32>) -> GenerationConfig {
        GenerationConfig {
            eos_token_id: eos.to_vec(),
            pad_token_id: pad,
            ..Default::default()
        }
    }

    fn opts(n: usize) -> GenerateOptions {
        GenerateOptions {
            max_new_tokens: n,
            ..Default::default()
        }
    }

    #[test]
    fn rows_that_finish_get_the_pad_id_and_the_loop_stops_when_all_have() {
        let mut d = Scripted {
            steps: vec![vec![4, 5], vec![9, 6], vec![7, 9], vec![8, 8]],
            vocab: 10,
            at: 0,
            fed: Vec::new(),
            max: None,
        };
        let g = generate(&mut d, &prompt(&[&[1, 2], &[0, 3]]), &config(&[9], Some(0)), &opts(10)).unwrap();
        assert_eq!(g.sequences, vec![vec![1, 2, 4, 9, 0], vec![0, 3, 5, 6, 9]]);
        assert_eq!(g.stop, vec![StopReason::Eos, StopReason::Eos]);
        assert_eq!(g.new_tokens, vec![2, 3]);
        assert_eq!(g.prompt_len, 2);
        // The last token is never fed back: the loop stops as soon as every row is done.
        assert_eq!(d.fed, vec![vec![4, 5], vec![9, 6]]);
    }

    #[test]
    fn max_new_tokens_and_max_positions_stop_the_loop() {
        let mut d = Scripted {
            steps: vec![vec![3]],
            vocab: 10,
            at: 0,
            fed: Vec::new(),
            max: None,
        };
        let g = generate(&mut d, &prompt(&[&[1]]), &config(&[9], None), &opts(4)).unwrap();
        assert_eq!(g.sequences, vec![vec![1, 3, 3, 3, 3]]);
        assert_eq!(g.stop, vec![StopReason::MaxNewTokens]);
        d.max = Some(3);
        let g = generate(&mut d, &prompt(&[&[1]]), &config(&[9], None), &opts(4)).unwrap();
        assert_eq!(g.sequences, vec![vec![1, 3, 3]]);
        assert_eq!(g.stop, vec![StopReason::MaxPositions]);
        let g = generate(&mut d, &prompt(&[&[1]]), &config(&[9], None), &opts(0)).unwrap();
        assert_eq!(g.sequences, vec![vec![1]]);
    }

    #[test]
    fn processors_suppress_and_force_tokens() {
        let mut d = Scripted {
            steps: vec![vec![3]],
            vocab: 10,
            at: 0,
            fed: Vec::new(),
            max: None,
        };
        let mut c = config(&[3], None);
        c.begin_suppress_tokens = vec![3];
        c.suppress_tokens = vec![5];
        c.forced_eos_token_id = vec![7];
        // Step 1: 3 is suppressed at the beginning, so the runner-up 4 wins; step 2: 3 is EOS.
        let g = generate(&mut d, &prompt(&[&[1]]), &c, &opts(5)).unwrap();
        assert_eq!(g.sequences, vec![vec![1, 4, 3]]);
        c.min_new_tokens = 3;
        // EOS is banned for three tokens, then the forced EOS at max_length - 1.
        let g = generate(&mut d, &prompt(&[&[1]]), &c, &opts(4)).unwrap();
        assert_eq!(g.sequences, vec![vec![1, 4, 4, 4, 7]]);
        c.repetition_penalty = Some(3.0);
        c.min_new_tokens = 0;
        c.begin_suppress_tokens.clear();
        c.eos_token_id = vec![9];
        c.forced_eos_token_id.clear();
        // 3 (score 1.0) once generated is divided by 3 and loses to 4 (0.5), until 4 is penalised too.
        let g = generate(&mut d, &prompt(&[&[1]]), &c, &opts(3)).unwrap();
        assert_eq!(g.sequences, vec![vec![1, 3, 4, 3]]);
    }

    #[test]
    fn sampling_is_reproducible_with_a_seed() {
        let mut d = Scripted {
            steps: vec![vec![3]],
            vocab: 10,
            at: 0,
            fed: Vec::new(),
            max: None,
        };
        let o = GenerateOptions {
            max_new_tokens: 12,
            sampling: Some(Sampling {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                seed: 7,
            }),
            strict: false,
        };
        let a = generate(&mut d, &prompt(&[&[1]]), &config(&[], None), &o).unwrap();
        let b = generate(&mut d, &prompt(&[&[1]]), &config(&[], None), &o).unwrap();
        assert_eq!(a.sequences, b.sequences);
        assert!(a.sequences[0][1..].iter().any(|&t| t != 3), "{:?}", a.sequences);
        // top_k 1 is greedy.
        let mut o1 = o.clone();
        o1.sampling.as_mut().unwrap().top_k = 1;
        let g = generate(&mut d, &prompt(&[&[1]]), &config(&[], None), &o1).unwrap();
        assert!(g.sequences[0][1..].iter().all(|&t| t == 3));
    }

    #[test]
    fn encoder_decoders_start_from_the_decoder_start_token() {
        let mut d = Scripted {
            steps: vec![vec![2, 2]],
            vocab: 10,
            at: 0,
            fed: Vec::new(),
            max: None,
        };
        let mut c = config(&[2], Some(0));
        c.is_encoder_decoder = true;
        c.decoder_start_token_id = Some(0);
        let g = generate(&mut d, &prompt(&[&[5, 6, 7], &[5, 1, 0]]), &c, &opts(4)).unwrap();
        assert_eq!(g.sequences, vec![vec![0, 2], vec![0, 2]]);
        assert_eq!(g.prompt_len, 1);
        c.decoder_start_token_id = None;
        let err = generate(&mut d, &prompt(&[&[5]]), &c, &opts(4))
            .unwrap_err()
            .to_string();
        assert!(err.contains("decoder_start_token_id"), "{err}");
    }

    #[test]
    fn strict_mode_rejects_beam_search() {
        let mut d = Scripted {
            steps: vec![vec![3]],
            vocab: 10,
            at: 0,
            fed: Vec::new(),
            max: None,
        };
        let mut c = config(&[9], None);
        c.path = PathBuf::from("generation_config.json");
        c.unsupported = vec![("num_beams".into(), "4".into())];
        let mut o = opts(2);
        o.strict = true;
        let err = generate(&mut d, &prompt(&[&[1]]), &c, &o).unwrap_err().to_string();
        assert!(
            err.contains("generation_config.json") && err.contains("num_beams"),
            "{err}"
        );
        o.strict = false;
        let g = generate(&mut d, &prompt(&[&[1]]), &c, &o).unwrap();
        assert_eq!(g.ignored.len(), 1);
    }
}
