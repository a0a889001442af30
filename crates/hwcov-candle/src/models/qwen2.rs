//! Qwen2, as transformers' `models/qwen2/modeling_qwen2.py` builds it from Llama (`modular_qwen2.py`):
//! the Llama graph of `llama.rs` with biases on q, k and v (none on o), no MLP bias, and optional
//! sliding-window layers. This file reads `Qwen2Config` into that graph's [`LlamaArch`].

use serde::Deserialize;

use crate::activation::Activation;
use crate::models::llama::{LlamaArch, d32, d4096, eps, silu};
use crate::models::rope::RopeParameters;

/// `Qwen2Config`, with transformers' defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct Qwen2Config {
    #[serde(default = "d151936")]
    pub vocab_size: usize,
    #[serde(default = "d4096")]
    pub hidden_size: usize,
    #[serde(default = "d22016")]
    pub intermediate_size: usize,
    #[serde(default = "d32")]
    pub num_hidden_layers: usize,
    #[serde(default = "d32")]
    pub num_attention_heads: usize,
    #[serde(default = "d32_opt")]
    pub num_key_value_heads: Option<usize>,
    /// Not a field of Qwen2Config, but read by the attention when config.json has it.
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "silu")]
    pub hidden_act: Activation,
    #[serde(default = "d32768")]
    pub max_position_embeddings: usize,
    #[serde(default = "eps")]
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub rope_parameters: Option<RopeParameters>,
    #[serde(default)]
    pub rope_scaling: Option<RopeParameters>,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(flatten)]
    pub sliding: SlidingWindowConfig,
}

/// The sliding-window fields that Qwen2 and Qwen3 share.
#[derive(Debug, Clone, Deserialize)]
pub struct SlidingWindowConfig {
    #[serde(default)]
    pub use_sliding_window: bool,
    #[serde(default = "d4096_opt")]
    pub sliding_window: Option<usize>,
    #[serde(default = "d28")]
    pub max_window_layers: usize,
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
}

impl SlidingWindowConfig {
    /// Per layer, the window of a `sliding_attention` layer (`__post_init__` of the config: the window
    /// exists only with `use_sliding_window`, and by default covers the layers from
    /// `max_window_layers` on).
    pub fn per_layer(&self, num_hidden_layers: usize) -> Result<Vec<Option<usize>>, (String, String)> {
        let window = if self.use_sliding_window {
            self.sliding_window
        } else {
            None
        };
        let types: Vec<String> = match &self.layer_types {
            Some(t) => t.clone(),
            None => (0..num_hidden_layers)
                .map(|i| {
                    if window.is_some() && i >= self.max_window_layers {
                        "sliding_attention".to_string()
                    } else {
                        "full_attention".to_string()
                    }
                })
                .collect(),
        };
        if types.len() != num_hidden_layers {
            return Err((
                "layer_types".into(),
                format!("has {} entries for {num_hidden_layers} layers", types.len()),
            ));
        }
        types
            .iter()
            .map(|t| match t.as_str() {
                "full_attention" => Ok(None),
                "sliding_attention" => match window {
                    Some(w) => Ok(Some(w)),
                    // transformers then passes sliding_window=None: full attention.
                    None => Ok(None),
                },
                other => Err((
                    "layer_types".into(),
                    format!("`{other}` is neither full_attention nor sliding_attention"),
                )),
            })
            .collect()
    }
}

fn d28() -> usize {
    28
}
fn d22016() -> usize {
    22016
}
fn d32768() -> usize {
    32768
}
fn d151936() -> usize {
    151936
}
fn d32_opt() -> Option<usize> {
    Some(32)
}
fn d4096_opt() -> Option<usize> {
    Some(4096)
}

impl Qwen2Config {
    pub fn arch(&self) -> Result<LlamaArch, (String, String)> {
        let (rope_theta, rope_type) = RopeParameters::standardize(
            self.rope_parameters.as_ref(),
            self.rope_scaling.as_ref(),
            self.rope_theta,
            self.max_position_embeddings,
        )
        .map_err(|(f, m)| (format!("rope_parameters.{f}"), m))?;
        Ok(LlamaArch {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.num_key_value_heads.unwrap_or(self.num_attention_heads),
            head_dim: self
                .head_dim
                .unwrap_or(self.hidden_size / self.num_attention_heads.max(1)),
            hidden_act: self.hidden_act,
            max_position_embeddings: self.max_position_embeddings,
            rms_norm_eps: self.rms_norm_eps,
            tie_word_embeddings: self.tie_word_embeddings,
            rope_theta,
            rope_type,
            qkv_bias: true,
            o_bias: false,
            mlp_bias: false,
            qk_norm: false,
            sliding_window: self.sliding.per_layer(self.num_hidden_layers)?,
        })
    }
}
