//! CLIP, ported from transformers' `models/clip/modeling_clip.py` (CLIPModel with its CLIPTextModel
//! and CLIPVisionModel, inference only).
//!
//! candle-transformers' clip pools the text tower by argmax over the token ids only and applies no
//! padding mask; transformers pools at the first `eos_token_id` (argmax only for the legacy id 2) and
//! masks padding, so the model is written here.

use crate::nn::{Embedding, embedding};
use candle_core::{D, DType, Device, IndexOp, Module, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};
use serde::Deserialize;

use crate::activation::Activation;
use crate::models::common::{dtype_min, eager_attention};
use crate::nn::{Conv2d, LayerNorm, Linear, conv2d_no_bias, layer_norm, linear, linear_no_bias};

/// `eos_token_id` of a text config: one id, or a list as transformers' type allows.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(i64),
    Many(Vec<i64>),
}

/// `CLIPTextConfig`, with transformers' defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct CLIPTextConfig {
    #[serde(default = "d49408")]
    pub vocab_size: usize,
    #[serde(default = "d512")]
    pub hidden_size: usize,
    #[serde(default = "d2048")]
    pub intermediate_size: usize,
    #[serde(default = "d12")]
    pub num_hidden_layers: usize,
    #[serde(default = "d8")]
    pub num_attention_heads: usize,
    #[serde(default = "d77")]
    pub max_position_embeddings: usize,
    #[serde(default = "quick_gelu")]
    pub hidden_act: Activation,
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_eos")]
    pub eos_token_id: Option<TokenIds>,
}

/// `CLIPVisionConfig`, with transformers' defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct CLIPVisionConfig {
    #[serde(default = "d768")]
    pub hidden_size: usize,
    #[serde(default = "d3072")]
    pub intermediate_size: usize,
    #[serde(default = "d12")]
    pub num_hidden_layers: usize,
    #[serde(default = "d12")]
    pub num_attention_heads: usize,
    #[serde(default = "d3")]
    pub num_channels: usize,
    #[serde(default = "d224")]
    pub image_size: usize,
    #[serde(default = "d32")]
    pub patch_size: usize,
    #[serde(default = "quick_gelu")]
    pub hidden_act: Activation,
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
}

/// The top-level fields of `CLIPConfig` (the sub-configs are read on their own).
#[derive(Debug, Clone, Deserialize)]
pub struct CLIPConfig {
    #[serde(default = "d512")]
    pub projection_dim: usize,
}

fn d3() -> usize {
    3
}
fn d8() -> usize {
    8
}
fn d12() -> usize {
    12
}
fn d32() -> usize {
    32
}
fn d77() -> usize {
    77
}
fn d224() -> usize {
    224
}
fn d512() -> usize {
    512
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
fn d49408() -> usize {
    49408
}
fn quick_gelu() -> Activation {
    Activation::QuickGelu
}
fn eps() -> f64 {
    1e-5
}
fn default_eos() -> Option<TokenIds> {
    Some(TokenIds::One(49407))
}

/// What CLIPEncoder and its layers read from either tower's config.
#[derive(Debug, Clone, Copy)]
pub struct EncoderDims {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    pub num_hidden_layers: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
}

impl CLIPTextConfig {
    pub fn dims(&self) -> EncoderDims {
        EncoderDims {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_attention_heads: self.num_attention_heads,
            num_hidden_layers: self.num_hidden_layers,
            hidden_act: self.hidden_act,
            layer_norm_eps: self.layer_norm_eps,
        }
    }
}

impl CLIPVisionConfig {
    pub fn dims(&self) -> EncoderDims {
        EncoderDims {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_attention_heads: self.num_attention_heads,
            num_hidden_layers: self.num_hidden_layers,
            hidden_act: self.hidden_act,
            layer_norm_eps: self.layer_norm_eps,
        }
    }

    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }
}

/// How the text tower picks the token whose state it pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EosPooling {
    /// `eos_token_id == 2`, the configs from before transformers PR #24773: the highest token id.
    LegacyArgmax,
    /// The first position holding this id (position 0 where a row holds none, as argmax of zeros).
    FirstEos(i64),
}

impl EosPooling {
    /// Positions of the pooled token, one per row of `input_ids` (batch, seq).
    pub fn positions(self, input_ids: &[Vec<u32>]) -> Vec<usize> {
        input_ids
            .iter()
            .map(|row| match self {
                // torch.argmax returns the first of equal maxima.
                EosPooling::LegacyArgmax => {
                    let max = row.iter().copied().max().unwrap_or(0);
                    row.iter().position(|&t| t == max).unwrap_or(0)
                }
                EosPooling::FirstEos(eos) => row.iter().position(|&t| t as i64 == eos).unwrap_or(0),
            })
            .collect()
    }
}

pub struct CLIPAttention {
    k_proj: Linear,
    v_proj: Linear,
    q_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
    head_dim: usize,
    scale: f64,
}

impl CLIPAttention {
    pub fn new(embed_dim: usize, num_heads: usize, vb: VarBuilder) -> Result<Self> {
        let head_dim = embed_dim / num_heads;
        Ok(Self {
            k_proj: linear(embed_dim, embed_dim, vb.pp("k_proj"))?,
            v_proj: linear(embed_dim, embed_dim, vb.pp("v_proj"))?,
            q_proj: linear(embed_dim, embed_dim, vb.pp("q_proj"))?,
            out_proj: linear(embed_dim, embed_dim, vb.pp("out_proj"))?,
            num_heads,
            head_dim,
            scale: (head_dim as f64).powf(-0.5),
        })
    }

    /// hidden_states (batch, seq, embed); attention_mask additive, broadcastable to (batch, heads, seq, seq).
    pub fn forward(&self, hidden_states: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, l, _) = hidden_states.dims3()?;
        let heads = |x: Tensor| {
            x.reshape((b, l, self.num_heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = heads(self.q_proj.forward(hidden_states)?)?;
        let k = heads(self.k_proj.forward(hidden_states)?)?;
        let v = heads(self.v_proj.forward(hidden_states)?)?;
        let out = eager_attention(&q, &k, &v, attention_mask, self.scale)?
            .transpose(1, 2)?
            .reshape((b, l, ()))?;
        self.out_proj.forward(&out)
    }
}

pub struct CLIPMLP {
    fc1: Linear,
    fc2: Linear,
    activation_fn: Activation,
}

impl CLIPMLP {
    pub fn new(dims: &EncoderDims, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fc1: linear(dims.hidden_size, dims.intermediate_size, vb.pp("fc1"))?,
            fc2: linear(dims.intermediate_size, dims.hidden_size, vb.pp("fc2"))?,
            activation_fn: dims.hidden_act,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.activation_fn.forward(&self.fc1.forward(x)?)?)
    }
}

pub struct CLIPEncoderLayer {
    self_attn: CLIPAttention,
    layer_norm1: LayerNorm,
    mlp: CLIPMLP,
    layer_norm2: LayerNorm,
}

impl CLIPEncoderLayer {
    pub fn new(dims: &EncoderDims, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            self_attn: CLIPAttention::new(dims.hidden_size, dims.num_attention_heads, vb.pp("self_attn"))?,
            layer_norm1: layer_norm(dims.hidden_size, dims.layer_norm_eps, vb.pp("layer_norm1"))?,
            mlp: CLIPMLP::new(dims, vb.pp("mlp"))?,
            layer_norm2: layer_norm(dims.hidden_size, dims.layer_norm_eps, vb.pp("layer_norm2"))?,
        })
    }

    pub fn forward(&self, hidden_states: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        let residual = hidden_states;
        let h = self
            .self_attn
            .forward(&self.layer_norm1.forward(hidden_states)?, attention_mask)?;
        let h = (residual + h)?;
        let mlp = self.mlp.forward(&self.layer_norm2.forward(&h)?)?;
        h + mlp
    }
}

pub struct CLIPEncoder {
    layers: Vec<CLIPEncoderLayer>,
}

impl CLIPEncoder {
    pub fn new(dims: &EncoderDims, vb: VarBuilder) -> Result<Self> {
        let layers = (0..dims.num_hidden_layers)
            .map(|i| CLIPEncoderLayer::new(dims, vb.pp(format!("layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }

    pub fn forward(&self, inputs_embeds: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        let mut h = inputs_embeds.clone();
        for layer in &self.layers {
            h = layer.forward(&h, attention_mask)?;
        }
        Ok(h)
    }

    /// `output_hidden_states=True`: the input and the output of each layer, up to and including
    /// hidden state `last` (0 is the input); the layers after it are not run.
    pub fn hidden_states(&self, inputs_embeds: &Tensor, last: usize) -> Result<Vec<Tensor>> {
        let mut states = vec![inputs_embeds.clone()];
        for layer in self.layers.iter().take(last) {
            let h = layer.forward(&states[states.len() - 1], None)?;
            states.push(h);
        }
        Ok(states)
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }
}

pub struct CLIPTextEmbeddings {
    token_embedding: Embedding,
    position_embedding: Embedding,
}

impl CLIPTextEmbeddings {
    pub fn new(cfg: &CLIPTextConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            token_embedding: embedding(cfg.vocab_size, cfg.hidden_size, vb.pp("token_embedding"))?,
            position_embedding: embedding(
                cfg.max_position_embeddings,
                cfg.hidden_size,
                vb.pp("position_embedding"),
            )?,
        })
    }

    /// position_ids (batch or 1, seq); positions 0..seq where not given.
    pub fn forward(&self, input_ids: &Tensor, position_ids: Option<&Tensor>) -> Result<Tensor> {
        let seq_len = input_ids.dim(1)?;
        let positions = match position_ids {
            Some(p) => self.position_embedding.forward(p)?,
            None => self
                .position_embedding
                .forward(&Tensor::arange(0u32, seq_len as u32, input_ids.device())?)?,
        };
        self.token_embedding.forward(input_ids)?.broadcast_add(&positions)
    }
}

/// `create_causal_mask` with a padding mask, for eager attention: one additive (batch, 1, seq, seq)
/// mask, 0 where key j <= query i and j is not padding, the dtype's minimum elsewhere.
pub fn causal_padding_mask(
    attention_mask: Option<&Tensor>,
    b: usize,
    l: usize,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let pad: Vec<Vec<u32>> = match attention_mask {
        Some(m) => m.to_vec2::<u32>()?,
        None => vec![vec![1; l]; b],
    };
    let min = dtype_min(dtype).max(f32::MIN as f64) as f32;
    let mut v = vec![0f32; b * l * l];
    for (bi, row) in pad.iter().enumerate() {
        for i in 0..l {
            for j in 0..l {
                if j > i || row[j] == 0 {
                    v[(bi * l + i) * l + j] = min;
                }
            }
        }
    }
    Tensor::from_vec(v, (b, 1, l, l), device)?.to_dtype(dtype)
}

/// CLIPTextModel.
pub struct CLIPTextModel {
    embeddings: CLIPTextEmbeddings,
    encoder: CLIPEncoder,
    final_layer_norm: LayerNorm,
    pooling: EosPooling,
}

impl CLIPTextModel {
    pub fn new(cfg: &CLIPTextConfig, pooling: EosPooling, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            embeddings: CLIPTextEmbeddings::new(cfg, vb.pp("embeddings"))?,
            encoder: CLIPEncoder::new(&cfg.dims(), vb.pp("encoder"))?,
            final_layer_norm: layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("final_layer_norm"))?,
            pooling,
        })
    }

    /// Returns (last_hidden_state, pooler_output).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        position_ids: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let (b, l) = input_ids.dims2()?;
        let hidden_states = self.embeddings.forward(input_ids, position_ids)?;
        let mask = causal_padding_mask(attention_mask, b, l, hidden_states.dtype(), hidden_states.device())?;
        let last = self.encoder.forward(&hidden_states, Some(&mask))?;
        let last = self.final_layer_norm.forward(&last)?;
        let positions = self.pooling.positions(&input_ids.to_vec2::<u32>()?);
        let idx: Vec<u32> = positions.iter().enumerate().map(|(i, &p)| (i * l + p) as u32).collect();
        let idx = Tensor::new(idx.as_slice(), last.device())?;
        let pooled = last.reshape((b * l, ()))?.index_select(&idx, 0)?;
        Ok((last, pooled))
    }
}

pub struct CLIPVisionEmbeddings {
    class_embedding: Tensor,
    patch_embedding: Conv2d,
    position_embedding: Embedding,
    num_positions: usize,
}

impl CLIPVisionEmbeddings {
    pub fn new(cfg: &CLIPVisionConfig, vb: VarBuilder) -> Result<Self> {
        let conv_cfg = Conv2dConfig {
            stride: cfg.patch_size,
            ..Default::default()
        };
        let num_positions = cfg.num_patches() + 1;
        Ok(Self {
            class_embedding: vb.get(cfg.hidden_size, "class_embedding")?,
            patch_embedding: conv2d_no_bias(
                cfg.num_channels,
                cfg.hidden_size,
                cfg.patch_size,
                conv_cfg,
                vb.pp("patch_embedding"),
            )?,
            position_embedding: embedding(num_positions, cfg.hidden_size, vb.pp("position_embedding"))?,
            num_positions,
        })
    }

    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let b = pixel_values.dim(0)?;
        let patch_embeds = self
            .patch_embedding
            .forward(pixel_values)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let d = self.class_embedding.dim(0)?;
        let class_embeds = self.class_embedding.reshape((1, 1, d))?.broadcast_as((b, 1, d))?;
        let embeddings = Tensor::cat(&[&class_embeds, &patch_embeds], 1)?;
        let position_ids = Tensor::arange(0u32, self.num_positions as u32, pixel_values.device())?;
        embeddings.broadcast_add(&self.position_embedding.forward(&position_ids)?)
    }
}

/// CLIPVisionModel.
pub struct CLIPVisionModel {
    embeddings: CLIPVisionEmbeddings,
    pre_layrnorm: LayerNorm,
    encoder: CLIPEncoder,
    post_layernorm: LayerNorm,
}

impl CLIPVisionModel {
    pub fn new(cfg: &CLIPVisionConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            embeddings: CLIPVisionEmbeddings::new(cfg, vb.pp("embeddings"))?,
            // The misspelling is transformers' (and the checkpoints').
            pre_layrnorm: layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("pre_layrnorm"))?,
            encoder: CLIPEncoder::new(&cfg.dims(), vb.pp("encoder"))?,
            post_layernorm: layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("post_layernorm"))?,
        })
    }

    /// Returns (last_hidden_state, pooler_output): the [CLS] state after post_layernorm.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<(Tensor, Tensor)> {
        let h = self.pre_layrnorm.forward(&self.embeddings.forward(pixel_values)?)?;
        let last = self.encoder.forward(&h, None)?;
        let pooled = self.post_layernorm.forward(&last.i((.., 0, ..))?)?;
        Ok((last, pooled))
    }

    /// `hidden_states` of `forward(output_hidden_states=True)`, up to index `last`: the embeddings
    /// after pre_layrnorm (0), then the output of each encoder layer (the last one is
    /// `last_hidden_state`, before post_layernorm).
    pub fn hidden_states(&self, pixel_values: &Tensor, last: usize) -> Result<Vec<Tensor>> {
        let h = self.pre_layrnorm.forward(&self.embeddings.forward(pixel_values)?)?;
        self.encoder.hidden_states(&h, last)
    }

    pub fn num_hidden_layers(&self) -> usize {
        self.encoder.num_layers()
    }
}

/// x / `_get_vector_norm(x)`: the squares, their sum over the last dimension (accumulated in f32)
/// and its square root, each rounded to the dtype as torch stores them, then the quotient.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let squares = x.sqr()?;
    let sum = crate::nn::in_f32(&squares, |s| s.sum_keepdim(D::Minus1))?;
    let norm = crate::nn::in_f32(&sum, |s| s.sqrt())?;
    crate::nn::in_f32(x, |x| x.broadcast_div(&norm.to_dtype(DType::F32)?))
}

pub struct CLIPOutput {
    pub logits_per_image: Tensor,
    pub logits_per_text: Tensor,
    pub text_embeds: Tensor,
    pub image_embeds: Tensor,
}

pub struct CLIPModel {
    text_model: CLIPTextModel,
    vision_model: CLIPVisionModel,
    visual_projection: Linear,
    text_projection: Linear,
    logit_scale: Tensor,
}

impl CLIPModel {
    pub fn new(
        cfg: &CLIPConfig,
        text: &CLIPTextConfig,
        vision: &CLIPVisionConfig,
        pooling: EosPooling,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            text_model: CLIPTextModel::new(text, pooling, vb.pp("text_model"))?,
            vision_model: CLIPVisionModel::new(vision, vb.pp("vision_model"))?,
            visual_projection: linear_no_bias(vision.hidden_size, cfg.projection_dim, vb.pp("visual_projection"))?,
            text_projection: linear_no_bias(text.hidden_size, cfg.projection_dim, vb.pp("text_projection"))?,
            logit_scale: vb.get((), "logit_scale")?,
        })
    }

    /// `get_text_features`: the projected pooled text states.
    pub fn get_text_features(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        position_ids: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (_, pooled) = self.text_model.forward(input_ids, attention_mask, position_ids)?;
        self.text_projection.forward(&pooled)
    }

    /// `get_image_features`: the projected pooled image states.
    pub fn get_image_features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let (_, pooled) = self.vision_model.forward(pixel_values)?;
        self.visual_projection.forward(&pooled)
    }

    pub fn forward(
        &self,
        input_ids: &Tensor,
        pixel_values: &Tensor,
        attention_mask: Option<&Tensor>,
        position_ids: Option<&Tensor>,
    ) -> Result<CLIPOutput> {
        let image_embeds = l2_normalize(&self.get_image_features(pixel_values)?)?;
        let text_embeds = l2_normalize(&self.get_text_features(input_ids, attention_mask, position_ids)?)?;
        let logits_per_text = text_embeds
            .matmul(&image_embeds.t()?)?
            .broadcast_mul(&crate::nn::in_f32(&self.logit_scale, |s| s.exp())?)?;
        let logits_per_image = logits_per_text.t()?.contiguous()?;
        Ok(CLIPOutput {
            logits_per_image,
            logits_per_text,
            text_embeds,
            image_embeds,
        })
    }
}
