//! Model classes, and a model folder as `save_pretrained` writes it.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result, read_json};

/// The model classes of the matrix. The decoder LLM class has two entries (OPT, LLaMA) and so has
/// Qwen (Qwen2, Qwen3): 13 classes, 15 entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
/// Serialised as the `model_type` of config.json.
#[serde(rename_all = "lowercase")]
pub enum ModelClass {
    Bert,
    T5,
    Opt,
    Llama,
    Clip,
    Vit,
    Clap,
    Whisper,
    Wav2Vec2,
    Llava,
    #[serde(rename = "llava_next")]
    LlavaNext,
    Qwen2,
    Qwen3,
    Detr,
    XClip,
}

impl ModelClass {
    pub const ALL: [ModelClass; 15] = [
        ModelClass::Bert,
        ModelClass::T5,
        ModelClass::Opt,
        ModelClass::Llama,
        ModelClass::Clip,
        ModelClass::Vit,
        ModelClass::Clap,
        ModelClass::Whisper,
        ModelClass::Wav2Vec2,
        ModelClass::Llava,
        ModelClass::LlavaNext,
        ModelClass::Qwen2,
        ModelClass::Qwen3,
        ModelClass::Detr,
        ModelClass::XClip,
    ];

    /// The `model_type` that transformers writes into config.json for this class.
    pub fn model_type(self) -> &'static str {
        match self {
            ModelClass::Bert => "bert",
            ModelClass::T5 => "t5",
            ModelClass::Opt => "opt",
            ModelClass::Llama => "llama",
            ModelClass::Clip => "clip",
            ModelClass::Vit => "vit",
            ModelClass::Clap => "clap",
            ModelClass::Whisper => "whisper",
            ModelClass::Wav2Vec2 => "wav2vec2",
            ModelClass::Llava => "llava",
            ModelClass::LlavaNext => "llava_next",
            ModelClass::Qwen2 => "qwen2",
            ModelClass::Qwen3 => "qwen3",
            ModelClass::Detr => "detr",
            ModelClass::XClip => "xclip",
        }
    }

    /// The class name transformers uses as the prefix of its architectures (`BertModel`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ModelClass::Bert => "Bert",
            ModelClass::T5 => "T5",
            ModelClass::Opt => "OPT",
            ModelClass::Llama => "Llama",
            ModelClass::Clip => "CLIP",
            ModelClass::Vit => "ViT",
            ModelClass::Clap => "Clap",
            ModelClass::Whisper => "Whisper",
            ModelClass::Wav2Vec2 => "Wav2Vec2",
            ModelClass::Llava => "Llava",
            ModelClass::LlavaNext => "LlavaNext",
            ModelClass::Qwen2 => "Qwen2",
            ModelClass::Qwen3 => "Qwen3",
            ModelClass::Detr => "Detr",
            ModelClass::XClip => "XCLIP",
        }
    }

    pub fn from_model_type(model_type: &str) -> Option<ModelClass> {
        ModelClass::ALL.into_iter().find(|c| c.model_type() == model_type)
    }

    /// Falls back on the architecture name when a config has no `model_type`: `BertForMaskedLM` -> Bert.
    /// The longest matching prefix wins (`LlavaNext...` before `Llava...`).
    pub fn from_architecture(arch: &str) -> Option<ModelClass> {
        ModelClass::ALL
            .into_iter()
            .filter(|c| arch.starts_with(c.name()))
            .max_by_key(|c| c.name().len())
    }
}

impl fmt::Display for ModelClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.model_type())
    }
}

/// A model folder as written by `save_pretrained` (or downloaded from the Hub): `config.json`,
/// weights, and whatever tokenizer / processor files the class needs.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub config: Value,
    pub class: ModelClass,
    /// `architectures[0]` of config.json, naming the head (`ViTForImageClassification`), if given.
    pub architecture: Option<String>,
}

impl ModelFiles {
    /// Opens a model folder and picks the class as transformers' Auto classes do: `model_type`
    /// first, the architecture name when that is absent.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "model folder not found"),
            ));
        }
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(Error::io(
                &config_path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no config.json in the model folder (is this a save_pretrained folder?)",
                ),
            ));
        }
        let config = read_json(&config_path)?;
        if !config.is_object() {
            return Err(Error::format(&config_path, "config.json must hold a JSON object"));
        }
        let architecture = match config.get("architectures") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => match a.first() {
                None => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => {
                    return Err(Error::config(
                        &config_path,
                        "architectures",
                        format!("expected strings, got {other}"),
                    ));
                }
            },
            Some(other) => {
                return Err(Error::config(
                    &config_path,
                    "architectures",
                    format!("expected a list, got {other}"),
                ));
            }
        };
        let class = match config.get("model_type") {
            Some(Value::String(mt)) => ModelClass::from_model_type(mt).ok_or_else(|| {
                let known: Vec<_> = ModelClass::ALL.iter().map(|c| c.model_type()).collect();
                Error::config(
                    &config_path,
                    "model_type",
                    format!("unknown model type `{mt}`; hwcov knows {}", known.join(", ")),
                )
            })?,
            Some(other) => {
                return Err(Error::config(
                    &config_path,
                    "model_type",
                    format!("expected a string, got {other}"),
                ));
            }
            None => architecture
                .as_deref()
                .and_then(ModelClass::from_architecture)
                .ok_or_else(|| {
                    Error::config(
                        &config_path,
                        "model_type",
                        "missing, and `architectures` names no class hwcov knows",
                    )
                })?,
        };
        Ok(ModelFiles {
            dir: dir.to_path_buf(),
            config_path,
            config,
            class,
            architecture,
        })
    }

    /// Path of a file in the model folder.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architecture_fallback_prefers_longest_prefix() {
        assert_eq!(
            ModelClass::from_architecture("LlavaNextForConditionalGeneration"),
            Some(ModelClass::LlavaNext)
        );
        assert_eq!(
            ModelClass::from_architecture("LlavaForConditionalGeneration"),
            Some(ModelClass::Llava)
        );
        assert_eq!(ModelClass::from_architecture("BertForMaskedLM"), Some(ModelClass::Bert));
        assert_eq!(ModelClass::from_architecture("GPT2LMHeadModel"), None);
    }

    #[test]
    fn model_types_round_trip() {
        for c in ModelClass::ALL {
            assert_eq!(ModelClass::from_model_type(c.model_type()), Some(c));
        }
    }
}
