//! Whisper, ported from transformers' `models/whisper/modeling_whisper.py`
//! (WhisperForConditionalGeneration, inference with a KV cache): the two-convolution front end with
//! exact GELU, the encoder positions as the checkpoint stores them (sinusoids at init, but read from
//! the weights), learned decoder positions, pre-LN layers, and `proj_out` tied to the decoder's
//! `embed_tokens` unless the checkpoint has its own.
//!
//! candle-transformers' whisper scales queries and keys by head_dim**-0.25 each (transformers scales
//! the projected queries by head_dim**-0.5), computes the encoder's sinusoids instead of reading
//! them, and keeps its cache inside the model, so the model is written here.
//!
//! `scale_embedding` is read but, as in transformers (which computes `embed_scale` and never uses
//! it), changes nothing.

use crate::nn::{Embedding, embedding};
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Conv1dConfig, VarBuilder};

use crate::nn::{Conv1d, Linear, conv1d, linear, linear_no_bias, stack_linears};
use serde::Deserialize;

use crate::activation::Activation;
use crate::models::common::{DynamicCache, LayerNorm, causal_mask, eager_attention, split_stacked_qkv};
use crate::models::t5::EncoderDecoderCache;

/// `WhisperConfig`, with transformers' defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct WhisperConfig {
    #[serde(default = "d51865")]
    pub vocab_size: usize,
    #[serde(default = "d80")]
    pub num_mel_bins: usize,
    #[serde(default = "d4")]
    pub encoder_layers: usize,
    #[serde(default = "d6")]
    pub encoder_attention_heads: usize,
    #[serde(default = "d4")]
    pub decoder_layers: usize,
    #[serde(default = "d6")]
    pub decoder_attention_heads: usize,
    #[serde(default = "d1536")]
    pub decoder_ffn_dim: usize,
    #[serde(default = "d1536")]
    pub encoder_ffn_dim: usize,
    #[serde(default = "gelu")]
    pub activation_function: Activation,
    #[serde(default = "d384")]
    pub d_model: usize,
    /// Read, not applied: see the module documentation.
    #[serde(default)]
    pub scale_embedding: bool,
    #[serde(default = "d1500")]
    pub max_source_positions: usize,
    #[serde(default = "d448")]
    pub max_target_positions: usize,
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
}

fn d4() -> usize {
    4
}
fn d6() -> usize {
    6
}
fn d80() -> usize {
    80
}
fn d384() -> usize {
    384
}
fn d448() -> usize {
    448
}
fn d1500() -> usize {
    1500
}
fn d1536() -> usize {
    1536
}
fn d51865() -> usize {
    51865
}
fn yes() -> bool {
    true
}
fn gelu() -> Activation {
    Activation::Gelu
}

impl WhisperConfig {
    /// The mel frames the encoder takes: `max_source_positions * conv1.stride * conv2.stride`.
    pub fn expected_seq_length(&self) -> usize {
        self.max_source_positions * 2
    }
}

/// `nn.LayerNorm(d_model)`: eps 1e-5.
fn whisper_layer_norm(size: usize, vb: VarBuilder) -> Result<LayerNorm> {
    LayerNorm::new(size, 1e-5, vb)
}

/// `WhisperAttention`: self-attention, or attention over the encoder output (`key_value_states`).
pub struct WhisperAttention {
    projections: Projections,
    out_proj: Linear,
    num_heads: usize,
    head_dim: usize,
    scaling: f64,
    layer_idx: usize,
}

/// `q_proj`, `k_proj` and `v_proj`. Self-attention projects one input three ways, so the three are one
/// stacked product (`split_stacked_qkv` says why; a decoding step then launches one product, not
/// three). Attention over the encoder output projects the queries from the decoder and the keys and
/// values from the encoder, once, into the cache.
enum Projections {
    Stacked(Linear),
    Separate {
        q_proj: Linear,
        k_proj: Linear,
        v_proj: Linear,
    },
}

impl WhisperAttention {
    fn new(embed_dim: usize, num_heads: usize, layer_idx: usize, is_cross: bool, vb: VarBuilder) -> Result<Self> {
        let head_dim = embed_dim / num_heads;
        let k_proj = linear_no_bias(embed_dim, embed_dim, vb.pp("k_proj"))?;
        let v_proj = linear(embed_dim, embed_dim, vb.pp("v_proj"))?;
        let q_proj = linear(embed_dim, embed_dim, vb.pp("q_proj"))?;
        let projections = if is_cross {
            Projections::Separate { q_proj, k_proj, v_proj }
        } else {
            Projections::Stacked(stack_linears(&[q_proj, k_proj, v_proj])?)
        };
        Ok(Self {
            projections,
            out_proj: linear(embed_dim, embed_dim, vb.pp("out_proj"))?,
            num_heads,
            head_dim,
            scaling: (head_dim as f64).powf(-0.5),
            layer_idx,
        })
    }

    /// (batch, seq, embed) -> (batch, heads, seq, head_dim)
    fn heads(&self, x: Tensor) -> Result<Tensor> {
        let (b, l, _) = x.dims3()?;
        crate::nn::contiguous(&x.reshape((b, l, self.num_heads, self.head_dim))?.transpose(1, 2)?)
    }

    /// `past_key_values`: the self-attention cache for self-attention (keys and values appended), the
    /// cross-attention cache for attention over the encoder output (computed once, then reused).
    /// Returns `residual` plus the attention's output: the layer's residual add, which CUDA fuses with
    /// `out_proj`'s bias.
    fn forward(
        &self,
        hidden_states: &Tensor,
        key_value_states: Option<&Tensor>,
        past_key_values: Option<&mut DynamicCache>,
        attention_mask: Option<&Tensor>,
        residual: &Tensor,
    ) -> Result<Tensor> {
        let (b, q_len, _) = hidden_states.dims3()?;
        let (query_states, key_states, value_states) = match (&self.projections, key_value_states) {
            (Projections::Stacked(qkv_proj), None) => {
                let qkv = qkv_proj.forward(hidden_states)?;
                let (q, k, v) = split_stacked_qkv(&qkv, self.num_heads, self.head_dim)?;
                let (k, v) = match past_key_values {
                    Some(cache) => cache.update(self.layer_idx, k, v)?,
                    None => (k, v),
                };
                (q, k, v)
            }
            (Projections::Separate { q_proj, k_proj, v_proj }, Some(encoder_states)) => {
                let q = self.heads(q_proj.forward(hidden_states)?)?;
                let project = || -> Result<(Tensor, Tensor)> {
                    Ok((
                        self.heads(k_proj.forward(encoder_states)?)?,
                        self.heads(v_proj.forward(encoder_states)?)?,
                    ))
                };
                let (k, v) = match past_key_values {
                    Some(cache) => match cache.get(self.layer_idx) {
                        Some(kv) => kv,
                        None => {
                            let (k, v) = project()?;
                            cache.set(self.layer_idx, k.clone(), v.clone());
                            (k, v)
                        }
                    },
                    None => project()?,
                };
                (q, k, v)
            }
            _ => candle_core::bail!("Whisper attention: key_value_states are given to cross-attention only"),
        };
        // transformers scales the projected queries, before the product (and calls the attention with
        // scaling 1.0). A power of two scales exactly, so then scaling the products instead gives the
        // same numbers, and the scaling rides in the softmax's pass.
        let (query_states, scores_scaling) = if self.scaling.log2().fract() == 0.0 {
            (query_states, self.scaling)
        } else {
            (crate::nn::mul_scalar(&query_states, self.scaling)?, 1.0)
        };
        let attn_output = eager_attention(
            &query_states,
            &key_states,
            &value_states,
            attention_mask,
            scores_scaling,
        )?;
        let attn_output = crate::nn::contiguous(&attn_output.transpose(1, 2)?)?.reshape((b, q_len, ()))?;
        self.out_proj.forward_residual(&attn_output, residual)
    }
}

/// `fc2(act(fc1(x)))`, the feed-forward block of both layer kinds.
struct FeedForward {
    fc1: Linear,
    fc2: Linear,
    activation_fn: Activation,
}

impl FeedForward {
    fn new(d_model: usize, ffn_dim: usize, act: Activation, vb: &VarBuilder) -> Result<Self> {
        Ok(Self {
            fc1: linear(d_model, ffn_dim, vb.pp("fc1"))?,
            fc2: linear(ffn_dim, d_model, vb.pp("fc2"))?,
            activation_fn: act,
        })
    }

    /// `residual` plus the block's output (the layer's residual add).
    fn forward(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        self.fc2
            .forward_residual(&self.fc1.forward_act(x, self.activation_fn)?, residual)
    }
}

pub struct WhisperEncoderLayer {
    self_attn: WhisperAttention,
    self_attn_layer_norm: LayerNorm,
    ff: FeedForward,
    final_layer_norm: LayerNorm,
}

impl WhisperEncoderLayer {
    fn new(cfg: &WhisperConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        Ok(Self {
            self_attn: WhisperAttention::new(d, cfg.encoder_attention_heads, 0, false, vb.pp("self_attn"))?,
            self_attn_layer_norm: whisper_layer_norm(d, vb.pp("self_attn_layer_norm"))?,
            ff: FeedForward::new(d, cfg.encoder_ffn_dim, cfg.activation_function, &vb)?,
            final_layer_norm: whisper_layer_norm(d, vb.pp("final_layer_norm"))?,
        })
    }

    fn forward(&self, hidden_states: &Tensor) -> Result<Tensor> {
        let residual = hidden_states;
        let hidden_states = self.self_attn.forward(
            &self.self_attn_layer_norm.forward(hidden_states)?,
            None,
            None,
            None,
            residual,
        )?;
        let hidden_states = self
            .ff
            .forward(&self.final_layer_norm.forward(&hidden_states)?, &hidden_states)?;
        if hidden_states.dtype() == DType::F16 {
            let clamp_value = half::f16::MAX.to_f64() - 1000.0;
            return hidden_states.clamp(-clamp_value, clamp_value);
        }
        Ok(hidden_states)
    }
}

pub struct WhisperDecoderLayer {
    self_attn: WhisperAttention,
    self_attn_layer_norm: LayerNorm,
    encoder_attn: WhisperAttention,
    encoder_attn_layer_norm: LayerNorm,
    ff: FeedForward,
    final_layer_norm: LayerNorm,
}

impl WhisperDecoderLayer {
    fn new(cfg: &WhisperConfig, layer_idx: usize, vb: VarBuilder) -> Result<Self> {
        let (d, h) = (cfg.d_model, cfg.decoder_attention_heads);
        Ok(Self {
            self_attn: WhisperAttention::new(d, h, layer_idx, false, vb.pp("self_attn"))?,
            self_attn_layer_norm: whisper_layer_norm(d, vb.pp("self_attn_layer_norm"))?,
            encoder_attn: WhisperAttention::new(d, h, layer_idx, true, vb.pp("encoder_attn"))?,
            encoder_attn_layer_norm: whisper_layer_norm(d, vb.pp("encoder_attn_layer_norm"))?,
            ff: FeedForward::new(d, cfg.decoder_ffn_dim, cfg.activation_function, &vb)?,
            final_layer_norm: whisper_layer_norm(d, vb.pp("final_layer_norm"))?,
        })
    }

    fn forward(
        &self,
        hidden_states: &Tensor,
        attention_mask: Option<&Tensor>,
        encoder_hidden_states: &Tensor,
        past_key_values: Option<&mut EncoderDecoderCache>,
    ) -> Result<Tensor> {
        let (self_cache, cross_cache) = match past_key_values {
            Some(c) => (Some(&mut c.self_attention_cache), Some(&mut c.cross_attention_cache)),
            None => (None, None),
        };
        let hidden_states = self.self_attn.forward(
            &self.self_attn_layer_norm.forward(hidden_states)?,
            None,
            self_cache,
            attention_mask,
            hidden_states,
        )?;
        let hidden_states = self.encoder_attn.forward(
            &self.encoder_attn_layer_norm.forward(&hidden_states)?,
            Some(encoder_hidden_states),
            cross_cache,
            None,
            &hidden_states,
        )?;
        self.ff
            .forward(&self.final_layer_norm.forward(&hidden_states)?, &hidden_states)
    }
}

pub struct WhisperEncoder {
    conv1: Conv1d,
    conv2: Conv1d,
    embed_positions: Tensor,
    layers: Vec<WhisperEncoderLayer>,
    layer_norm: LayerNorm,
}

impl WhisperEncoder {
    fn new(cfg: &WhisperConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        let c1 = Conv1dConfig {
            padding: 1,
            ..Default::default()
        };
        let c2 = Conv1dConfig {
            padding: 1,
            stride: 2,
            ..Default::default()
        };
        Ok(Self {
            conv1: conv1d(cfg.num_mel_bins, d, 3, c1, vb.pp("conv1"))?,
            conv2: conv1d(d, d, 3, c2, vb.pp("conv2"))?,
            embed_positions: vb.get((cfg.max_source_positions, d), "embed_positions.weight")?,
            layers: (0..cfg.encoder_layers)
                .map(|i| WhisperEncoderLayer::new(cfg, vb.pp(format!("layers.{i}"))))
                .collect::<Result<Vec<_>>>()?,
            layer_norm: whisper_layer_norm(d, vb.pp("layer_norm"))?,
        })
    }

    /// `input_features` (batch, num_mel_bins, 2 * max_source_positions) -> (batch, max_source_positions,
    /// d_model). The caller checks the frame count.
    pub fn forward(&self, input_features: &Tensor) -> Result<Tensor> {
        let inputs_embeds = crate::nn::gelu(&self.conv1.forward(input_features)?)?;
        let inputs_embeds = crate::nn::gelu(&self.conv2.forward(&inputs_embeds)?)?;
        let inputs_embeds = inputs_embeds.permute((0, 2, 1))?;
        let mut hidden_states = inputs_embeds.broadcast_add(&self.embed_positions)?;
        for layer in &self.layers {
            hidden_states = layer.forward(&hidden_states)?;
        }
        self.layer_norm.forward(&hidden_states)
    }
}

pub struct WhisperDecoder {
    embed_tokens: Embedding,
    embed_positions: Embedding,
    layers: Vec<WhisperDecoderLayer>,
    layer_norm: LayerNorm,
}

impl WhisperDecoder {
    fn new(cfg: &WhisperConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        Ok(Self {
            embed_tokens: embedding(cfg.vocab_size, d, vb.pp("embed_tokens"))?,
            embed_positions: embedding(cfg.max_target_positions, d, vb.pp("embed_positions"))?,
            layers: (0..cfg.decoder_layers)
                .map(|i| WhisperDecoderLayer::new(cfg, i, vb.pp(format!("layers.{i}"))))
                .collect::<Result<Vec<_>>>()?,
            layer_norm: whisper_layer_norm(d, vb.pp("layer_norm"))?,
        })
    }

    /// `input_ids` (batch, seq) at positions `past..past + seq`, where `past` is what the cache holds;
    /// `attention_mask` is the 2D mask (1 = token, 0 = padding) of the cached and new positions.
    fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: &[Vec<u32>],
        encoder_hidden_states: &Tensor,
        mut past_key_values: Option<&mut EncoderDecoderCache>,
    ) -> Result<Tensor> {
        let (_, seq) = input_ids.dims2()?;
        let past = past_key_values
            .as_ref()
            .map(|c| c.self_attention_cache.get_seq_length())
            .unwrap_or(0);
        let inputs_embeds = self.embed_tokens.forward(input_ids)?;
        let position_ids = Tensor::arange(past as u32, (past + seq) as u32, input_ids.device())?;
        let positions = self.embed_positions.forward(&position_ids)?;
        let mut hidden_states = inputs_embeds.broadcast_add(&positions)?;
        // One new token with no padding sees every cached position: its causal mask is all zeros,
        // which adds nothing, so it is left out (one upload and one add per layer less per step).
        let unmasked = seq == 1 && attention_mask.iter().all(|row| row.iter().all(|&k| k != 0));
        let mask = if unmasked {
            None
        } else {
            Some(causal_mask(
                attention_mask,
                seq,
                None,
                hidden_states.dtype(),
                hidden_states.device(),
            )?)
        };
        for layer in &self.layers {
            hidden_states = layer.forward(
                &hidden_states,
                mask.as_ref(),
                encoder_hidden_states,
                past_key_values.as_deref_mut(),
            )?;
        }
        self.layer_norm.forward(&hidden_states)
    }
}

/// `WhisperModel` and `proj_out`.
pub struct WhisperForConditionalGeneration {
    encoder: WhisperEncoder,
    decoder: WhisperDecoder,
    proj_out: Linear,
    pub decoder_layers: usize,
}

impl WhisperForConditionalGeneration {
    pub fn new(cfg: &WhisperConfig, vb: VarBuilder) -> Result<Self> {
        let model = vb.pp("model");
        let decoder = WhisperDecoder::new(cfg, model.pp("decoder"))?;
        // proj_out is tied to embed_tokens unless the checkpoint has its own (transformers then keeps
        // the checkpoint's, tied or not) or the config unties them.
        let proj_out = if vb.contains_tensor("proj_out.weight") || !cfg.tie_word_embeddings {
            linear_no_bias(cfg.d_model, cfg.vocab_size, vb.pp("proj_out"))?
        } else {
            Linear::new(decoder.embed_tokens.embeddings().clone(), None)
        };
        Ok(Self {
            encoder: WhisperEncoder::new(cfg, model.pp("encoder"))?,
            decoder,
            proj_out,
            decoder_layers: cfg.decoder_layers,
        })
    }

    /// The encoder's last hidden state.
    pub fn encode(&self, input_features: &Tensor) -> Result<Tensor> {
        self.encoder.forward(input_features)
    }

    /// Logits (batch, seq, vocab) of `decoder_input_ids` over the encoder output; the mask covers
    /// the cached and new decoder positions.
    pub fn decode(
        &self,
        decoder_input_ids: &Tensor,
        decoder_attention_mask: &[Vec<u32>],
        encoder_hidden_states: &Tensor,
        past_key_values: Option<&mut EncoderDecoderCache>,
    ) -> Result<Tensor> {
        let h = self.decoder.forward(
            decoder_input_ids,
            decoder_attention_mask,
            encoder_hidden_states,
            past_key_values,
        )?;
        self.proj_out.forward(&h)
    }
}
