//! transformers' `LlavaProcessor` and `LlavaNextProcessor`: images through the folder's image
//! processor (`image.rs`), and each image token of the prompts expanded into as many image tokens as
//! the model makes features of that image, then tokenized. LLaVA: (height / patch_size) x (width /
//! patch_size) + `num_additional_image_tokens`, less one for the "default" strategy (which drops the
//! CLS token); LLaVA-NeXT: `_get_number_of_features`, the base image's features plus the unpadded
//! grid of its tiles with a newline feature per row.
//!
//! The settings come from `processor_config.json` (`patch_size`, `vision_feature_select_strategy`,
//! `num_additional_image_tokens`, `image_token`); the image processor from its nested
//! `image_processor` (transformers 5) or `preprocessor_config.json`; the chat template from
//! `chat_template.jinja`, `chat_template.json` or `processor_config.json`, as the processor finds it.

use std::path::{Path, PathBuf};

use hwcov_core::anyres::{select_best_resolution, unpad};
use hwcov_core::error::read_json;
use hwcov_core::{Error, NamedTensors, Result};
use serde_json::Value;

use crate::image::{Backend, ImageProcessor, ProcessorKind, RgbImage};
use crate::text::{TextTokenizer, pad_batch};

/// The processor class of a LLaVA-family folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlavaKind {
    Llava,
    LlavaNext,
}

pub struct LlavaProcessor {
    pub kind: LlavaKind,
    pub image_processor: ImageProcessor,
    pub tokenizer: TextTokenizer,
    pub image_token: String,
    pub image_token_id: u32,
    pub patch_size: usize,
    /// `vision_feature_select_strategy`: "default" drops one token per image.
    pub vision_feature_select_strategy: Option<String>,
    pub num_additional_image_tokens: usize,
    /// The processor's chat template, where the folder has one.
    pub chat_template: Option<String>,
    /// Where the settings came from (for errors).
    pub source: PathBuf,
}

/// What [`LlavaProcessor::process`] returns: the model inputs and the prompts as tokenized.
pub struct ProcessedPrompts {
    /// `input_ids`, `attention_mask` (left-padded), `pixel_values` and, for LLaVA-NeXT, `image_sizes`.
    pub inputs: NamedTensors,
    /// The token ids of each prompt, without padding.
    pub rows: Vec<Vec<u32>>,
}

impl LlavaProcessor {
    /// The processor of a model folder. `kind` is the model's class (config.json's model_type);
    /// `backend` the image processor's (default: [`ProcessorKind::default_backend`]).
    pub fn from_dir(dir: &Path, kind: LlavaKind, backend: Option<Backend>) -> Result<Self> {
        let path = dir.join("processor_config.json");
        let settings = if path.is_file() {
            let v = read_json(&path)?;
            if !v.is_object() {
                return Err(Error::format(&path, "must hold a JSON object"));
            }
            v
        } else {
            Value::Object(Default::default())
        };
        let get = |k: &str| settings.get(k).filter(|v| !v.is_null());
        let patch_size = match get("patch_size") {
            Some(v) => {
                v.as_u64().filter(|&n| n > 0).ok_or_else(|| {
                    Error::config(&path, "patch_size", format!("expected a positive integer, got {v}"))
                })? as usize
            }
            None => {
                return Err(Error::config(
                    &path,
                    "patch_size",
                    "missing: the processor needs the vision tower's patch size to count the image tokens (processor_config.json of a transformers 4.47+ save_pretrained)",
                ));
            }
        };
        let vision_feature_select_strategy = match get("vision_feature_select_strategy") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => {
                return Err(Error::config(
                    &path,
                    "vision_feature_select_strategy",
                    format!("expected a string, got {v}"),
                ));
            }
        };
        let num_additional_image_tokens = match get("num_additional_image_tokens") {
            None => 0,
            Some(v) => v.as_u64().ok_or_else(|| {
                Error::config(
                    &path,
                    "num_additional_image_tokens",
                    format!("expected a non-negative integer, got {v}"),
                )
            })? as usize,
        };
        let image_processor = match backend {
            Some(b) => ImageProcessor::from_dir(dir)?.with_backend(b)?,
            None => ImageProcessor::from_dir(dir)?,
        };
        let want = match kind {
            LlavaKind::Llava => None,
            LlavaKind::LlavaNext => Some(ProcessorKind::LlavaNext),
        };
        if let Some(want) = want
            && image_processor.kind != want
        {
            return Err(Error::config(
                &image_processor.source,
                "image_processor_type",
                format!(
                    "{} where LLaVA-NeXT needs {}",
                    image_processor.kind.class_name(),
                    want.class_name()
                ),
            ));
        }
        let tokenizer = TextTokenizer::from_dir(dir)?;
        // The tokenizer's image token wins over the processor's, as LlavaProcessor.__init__ picks it.
        let image_token = tokenizer
            .special_token("image_token")
            .or_else(|| get("image_token").and_then(|v| v.as_str()).map(str::to_string))
            .unwrap_or_else(|| "<image>".to_string());
        let image_token_id = match tokenizer.token_to_id(&image_token) {
            Some(id) => id,
            None => *tokenizer.encode_ids(&image_token, false)?.first().ok_or_else(|| {
                Error::format(
                    tokenizer.path(),
                    format!("the image token `{image_token}` encodes to no token"),
                )
            })?,
        };
        let chat_template = read_processor_chat_template(dir, get("chat_template"), &path)?;
        Ok(LlavaProcessor {
            kind,
            image_processor,
            tokenizer,
            image_token,
            image_token_id,
            patch_size,
            vision_feature_select_strategy,
            num_additional_image_tokens,
            chat_template,
            source: path,
        })
    }

    /// The image tokens one image stands for: `replace_image_token` of the processor class, from the
    /// processed tile size (height, width) and, for LLaVA-NeXT, the image's original (height, width).
    pub fn num_image_tokens(&self, tile: (usize, usize), original: (usize, usize)) -> Result<usize> {
        let (height, width) = tile;
        let patch = self.patch_size;
        let n = match self.kind {
            LlavaKind::Llava => (height / patch) * (width / patch) + self.num_additional_image_tokens,
            LlavaKind::LlavaNext => {
                let pinpoints = &self.image_processor.image_grid_pinpoints;
                let (best_h, best_w) = select_best_resolution(original, pinpoints)
                    .ok_or_else(|| Error::config(&self.image_processor.source, "image_grid_pinpoints", "is empty"))?;
                let (scale_height, scale_width) = (best_h / height, best_w / width);
                let (patches_height, patches_width) = (height / patch, width / patch);
                // `_get_unpadded_features`
                let current = (patches_height * scale_height, patches_width * scale_width);
                let ((_, rows), (_, cols)) = unpad(original, current);
                let base_features = patches_height * patches_width + self.num_additional_image_tokens;
                rows * cols + rows + base_features
            }
        };
        let default = self.vision_feature_select_strategy.as_deref() == Some("default");
        Ok(n.saturating_sub(usize::from(default)))
    }

    /// A user turn holding `images` images and `text`, through the chat template
    /// (`apply_chat_template(..., add_generation_prompt=True)`); `None` where the folder has no
    /// template.
    pub fn apply_chat_template(&self, text: &str, images: usize) -> Result<Option<String>> {
        let Some(template) = &self.chat_template else {
            return Ok(None);
        };
        let mut content: Vec<Value> = (0..images).map(|_| serde_json::json!({"type": "image"})).collect();
        content.push(serde_json::json!({"type": "text", "text": text}));
        let messages = serde_json::json!([{"role": "user", "content": content}]);
        self.tokenizer
            .render_chat_template(template, messages, true)
            .map(Some)
            .map_err(|e| Error::config(&self.source, "chat_template", e))
    }

    /// `processor(images=images, text=texts, padding=True)`, padded at the left for generation: the
    /// images in order fill the image tokens of the texts in order. `add_special_tokens` as the
    /// tokenizer takes it (false where a chat template already wrote the BOS token).
    pub fn process(&self, texts: &[String], images: &[RgbImage], add_special_tokens: bool) -> Result<ProcessedPrompts> {
        if texts.is_empty() {
            return Err(Error::Usage("no prompt to process".to_string()));
        }
        let mut inputs = NamedTensors::new();
        let mut replacements = Vec::with_capacity(images.len());
        if !images.is_empty() {
            let pixels = self.image_processor.preprocess(images)?;
            let px = pixels
                .get("pixel_values")
                .ok_or_else(|| Error::tensor("pixel_values", "the image processor made none"))?;
            let shape = px.shape();
            let tile = (shape[shape.len() - 2], shape[shape.len() - 1]);
            for (i, img) in images.iter().enumerate() {
                let original = match pixels.get("image_sizes") {
                    Some(s) => {
                        let v = s.to_i64_vec().unwrap_or_default();
                        (v[2 * i] as usize, v[2 * i + 1] as usize)
                    }
                    None => (img.height, img.width),
                };
                replacements.push(self.num_image_tokens(tile, original)?);
            }
            inputs.extend(pixels);
        }
        let in_text: usize = texts.iter().map(|t| t.matches(self.image_token.as_str()).count()).sum();
        if in_text != images.len() {
            return Err(Error::Usage(format!(
                "the prompt{} hold{} {in_text} image token{} (`{}`) for {} image{}: give one image per image token",
                if texts.len() > 1 { "s" } else { "" },
                if texts.len() > 1 { "" } else { "s" },
                if in_text == 1 { "" } else { "s" },
                self.image_token,
                images.len(),
                if images.len() == 1 { "" } else { "s" },
            )));
        }
        let mut next = replacements.into_iter();
        let mut rows = Vec::with_capacity(texts.len());
        for text in texts {
            let mut expanded = String::with_capacity(text.len());
            let mut parts = text.split(self.image_token.as_str());
            expanded.push_str(parts.next().unwrap_or_default());
            for part in parts {
                let n = next.next().unwrap_or(0);
                expanded.push_str(&self.image_token.repeat(n));
                expanded.push_str(part);
            }
            let ids = self.tokenizer.encode_ids(&expanded, add_special_tokens)?;
            if ids.is_empty() {
                return Err(Error::Usage(format!("{text:?} encodes to no tokens")));
            }
            rows.push(ids);
        }
        let pad_id = self.tokenizer.pad_token_id().unwrap_or(0);
        inputs.extend(pad_batch(&rows, pad_id, true)?);
        Ok(ProcessedPrompts { inputs, rows })
    }
}

/// The processor's chat template: `chat_template.jinja`, else the legacy `chat_template.json`, else
/// a `chat_template` key of processor_config.json (which transformers reads with a warning).
fn read_processor_chat_template(dir: &Path, key: Option<&Value>, config: &Path) -> Result<Option<String>> {
    if let Some(v) = key {
        return match v {
            Value::String(s) => Ok(Some(s.clone())),
            other => Err(Error::config(
                config,
                "chat_template",
                format!("expected a string, got {other}"),
            )),
        };
    }
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return std::fs::read_to_string(&jinja)
            .map(Some)
            .map_err(|e| Error::io(&jinja, e));
    }
    let json = dir.join("chat_template.json");
    if json.is_file() {
        return match read_json(&json)?.get("chat_template") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(Error::config(
                &json,
                "chat_template",
                format!("expected a string, got {other}"),
            )),
            None => Err(Error::config(&json, "chat_template", "missing")),
        };
    }
    Ok(None)
}
