//! T5, ported from transformers' `models/t5/modeling_t5.py` (T5ForConditionalGeneration, inference
//! with a KV cache): relative attention buckets, the ReLU and gated FFNs of t5 and t5 v1.1, and the
//! d_model**-0.5 rescale of the decoder output when the config says so.
//!
//! candle-transformers' t5 keeps its cache inside the model and takes no encoder attention mask,
//! so the model is written here.

use crate::nn::{Embedding, embedding};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use crate::activation::Activation;
use crate::models::common::{DynamicCache, RmsNorm, additive_padding_mask, causal_mask};
use crate::nn::{Linear, linear_no_bias};

/// `T5Config`, with transformers' defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct T5Config {
    #[serde(default = "d32128")]
    pub vocab_size: usize,
    #[serde(default = "d512")]
    pub d_model: usize,
    #[serde(default = "d64")]
    pub d_kv: usize,
    #[serde(default = "d2048")]
    pub d_ff: usize,
    #[serde(default = "d6")]
    pub num_layers: usize,
    /// Defaults to `num_layers`.
    #[serde(default)]
    pub num_decoder_layers: Option<usize>,
    #[serde(default = "d8")]
    pub num_heads: usize,
    #[serde(default = "d32")]
    pub relative_attention_num_buckets: usize,
    #[serde(default = "d128")]
    pub relative_attention_max_distance: usize,
    #[serde(default = "eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "relu")]
    pub feed_forward_proj: String,
    /// Derived from `feed_forward_proj` unless config.json has it.
    #[serde(default)]
    pub dense_act_fn: Option<String>,
    /// Derived from `feed_forward_proj` unless config.json has it.
    #[serde(default)]
    pub is_gated_act: Option<bool>,
    /// Read only to derive `scale_decoder_outputs`: transformers always ties T5's embeddings.
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
    #[serde(default)]
    pub scale_decoder_outputs: Option<bool>,
}

fn d6() -> usize {
    6
}
fn d8() -> usize {
    8
}
fn d32() -> usize {
    32
}
fn d64() -> usize {
    64
}
fn d128() -> usize {
    128
}
fn d512() -> usize {
    512
}
fn d2048() -> usize {
    2048
}
fn d32128() -> usize {
    32128
}
fn eps() -> f64 {
    1e-6
}
fn relu() -> String {
    "relu".to_string()
}

impl T5Config {
    pub fn num_decoder_layers(&self) -> usize {
        self.num_decoder_layers.unwrap_or(self.num_layers)
    }

    /// `__post_init__`: "gated-gelu" is gated with gelu_new; "gated-ACT" gated with ACT; "ACT" not gated.
    /// Returns the FFN's activation name and whether it is gated, or the field at fault.
    pub fn dense_act(&self) -> std::result::Result<(Activation, bool), (String, String)> {
        let parts: Vec<&str> = self.feed_forward_proj.split('-').collect();
        let derived_gated = parts[0] == "gated";
        if (parts.len() > 1 && !derived_gated) || parts.len() > 2 {
            return Err((
                "feed_forward_proj".into(),
                format!(
                    "`{}` is not of the form `gated-ACT` or `ACT` (e.g. gated-gelu, relu)",
                    self.feed_forward_proj
                ),
            ));
        }
        let derived_act = if self.feed_forward_proj == "gated-gelu" {
            "gelu_new"
        } else {
            parts[parts.len() - 1]
        };
        let (name, field) = match &self.dense_act_fn {
            Some(a) => (a.as_str(), "dense_act_fn"),
            None => (derived_act, "feed_forward_proj"),
        };
        let act: Activation = serde_json::from_value(serde_json::Value::String(name.to_string()))
            .map_err(|_| (field.to_string(), format!("unknown activation `{name}`")))?;
        Ok((act, self.is_gated_act.unwrap_or(derived_gated)))
    }

    /// Original T5 scales the decoder output by d_model**-0.5 before the LM head; v1.1 (saved with
    /// `tie_word_embeddings: false`) does not.
    pub fn scale_decoder_outputs(&self) -> bool {
        self.scale_decoder_outputs
            .unwrap_or(self.tie_word_embeddings != Some(false))
    }
}

/// The T5 shape the stacks are built from (`is_decoder` and the layer count differ between the two).
#[derive(Debug, Clone)]
struct StackConfig {
    d_model: usize,
    d_kv: usize,
    d_ff: usize,
    num_heads: usize,
    num_layers: usize,
    num_buckets: usize,
    max_distance: usize,
    eps: f64,
    act: Activation,
    gated: bool,
    is_decoder: bool,
}

/// `T5DenseActDense` and `T5DenseGatedActDense`.
enum DenseReluDense {
    ActDense {
        wi: Linear,
        wo: Linear,
        act: Activation,
    },
    GatedActDense {
        wi_0: Linear,
        wi_1: Linear,
        wo: Linear,
        act: Activation,
    },
}

impl DenseReluDense {
    fn new(cfg: &StackConfig, vb: VarBuilder) -> Result<Self> {
        // `_keep_in_fp32_modules = ["wo"]`: loaded at float16, transformers keeps `wo` in float32 and
        // runs it on the activations cast to float32 (float16 would overflow in large T5s).
        let wo_vb = match vb.dtype() {
            DType::F16 => vb.pp("wo").set_dtype(DType::F32),
            _ => vb.pp("wo"),
        };
        let wo = linear_no_bias(cfg.d_ff, cfg.d_model, wo_vb)?;
        Ok(if cfg.gated {
            DenseReluDense::GatedActDense {
                wi_0: linear_no_bias(cfg.d_model, cfg.d_ff, vb.pp("wi_0"))?,
                wi_1: linear_no_bias(cfg.d_model, cfg.d_ff, vb.pp("wi_1"))?,
                wo,
                act: cfg.act,
            }
        } else {
            DenseReluDense::ActDense {
                wi: linear_no_bias(cfg.d_model, cfg.d_ff, vb.pp("wi"))?,
                wo,
                act: cfg.act,
            }
        })
    }

    fn forward(&self, hidden_states: &Tensor) -> Result<Tensor> {
        let (hidden_states, wo) = match self {
            DenseReluDense::ActDense { wi, wo, act } => (act.forward(&wi.forward(hidden_states)?)?, wo),
            DenseReluDense::GatedActDense { wi_0, wi_1, wo, act } => {
                let hidden_gelu = act.forward(&wi_0.forward(hidden_states)?)?;
                let hidden_linear = wi_1.forward(hidden_states)?;
                ((hidden_gelu * hidden_linear)?, wo)
            }
        };
        wo.forward(&hidden_states.to_dtype(wo.weight().dtype())?)
    }
}

pub struct T5LayerFF {
    dense_relu_dense: DenseReluDense,
    layer_norm: RmsNorm,
}

impl T5LayerFF {
    fn new(cfg: &StackConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            dense_relu_dense: DenseReluDense::new(cfg, vb.pp("DenseReluDense"))?,
            layer_norm: RmsNorm::new(cfg.d_model, cfg.eps, vb.pp("layer_norm"))?,
        })
    }

    fn forward(&self, hidden_states: &Tensor) -> Result<Tensor> {
        let forwarded_states = self
            .dense_relu_dense
            .forward(&self.layer_norm.forward(hidden_states)?)?;
        residual_add(hidden_states, &forwarded_states)
    }
}

/// `residual + x` with torch's type promotion: at float16 the feed-forward's output is float32 (`wo`
/// is), and so is the residual stream from the first feed-forward on.
fn residual_add(residual: &Tensor, x: &Tensor) -> Result<Tensor> {
    if residual.dtype() == x.dtype() {
        return residual + x;
    }
    residual.to_dtype(DType::F32)? + x.to_dtype(DType::F32)?
}

/// `T5Attention._relative_position_bucket`, for one relative position (memory - query).
pub fn relative_position_bucket(
    relative_position: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> i64 {
    let mut relative_buckets = 0i64;
    let mut num_buckets = num_buckets as i64;
    let relative_position = if bidirectional {
        num_buckets /= 2;
        if relative_position > 0 {
            relative_buckets += num_buckets;
        }
        relative_position.abs()
    } else {
        -relative_position.min(0)
    };
    let max_exact = num_buckets / 2;
    if relative_position < max_exact {
        return relative_buckets + relative_position;
    }
    // In float32, as the torch tensors are; the cast truncates toward zero like `.to(torch.long)`.
    let scaled = (relative_position as f32 / max_exact as f32).ln()
        / ((max_distance as f64 / max_exact as f64).ln() as f32)
        * (num_buckets - max_exact) as f32;
    let large = (max_exact + scaled as i64).min(num_buckets - 1);
    relative_buckets + large
}

pub struct T5Attention {
    layer_idx: usize,
    is_decoder: bool,
    has_relative_attention_bias: bool,
    num_buckets: usize,
    max_distance: usize,
    n_heads: usize,
    key_value_proj_dim: usize,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    relative_attention_bias: Option<Embedding>,
}

impl T5Attention {
    fn new(cfg: &StackConfig, has_relative_attention_bias: bool, layer_idx: usize, vb: VarBuilder) -> Result<Self> {
        let inner = cfg.num_heads * cfg.d_kv;
        Ok(Self {
            layer_idx,
            is_decoder: cfg.is_decoder,
            has_relative_attention_bias,
            num_buckets: cfg.num_buckets,
            max_distance: cfg.max_distance,
            n_heads: cfg.num_heads,
            key_value_proj_dim: cfg.d_kv,
            q: linear_no_bias(cfg.d_model, inner, vb.pp("q"))?,
            k: linear_no_bias(cfg.d_model, inner, vb.pp("k"))?,
            v: linear_no_bias(cfg.d_model, inner, vb.pp("v"))?,
            o: linear_no_bias(inner, cfg.d_model, vb.pp("o"))?,
            relative_attention_bias: if has_relative_attention_bias {
                Some(embedding(
                    cfg.num_buckets,
                    cfg.num_heads,
                    vb.pp("relative_attention_bias"),
                )?)
            } else {
                None
            },
        })
    }

    /// `compute_bias`: (1, heads, query_length, key_length), the queries at positions from
    /// `past_seen_tokens` on.
    fn compute_bias(
        &self,
        query_length: usize,
        key_length: usize,
        past_seen_tokens: usize,
        device: &Device,
    ) -> Result<Tensor> {
        let Some(emb) = &self.relative_attention_bias else {
            candle_core::bail!("compute_bias on a layer without relative_attention_bias")
        };
        let mut buckets = Vec::with_capacity(query_length * key_length);
        for q in 0..query_length {
            let context_position = (q + past_seen_tokens) as i64;
            for memory_position in 0..key_length as i64 {
                buckets.push(relative_position_bucket(
                    memory_position - context_position,
                    !self.is_decoder,
                    self.num_buckets,
                    self.max_distance,
                ) as u32);
            }
        }
        let buckets = Tensor::from_vec(buckets, (query_length, key_length), device)?;
        emb.forward(&buckets)?.permute((2, 0, 1))?.unsqueeze(0)
    }

    /// Self-attention (`key_value_states` None) or attention over the encoder output. Returns the
    /// output and the position bias, which the first layer computes and the others reuse.
    fn forward(
        &self,
        hidden_states: &Tensor,
        mask: Option<&Tensor>,
        key_value_states: Option<&Tensor>,
        position_bias: Option<&Tensor>,
        past_key_values: Option<&mut DynamicCache>,
    ) -> Result<(Tensor, Tensor)> {
        let (b, q_len, _) = hidden_states.dims3()?;
        let heads = |x: Tensor| {
            let l = x.dim(1)?;
            x.reshape((b, l, self.n_heads, self.key_value_proj_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let query_states = heads(self.q.forward(hidden_states)?)?;
        let is_cross_attention = key_value_states.is_some();
        let mut past_seen_tokens = 0;
        let (key_states, value_states) = match (key_value_states, past_key_values) {
            // Cross-attention keys and values are computed once per encoder output.
            (Some(enc), Some(cache)) => match cache.get(self.layer_idx) {
                Some((k, v)) => (k.clone(), v.clone()),
                None => {
                    let (k, v) = (heads(self.k.forward(enc)?)?, heads(self.v.forward(enc)?)?);
                    cache.set(self.layer_idx, k.clone(), v.clone());
                    (k, v)
                }
            },
            (Some(enc), None) => (heads(self.k.forward(enc)?)?, heads(self.v.forward(enc)?)?),
            (None, Some(cache)) => {
                past_seen_tokens = cache
                    .get(self.layer_idx)
                    .map(|(k, _)| k.dim(2))
                    .transpose()?
                    .unwrap_or(0);
                let (k, v) = (
                    heads(self.k.forward(hidden_states)?)?,
                    heads(self.v.forward(hidden_states)?)?,
                );
                cache.update(self.layer_idx, k, v)?
            }
            (None, None) => (
                heads(self.k.forward(hidden_states)?)?,
                heads(self.v.forward(hidden_states)?)?,
            ),
        };
        let key_length = key_states.dim(2)?;
        let position_bias = match position_bias {
            Some(p) => p.clone(),
            None if self.has_relative_attention_bias && !is_cross_attention => {
                self.compute_bias(q_len, key_length, past_seen_tokens, hidden_states.device())?
            }
            None => Tensor::zeros(
                (1, self.n_heads, q_len, key_length),
                query_states.dtype(),
                query_states.device(),
            )?,
        };
        // eager_attention_forward with scaling 1.0: T5 folds the scale into its weights' init.
        let mut attn_weights =
            crate::nn::attention_scores(&query_states, &key_states)?.broadcast_add(&position_bias)?;
        if let Some(mask) = mask {
            attn_weights = crate::nn::add_broadcast(&attn_weights, mask)?;
        }
        // softmax(scores.float()).type_as(scores): in f32, rounded once.
        let attn_weights = crate::nn::attention_softmax(&attn_weights, 1.0, None)?;
        let attn_output = attn_weights.matmul(&value_states)?;
        let attn_output = attn_output.transpose(1, 2)?.reshape((b, q_len, ()))?;
        Ok((self.o.forward(&attn_output)?, position_bias))
    }
}

/// `T5LayerSelfAttention` and `T5LayerCrossAttention`: pre-norm attention with a residual.
pub struct T5LayerAttention {
    attention: T5Attention,
    layer_norm: RmsNorm,
}

impl T5LayerAttention {
    fn new(cfg: &StackConfig, attention: T5Attention, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            attention,
            layer_norm: RmsNorm::new(cfg.d_model, cfg.eps, vb.pp("layer_norm"))?,
        })
    }

    fn forward(
        &self,
        hidden_states: &Tensor,
        mask: Option<&Tensor>,
        key_value_states: Option<&Tensor>,
        position_bias: Option<&Tensor>,
        past_key_values: Option<&mut DynamicCache>,
    ) -> Result<(Tensor, Tensor)> {
        let normed = self.layer_norm.forward(hidden_states)?;
        let (attention_output, position_bias) =
            self.attention
                .forward(&normed, mask, key_value_states, position_bias, past_key_values)?;
        Ok((residual_add(hidden_states, &attention_output)?, position_bias))
    }
}

pub struct T5Block {
    self_attention: T5LayerAttention,
    cross_attention: Option<T5LayerAttention>,
    ff: T5LayerFF,
}

/// The caches of a decoder: self-attention keys and values, and cross-attention ones.
#[derive(Debug, Clone)]
pub struct EncoderDecoderCache {
    pub self_attention_cache: DynamicCache,
    pub cross_attention_cache: DynamicCache,
}

impl EncoderDecoderCache {
    pub fn new(num_layers: usize) -> Self {
        EncoderDecoderCache {
            self_attention_cache: DynamicCache::new(num_layers),
            cross_attention_cache: DynamicCache::new(num_layers),
        }
    }
}

impl T5Block {
    fn new(cfg: &StackConfig, has_relative_attention_bias: bool, layer_idx: usize, vb: VarBuilder) -> Result<Self> {
        let sa_vb = vb.pp("layer.0");
        let self_attention = T5LayerAttention::new(
            cfg,
            T5Attention::new(cfg, has_relative_attention_bias, layer_idx, sa_vb.pp("SelfAttention"))?,
            sa_vb,
        )?;
        let (cross_attention, ff_idx) = if cfg.is_decoder {
            let ca_vb = vb.pp("layer.1");
            let ca = T5LayerAttention::new(
                cfg,
                T5Attention::new(cfg, false, layer_idx, ca_vb.pp("EncDecAttention"))?,
                ca_vb,
            )?;
            (Some(ca), 2)
        } else {
            (None, 1)
        };
        Ok(Self {
            self_attention,
            cross_attention,
            ff: T5LayerFF::new(cfg, vb.pp(format!("layer.{ff_idx}")))?,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        hidden_states: &Tensor,
        attention_mask: Option<&Tensor>,
        position_bias: Option<&Tensor>,
        encoder_hidden_states: Option<&Tensor>,
        encoder_attention_mask: Option<&Tensor>,
        encoder_decoder_position_bias: Option<&Tensor>,
        past_key_values: Option<&mut EncoderDecoderCache>,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let (self_cache, cross_cache) = match past_key_values {
            Some(c) => (Some(&mut c.self_attention_cache), Some(&mut c.cross_attention_cache)),
            None => (None, None),
        };
        let (mut hidden_states, self_attn_position_bias) =
            self.self_attention
                .forward(hidden_states, attention_mask, None, position_bias, self_cache)?;
        let mut cross_attn_position_bias = None;
        if let (Some(ca), Some(enc)) = (&self.cross_attention, encoder_hidden_states) {
            let (hs, bias) = ca.forward(
                &hidden_states,
                encoder_attention_mask,
                Some(enc),
                encoder_decoder_position_bias,
                cross_cache,
            )?;
            hidden_states = hs;
            cross_attn_position_bias = Some(bias);
        }
        let hidden_states = self.ff.forward(&hidden_states)?;
        Ok((hidden_states, self_attn_position_bias, cross_attn_position_bias))
    }
}

pub struct T5Stack {
    block: Vec<T5Block>,
    final_layer_norm: RmsNorm,
    is_decoder: bool,
    dtype: DType,
    device: Device,
}

impl T5Stack {
    fn new(cfg: &StackConfig, vb: VarBuilder) -> Result<Self> {
        let block = (0..cfg.num_layers)
            .map(|i| T5Block::new(cfg, i == 0, i, vb.pp(format!("block.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            block,
            final_layer_norm: RmsNorm::new(cfg.d_model, cfg.eps, vb.pp("final_layer_norm"))?,
            is_decoder: cfg.is_decoder,
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    /// `inputs_embeds` (batch, seq, d_model). The encoder takes its padding mask (batch, seq); the
    /// decoder the 2D mask of its cached and new positions, the encoder output and the encoder's
    /// padding mask.
    fn forward(
        &self,
        inputs_embeds: &Tensor,
        attention_mask: &[Vec<u32>],
        encoder_hidden_states: Option<&Tensor>,
        encoder_attention_mask: Option<&Tensor>,
        mut past_key_values: Option<&mut EncoderDecoderCache>,
    ) -> Result<Tensor> {
        let seq = inputs_embeds.dim(1)?;
        let mask = if self.is_decoder {
            causal_mask(attention_mask, seq, None, self.dtype, &self.device)?
        } else {
            let rows: Vec<u32> = attention_mask.iter().flatten().copied().collect();
            let m = Tensor::from_vec(rows, (attention_mask.len(), seq), &self.device)?;
            additive_padding_mask(&m, self.dtype)?
        };
        let encoder_extended_attention_mask = match encoder_attention_mask {
            Some(m) if self.is_decoder => Some(additive_padding_mask(m, self.dtype)?),
            _ => None,
        };
        let mut position_bias: Option<Tensor> = None;
        let mut encoder_decoder_position_bias: Option<Tensor> = None;
        let mut hidden_states = inputs_embeds.clone();
        for layer in &self.block {
            let (hs, self_bias, cross_bias) = layer.forward(
                &hidden_states,
                Some(&mask),
                position_bias.as_ref(),
                encoder_hidden_states,
                encoder_extended_attention_mask.as_ref(),
                encoder_decoder_position_bias.as_ref(),
                past_key_values.as_deref_mut(),
            )?;
            hidden_states = hs;
            // The position biases are shared between the layers: the first one computes them.
            position_bias = Some(self_bias);
            if cross_bias.is_some() {
                encoder_decoder_position_bias = cross_bias;
            }
        }
        self.final_layer_norm.forward(&hidden_states)
    }
}

pub struct T5ForConditionalGeneration {
    shared: Embedding,
    encoder: T5Stack,
    decoder: T5Stack,
    lm_head: Linear,
    model_dim: usize,
    scale_decoder_outputs: bool,
    pub num_decoder_layers: usize,
}

impl T5ForConditionalGeneration {
    pub fn new(cfg: &T5Config, act: Activation, gated: bool, vb: VarBuilder) -> Result<Self> {
        let stack = |is_decoder: bool, num_layers: usize| StackConfig {
            d_model: cfg.d_model,
            d_kv: cfg.d_kv,
            d_ff: cfg.d_ff,
            num_heads: cfg.num_heads,
            num_layers,
            num_buckets: cfg.relative_attention_num_buckets,
            max_distance: cfg.relative_attention_max_distance,
            eps: cfg.layer_norm_epsilon,
            act,
            gated,
            is_decoder,
        };
        // `shared` is tied to both stacks' embed_tokens; a checkpoint may hold any one of them.
        let shared_name = ["shared", "encoder.embed_tokens", "decoder.embed_tokens"]
            .into_iter()
            .find(|n| vb.contains_tensor(&format!("{n}.weight")))
            .unwrap_or("shared");
        let shared = embedding(cfg.vocab_size, cfg.d_model, vb.pp(shared_name))?;
        // transformers ties lm_head to `shared` unless the checkpoint has its own lm_head.weight.
        let lm_head = crate::models::common::lm_head(&vb, shared.embeddings(), true, cfg.d_model, cfg.vocab_size)?;
        Ok(Self {
            encoder: T5Stack::new(&stack(false, cfg.num_layers), vb.pp("encoder"))?,
            decoder: T5Stack::new(&stack(true, cfg.num_decoder_layers()), vb.pp("decoder"))?,
            shared,
            lm_head,
            model_dim: cfg.d_model,
            scale_decoder_outputs: cfg.scale_decoder_outputs(),
            num_decoder_layers: cfg.num_decoder_layers(),
        })
    }

    /// The encoder's last hidden state for `input_ids` (batch, seq) and their padding mask.
    pub fn encode(&self, input_ids: &Tensor, attention_mask: &[Vec<u32>]) -> Result<Tensor> {
        let inputs_embeds = self.shared.forward(input_ids)?;
        self.encoder.forward(&inputs_embeds, attention_mask, None, None, None)
    }

    /// Decoder logits (batch, seq, vocab) for `decoder_input_ids` over the encoder output.
    /// `decoder_attention_mask` covers the cached and new decoder positions.
    pub fn decode(
        &self,
        decoder_input_ids: &Tensor,
        decoder_attention_mask: &[Vec<u32>],
        encoder_hidden_states: &Tensor,
        encoder_attention_mask: &Tensor,
        past_key_values: Option<&mut EncoderDecoderCache>,
    ) -> Result<Tensor> {
        let inputs_embeds = self.shared.forward(decoder_input_ids)?;
        let sequence_output = self.decoder.forward(
            &inputs_embeds,
            decoder_attention_mask,
            Some(encoder_hidden_states),
            Some(encoder_attention_mask),
            past_key_values,
        )?;
        let sequence_output = if self.scale_decoder_outputs {
            crate::nn::mul_scalar(&sequence_output, (self.model_dim as f64).powf(-0.5))?
        } else {
            sequence_output
        };
        self.lm_head.forward(&sequence_output)
    }
}

#[cfg(test)]
mod tests {
    use super::relative_position_bucket;

    /// Buckets of relative positions -45..=45, printed by transformers'
    /// `T5Attention._relative_position_bucket` for (bidirectional, num_buckets, max_distance).
    #[test]
    fn buckets_match_transformers() {
        let cases: [(bool, usize, usize, [i64; 91]); 3] = [
            (
                true,
                32,
                20,
                [
                    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15,
                    15, 15, 15, 14, 14, 13, 12, 12, 11, 10, 9, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 17, 18, 19, 20, 21, 22,
                    23, 24, 25, 25, 26, 27, 28, 28, 29, 30, 30, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31,
                    31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31,
                ],
            ),
            (
                false,
                32,
                20,
                [
                    31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31,
                    31, 28, 24, 20, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                    0, 0, 0, 0,
                ],
            ),
            (
                true,
                32,
                128,
                [
                    12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 11, 11, 11, 11, 11, 11, 11, 11, 11, 10, 10,
                    10, 10, 10, 10, 10, 9, 9, 9, 9, 8, 8, 8, 8, 7, 6, 5, 4, 3, 2, 1, 0, 17, 18, 19, 20, 21, 22, 23, 24,
                    24, 24, 24, 25, 25, 25, 25, 26, 26, 26, 26, 26, 26, 26, 27, 27, 27, 27, 27, 27, 27, 27, 27, 28, 28,
                    28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28,
                ],
            ),
        ];
        for (bidirectional, num_buckets, max_distance, want) in cases {
            let got: Vec<i64> = (-45..=45)
                .map(|r| relative_position_bucket(r, bidirectional, num_buckets, max_distance))
                .collect();
            assert_eq!(
                got, want,
                "bidirectional={bidirectional} num_buckets={num_buckets} max_distance={max_distance}"
            );
        }
    }
}
