//! LLaMA, ported from transformers' `models/llama/modeling_llama.py` (LlamaForCausalLM, inference
//! with a KV cache). Qwen2 and Qwen3 are the same graph in transformers (their modeling files are
//! generated from Llama's by modular files): Qwen2 adds biases to q/k/v, Qwen3 an RMSNorm over each
//! head of q and k; both may use sliding-window layers. `models/qwen2.rs` and `models/qwen3.rs` read
//! their configs into the [`LlamaArch`] this file builds.

use crate::nn::{Embedding, embedding};
use candle_core::{D, DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use crate::activation::Activation;
use crate::models::common::{DynamicCache, RmsNorm, causal_mask, grouped_attention, lm_head};
use crate::models::rope::{RopeParameters, RopeType, RotaryEmbedding};
use crate::nn::{Linear, gated_act, linear_b, stack_linears};

/// `LlamaConfig`, with transformers' defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct LlamaConfig {
    #[serde(default = "d32000")]
    pub vocab_size: usize,
    #[serde(default = "d4096")]
    pub hidden_size: usize,
    #[serde(default = "d11008")]
    pub intermediate_size: usize,
    #[serde(default = "d32")]
    pub num_hidden_layers: usize,
    #[serde(default = "d32")]
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default = "silu")]
    pub hidden_act: Activation,
    #[serde(default = "d2048")]
    pub max_position_embeddings: usize,
    #[serde(default = "eps")]
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub rope_parameters: Option<RopeParameters>,
    /// The legacy name of `rope_parameters`.
    #[serde(default)]
    pub rope_scaling: Option<RopeParameters>,
    /// The legacy place of `rope_parameters.rope_theta`.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub head_dim: Option<usize>,
}

pub(crate) fn d32() -> usize {
    32
}
fn d2048() -> usize {
    2048
}
pub(crate) fn d4096() -> usize {
    4096
}
fn d11008() -> usize {
    11008
}
fn d32000() -> usize {
    32000
}
pub(crate) fn silu() -> Activation {
    Activation::Silu
}
pub(crate) fn eps() -> f64 {
    1e-6
}

/// The shape of a Llama-family model, whichever config it came from.
#[derive(Debug, Clone)]
pub struct LlamaArch {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub hidden_act: Activation,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub tie_word_embeddings: bool,
    pub rope_theta: f64,
    pub rope_type: RopeType,
    /// Biases of q_proj, k_proj and v_proj (Llama: `attention_bias`; Qwen2: always).
    pub qkv_bias: bool,
    /// Bias of o_proj (Llama, Qwen3: `attention_bias`; Qwen2: never).
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// Qwen3's RMSNorm over each head of q and k.
    pub qk_norm: bool,
    /// Per layer: the sliding window of a `sliding_attention` layer, `None` for full attention.
    pub sliding_window: Vec<Option<usize>>,
}

impl LlamaConfig {
    pub fn arch(&self) -> std::result::Result<LlamaArch, (String, String)> {
        let (rope_theta, rope_type) = RopeParameters::standardize(
            self.rope_parameters.as_ref(),
            self.rope_scaling.as_ref(),
            self.rope_theta,
            self.max_position_embeddings,
        )
        .map_err(|(f, m)| (format!("rope_parameters.{f}"), m))?;
        let heads = self.num_attention_heads.max(1);
        Ok(LlamaArch {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.num_key_value_heads.unwrap_or(self.num_attention_heads),
            head_dim: self.head_dim.unwrap_or(self.hidden_size / heads),
            hidden_act: self.hidden_act,
            max_position_embeddings: self.max_position_embeddings,
            rms_norm_eps: self.rms_norm_eps,
            tie_word_embeddings: self.tie_word_embeddings,
            rope_theta,
            rope_type,
            qkv_bias: self.attention_bias,
            o_bias: self.attention_bias,
            mlp_bias: self.mlp_bias,
            qk_norm: false,
            sliding_window: vec![None; self.num_hidden_layers],
        })
    }
}

pub struct LlamaMLP {
    /// `gate_proj` and `up_proj`, stacked: one matrix product computes both.
    gate_up_proj: Linear,
    down_proj: Linear,
    act_fn: Activation,
}

impl LlamaMLP {
    pub fn new(cfg: &LlamaArch, vb: VarBuilder) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let gate_proj = linear_b(h, i, cfg.mlp_bias, vb.pp("gate_proj"))?;
        let up_proj = linear_b(h, i, cfg.mlp_bias, vb.pp("up_proj"))?;
        Ok(Self {
            gate_up_proj: stack_linears(&[gate_proj, up_proj])?,
            down_proj: linear_b(i, h, cfg.mlp_bias, vb.pp("down_proj"))?,
            act_fn: cfg.hidden_act,
        })
    }

    /// down_proj(act_fn(gate_proj(x)) * up_proj(x))
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate_up = self.gate_up_proj.forward(x)?;
        self.down_proj.forward(&gated_act(&gate_up, self.act_fn)?)
    }
}

pub struct LlamaAttention {
    layer_idx: usize,
    head_dim: usize,
    num_heads: usize,
    num_key_value_heads: usize,
    scaling: f64,
    /// `q_proj`, `k_proj` and `v_proj`, stacked: one matrix product computes all three.
    qkv_proj: Linear,
    o_proj: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    pub sliding_window: Option<usize>,
}

impl LlamaAttention {
    pub fn new(cfg: &LlamaArch, layer_idx: usize, vb: VarBuilder) -> Result<Self> {
        let hd = cfg.head_dim;
        let (q_norm, k_norm) = if cfg.qk_norm {
            (
                Some(RmsNorm::new(hd, cfg.rms_norm_eps, vb.pp("q_norm"))?),
                Some(RmsNorm::new(hd, cfg.rms_norm_eps, vb.pp("k_norm"))?),
            )
        } else {
            (None, None)
        };
        Ok(Self {
            layer_idx,
            head_dim: hd,
            num_heads: cfg.num_attention_heads,
            num_key_value_heads: cfg.num_key_value_heads,
            scaling: (hd as f64).powf(-0.5),
            qkv_proj: stack_linears(&[
                linear_b(
                    cfg.hidden_size,
                    cfg.num_attention_heads * hd,
                    cfg.qkv_bias,
                    vb.pp("q_proj"),
                )?,
                linear_b(
                    cfg.hidden_size,
                    cfg.num_key_value_heads * hd,
                    cfg.qkv_bias,
                    vb.pp("k_proj"),
                )?,
                linear_b(
                    cfg.hidden_size,
                    cfg.num_key_value_heads * hd,
                    cfg.qkv_bias,
                    vb.pp("v_proj"),
                )?,
            ])?,
            o_proj: linear_b(
                cfg.num_attention_heads * hd,
                cfg.hidden_size,
                cfg.o_bias,
                vb.pp("o_proj"),
            )?,
            q_norm,
            k_norm,
            sliding_window: cfg.sliding_window[layer_idx],
        })
    }

    pub fn forward(
        &self,
        hidden_states: &Tensor,
        position_embeddings: &(Tensor, Tensor),
        attention_mask: &Tensor,
        past_key_values: Option<&mut DynamicCache>,
    ) -> Result<Tensor> {
        let (b, l, _) = hidden_states.dims3()?;
        let heads = |x: Tensor, n: usize, norm: &Option<RmsNorm>| -> Result<Tensor> {
            let x = crate::nn::contiguous(&x)?.reshape((b, l, n, self.head_dim))?;
            let x = match norm {
                Some(norm) => norm.forward(&x)?,
                None => x,
            };
            crate::nn::contiguous(&x.transpose(1, 2)?)
        };
        let (q_size, kv_size) = (self.num_heads * self.head_dim, self.num_key_value_heads * self.head_dim);
        let qkv = self.qkv_proj.forward(hidden_states)?;
        let query_states = heads(qkv.narrow(D::Minus1, 0, q_size)?, self.num_heads, &self.q_norm)?;
        let key_states = heads(
            qkv.narrow(D::Minus1, q_size, kv_size)?,
            self.num_key_value_heads,
            &self.k_norm,
        )?;
        let value_states = heads(
            qkv.narrow(D::Minus1, q_size + kv_size, kv_size)?,
            self.num_key_value_heads,
            &None,
        )?;

        // transformers' apply_rotary_pos_emb (q * cos + rotate_half(q) * sin), from the first halves of
        // cos and sin (the second halves repeat them).
        let (cos, sin) = position_embeddings;
        let query_states = crate::nn::rope(&query_states, cos, sin)?;
        let key_states = crate::nn::rope(&key_states, cos, sin)?;

        let (key_states, value_states) = match past_key_values {
            Some(cache) => cache.update(self.layer_idx, key_states, value_states)?,
            None => (key_states, value_states),
        };
        let n_rep = self.num_heads / self.num_key_value_heads;
        // The cache's keys and values are views into its buffers; the matrix products read them in place.
        let attn_output = grouped_attention(
            &query_states,
            &key_states,
            &value_states,
            Some(attention_mask),
            self.scaling,
            n_rep,
        )?;
        let attn_output = crate::nn::contiguous(&attn_output.transpose(1, 2)?)?.reshape((b, l, ()))?;
        self.o_proj.forward(&attn_output)
    }
}

pub struct LlamaDecoderLayer {
    self_attn: LlamaAttention,
    mlp: LlamaMLP,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

impl LlamaDecoderLayer {
    pub fn new(cfg: &LlamaArch, layer_idx: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            self_attn: LlamaAttention::new(cfg, layer_idx, vb.pp("self_attn"))?,
            mlp: LlamaMLP::new(cfg, vb.pp("mlp"))?,
            input_layernorm: RmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, vb.pp("input_layernorm"))?,
            post_attention_layernorm: RmsNorm::new(
                cfg.hidden_size,
                cfg.rms_norm_eps,
                vb.pp("post_attention_layernorm"),
            )?,
        })
    }

    pub fn forward(
        &self,
        hidden_states: &Tensor,
        attention_mask: &Tensor,
        position_embeddings: &(Tensor, Tensor),
        past_key_values: Option<&mut DynamicCache>,
    ) -> Result<Tensor> {
        let residual = hidden_states;
        let hs = self.input_layernorm.forward(hidden_states)?;
        let hs = self
            .self_attn
            .forward(&hs, position_embeddings, attention_mask, past_key_values)?;
        let hs = (residual + hs)?;
        let residual = &hs;
        let out = self.mlp.forward(&self.post_attention_layernorm.forward(&hs)?)?;
        residual + out
    }
}

pub struct LlamaModel {
    embed_tokens: Embedding,
    layers: Vec<LlamaDecoderLayer>,
    norm: RmsNorm,
    rotary_emb: RotaryEmbedding,
    dtype: DType,
    device: Device,
}

impl LlamaModel {
    pub fn new(cfg: &LlamaArch, vb: VarBuilder) -> Result<Self> {
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| LlamaDecoderLayer::new(cfg, i, vb.pp(format!("layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed_tokens: embedding(cfg.vocab_size, cfg.hidden_size, vb.pp("embed_tokens"))?,
            layers,
            norm: RmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, vb.pp("norm"))?,
            rotary_emb: RotaryEmbedding::new(cfg.rope_type, cfg.rope_theta, cfg.head_dim, cfg.max_position_embeddings),
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    /// `input_ids` (batch, seq) at `position_ids`; `attention_mask` holds the 2D mask of the cached
    /// positions and the new ones (batch, past + seq). Returns the last hidden state (batch, seq, hidden).
    pub fn forward(
        &mut self,
        input_ids: &Tensor,
        attention_mask: &[Vec<u32>],
        position_ids: &[Vec<i64>],
        past_key_values: Option<&mut DynamicCache>,
    ) -> Result<Tensor> {
        let inputs_embeds = self.embed_tokens.forward(input_ids)?;
        self.forward_embeds(&inputs_embeds, attention_mask, position_ids, past_key_values)
    }

    /// [`Self::forward`] from `inputs_embeds` (batch, seq, hidden), as vision-language models call it.
    pub fn forward_embeds(
        &mut self,
        inputs_embeds: &Tensor,
        attention_mask: &[Vec<u32>],
        position_ids: &[Vec<i64>],
        mut past_key_values: Option<&mut DynamicCache>,
    ) -> Result<Tensor> {
        let seq = inputs_embeds.dim(1)?;
        let mut masks: Vec<(Option<usize>, Tensor)> = Vec::new();
        // Once for all layers.
        let position_embeddings = self.rotary_emb.forward(position_ids, self.dtype, &self.device)?;
        let mut hidden_states = inputs_embeds.clone();
        for layer in &self.layers {
            let window = layer.self_attn.sliding_window;
            let mask = match masks.iter().find(|(w, _)| *w == window) {
                Some((_, m)) => m.clone(),
                None => {
                    let m = causal_mask(attention_mask, seq, window, self.dtype, &self.device)?;
                    masks.push((window, m.clone()));
                    m
                }
            };
            hidden_states = layer.forward(
                &hidden_states,
                &mask,
                &position_embeddings,
                past_key_values.as_deref_mut(),
            )?;
        }
        self.norm.forward(&hidden_states)
    }

    pub fn embeddings(&self) -> &Tensor {
        self.embed_tokens.embeddings()
    }

    /// `embed_tokens(input_ids)`: (batch, seq) -> (batch, seq, hidden), for models that merge other
    /// embeddings in before the layers (LLaVA's image features).
    pub fn embed(&self, input_ids: &Tensor) -> Result<Tensor> {
        self.embed_tokens.forward(input_ids)
    }
}

pub struct LlamaForCausalLM {
    pub model: LlamaModel,
    lm_head: Linear,
    pub num_layers: usize,
}

impl LlamaForCausalLM {
    /// `vb` is the root of the checkpoint (`lm_head.weight`), `model_vb` the LlamaModel's weights
    /// (`model.*` in LlamaForCausalLM checkpoints, the root in LlamaModel ones).
    pub fn new(cfg: &LlamaArch, vb: VarBuilder, model_vb: VarBuilder) -> Result<Self> {
        let model = LlamaModel::new(cfg, model_vb)?;
        let lm_head = lm_head(
            &vb,
            model.embeddings(),
            cfg.tie_word_embeddings,
            cfg.hidden_size,
            cfg.vocab_size,
        )?;
        Ok(Self {
            model,
            lm_head,
            num_layers: cfg.num_hidden_layers,
        })
    }

    /// Logits (batch, seq, vocab) of the positions from `logits_from` on.
    pub fn forward(
        &mut self,
        input_ids: &Tensor,
        attention_mask: &[Vec<u32>],
        position_ids: &[Vec<i64>],
        past_key_values: Option<&mut DynamicCache>,
        logits_from: usize,
    ) -> Result<Tensor> {
        let inputs_embeds = self.model.embed_tokens.forward(input_ids)?;
        self.forward_embeds(
            &inputs_embeds,
            attention_mask,
            position_ids,
            past_key_values,
            logits_from,
        )
    }

    /// [`Self::forward`] from `inputs_embeds` (batch, seq, hidden), as vision-language models call it.
    pub fn forward_embeds(
        &mut self,
        inputs_embeds: &Tensor,
        attention_mask: &[Vec<u32>],
        position_ids: &[Vec<i64>],
        past_key_values: Option<&mut DynamicCache>,
        logits_from: usize,
    ) -> Result<Tensor> {
        let hidden_states = self
            .model
            .forward_embeds(inputs_embeds, attention_mask, position_ids, past_key_values)?;
        let l = hidden_states.dim(1)?;
        self.lm_head
            .forward(&hidden_states.narrow(1, logits_from, l - logits_from)?)
    }
}
