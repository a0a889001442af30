//! ViT, ported from transformers' `models/vit/modeling_vit.py` (ViTModel and
//! ViTForImageClassification, inference only).
//!
//! candle-transformers' vit returns only the classifier logits; transformers' ViTModel also returns
//! the final-layernormed hidden states and the pooler output, so the model is written here.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};
use serde::Deserialize;

use crate::activation::Activation;
use crate::models::common::{eager_attention, split_stacked_qkv};
use crate::nn::{Conv2d, LayerNorm, Linear, conv2d, layer_norm, linear, linear_b, stack_linears};

/// `ViTConfig`, with transformers' defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct ViTConfig {
    #[serde(default = "d768")]
    pub hidden_size: usize,
    #[serde(default = "d12")]
    pub num_hidden_layers: usize,
    #[serde(default = "d12")]
    pub num_attention_heads: usize,
    #[serde(default = "d3072")]
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: Activation,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "d224")]
    pub image_size: usize,
    #[serde(default = "d16")]
    pub patch_size: usize,
    #[serde(default = "d3")]
    pub num_channels: usize,
    #[serde(default = "yes")]
    pub qkv_bias: bool,
    /// Size of the pooler's dense output; transformers defaults it to hidden_size.
    #[serde(default)]
    pub pooler_output_size: Option<usize>,
    #[serde(default = "default_pooler_act")]
    pub pooler_act: Activation,
}

fn d3() -> usize {
    3
}
fn d12() -> usize {
    12
}
fn d16() -> usize {
    16
}
fn d224() -> usize {
    224
}
fn d768() -> usize {
    768
}
fn d3072() -> usize {
    3072
}
fn yes() -> bool {
    true
}
fn default_act() -> Activation {
    Activation::Gelu
}
fn default_pooler_act() -> Activation {
    Activation::Tanh
}
fn default_eps() -> f64 {
    1e-12
}

impl ViTConfig {
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }
}

pub struct ViTEmbeddings {
    cls_token: Tensor,
    projection: Conv2d,
    position_embeddings: Tensor,
}

impl ViTEmbeddings {
    pub fn new(cfg: &ViTConfig, vb: VarBuilder) -> Result<Self> {
        let conv_cfg = Conv2dConfig {
            stride: cfg.patch_size,
            ..Default::default()
        };
        Ok(Self {
            cls_token: vb.get((1, 1, cfg.hidden_size), "cls_token")?,
            projection: conv2d(
                cfg.num_channels,
                cfg.hidden_size,
                cfg.patch_size,
                conv_cfg,
                vb.pp("patch_embeddings.projection"),
            )?,
            position_embeddings: vb.get((1, cfg.num_patches() + 1, cfg.hidden_size), "position_embeddings")?,
        })
    }

    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let b = pixel_values.dim(0)?;
        // ViTPatchEmbeddings: conv, then flatten(2).transpose(1, 2).
        let patches = self
            .projection
            .forward(pixel_values)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        // candle concatenates contiguous inputs into a contiguous output (strided ones into a strided
        // view), which the position embeddings' add then takes in one pass.
        let patches = crate::nn::contiguous(&patches)?;
        let cls = self
            .cls_token
            .broadcast_as((b, 1, self.cls_token.dim(2)?))?
            .contiguous()?;
        crate::nn::add_broadcast(&Tensor::cat(&[&cls, &patches], 1)?, &self.position_embeddings)
    }
}

/// `ViTSelfAttention`. query, key and value are one stacked Linear (`split_stacked_qkv` says why).
pub struct ViTSelfAttention {
    qkv: Linear,
    num_attention_heads: usize,
    attention_head_size: usize,
}

impl ViTSelfAttention {
    pub fn new(cfg: &ViTConfig, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            qkv: stack_linears(&[
                linear_b(h, h, cfg.qkv_bias, vb.pp("query"))?,
                linear_b(h, h, cfg.qkv_bias, vb.pp("key"))?,
                linear_b(h, h, cfg.qkv_bias, vb.pp("value"))?,
            ])?,
            num_attention_heads: cfg.num_attention_heads,
            attention_head_size: h / cfg.num_attention_heads,
        })
    }

    pub fn forward(&self, hidden_states: &Tensor) -> Result<Tensor> {
        let (b, l, _) = hidden_states.dims3()?;
        let qkv = self.qkv.forward(hidden_states)?;
        let (q, k, v) = split_stacked_qkv(&qkv, self.num_attention_heads, self.attention_head_size)?;
        let scaling = (self.attention_head_size as f64).powf(-0.5);
        crate::nn::contiguous(&eager_attention(&q, &k, &v, None, scaling)?.transpose(1, 2)?)?.reshape((b, l, ()))
    }
}

pub struct ViTLayer {
    attention: ViTSelfAttention,
    attention_output: Linear,
    intermediate: Linear,
    act: Activation,
    output: Linear,
    layernorm_before: LayerNorm,
    layernorm_after: LayerNorm,
}

impl ViTLayer {
    pub fn new(cfg: &ViTConfig, vb: VarBuilder) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            attention: ViTSelfAttention::new(cfg, vb.pp("attention.attention"))?,
            attention_output: linear(h, h, vb.pp("attention.output.dense"))?,
            intermediate: linear(h, i, vb.pp("intermediate.dense"))?,
            act: cfg.hidden_act,
            output: linear(i, h, vb.pp("output.dense"))?,
            layernorm_before: layer_norm(h, cfg.layer_norm_eps, vb.pp("layernorm_before"))?,
            layernorm_after: layer_norm(h, cfg.layer_norm_eps, vb.pp("layernorm_after"))?,
        })
    }

    /// Pre-norm block: layernorm is applied before self-attention and before the MLP.
    pub fn forward(&self, hidden_states: &Tensor) -> Result<Tensor> {
        let attention_output = self.attention.forward(&self.layernorm_before.forward(hidden_states)?)?;
        let hidden_states = self
            .attention_output
            .forward_residual(&attention_output, hidden_states)?;
        let layer_output = self
            .intermediate
            .forward_act(&self.layernorm_after.forward(&hidden_states)?, self.act)?;
        self.output.forward_residual(&layer_output, &hidden_states)
    }
}

pub struct ViTOutput {
    pub last_hidden_state: Tensor,
    pub pooler_output: Option<Tensor>,
}

pub struct ViTModel {
    embeddings: ViTEmbeddings,
    layers: Vec<ViTLayer>,
    layernorm: LayerNorm,
    pooler: Option<(Linear, Activation)>,
}

impl ViTModel {
    /// `vb` points at the ViTModel weights (the root, or `vit.` inside a head model).
    pub fn new(cfg: &ViTConfig, vb: VarBuilder) -> Result<Self> {
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| ViTLayer::new(cfg, vb.pp(format!("encoder.layer.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        // ViTForImageClassification builds its ViTModel with add_pooling_layer=False.
        let pooler = if vb.contains_tensor("pooler.dense.weight") {
            let out = cfg.pooler_output_size.unwrap_or(cfg.hidden_size);
            Some((linear(cfg.hidden_size, out, vb.pp("pooler.dense"))?, cfg.pooler_act))
        } else {
            None
        };
        Ok(Self {
            embeddings: ViTEmbeddings::new(cfg, vb.pp("embeddings"))?,
            layers,
            layernorm: layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("layernorm"))?,
            pooler,
        })
    }

    pub fn forward(&self, pixel_values: &Tensor) -> Result<ViTOutput> {
        let mut hidden_states = self.embeddings.forward(pixel_values)?;
        for layer in &self.layers {
            hidden_states = layer.forward(&hidden_states)?;
        }
        let sequence_output = self.layernorm.forward(&hidden_states)?;
        let pooler_output = match &self.pooler {
            Some((dense, act)) => Some(act.forward(&dense.forward(&sequence_output.narrow(1, 0, 1)?.squeeze(1)?)?)?),
            None => None,
        };
        Ok(ViTOutput {
            last_hidden_state: sequence_output,
            pooler_output,
        })
    }
}

pub struct ViTForImageClassification {
    vit: ViTModel,
    classifier: Linear,
}

impl ViTForImageClassification {
    pub fn new(cfg: &ViTConfig, num_labels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            vit: ViTModel::new(cfg, vb.pp("vit"))?,
            classifier: linear(cfg.hidden_size, num_labels, vb.pp("classifier"))?,
        })
    }

    /// Returns (logits, the base model's output). The classifier reads the [CLS] token.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<(Tensor, ViTOutput)> {
        let out = self.vit.forward(pixel_values)?;
        let logits = self
            .classifier
            .forward(&out.last_hidden_state.narrow(1, 0, 1)?.squeeze(1)?)?;
        Ok((logits, out))
    }
}
