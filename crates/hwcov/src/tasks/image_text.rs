//! Image-text-to-text (LLaVA, LLaVA-NeXT): an image and a question through the folder's processor
//! (its chat template, where it has one: a user turn holding the image and the text; else the text
//! as it is, with the image token put at its start when it holds none), the generation loop over the
//! model's decoder, and the new tokens decoded back to text without the special tokens.

use hwcov_core::{Error, LoadOptions, ModelClass, ModelFiles, PlatformId, Result};
use hwcov_preprocess::image::load_image;
use hwcov_preprocess::llava::{LlavaKind, LlavaProcessor};

use crate::generate::{GenerateOptions, GenerationConfig, StopReason, generate};
use crate::platforms;
use crate::tasks::text_generation::{ChatMode, DEFAULT_MAX_NEW_TOKENS, check_vocabulary, prompt_limit, sampling};
use crate::tasks::{RunOutput, RunRequest};

/// What [`answer`] returns.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageTextAnswer {
    /// The prompt as the model saw it, before its image token was expanded.
    pub prompt: String,
    /// The new tokens as text, special tokens left out.
    pub text: String,
    /// The prompt's tokens, image tokens included.
    pub prompt_tokens: usize,
    pub image_tokens: usize,
    /// The new token ids, up to and including an EOS.
    pub token_ids: Vec<u32>,
    pub stopped: StopReason,
    pub max_new_tokens: usize,
    pub chat_template: bool,
    pub sampling: bool,
    /// Settings of generation_config.json that were not applied (beam search, ...).
    pub ignored_settings: Vec<String>,
}

/// `hwcov run` on a LLaVA or LLaVA-NeXT model.
pub fn run(files: &ModelFiles, request: &RunRequest, platform: PlatformId, opts: &LoadOptions) -> Result<RunOutput> {
    let class = files.class.name();
    if request.video.is_some() || request.audio.is_some() {
        return Err(Error::Usage(format!("{class} models take an image and a text only")));
    }
    let Some(image) = &request.image else {
        return Err(Error::Usage(format!(
            "{class} answers about an image: give it with --image"
        )));
    };
    let text = match request.texts.as_slice() {
        [t] => t,
        [] => return Err(Error::Usage("give the question or instruction with --text".to_string())),
        _ => {
            return Err(Error::Usage(format!(
                "{class} takes one --text (the question about the image), got {}",
                request.texts.len()
            )));
        }
    };
    let out = answer(files, image, text, request, platform, opts)?;
    let mut rendered = String::new();
    for ignored in &out.ignored_settings {
        rendered.push_str(&format!(
            "note: generation_config.json sets {ignored}, which hwcov does not apply\n"
        ));
    }
    rendered.push_str(&out.text);
    rendered.push('\n');
    match out.stopped {
        StopReason::Eos => {}
        StopReason::MaxNewTokens => rendered.push_str(&format!(
            "[stopped after {} new tokens (--max-new-tokens {}); raise it for a longer answer]\n",
            out.token_ids.len(),
            out.max_new_tokens
        )),
        StopReason::MaxPositions => rendered.push_str(&format!(
            "[stopped after {} new tokens: prompt and answer fill the model's {} positions]\n",
            out.token_ids.len(),
            out.prompt_tokens + out.token_ids.len()
        )),
    }
    let mut json = serde_json::to_value(&out).map_err(|e| Error::Usage(e.to_string()))?;
    json["task"] = serde_json::Value::String("image-text-to-text".to_string());
    Ok(RunOutput { text: rendered, json })
}

/// The model's answer about the image file `image` to `text`.
pub fn answer(
    files: &ModelFiles,
    image: &std::path::Path,
    text: &str,
    request: &RunRequest,
    platform: PlatformId,
    opts: &LoadOptions,
) -> Result<ImageTextAnswer> {
    if text.trim().is_empty() {
        return Err(Error::Usage(
            "--text is empty: ask the model something about the image".to_string(),
        ));
    }
    let kind = match files.class {
        ModelClass::LlavaNext => LlavaKind::LlavaNext,
        _ => LlavaKind::Llava,
    };
    let settings = &request.generation;
    if settings.truncate {
        return Err(Error::Usage(
            "--truncate cannot cut a prompt whose image tokens must all stay; shorten the text instead".to_string(),
        ));
    }
    let processor = LlavaProcessor::from_dir(&files.dir, kind, request.image_backend)?;
    check_vocabulary(files, &processor.tokenizer)?;
    let token = processor.image_token.clone();
    let use_chat = match settings.chat {
        ChatMode::Off => false,
        ChatMode::Auto => processor.chat_template.is_some(),
        ChatMode::On => {
            if processor.chat_template.is_none() {
                return Err(Error::config(
                    &processor.source,
                    "chat_template",
                    "--chat was given, but the model folder has no processor chat template (chat_template.jinja, chat_template.json or processor_config.json)",
                ));
            }
            true
        }
    };
    let (prompt, add_special_tokens) = if use_chat {
        if text.contains(&token) {
            return Err(Error::Usage(format!(
                "--text holds the image token `{token}`, but the chat template places the image itself: leave it out, or pass --no-chat to send the text as it is"
            )));
        }
        let rendered = processor
            .apply_chat_template(text, 1)?
            .unwrap_or_else(|| text.to_string());
        // The template may write the BOS token itself; then the tokenizer must not add another.
        let bos = processor.tokenizer.special_token("bos_token");
        let add = !bos.is_some_and(|b| rendered.starts_with(&b));
        (rendered, add)
    } else if text.contains(&token) {
        (text.to_string(), true)
    } else {
        (format!("{token}\n{text}"), true)
    };
    let img = load_image(image)?;
    let processed = processor.process(std::slice::from_ref(&prompt), &[img], add_special_tokens)?;
    let row = &processed.rows[0];
    let image_tokens = row.iter().filter(|&&t| t == processor.image_token_id).count();

    let config = GenerationConfig::from_model(files)?;
    let max_new_tokens = request
        .max_new_tokens
        .or(settings.max_new_tokens)
        .or(config.max_new_tokens)
        .unwrap_or(DEFAULT_MAX_NEW_TOKENS);
    if let Some((max, field)) = prompt_limit(files, &processor.tokenizer, false)
        && row.len() > max
    {
        return Err(Error::Usage(format!(
            "the prompt has {} tokens ({image_tokens} of them for the image), more than the model's {max} ({field})",
            row.len()
        )));
    }
    let sampling = sampling(settings, &config)?;

    let platform_impl = platforms::get(platform)?;
    let mut handler = platform_impl.load(files, opts)?;
    let decoder = handler.decoder().ok_or_else(|| Error::NotImplemented {
        platform: platform.to_string(),
        reason: format!("the {} handler cannot decode token by token", files.class.name()),
    })?;
    let gen_opts = GenerateOptions {
        max_new_tokens,
        sampling: sampling.clone(),
        strict: false,
    };
    let generation = generate(decoder, &processed.inputs, &config, &gen_opts)?;
    let start = generation.prompt_len;
    let new: Vec<u32> = generation.sequences[0][start..start + generation.new_tokens[0]].to_vec();
    Ok(ImageTextAnswer {
        prompt,
        text: processor.tokenizer.decode(&new, true)?,
        prompt_tokens: row.len(),
        image_tokens,
        token_ids: new,
        stopped: generation.stop[0],
        max_new_tokens,
        chat_template: use_chat,
        sampling: sampling.is_some(),
        ignored_settings: generation.ignored.iter().map(|(f, v)| format!("{f} = {v}")).collect(),
    })
}
