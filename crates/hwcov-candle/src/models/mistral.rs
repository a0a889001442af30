//! Mistral, as transformers' `models/mistral/modeling_mistral.py` builds it from Llama
//! (`modular_mistral.py`): the Llama graph of `llama.rs` without biases, whose every layer attends
//! through a sliding window when `sliding_window` is set. This file reads `MistralConfig` into that
//! graph's [`LlamaArch`] (the language model of LLaVA-NeXT's Mistral checkpoints).

use serde::Deserialize;

use crate::activation::Activation;
use crate::models::llama::{LlamaArch, d32, d4096, eps, silu};
use crate::models::rope::RopeParameters;

/// `MistralConfig`, with transformers' defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct MistralConfig {
    #[serde(default = "d32000")]
    pub vocab_size: usize,
    #[serde(default = "d4096")]
    pub hidden_size: usize,
    #[serde(default = "d14336")]
    pub intermediate_size: usize,
    #[serde(default = "d32")]
    pub num_hidden_layers: usize,
    #[serde(default = "d32")]
    pub num_attention_heads: usize,
    #[serde(default = "d8_opt")]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "silu")]
    pub hidden_act: Activation,
    #[serde(default = "d131072")]
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
    #[serde(default = "d4096_opt")]
    pub sliding_window: Option<usize>,
}

fn d32000() -> usize {
    32000
}
fn d14336() -> usize {
    14336
}
fn d131072() -> usize {
    4096 * 32
}
fn d8_opt() -> Option<usize> {
    Some(8)
}
fn d4096_opt() -> Option<usize> {
    Some(4096)
}

impl MistralConfig {
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
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            qk_norm: false,
            sliding_window: vec![self.sliding_window; self.num_hidden_layers],
        })
    }
}
