//! What transformers' `WhisperForConditionalGeneration.generate` (models/whisper/generation_whisper.py)
//! adds around the shared loop, for one window of input features with timestamps off:
//!
//! - the decoder prompt (`_retrieve_init_tokens`): `<|startoftranscript|>`, the language, the task and
//!   `<|notimestamps|>`, from the caller's language and task, else generation_config.json's
//!   `language`, `task` or `forced_decoder_ids`, with `lang_to_id`, `task_to_id`,
//!   `no_timestamps_token_id` and `is_multilingual`;
//! - language detection (`detect_language`) where the prompt leaves the language open in a
//!   multilingual model: the most likely language token after `<|startoftranscript|>`, per row;
//! - the number of new tokens (`_set_max_new_tokens_and_length`);
//! - what it returns: per row the new tokens, without the prompt and without the final
//!   `<|endoftext|>`, rows padded at the right with the pad id to the longest.
//!
//! The tokens come from [`super::generate`] with the config's `suppress_tokens` and
//! `begin_suppress_tokens`, greedy: Whisper's generate samples only when given a temperature.
//! Timestamp prediction and long-form decoding (timestamps, temperature fallback, no-speech
//! detection) are not implemented; settings that ask for them are reported as unsupported.

use std::collections::BTreeMap;
use std::path::PathBuf;

use hwcov_core::error::read_json;
use hwcov_core::{Decoder, Error, HostTensor, ModelFiles, NamedTensors, Result};
use serde_json::Value;

use super::{GenerateOptions, GenerationConfig, StopReason, generate as generate_loop};

/// The two tasks of Whisper (`TASK_IDS`).
pub const TASKS: [&str; 2] = ["translate", "transcribe"];

/// `LANGUAGES` of transformers' tokenization_whisper.py: code and English name.
#[rustfmt::skip]
pub const LANGUAGES: [(&str, &str); 100] = [
    ("en", "english"), ("zh", "chinese"), ("de", "german"), ("es", "spanish"), ("ru", "russian"),
    ("ko", "korean"), ("fr", "french"), ("ja", "japanese"), ("pt", "portuguese"), ("tr", "turkish"),
    ("pl", "polish"), ("ca", "catalan"), ("nl", "dutch"), ("ar", "arabic"), ("sv", "swedish"),
    ("it", "italian"), ("id", "indonesian"), ("hi", "hindi"), ("fi", "finnish"), ("vi", "vietnamese"),
    ("he", "hebrew"), ("uk", "ukrainian"), ("el", "greek"), ("ms", "malay"), ("cs", "czech"),
    ("ro", "romanian"), ("da", "danish"), ("hu", "hungarian"), ("ta", "tamil"), ("no", "norwegian"),
    ("th", "thai"), ("ur", "urdu"), ("hr", "croatian"), ("bg", "bulgarian"), ("lt", "lithuanian"),
    ("la", "latin"), ("mi", "maori"), ("ml", "malayalam"), ("cy", "welsh"), ("sk", "slovak"),
    ("te", "telugu"), ("fa", "persian"), ("lv", "latvian"), ("bn", "bengali"), ("sr", "serbian"),
    ("az", "azerbaijani"), ("sl", "slovenian"), ("kn", "kannada"), ("et", "estonian"), ("mk", "macedonian"),
    ("br", "breton"), ("eu", "basque"), ("is", "icelandic"), ("hy", "armenian"), ("ne", "nepali"),
    ("mn", "mongolian"), ("bs", "bosnian"), ("kk", "kazakh"), ("sq", "albanian"), ("sw", "swahili"),
    ("gl", "galician"), ("mr", "marathi"), ("pa", "punjabi"), ("si", "sinhala"), ("km", "khmer"),
    ("sn", "shona"), ("yo", "yoruba"), ("so", "somali"), ("af", "afrikaans"), ("oc", "occitan"),
    ("ka", "georgian"), ("be", "belarusian"), ("tg", "tajik"), ("sd", "sindhi"), ("gu", "gujarati"),
    ("am", "amharic"), ("yi", "yiddish"), ("lo", "lao"), ("uz", "uzbek"), ("fo", "faroese"),
    ("ht", "haitian creole"), ("ps", "pashto"), ("tk", "turkmen"), ("nn", "nynorsk"), ("mt", "maltese"),
    ("sa", "sanskrit"), ("lb", "luxembourgish"), ("my", "myanmar"), ("bo", "tibetan"), ("tl", "tagalog"),
    ("mg", "malagasy"), ("as", "assamese"), ("tt", "tatar"), ("haw", "hawaiian"), ("ln", "lingala"),
    ("ha", "hausa"), ("ba", "bashkir"), ("jw", "javanese"), ("su", "sundanese"), ("yue", "cantonese"),
];

/// The other names `TO_LANGUAGE_CODE` knows.
#[rustfmt::skip]
const LANGUAGE_ALIASES: [(&str, &str); 12] = [
    ("burmese", "my"), ("valencian", "ca"), ("flemish", "nl"), ("haitian", "ht"), ("letzeburgesch", "lb"),
    ("pushto", "ps"), ("panjabi", "pa"), ("moldavian", "ro"), ("moldovan", "ro"), ("sinhalese", "si"),
    ("castilian", "es"), ("mandarin", "zh"),
];

/// The language and task asked for (`generate(language=..., task=...)`); `None` leaves them to the
/// generation config (and, for the language, to detection).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WhisperOptions {
    pub language: Option<String>,
    pub task: Option<String>,
}

/// The Whisper settings of a model folder's generation_config.json (and config.json).
#[derive(Debug, Clone, Default)]
pub struct WhisperGenerationConfig {
    /// generation_config.json, or config.json where the folder has none (for error messages).
    pub path: PathBuf,
    pub decoder_start_token_id: Option<u32>,
    pub lang_to_id: Option<BTreeMap<String, u32>>,
    pub task_to_id: Option<BTreeMap<String, u32>>,
    pub no_timestamps_token_id: Option<u32>,
    pub is_multilingual: Option<bool>,
    pub language: Option<String>,
    pub task: Option<String>,
    /// `(position, token)` pairs; a `None` token leaves the position to detection.
    pub forced_decoder_ids: Option<Vec<(u64, Option<u32>)>>,
    /// config.json's `max_target_positions`: the most tokens a decoder row can hold.
    pub max_target_positions: usize,
}

/// A token id of a JSON value, naming the field on error.
fn token(path: &PathBuf, field: &str, v: &Value) -> Result<u32> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| Error::config(path, field, format!("expected a token id, got {v}")))
}

fn id_map(path: &PathBuf, field: &str, v: &Value) -> Result<BTreeMap<String, u32>> {
    let obj = v
        .as_object()
        .ok_or_else(|| Error::config(path, field, format!("expected an object of token ids, got {v}")))?;
    obj.iter()
        .map(|(k, x)| Ok((k.clone(), token(path, &format!("{field}.{k}"), x)?)))
        .collect()
}

fn forced_ids(path: &PathBuf, v: &Value) -> Result<Vec<(u64, Option<u32>)>> {
    let field = "forced_decoder_ids";
    let bad = || {
        Error::config(
            path,
            field,
            format!("expected [[position, token id or null], ...], got {v}"),
        )
    };
    let list = v.as_array().ok_or_else(bad)?;
    list.iter()
        .map(|pair| match pair.as_array().map(|p| p.as_slice()) {
            Some([pos, tok]) => {
                let pos = pos.as_u64().ok_or_else(bad)?;
                let tok = if tok.is_null() {
                    None
                } else {
                    Some(token(path, field, tok)?)
                };
                Ok((pos, tok))
            }
            _ => Err(bad()),
        })
        .collect()
}

impl WhisperGenerationConfig {
    /// Reads the Whisper settings and adjusts the shared `config`: `forced_decoder_ids` become the
    /// prompt here, and the long-form settings that would change what `generate()` returns are added
    /// to its unsupported settings.
    pub fn from_model(files: &ModelFiles, config: &mut GenerationConfig) -> Result<Self> {
        let gen_path = files.file("generation_config.json");
        let gen_json = if gen_path.is_file() {
            read_json(&gen_path)?
        } else {
            Value::Object(Default::default())
        };
        // A file marked as made from the model config keeps, on load, only the fields that
        // GenerationConfig has parameters for: none of the Whisper ones read here.
        let from_model_config = gen_json.get("_from_model_config").and_then(|v| v.as_bool()) == Some(true);
        let get = |name: &str| gen_json.get(name).filter(|v| !v.is_null() && !from_model_config);
        let path = if gen_path.is_file() {
            gen_path.clone()
        } else {
            files.config_path.clone()
        };
        let string = |name: &str| -> Result<Option<String>> {
            match get(name) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(v) => Err(Error::config(&gen_path, name, format!("expected a string, got {v}"))),
            }
        };
        let forced_decoder_ids = match get("forced_decoder_ids") {
            Some(v) => Some(forced_ids(&gen_path, v)?),
            // transformers falls back to config.json's.
            None => match files.config.get("forced_decoder_ids").filter(|v| !v.is_null()) {
                Some(v) => Some(forced_ids(&files.config_path, v)?),
                None => None,
            },
        };
        config.unsupported.retain(|(field, _)| field != "forced_decoder_ids");
        for (field, unsupported) in [
            (
                "return_timestamps",
                &(|v: &Value| v.as_bool() == Some(true)) as &dyn Fn(&Value) -> bool,
            ),
            ("return_token_timestamps", &|v: &Value| v.as_bool() == Some(true)),
            ("no_speech_threshold", &|_: &Value| true),
            ("force_unique_generate_call", &|v: &Value| v.as_bool() == Some(true)),
        ] {
            if let Some(v) = get(field)
                && unsupported(v)
            {
                config.unsupported.push((field.to_string(), v.to_string()));
            }
        }
        let max_target_positions = files
            .config
            .get("max_target_positions")
            .and_then(|v| v.as_u64())
            .unwrap_or(448) as usize;
        Ok(WhisperGenerationConfig {
            path,
            decoder_start_token_id: config.decoder_start_token_id,
            lang_to_id: get("lang_to_id")
                .map(|v| id_map(&gen_path, "lang_to_id", v))
                .transpose()?,
            task_to_id: get("task_to_id")
                .map(|v| id_map(&gen_path, "task_to_id", v))
                .transpose()?,
            no_timestamps_token_id: get("no_timestamps_token_id")
                .map(|v| token(&gen_path, "no_timestamps_token_id", v))
                .transpose()?,
            is_multilingual: get("is_multilingual").and_then(|v| v.as_bool()),
            language: string("language")?,
            task: string("task")?,
            forced_decoder_ids,
            max_target_positions,
        })
    }

    /// The language and task in effect: those asked for, else the config's; checks that the model
    /// can take what was asked for.
    fn resolve<'a>(&'a self, opts: &'a WhisperOptions) -> Result<(Option<&'a str>, Option<&'a str>)> {
        if self.is_multilingual == Some(false) && (opts.language.is_some() || opts.task.is_some()) {
            return Err(Error::config(
                &self.path,
                "is_multilingual",
                "is false: an English-only model takes no language or task",
            ));
        }
        if opts.language.is_some() && self.lang_to_id.is_none() {
            return Err(Error::config(
                &self.path,
                "lang_to_id",
                "missing: the generation config cannot take a language (it predates lang_to_id)",
            ));
        }
        if opts.task.is_some() && self.task_to_id.is_none() {
            return Err(Error::config(
                &self.path,
                "task_to_id",
                "missing: the generation config cannot take a task (it predates task_to_id)",
            ));
        }
        Ok((
            opts.language.as_deref().or(self.language.as_deref()),
            opts.task.as_deref().or(self.task.as_deref()),
        ))
    }

    /// `language_to_id`: a language token (`<|de|>`), code (`de`) or name (`german`).
    pub fn language_to_id(&self, language: &str) -> Result<u32> {
        let lang_to_id = self
            .lang_to_id
            .as_ref()
            .ok_or_else(|| Error::config(&self.path, "lang_to_id", "missing: the model takes no language"))?;
        let lower = language.to_lowercase();
        let token = if lang_to_id.contains_key(&lower) {
            lower.clone()
        } else if let Some((code, _)) = LANGUAGES.iter().find(|(_, name)| *name == lower) {
            format!("<|{code}|>")
        } else if let Some((_, code)) = LANGUAGE_ALIASES.iter().find(|(name, _)| *name == lower) {
            format!("<|{code}|>")
        } else if LANGUAGES.iter().any(|(code, _)| *code == lower) {
            format!("<|{lower}|>")
        } else {
            return Err(Error::Usage(format!(
                "unsupported language `{language}`: give a language code (en, de, ...) or name (english, german, ...) \
                 of Whisper's {} languages",
                LANGUAGES.len()
            )));
        };
        lang_to_id.get(&token).copied().ok_or_else(|| {
            let known: Vec<&str> = lang_to_id.keys().map(String::as_str).collect();
            Error::config(
                &self.path,
                "lang_to_id",
                format!(
                    "has no {token}: this model does not know the language `{language}` (it knows {})",
                    known.join(" ")
                ),
            )
        })
    }

    /// `_retrieve_init_tokens`: the decoder prompt of each of `batch` rows. `detect` is called for
    /// the rows' language when the prompt leaves it open in a multilingual model.
    pub fn init_tokens(
        &self,
        opts: &WhisperOptions,
        batch: usize,
        detect: impl FnOnce() -> Result<Vec<u32>>,
    ) -> Result<Vec<Vec<u32>>> {
        let (language, task) = self.resolve(opts)?;
        let start = self.decoder_start_token_id.ok_or_else(|| {
            Error::config(
                &self.path,
                "decoder_start_token_id",
                "missing: Whisper's prompt starts with it (<|startoftranscript|>)",
            )
        })?;
        let mut init: Vec<Option<u32>> = vec![Some(start)];
        // forced_decoder_ids count only where neither language nor task is set.
        if language.is_none()
            && task.is_none()
            && let Some(forced) = &self.forced_decoder_ids
            && forced.first().map(|f| f.0) == Some(1)
        {
            let mut rest = forced.as_slice();
            let mut i = 1;
            while let Some((pos, tok)) = rest.first()
                && *pos == i
            {
                init.push(*tok);
                rest = &rest[1..];
                i += 1;
            }
            if !rest.is_empty() {
                return Err(Error::config(
                    &self.path,
                    "forced_decoder_ids",
                    format!(
                        "positions must run 1, 2, 3, ... without a gap (position {} follows {})",
                        rest[0].0,
                        i - 1
                    ),
                ));
            }
        }
        let lang_undefined = init.len() <= 1 || init[1].is_none();
        let mut rows = vec![init; batch];
        let lang_ids = match language {
            Some(l) => Some(vec![self.language_to_id(l)?; batch]),
            None if self.lang_to_id.is_some() && lang_undefined => {
                let ids = detect()?;
                if ids.len() != batch {
                    return Err(Error::tensor(
                        "logits",
                        format!("language detection gave {} rows for a batch of {batch}", ids.len()),
                    ));
                }
                Some(ids)
            }
            None => None,
        };
        if let Some(ids) = lang_ids {
            for (row, id) in rows.iter_mut().zip(ids) {
                if row.len() > 1 {
                    row[1] = Some(id);
                } else {
                    row.push(Some(id));
                }
            }
        }
        for row in &mut rows {
            let task_ids = |name: &str| -> Result<(u32, Vec<u32>)> {
                let map = self.task_to_id.as_ref().ok_or_else(|| {
                    Error::config(
                        &self.path,
                        "task_to_id",
                        "missing: the generation config names no task tokens",
                    )
                })?;
                let id = map
                    .get(name)
                    .copied()
                    .ok_or_else(|| Error::config(&self.path, "task_to_id", format!("has no `{name}`")))?;
                Ok((id, map.values().copied().collect()))
            };
            if let Some(task) = task {
                if !TASKS.contains(&task) {
                    return Err(Error::Usage(format!(
                        "unknown task `{task}`: Whisper's tasks are transcribe and translate"
                    )));
                }
                // The task token goes last, and replaces any other task token of the prompt.
                let (id, all) = task_ids(task)?;
                row.push(Some(id));
                for t in row.iter_mut() {
                    if t.is_some_and(|t| all.contains(&t)) {
                        *t = Some(id);
                    }
                }
            } else if language.is_some() && self.task_to_id.is_some() {
                let (id, all) = task_ids("transcribe")?;
                if !row.iter().any(|t| t.is_some_and(|t| all.contains(&t))) {
                    row.push(Some(id));
                }
            }
            // Timestamps are off: the prompt ends with <|notimestamps|>.
            if let Some(nt) = self.no_timestamps_token_id
                && row.last().copied().flatten() != Some(nt)
            {
                row.push(Some(nt));
            }
        }
        Ok(rows.into_iter().map(|r| r.into_iter().flatten().collect()).collect())
    }

    /// `_set_max_new_tokens_and_length`: the new tokens asked for, which must fit the decoder's
    /// positions after the prompt, else the config's `max_length` counted after the prompt, within
    /// the positions.
    pub fn max_new_tokens(
        &self,
        config: &GenerationConfig,
        requested: Option<usize>,
        prompt_len: usize,
    ) -> Result<usize> {
        let max = self.max_target_positions;
        match requested.or(config.max_new_tokens) {
            Some(n) if n + prompt_len > max => Err(Error::Usage(format!(
                "{n} new tokens after a prompt of {prompt_len} exceed the decoder's max_target_positions = {max}; \
                 ask for at most {}",
                max.saturating_sub(prompt_len)
            ))),
            Some(n) => Ok(n),
            None => {
                // generate()'s default max_length is 20.
                let max_length = config.max_length.unwrap_or(20);
                let initial = (max / 2).saturating_sub(1).min(prompt_len);
                Ok((max_length + initial).min(max).saturating_sub(prompt_len))
            }
        }
    }
}

/// `detect_language`: per row, the language token the model finds most likely right after
/// `<|startoftranscript|>` (the first of equal maxima, as `argmax`).
pub fn detect_language(
    decoder: &mut dyn Decoder,
    inputs: &NamedTensors,
    wcfg: &WhisperGenerationConfig,
    batch: usize,
) -> Result<Vec<u32>> {
    let start = wcfg.decoder_start_token_id.ok_or_else(|| {
        Error::config(
            &wcfg.path,
            "decoder_start_token_id",
            "missing: language detection starts from it",
        )
    })?;
    let langs: Vec<u32> = wcfg
        .lang_to_id
        .as_ref()
        .map(|m| {
            let mut v: Vec<u32> = m.values().copied().collect();
            v.sort_unstable();
            v
        })
        .unwrap_or_default();
    if langs.is_empty() {
        return Err(Error::config(
            &wcfg.path,
            "lang_to_id",
            "is empty: no language to detect",
        ));
    }
    let mut start_inputs = features_only(inputs);
    start_inputs.insert(
        "decoder_input_ids".into(),
        HostTensor::i64(vec![batch, 1], vec![start as i64; batch])?,
    );
    let logits = decoder.start(&start_inputs)?;
    let vocab = match logits.shape() {
        [b, v] if *b == batch => *v,
        other => {
            return Err(Error::tensor(
                "logits",
                format!("the decoder returned shape {other:?} for a batch of {batch}"),
            ));
        }
    };
    if let Some(&bad) = langs.iter().find(|&&l| l as usize >= vocab) {
        return Err(Error::config(
            &wcfg.path,
            "lang_to_id",
            format!("holds id {bad}, beyond the model's {vocab} tokens"),
        ));
    }
    let values = logits.to_f64_vec();
    Ok((0..batch)
        .map(|r| {
            let row = &values[r * vocab..(r + 1) * vocab];
            let mut best = langs[0];
            for &l in &langs {
                if row[l as usize] > row[best as usize] {
                    best = l;
                }
            }
            best
        })
        .collect())
}

/// The model inputs without any decoder ones (the prompt is Whisper's own).
fn features_only(inputs: &NamedTensors) -> NamedTensors {
    let mut inputs = inputs.clone();
    inputs.remove("decoder_input_ids");
    inputs.remove("decoder_attention_mask");
    inputs
}

/// The batch size of `input_features`.
fn batch_of(inputs: &NamedTensors) -> Result<usize> {
    inputs
        .get("input_features")
        .and_then(|t| t.shape().first().copied())
        .ok_or_else(|| Error::tensor("input_features", "missing input: Whisper transcribes mel features"))
}

/// The decoder prompt of each row of `inputs` (`input_features`), detecting the language where
/// needed.
pub fn decoder_prompts(
    decoder: &mut dyn Decoder,
    inputs: &NamedTensors,
    wcfg: &WhisperGenerationConfig,
    opts: &WhisperOptions,
) -> Result<Vec<Vec<u32>>> {
    let batch = batch_of(inputs)?;
    wcfg.init_tokens(opts, batch, || detect_language(decoder, inputs, wcfg, batch))
}

/// What [`generate`] returns.
#[derive(Debug, Clone)]
pub struct WhisperGeneration {
    /// The decoder prompt of each row.
    pub prompts: Vec<Vec<u32>>,
    /// Per row, the new tokens as generate() returns them, before the padding: without the final
    /// `<|endoftext|>`.
    pub tokens: Vec<Vec<u32>>,
    pub stop: Vec<StopReason>,
    /// The pad id of the rows shorter than the longest.
    pub pad: u32,
    pub max_new_tokens: usize,
    /// Settings of the generation config left out (when not strict).
    pub ignored: Vec<(String, String)>,
}

impl WhisperGeneration {
    /// The rows padded at the right to the longest: (batch, length) i64, as generate() returns them.
    pub fn to_tensor(&self) -> Result<HostTensor> {
        let len = self.tokens.iter().map(Vec::len).max().unwrap_or(0);
        let mut values = Vec::with_capacity(self.tokens.len() * len);
        for row in &self.tokens {
            values.extend(row.iter().map(|&t| t as i64));
            values.extend(std::iter::repeat_n(self.pad as i64, len - row.len()));
        }
        HostTensor::i64(vec![self.tokens.len(), len], values)
    }
}

/// Generates from `inputs` (`input_features`) after the given decoder prompts (one per row, of one
/// length), greedy, with `max_new_tokens` (None: transformers' default) new tokens at most.
pub fn generate(
    decoder: &mut dyn Decoder,
    inputs: &NamedTensors,
    config: &GenerationConfig,
    wcfg: &WhisperGenerationConfig,
    prompts: &[Vec<u32>],
    max_new_tokens: Option<usize>,
    strict: bool,
) -> Result<WhisperGeneration> {
    let batch = batch_of(inputs)?;
    let prompt_len = prompts.first().map(Vec::len).unwrap_or(0);
    if prompts.len() != batch || prompts.iter().any(|p| p.len() != prompt_len) {
        return Err(Error::tensor(
            "decoder_input_ids",
            format!(
                "{} prompts for a batch of {batch}, all of one length needed",
                prompts.len()
            ),
        ));
    }
    let max_new_tokens = wcfg.max_new_tokens(config, max_new_tokens, prompt_len)?;
    let mut start = features_only(inputs);
    let flat: Vec<i64> = prompts.iter().flatten().map(|&t| t as i64).collect();
    start.insert(
        "decoder_input_ids".into(),
        HostTensor::i64(vec![batch, prompt_len], flat)?,
    );
    let opts = GenerateOptions {
        max_new_tokens,
        sampling: None,
        strict,
    };
    let g = generate_loop(decoder, &start, config, &opts)?;
    let pad = config.pad().ok_or_else(|| {
        Error::config(
            &config.path,
            "pad_token_id",
            "missing (and no eos_token_id): Whisper pads its rows with it",
        )
    })?;
    let single_eos = match config.eos_token_id.as_slice() {
        [e] => Some(*e),
        _ => None,
    };
    let tokens = g
        .sequences
        .iter()
        .map(|seq| {
            let mut row = seq[g.prompt_len..].to_vec();
            // generate_with_fallback: drop the padding (every pad id, as it counts them), but keep an
            // EOS that is also the pad id; then drop a final EOS.
            if row.last() == Some(&pad) {
                let mut n = row.iter().filter(|&&t| t == pad).count();
                if single_eos == Some(pad) {
                    n -= 1;
                }
                row.truncate(row.len() - n);
            }
            if row.last().is_some_and(|t| config.eos_token_id.contains(t)) {
                row.pop();
            }
            row
        })
        .collect();
    Ok(WhisperGeneration {
        prompts: prompts.to_vec(),
        tokens,
        stop: g.stop,
        pad,
        max_new_tokens,
        ignored: g.ignored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Whisper fixture's generation config: <|startoftranscript|> 301, <|en|> 302, <|de|> 303,
    /// <|fr|> 304, <|translate|> 305, <|transcribe|> 306, <|notimestamps|> 310.
    fn fixture_config() -> WhisperGenerationConfig {
        WhisperGenerationConfig {
            path: PathBuf::from("generation_config.json"),
            decoder_start_token_id: Some(301),
            lang_to_id: Some(
                [("<|en|>", 302), ("<|de|>", 303), ("<|fr|>", 304)]
                    .map(|(k, v)| (k.to_string(), v))
                    .into(),
            ),
            task_to_id: Some(
                [("translate", 305), ("transcribe", 306)]
                    .map(|(k, v)| (k.to_string(), v))
                    .into(),
            ),
            no_timestamps_token_id: Some(310),
            is_multilingual: Some(true),
            forced_decoder_ids: Some(vec![(1, None), (2, Some(306))]),
            max_target_positions: 40,
            ..Default::default()
        }
    }

    fn prompts(c: &WhisperGenerationConfig, language: Option<&str>, task: Option<&str>) -> Result<Vec<Vec<u32>>> {
        let opts = WhisperOptions {
            language: language.map(String::from),
            task: task.map(String::from),
        };
        // The languages "detected" for the two rows.
        c.init_tokens(&opts, 2, || Ok(vec![302, 304]))
    }

    /// The prompts of `_retrieve_init_tokens`, as transformers 5.17 gives them on the Whisper fixture.
    #[test]
    fn prompts_match_transformers() {
        let c = fixture_config();
        let p = |l, t| prompts(&c, l, t).unwrap();
        assert_eq!(p(None, None), [[301, 302, 306, 310], [301, 304, 306, 310]]);
        assert_eq!(p(Some("de"), None), [[301, 303, 306, 310]; 2]);
        assert_eq!(p(None, Some("translate")), [[301, 302, 305, 310], [301, 304, 305, 310]]);
        assert_eq!(p(Some("<|de|>"), Some("translate")), [[301, 303, 305, 310]; 2]);
        assert_eq!(p(Some("German"), Some("translate")), [[301, 303, 305, 310]; 2]);
        let mut c2 = fixture_config();
        c2.language = Some("fr".into());
        assert_eq!(prompts(&c2, None, None).unwrap(), [[301, 304, 306, 310]; 2]);
        c2.language = None;
        c2.forced_decoder_ids = Some(vec![(1, Some(303)), (2, Some(305)), (3, Some(310))]);
        assert_eq!(prompts(&c2, None, None).unwrap(), [[301, 303, 305, 310]; 2]);
        c2.forced_decoder_ids = Some(vec![(1, Some(303)), (2, Some(305))]);
        assert_eq!(prompts(&c2, None, None).unwrap(), [[301, 303, 305, 310]; 2]);
        // A task given: forced_decoder_ids do not count, the language is detected.
        assert_eq!(
            prompts(&c2, None, Some("transcribe")).unwrap(),
            [[301, 302, 306, 310], [301, 304, 306, 310]]
        );
    }

    #[test]
    fn what_the_model_cannot_take_is_an_error() {
        let c = fixture_config();
        let err = |l, t| prompts(&c, l, t).unwrap_err().to_string();
        let e = err(Some("es"), None);
        assert!(
            e.contains("lang_to_id") && e.contains("<|es|>") && e.contains("generation_config.json"),
            "{e}"
        );
        let e = err(Some("klingon"), None);
        assert!(e.contains("unsupported language `klingon`"), "{e}");
        let e = err(None, Some("summarize"));
        assert!(e.contains("unknown task `summarize`"), "{e}");
        let mut en = fixture_config();
        en.is_multilingual = Some(false);
        let e = prompts(&en, Some("en"), None).unwrap_err().to_string();
        assert!(e.contains("is_multilingual") && e.contains("English-only"), "{e}");
        en.is_multilingual = None;
        en.lang_to_id = None;
        let e = prompts(&en, Some("en"), None).unwrap_err().to_string();
        assert!(e.contains("lang_to_id") && e.contains("missing"), "{e}");
        let mut gap = fixture_config();
        gap.forced_decoder_ids = Some(vec![(1, None), (3, Some(306))]);
        let e = prompts(&gap, None, None).unwrap_err().to_string();
        assert!(e.contains("forced_decoder_ids"), "{e}");
    }

    #[test]
    fn new_tokens_follow_max_length_within_the_positions() {
        let c = fixture_config();
        let mut g = GenerationConfig::default();
        // No max_new_tokens: max_length (default 20) counts after the prompt, within 40 positions.
        assert_eq!(c.max_new_tokens(&g, None, 4).unwrap(), 20);
        g.max_length = Some(40);
        assert_eq!(c.max_new_tokens(&g, None, 4).unwrap(), 36);
        assert_eq!(c.max_new_tokens(&g, Some(36), 4).unwrap(), 36);
        let e = c.max_new_tokens(&g, Some(37), 4).unwrap_err().to_string();
        assert!(
            e.contains("max_target_positions = 40") && e.contains("at most 36"),
            "{e}"
        );
    }
}
