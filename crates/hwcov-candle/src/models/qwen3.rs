//! Qwen3, as transformers' `models/qwen3/modeling_qwen3.py` builds it from Qwen2 and Llama
//! (`modular_qwen3.py`): the Llama graph of `llama.rs` with an RMSNorm over each head of q and k
//! before RoPE, `attention_bias` on every projection, an explicit `head_dim`, and optional
//! sliding-window layers. This file reads `Qwen3Config` into that graph's [`LlamaArch`].

use serde::Deserialize;

use crate::activation::Activation;
use crate::models::llama::{LlamaArch, d32, d4096, eps, silu};
use crate::models::qwen2::SlidingWindowConfig;
use crate::models::rope::RopeParameters;

/// `Qwen3Config`, with transformers' defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct Qwen3Config {
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
    #[serde(default = "d128")]
    pub head_dim: usize,
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
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(flatten)]
    pub sliding: SlidingWindowConfig,
}

fn d128() -> usize {
    128
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

impl Qwen3Config {
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
            head_dim: self.head_dim,
            hidden_act: self.hidden_act,
            max_position_embeddings: self.max_position_embeddings,
            rms_norm_eps: self.rms_norm_eps,
            tie_word_embeddings: self.tie_word_embeddings,
            rope_theta,
            rope_type,
            qkv_bias: self.attention_bias,
            o_bias: self.attention_bias,
            mlp_bias: false,
            qk_norm: true,
            sliding_window: self.sliding.per_layer(self.num_hidden_layers)?,
        })
    }
}
