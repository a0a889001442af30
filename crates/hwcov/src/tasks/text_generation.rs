//! Text generation: a prompt through the folder's tokenizer (and chat template), the generation
//! loop over the model's decoder, and the new tokens decoded back to text. Decoder-only LMs
//! (OPT, LLaMA, Qwen2, Qwen3) continue the prompt; T5 encodes it and writes its answer.

use std::time::{SystemTime, UNIX_EPOCH};

use hwcov_core::{Error, LoadOptions, ModelFiles, PlatformId, Result};
use hwcov_preprocess::text::{ChatMessage, TextTokenizer, pad_batch};

use crate::generate::{GenerateOptions, GenerationConfig, Sampling, StopReason, generate};
use crate::platforms;
use crate::tasks::{RunOutput, RunRequest};

/// New tokens when neither the user nor the generation config says (transformers' default
/// `max_length` of 20 counts the prompt too; here it counts new tokens only).
pub const DEFAULT_MAX_NEW_TOKENS: usize = 20;

/// Whether prompts go through the folder's chat template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChatMode {
    /// Use the chat template when the folder has one.
    #[default]
    Auto,
    /// Use it; fail when the folder has none.
    On,
    /// Send the text as it is.
    Off,
}

/// The generation settings of `hwcov run`.
#[derive(Debug, Clone, Default)]
pub struct TextGenerationSettings {
    pub max_new_tokens: Option<usize>,
    /// Sample instead of greedy decoding (also implied by temperature, top_k or top_p).
    pub do_sample: bool,
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub seed: Option<u64>,
    pub chat: ChatMode,
    /// Cut prompts that are too long for the model instead of failing.
    pub truncate: bool,
}

/// One generated text.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GeneratedText {
    pub prompt: String,
    /// The new tokens as text, special tokens left out.
    pub text: String,
    pub prompt_tokens: usize,
    /// The new token ids, up to and including an EOS.
    pub token_ids: Vec<u32>,
    pub stopped: StopReason,
    /// Whether the prompt was cut to fit the model (`--truncate`).
    pub truncated: bool,
}

/// What [`generate_text`] returns besides the texts.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TextGeneration {
    pub generations: Vec<GeneratedText>,
    pub max_new_tokens: usize,
    pub chat_template: bool,
    pub sampling: bool,
    /// Settings of generation_config.json that were not applied (beam search, ...).
    pub ignored_settings: Vec<String>,
}

/// `hwcov run` on a generative text model.
pub fn run(files: &ModelFiles, request: &RunRequest, platform: PlatformId, opts: &LoadOptions) -> Result<RunOutput> {
    if request.image.is_some() || request.video.is_some() || request.audio.is_some() {
        return Err(Error::Usage(format!("{} models take text only", files.class.name())));
    }
    if request.texts.is_empty() {
        return Err(Error::Usage("give the prompt with --text".to_string()));
    }
    let settings = TextGenerationSettings {
        max_new_tokens: request.max_new_tokens,
        ..request.generation.clone()
    };
    let out = generate_text(files, &request.texts, &settings, platform, opts)?;
    let mut text = String::new();
    for ignored in &out.ignored_settings {
        text.push_str(&format!(
            "note: generation_config.json sets {ignored}, which hwcov does not apply\n"
        ));
    }
    let several = out.generations.len() > 1;
    for g in &out.generations {
        if several {
            text.push_str(&format!("--- {:?}\n", g.prompt));
        }
        if g.truncated {
            text.push_str(&format!(
                "[the prompt was cut to {} tokens to fit the model]\n",
                g.prompt_tokens
            ));
        }
        text.push_str(&g.text);
        text.push('\n');
        match g.stopped {
            StopReason::Eos => {}
            StopReason::MaxNewTokens => text.push_str(&format!(
                "[stopped after {} new tokens (--max-new-tokens {}); raise it for a longer answer]\n",
                g.token_ids.len(),
                out.max_new_tokens
            )),
            StopReason::MaxPositions => text.push_str(&format!(
                "[stopped after {} new tokens: prompt and answer fill the model's {} positions]\n",
                g.token_ids.len(),
                g.prompt_tokens + g.token_ids.len()
            )),
        }
    }
    let mut json = serde_json::to_value(&out).map_err(|e| Error::Usage(e.to_string()))?;
    json["task"] = serde_json::Value::String(
        if GenerationConfig::from_model(files)?.is_encoder_decoder {
            "text2text-generation"
        } else {
            "text-generation"
        }
        .to_string(),
    );
    Ok(RunOutput { text, json })
}

/// The most prompt tokens the model takes, and the config field that says so.
pub fn prompt_limit(files: &ModelFiles, tokenizer: &TextTokenizer, encoder_decoder: bool) -> Option<(usize, String)> {
    if encoder_decoder {
        // Relative positions have no hard limit; the tokenizer states what the model was trained on.
        let tokenizer_config = tokenizer.path().with_file_name("tokenizer_config.json");
        return tokenizer
            .model_max_length()
            .map(|n| (n, format!("{}: model_max_length", tokenizer_config.display())));
    }
    let cfg = &files.config;
    let n = cfg
        .get("max_position_embeddings")
        .or_else(|| cfg.get("text_config").and_then(|t| t.get("max_position_embeddings")))
        .and_then(|v| v.as_u64())?;
    Some((
        n as usize,
        format!("{}: max_position_embeddings", files.config_path.display()),
    ))
}

/// Generates a continuation (or, for T5, an answer) for each text.
pub fn generate_text(
    files: &ModelFiles,
    texts: &[String],
    settings: &TextGenerationSettings,
    platform: PlatformId,
    opts: &LoadOptions,
) -> Result<TextGeneration> {
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        return Err(Error::Usage(format!(
            "--text number {} is empty: give the model a prompt to {}",
            i + 1,
            if files.class == hwcov_core::ModelClass::T5 {
                "answer"
            } else {
                "continue"
            }
        )));
    }
    let tokenizer = TextTokenizer::from_dir(&files.dir)?;
    let config = GenerationConfig::from_model(files)?;
    check_vocabulary(files, &tokenizer)?;

    let use_chat = match settings.chat {
        ChatMode::Off => false,
        ChatMode::Auto => tokenizer.chat_template().is_some(),
        ChatMode::On => {
            if tokenizer.chat_template().is_none() {
                return Err(Error::config(
                    tokenizer.path().with_file_name("tokenizer_config.json"),
                    "chat_template",
                    "--chat was given, but the model folder has no chat template (chat_template.jinja or tokenizer_config.json)",
                ));
            }
            true
        }
    };
    let max_new_tokens = settings
        .max_new_tokens
        .or(config.max_new_tokens)
        .unwrap_or(DEFAULT_MAX_NEW_TOKENS);

    let limit = prompt_limit(files, &tokenizer, config.is_encoder_decoder);
    let mut rows = Vec::with_capacity(texts.len());
    let mut truncated = Vec::with_capacity(texts.len());
    for text in texts {
        let mut ids = if use_chat {
            let messages = [ChatMessage {
                role: "user".to_string(),
                content: text.clone(),
            }];
            // The template writes the special tokens itself.
            tokenizer.encode_ids(&tokenizer.apply_chat_template(&messages, true)?, false)?
        } else {
            tokenizer.encode_ids(text, true)?
        };
        if ids.is_empty() {
            return Err(Error::Usage(format!(
                "{text:?} encodes to no tokens: nothing to continue"
            )));
        }
        let mut cut = false;
        if let Some((max, field)) = &limit {
            // A decoder-only prompt must leave room for the answer in the same positions.
            let room = if config.is_encoder_decoder {
                *max
            } else {
                max.saturating_sub(max_new_tokens).max(1)
            };
            if ids.len() > *max || (settings.truncate && ids.len() > room) {
                if !settings.truncate {
                    return Err(Error::Usage(format!(
                        "the prompt has {} tokens, more than the model's {max} ({field}); shorten it, or pass --truncate to cut it",
                        ids.len()
                    )));
                }
                ids = if tokenizer.truncates_left() {
                    ids[ids.len() - room..].to_vec()
                } else {
                    ids[..room].to_vec()
                };
                cut = true;
            }
        }
        rows.push(ids);
        truncated.push(cut);
    }

    // Decoder-only prompts are padded at the left, so that every row continues from its last token.
    let pad_id = tokenizer.pad_token_id().or(config.pad()).unwrap_or(0);
    let inputs = pad_batch(&rows, pad_id, !config.is_encoder_decoder)?;

    let platform_impl = platforms::get(platform)?;
    let mut handler = platform_impl.load(files, opts)?;
    let decoder = handler.decoder().ok_or_else(|| Error::NotImplemented {
        platform: platform.to_string(),
        reason: format!("the {} handler cannot decode token by token", files.class.name()),
    })?;
    let sampling = sampling(settings, &config)?;
    let gen_opts = GenerateOptions {
        max_new_tokens,
        sampling: sampling.clone(),
        strict: false,
    };
    let generation = generate(decoder, &inputs, &config, &gen_opts)?;

    let mut generations = Vec::with_capacity(texts.len());
    for (i, text) in texts.iter().enumerate() {
        let seq = &generation.sequences[i];
        let new: Vec<u32> = seq[generation.prompt_len..generation.prompt_len + generation.new_tokens[i]].to_vec();
        generations.push(GeneratedText {
            prompt: text.clone(),
            text: tokenizer.decode(&new, true)?,
            prompt_tokens: rows[i].len(),
            token_ids: new,
            stopped: generation.stop[i],
            truncated: truncated[i],
        });
    }
    Ok(TextGeneration {
        generations,
        max_new_tokens,
        chat_template: use_chat,
        sampling: sampling.is_some(),
        ignored_settings: generation.ignored.iter().map(|(f, v)| format!("{f} = {v}")).collect(),
    })
}

/// The sampling that the settings ask for (`None`: greedy), checked.
pub fn sampling(settings: &TextGenerationSettings, config: &GenerationConfig) -> Result<Option<Sampling>> {
    let sampling =
        (settings.do_sample || settings.temperature.is_some() || settings.top_k.is_some() || settings.top_p.is_some())
            .then(|| {
                let seed = settings.seed.unwrap_or_else(|| {
                    SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_nanos() as u64)
                        .unwrap_or(0)
                });
                let mut s = Sampling::from_config(config, seed);
                if let Some(t) = settings.temperature {
                    s.temperature = t;
                }
                if let Some(k) = settings.top_k {
                    s.top_k = k;
                }
                if let Some(p) = settings.top_p {
                    s.top_p = p;
                }
                s
            });
    if let Some(s) = &sampling {
        if s.temperature.is_nan() || s.temperature <= 0.0 {
            return Err(Error::Usage(format!(
                "--temperature {} must be positive (greedy decoding is the default without sampling flags)",
                s.temperature
            )));
        }
        if s.top_p.is_nan() || s.top_p <= 0.0 || s.top_p > 1.0 {
            return Err(Error::Usage(format!("--top-p {} must be in (0, 1]", s.top_p)));
        }
    }
    Ok(sampling)
}

/// The tokenizer must not produce ids beyond the model's embedding table.
pub fn check_vocabulary(files: &ModelFiles, tokenizer: &TextTokenizer) -> Result<()> {
    let cfg = &files.config;
    let Some(vocab_size) = cfg
        .get("vocab_size")
        .or_else(|| cfg.get("text_config").and_then(|t| t.get("vocab_size")))
        .and_then(|v| v.as_u64())
    else {
        return Ok(());
    };
    let n = tokenizer.vocab_size();
    if n as u64 > vocab_size {
        return Err(Error::format(
            tokenizer.path(),
            format!(
                "has {n} tokens, but the model's vocab_size is {vocab_size} ({}): the tokenizer does not belong to these weights",
                files.config_path.display()
            ),
        ));
    }
    Ok(())
}
