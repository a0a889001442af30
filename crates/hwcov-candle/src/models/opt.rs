//! OPT, ported from transformers' `models/opt/modeling_opt.py` (OPTForCausalLM, inference with a KV
//! cache). candle-transformers has no OPT.

use crate::nn::{Embedding, embedding};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use crate::activation::Activation;
use crate::models::common::{DynamicCache, causal_mask, eager_attention, lm_head};
use crate::nn::{LayerNorm, Linear, layer_norm, linear_b, linear_no_bias};

/// `OPTConfig`, with transformers' defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct OPTConfig {
    #[serde(default = "d50272")]
    pub vocab_size: usize,
    #[serde(default = "d768")]
    pub hidden_size: usize,
    #[serde(default = "d12")]
    pub num_hidden_layers: usize,
    #[serde(default = "d3072")]
    pub ffn_dim: usize,
    #[serde(default = "d2048")]
    pub max_position_embeddings: usize,
    #[serde(default = "yes")]
    pub do_layer_norm_before: bool,
    #[serde(default, rename = "_remove_final_layer_norm")]
    pub remove_final_layer_norm: bool,
    /// Defaults to `hidden_size`.
    #[serde(default)]
    pub word_embed_proj_dim: Option<usize>,
    #[serde(default = "d12")]
    pub num_attention_heads: usize,
    #[serde(default = "relu")]
    pub activation_function: Activation,
    #[serde(default = "yes")]
    pub enable_bias: bool,
    #[serde(default = "yes")]
    pub layer_norm_elementwise_affine: bool,
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
}

fn d12() -> usize {
    12
}
fn d768() -> usize {
    768
}
fn d2048() -> usize {
    2048
}
fn d3072() -> usize {
    3072
}
fn d50272() -> usize {
    50272
}
fn yes() -> bool {
    true
}
fn relu() -> Activation {
    Activation::Relu
}

impl OPTConfig {
    pub fn word_embed_proj_dim(&self) -> usize {
        self.word_embed_proj_dim.unwrap_or(self.hidden_size)
    }
}

/// `nn.LayerNorm(size, elementwise_affine=...)`, eps 1e-5.
fn opt_layer_norm(size: usize, affine: bool, vb: VarBuilder) -> Result<LayerNorm> {
    if affine {
        layer_norm(size, 1e-5, vb)
    } else {
        let ones = Tensor::ones(size, vb.dtype(), vb.device())?;
        let zeros = Tensor::zeros(size, vb.dtype(), vb.device())?;
        Ok(LayerNorm::from_parts(ones, zeros, 1e-5))
    }
}

/// `OPTLearnedPositionalEmbedding`: positions offset by 2, as OPT was trained.
pub struct OPTLearnedPositionalEmbedding {
    embedding: Embedding,
    offset: i64,
}

impl OPTLearnedPositionalEmbedding {
    pub fn new(num_embeddings: usize, embedding_dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            embedding: embedding(num_embeddings + 2, embedding_dim, vb)?,
            offset: 2,
        })
    }

    pub fn forward(&self, position_ids: &[Vec<i64>], device: &Device) -> Result<Tensor> {
        let b = position_ids.len();
        let l = position_ids.first().map(|r| r.len()).unwrap_or(0);
        let ids: Vec<u32> = position_ids
            .iter()
            .flatten()
            .map(|&p| (p + self.offset).max(0) as u32)
            .collect();
        self.embedding.forward(&Tensor::from_vec(ids, (b, l), device)?)
    }
}

/// The position ids OPT derives from the attention mask when none are given:
/// `cumsum(mask) * mask - 1`, from `past_seen_tokens` on (padding gets -1).
pub fn position_ids_from_mask(attention_mask: &[Vec<u32>], past_seen_tokens: usize) -> Vec<Vec<i64>> {
    attention_mask
        .iter()
        .map(|row| {
            let mut sum = 0i64;
            row.iter()
                .map(|&m| {
                    sum += m as i64;
                    sum * m as i64 - 1
                })
                .skip(past_seen_tokens)
                .collect()
        })
        .collect()
}

pub struct OPTAttention {
    layer_idx: usize,
    num_heads: usize,
    head_dim: usize,
    scaling: f64,
    k_proj: Linear,
    v_proj: Linear,
    q_proj: Linear,
    out_proj: Linear,
}

impl OPTAttention {
    pub fn new(cfg: &OPTConfig, layer_idx: usize, vb: VarBuilder) -> Result<Self> {
        let e = cfg.hidden_size;
        let head_dim = e / cfg.num_attention_heads;
        Ok(Self {
            layer_idx,
            num_heads: cfg.num_attention_heads,
            head_dim,
            scaling: (head_dim as f64).powf(-0.5),
            k_proj: linear_b(e, e, cfg.enable_bias, vb.pp("k_proj"))?,
            v_proj: linear_b(e, e, cfg.enable_bias, vb.pp("v_proj"))?,
            q_proj: linear_b(e, e, cfg.enable_bias, vb.pp("q_proj"))?,
            out_proj: linear_b(e, e, cfg.enable_bias, vb.pp("out_proj"))?,
        })
    }

    pub fn forward(
        &self,
        hidden_states: &Tensor,
        past_key_values: Option<&mut DynamicCache>,
        attention_mask: &Tensor,
    ) -> Result<Tensor> {
        let (bsz, tgt_len, _) = hidden_states.dims3()?;
        let heads = |x: Tensor| {
            x.reshape((bsz, tgt_len, self.num_heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        // The query is scaled before the product, as OPT was trained (hence scaling 1.0 below).
        let query_states = heads(crate::nn::mul_scalar(
            &self.q_proj.forward(hidden_states)?,
            self.scaling,
        )?)?;
        let key_states = heads(self.k_proj.forward(hidden_states)?)?;
        let value_states = heads(self.v_proj.forward(hidden_states)?)?;
        let (key_states, value_states) = match past_key_values {
            Some(cache) => cache.update(self.layer_idx, key_states, value_states)?,
            None => (key_states, value_states),
        };
        let attn_output = eager_attention(&query_states, &key_states, &value_states, Some(attention_mask), 1.0)?;
        let attn_output = attn_output.transpose(1, 2)?.reshape((bsz, tgt_len, ()))?;
        self.out_proj.forward(&attn_output)
    }
}

pub struct OPTDecoderLayer {
    self_attn: OPTAttention,
    do_layer_norm_before: bool,
    activation_fn: Activation,
    self_attn_layer_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    final_layer_norm: LayerNorm,
}

impl OPTDecoderLayer {
    pub fn new(cfg: &OPTConfig, layer_idx: usize, vb: VarBuilder) -> Result<Self> {
        let e = cfg.hidden_size;
        let affine = cfg.layer_norm_elementwise_affine;
        Ok(Self {
            self_attn: OPTAttention::new(cfg, layer_idx, vb.pp("self_attn"))?,
            do_layer_norm_before: cfg.do_layer_norm_before,
            activation_fn: cfg.activation_function,
            self_attn_layer_norm: opt_layer_norm(e, affine, vb.pp("self_attn_layer_norm"))?,
            fc1: linear_b(e, cfg.ffn_dim, cfg.enable_bias, vb.pp("fc1"))?,
            fc2: linear_b(cfg.ffn_dim, e, cfg.enable_bias, vb.pp("fc2"))?,
            final_layer_norm: opt_layer_norm(e, affine, vb.pp("final_layer_norm"))?,
        })
    }

    pub fn forward(
        &self,
        hidden_states: &Tensor,
        attention_mask: &Tensor,
        past_key_values: Option<&mut DynamicCache>,
    ) -> Result<Tensor> {
        let residual = hidden_states;
        // 125m, 1.7B, ..., 175B apply the layer norm before attention; 350m after.
        let hs = if self.do_layer_norm_before {
            self.self_attn_layer_norm.forward(hidden_states)?
        } else {
            hidden_states.clone()
        };
        let hs = self.self_attn.forward(&hs, past_key_values, attention_mask)?;
        let mut hs = (residual + hs)?;
        if !self.do_layer_norm_before {
            hs = self.self_attn_layer_norm.forward(&hs)?;
        }

        let residual = hs.clone();
        if self.do_layer_norm_before {
            hs = self.final_layer_norm.forward(&hs)?;
        }
        let hs = self.fc1.forward(&hs)?;
        let hs = self.activation_fn.forward(&hs)?;
        let hs = self.fc2.forward(&hs)?;
        let mut hs = (residual + hs)?;
        if !self.do_layer_norm_before {
            hs = self.final_layer_norm.forward(&hs)?;
        }
        Ok(hs)
    }
}

pub struct OPTDecoder {
    embed_tokens: Embedding,
    embed_positions: OPTLearnedPositionalEmbedding,
    project_out: Option<Linear>,
    project_in: Option<Linear>,
    final_layer_norm: Option<LayerNorm>,
    layers: Vec<OPTDecoderLayer>,
    dtype: DType,
    device: Device,
}

impl OPTDecoder {
    pub fn new(cfg: &OPTConfig, vb: VarBuilder) -> Result<Self> {
        let proj = cfg.word_embed_proj_dim();
        let (project_out, project_in) = if proj != cfg.hidden_size {
            (
                Some(linear_no_bias(cfg.hidden_size, proj, vb.pp("project_out"))?),
                Some(linear_no_bias(proj, cfg.hidden_size, vb.pp("project_in"))?),
            )
        } else {
            (None, None)
        };
        let final_layer_norm = if cfg.do_layer_norm_before && !cfg.remove_final_layer_norm {
            Some(opt_layer_norm(
                cfg.hidden_size,
                cfg.layer_norm_elementwise_affine,
                vb.pp("final_layer_norm"),
            )?)
        } else {
            None
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| OPTDecoderLayer::new(cfg, i, vb.pp(format!("layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed_tokens: embedding(cfg.vocab_size, proj, vb.pp("embed_tokens"))?,
            embed_positions: OPTLearnedPositionalEmbedding::new(
                cfg.max_position_embeddings,
                cfg.hidden_size,
                vb.pp("embed_positions"),
            )?,
            project_out,
            project_in,
            final_layer_norm,
            layers,
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    /// `input_ids` (batch, seq); `attention_mask` is the 2D mask of the cached positions and the new
    /// ones; `position_ids` default to [`position_ids_from_mask`]. Returns the last hidden state.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: &[Vec<u32>],
        position_ids: Option<&[Vec<i64>]>,
        mut past_key_values: Option<&mut DynamicCache>,
    ) -> Result<Tensor> {
        let seq = input_ids.dim(1)?;
        let inputs_embeds = self.embed_tokens.forward(input_ids)?;
        let past_seen_tokens = past_key_values.as_ref().map(|c| c.get_seq_length()).unwrap_or(0);
        let derived;
        let position_ids = match position_ids {
            Some(p) => p,
            None => {
                derived = position_ids_from_mask(attention_mask, past_seen_tokens);
                &derived
            }
        };
        let causal_mask = causal_mask(attention_mask, seq, None, self.dtype, &self.device)?;
        let pos_embeds = self.embed_positions.forward(position_ids, &self.device)?;
        let inputs_embeds = match &self.project_in {
            Some(p) => p.forward(&inputs_embeds)?,
            None => inputs_embeds,
        };
        let mut hidden_states = (inputs_embeds + pos_embeds)?;
        for layer in &self.layers {
            hidden_states = layer.forward(&hidden_states, &causal_mask, past_key_values.as_deref_mut())?;
        }
        if let Some(n) = &self.final_layer_norm {
            hidden_states = n.forward(&hidden_states)?;
        }
        if let Some(p) = &self.project_out {
            hidden_states = p.forward(&hidden_states)?;
        }
        Ok(hidden_states)
    }

    pub fn embeddings(&self) -> &Tensor {
        self.embed_tokens.embeddings()
    }
}

pub struct OPTForCausalLM {
    pub decoder: OPTDecoder,
    lm_head: Linear,
    pub num_layers: usize,
}

impl OPTForCausalLM {
    /// `vb` is the root of the checkpoint (`lm_head.weight`), `decoder_vb` the OPTDecoder's weights
    /// (`model.decoder.*` in OPTForCausalLM checkpoints, `decoder.*` in OPTModel ones).
    pub fn new(cfg: &OPTConfig, vb: VarBuilder, decoder_vb: VarBuilder) -> Result<Self> {
        let decoder = OPTDecoder::new(cfg, decoder_vb)?;
        let lm_head = lm_head(
            &vb,
            decoder.embeddings(),
            cfg.tie_word_embeddings,
            cfg.word_embed_proj_dim(),
            cfg.vocab_size,
        )?;
        Ok(Self {
            decoder,
            lm_head,
            num_layers: cfg.num_hidden_layers,
        })
    }

    /// Logits (batch, seq, vocab) of the positions from `logits_from` on.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: &[Vec<u32>],
        position_ids: Option<&[Vec<i64>]>,
        past_key_values: Option<&mut DynamicCache>,
        logits_from: usize,
    ) -> Result<Tensor> {
        let hidden_states = self
            .decoder
            .forward(input_ids, attention_mask, position_ids, past_key_values)?;
        let l = hidden_states.dim(1)?;
        self.lm_head
            .forward(&hidden_states.narrow(1, logits_from, l - logits_from)?)
    }
}
