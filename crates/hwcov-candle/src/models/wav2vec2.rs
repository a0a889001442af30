//! Wav2Vec2, ported from transformers' `models/wav2vec2/modeling_wav2vec2.py` (Wav2Vec2Model and
//! Wav2Vec2ForCTC, inference only).
//!
//! candle-transformers has no Wav2Vec2. Covered: the conv feature encoder with group norm
//! (`feat_extract_norm = "group"`) or layer norm (`"layer"`), with or without `conv_bias`; the
//! weight-normed positional conv embedding (`parametrizations.weight.original0/1` as transformers 5
//! saves it, or the older `weight_g`/`weight_v`); both encoders (`do_stable_layer_norm`); the
//! attention adapters of `adapter_attn_dim`; the conv adapter of `add_adapter`; padding masks.

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::{Conv1dConfig, VarBuilder};
use serde::Deserialize;

use crate::activation::Activation;
use crate::models::common::{additive_padding_mask, eager_attention};
use crate::nn::{Conv1d, LayerNorm, Linear, conv1d, conv1d_no_bias, layer_norm, linear};

/// `Wav2Vec2Config`, with transformers' defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct Wav2Vec2Config {
    #[serde(default = "d32")]
    pub vocab_size: usize,
    #[serde(default = "d768")]
    pub hidden_size: usize,
    #[serde(default = "d12")]
    pub num_hidden_layers: usize,
    #[serde(default = "d12")]
    pub num_attention_heads: usize,
    #[serde(default = "d3072")]
    pub intermediate_size: usize,
    #[serde(default = "gelu")]
    pub hidden_act: Activation,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_norm")]
    pub feat_extract_norm: String,
    #[serde(default = "gelu")]
    pub feat_extract_activation: Activation,
    #[serde(default = "default_conv_dim")]
    pub conv_dim: Vec<usize>,
    #[serde(default = "default_conv_stride")]
    pub conv_stride: Vec<usize>,
    #[serde(default = "default_conv_kernel")]
    pub conv_kernel: Vec<usize>,
    #[serde(default)]
    pub conv_bias: bool,
    #[serde(default = "d128")]
    pub num_conv_pos_embeddings: usize,
    #[serde(default = "d16")]
    pub num_conv_pos_embedding_groups: usize,
    #[serde(default)]
    pub do_stable_layer_norm: bool,
    #[serde(default)]
    pub add_adapter: bool,
    #[serde(default = "d3")]
    pub adapter_kernel_size: usize,
    #[serde(default = "d2")]
    pub adapter_stride: usize,
    #[serde(default = "d3")]
    pub num_adapter_layers: usize,
    /// transformers sets it to hidden_size when absent.
    #[serde(default)]
    pub output_hidden_size: Option<usize>,
    #[serde(default)]
    pub adapter_attn_dim: Option<usize>,
    #[serde(default)]
    pub pad_token_id: Option<usize>,
}

fn d2() -> usize {
    2
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
fn d32() -> usize {
    32
}
fn d128() -> usize {
    128
}
fn d768() -> usize {
    768
}
fn d3072() -> usize {
    3072
}
fn gelu() -> Activation {
    Activation::Gelu
}
fn default_eps() -> f64 {
    1e-5
}
fn default_norm() -> String {
    "group".to_string()
}
fn default_conv_dim() -> Vec<usize> {
    vec![512; 7]
}
fn default_conv_stride() -> Vec<usize> {
    vec![5, 2, 2, 2, 2, 2, 2]
}
fn default_conv_kernel() -> Vec<usize> {
    vec![10, 3, 3, 3, 3, 2, 2]
}

/// `nn.LayerNorm(n)` and `nn.GroupNorm` use PyTorch's default eps, not the config's.
const TORCH_NORM_EPS: f64 = 1e-5;

impl Wav2Vec2Config {
    pub fn output_hidden_size(&self) -> usize {
        self.output_hidden_size.unwrap_or(self.hidden_size)
    }

    /// `_get_feat_extract_output_lengths` (without the adapter): samples -> feature frames.
    pub fn feat_extract_output_length(&self, mut length: usize) -> usize {
        for (&k, &s) in self.conv_kernel.iter().zip(&self.conv_stride) {
            if length < k {
                return 0;
            }
            length = (length - k) / s + 1;
        }
        length
    }
}

enum ConvNorm {
    None,
    Group(ChannelGroupNorm),
    Layer(LayerNorm),
}

/// `Wav2Vec2NoLayerNormConvLayer`, `Wav2Vec2LayerNormConvLayer` and `Wav2Vec2GroupNormConvLayer`.
pub struct Wav2Vec2ConvLayer {
    conv: Conv1d,
    norm: ConvNorm,
    activation: Activation,
}

impl Wav2Vec2ConvLayer {
    pub fn new(cfg: &Wav2Vec2Config, layer_id: usize, vb: VarBuilder) -> Result<Self> {
        let in_conv_dim = if layer_id > 0 { cfg.conv_dim[layer_id - 1] } else { 1 };
        let out_conv_dim = cfg.conv_dim[layer_id];
        let conv_cfg = Conv1dConfig {
            stride: cfg.conv_stride[layer_id],
            ..Default::default()
        };
        let k = cfg.conv_kernel[layer_id];
        let conv = if cfg.conv_bias {
            conv1d(in_conv_dim, out_conv_dim, k, conv_cfg, vb.pp("conv"))?
        } else {
            conv1d_no_bias(in_conv_dim, out_conv_dim, k, conv_cfg, vb.pp("conv"))?
        };
        let norm = match cfg.feat_extract_norm.as_str() {
            "layer" => ConvNorm::Layer(layer_norm(out_conv_dim, TORCH_NORM_EPS, vb.pp("layer_norm"))?),
            // Only the first layer of a "group" encoder has a norm: one group per channel.
            _ if layer_id == 0 => ConvNorm::Group(ChannelGroupNorm::new(
                out_conv_dim,
                TORCH_NORM_EPS,
                vb.pp("layer_norm"),
            )?),
            _ => ConvNorm::None,
        };
        Ok(Self {
            conv,
            norm,
            activation: cfg.feat_extract_activation,
        })
    }

    pub fn forward(&self, hidden_states: &Tensor) -> Result<Tensor> {
        let hidden_states = self.conv.forward(hidden_states)?;
        let hidden_states = match &self.norm {
            ConvNorm::None => hidden_states,
            ConvNorm::Group(n) => n.forward(&hidden_states)?,
            ConvNorm::Layer(n) => n.forward(&hidden_states.transpose(1, 2)?)?.transpose(1, 2)?,
        };
        self.activation.forward(&hidden_states)
    }
}

/// `nn.GroupNorm(n, n)`: each channel of (batch, n, time) normalised over time (`nn::group_norm`).
pub struct ChannelGroupNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl ChannelGroupNorm {
    pub fn new(n: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(n, "weight")?,
            bias: vb.get(n, "bias")?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::nn::group_norm(x, &self.weight, &self.bias, self.weight.dim(0)?, self.eps)
    }
}

/// `Wav2Vec2FeatureEncoder`: raw audio (batch, samples) -> (batch, conv_dim[-1], frames).
pub struct Wav2Vec2FeatureEncoder {
    conv_layers: Vec<Wav2Vec2ConvLayer>,
}

impl Wav2Vec2FeatureEncoder {
    pub fn new(cfg: &Wav2Vec2Config, vb: VarBuilder) -> Result<Self> {
        let conv_layers = (0..cfg.conv_dim.len())
            .map(|i| Wav2Vec2ConvLayer::new(cfg, i, vb.pp(format!("conv_layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { conv_layers })
    }

    pub fn forward(&self, input_values: &Tensor) -> Result<Tensor> {
        let mut hidden_states = input_values.unsqueeze(1)?;
        for layer in &self.conv_layers {
            hidden_states = layer.forward(&hidden_states)?;
        }
        Ok(hidden_states)
    }
}

/// `Wav2Vec2FeatureProjection`.
pub struct Wav2Vec2FeatureProjection {
    layer_norm: LayerNorm,
    projection: Linear,
}

impl Wav2Vec2FeatureProjection {
    pub fn new(cfg: &Wav2Vec2Config, vb: VarBuilder) -> Result<Self> {
        let last = *cfg.conv_dim.last().unwrap_or(&0);
        Ok(Self {
            layer_norm: layer_norm(last, cfg.layer_norm_eps, vb.pp("layer_norm"))?,
            projection: linear(last, cfg.hidden_size, vb.pp("projection"))?,
        })
    }

    pub fn forward(&self, hidden_states: &Tensor) -> Result<Tensor> {
        self.projection.forward(&self.layer_norm.forward(hidden_states)?)
    }
}

/// `Wav2Vec2PositionalConvEmbedding`: a grouped conv with weight norm over dim 2, "same" padding
/// (one frame dropped for an even kernel), and the feature activation.
pub struct Wav2Vec2PositionalConvEmbedding {
    conv: Conv1d,
    num_pad_remove: usize,
    activation: Activation,
}

impl Wav2Vec2PositionalConvEmbedding {
    pub fn new(cfg: &Wav2Vec2Config, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        let k = cfg.num_conv_pos_embeddings;
        let groups = cfg.num_conv_pos_embedding_groups;
        let vb = vb.pp("conv");
        let v_shape = (h, h / groups, k);
        let (g, v) = if vb.contains_tensor("parametrizations.weight.original0") {
            (
                vb.get((1, 1, k), "parametrizations.weight.original0")?,
                vb.get(v_shape, "parametrizations.weight.original1")?,
            )
        } else {
            (vb.get((1, 1, k), "weight_g")?, vb.get(v_shape, "weight_v")?)
        };
        // weight_norm(dim=2): w = v * (g / ||v||), the norm over every dimension but 2, as
        // torch._weight_norm computes it. Its fused kernel (dim 2 is the last; f32 and bf16) takes
        // g * v * (1 / norm) in f32 and rounds once; for half it has none and runs
        // `v * (g / norm_except_dim(v))`, each of the three steps rounded to f16.
        let (g32, v32) = (g.to_dtype(DType::F32)?, v.to_dtype(DType::F32)?);
        let norm = v32.sqr()?.sum_keepdim(0)?.sum_keepdim(1)?.sqrt()?;
        let weight = if v.dtype() == DType::F16 {
            let rounded = |t: &Tensor| crate::nn::round_to(t, DType::F16);
            let scale = rounded(&g32.broadcast_div(&rounded(&norm)?)?)?;
            v32.broadcast_mul(&scale)?.to_dtype(DType::F16)?
        } else {
            g32.broadcast_mul(&v32)?
                .broadcast_mul(&norm.recip()?)?
                .to_dtype(v.dtype())?
        };
        let bias = vb.get(h, "bias")?;
        let conv_cfg = Conv1dConfig {
            padding: k / 2,
            groups,
            ..Default::default()
        };
        Ok(Self {
            conv: Conv1d::new(weight, Some(bias), conv_cfg),
            num_pad_remove: if k.is_multiple_of(2) { 1 } else { 0 },
            activation: cfg.feat_extract_activation,
        })
    }

    pub fn forward(&self, hidden_states: &Tensor) -> Result<Tensor> {
        let hidden_states = self.conv.forward(&hidden_states.transpose(1, 2)?)?;
        let len = hidden_states.dim(2)?;
        let hidden_states = hidden_states.narrow(2, 0, len - self.num_pad_remove)?;
        self.activation.forward(&hidden_states)?.transpose(1, 2)
    }
}

/// `Wav2Vec2Attention` (self-attention of the encoder).
pub struct Wav2Vec2Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
    head_dim: usize,
}

impl Wav2Vec2Attention {
    pub fn new(cfg: &Wav2Vec2Config, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            q_proj: linear(h, h, vb.pp("q_proj"))?,
            k_proj: linear(h, h, vb.pp("k_proj"))?,
            v_proj: linear(h, h, vb.pp("v_proj"))?,
            out_proj: linear(h, h, vb.pp("out_proj"))?,
            num_heads: cfg.num_attention_heads,
            head_dim: h / cfg.num_attention_heads,
        })
    }

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
        let scaling = (self.head_dim as f64).powf(-0.5);
        let out = eager_attention(&q, &k, &v, attention_mask, scaling)?
            .transpose(1, 2)?
            .reshape((b, l, ()))?;
        self.out_proj.forward(&out)
    }
}

/// `Wav2Vec2FeedForward`.
pub struct Wav2Vec2FeedForward {
    intermediate_dense: Linear,
    intermediate_act_fn: Activation,
    output_dense: Linear,
}

impl Wav2Vec2FeedForward {
    pub fn new(cfg: &Wav2Vec2Config, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            intermediate_dense: linear(cfg.hidden_size, cfg.intermediate_size, vb.pp("intermediate_dense"))?,
            intermediate_act_fn: cfg.hidden_act,
            output_dense: linear(cfg.intermediate_size, cfg.hidden_size, vb.pp("output_dense"))?,
        })
    }

    pub fn forward(&self, hidden_states: &Tensor) -> Result<Tensor> {
        let h = self
            .intermediate_act_fn
            .forward(&self.intermediate_dense.forward(hidden_states)?)?;
        self.output_dense.forward(&h)
    }
}

/// `Wav2Vec2AttnAdapterLayer` (MMS adapters, stable-layer-norm layers only).
pub struct Wav2Vec2AttnAdapterLayer {
    norm: LayerNorm,
    linear_1: Linear,
    linear_2: Linear,
}

impl Wav2Vec2AttnAdapterLayer {
    pub fn new(cfg: &Wav2Vec2Config, input_dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm: layer_norm(cfg.hidden_size, TORCH_NORM_EPS, vb.pp("norm"))?,
            linear_1: linear(cfg.hidden_size, input_dim, vb.pp("linear_1"))?,
            linear_2: linear(input_dim, cfg.hidden_size, vb.pp("linear_2"))?,
        })
    }

    pub fn forward(&self, hidden_states: &Tensor) -> Result<Tensor> {
        let h = self.linear_1.forward(&self.norm.forward(hidden_states)?)?.relu()?;
        self.linear_2.forward(&h)
    }
}

/// `Wav2Vec2EncoderLayer` (post-norm) and `Wav2Vec2EncoderLayerStableLayerNorm` (pre-norm).
pub struct Wav2Vec2EncoderLayer {
    attention: Wav2Vec2Attention,
    layer_norm: LayerNorm,
    feed_forward: Wav2Vec2FeedForward,
    final_layer_norm: LayerNorm,
    adapter_layer: Option<Wav2Vec2AttnAdapterLayer>,
    stable_layer_norm: bool,
}

impl Wav2Vec2EncoderLayer {
    pub fn new(cfg: &Wav2Vec2Config, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        let adapter_layer = match (cfg.do_stable_layer_norm, cfg.adapter_attn_dim) {
            (true, Some(dim)) => Some(Wav2Vec2AttnAdapterLayer::new(cfg, dim, vb.pp("adapter_layer"))?),
            _ => None,
        };
        Ok(Self {
            attention: Wav2Vec2Attention::new(cfg, vb.pp("attention"))?,
            layer_norm: layer_norm(h, cfg.layer_norm_eps, vb.pp("layer_norm"))?,
            feed_forward: Wav2Vec2FeedForward::new(cfg, vb.pp("feed_forward"))?,
            final_layer_norm: layer_norm(h, cfg.layer_norm_eps, vb.pp("final_layer_norm"))?,
            adapter_layer,
            stable_layer_norm: cfg.do_stable_layer_norm,
        })
    }

    pub fn forward(&self, hidden_states: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        let attn_residual = hidden_states;
        if self.stable_layer_norm {
            let h = self.layer_norm.forward(hidden_states)?;
            let h = (attn_residual + self.attention.forward(&h, attention_mask)?)?;
            let h = (&h + self.feed_forward.forward(&self.final_layer_norm.forward(&h)?)?)?;
            match &self.adapter_layer {
                Some(a) => &h + a.forward(&h)?,
                None => Ok(h),
            }
        } else {
            let h = (attn_residual + self.attention.forward(hidden_states, attention_mask)?)?;
            let h = self.layer_norm.forward(&h)?;
            let h = (&h + self.feed_forward.forward(&h)?)?;
            self.final_layer_norm.forward(&h)
        }
    }
}

/// `Wav2Vec2Encoder` and `Wav2Vec2EncoderStableLayerNorm`: the layer norm comes before the layers in
/// the first, after them in the second.
pub struct Wav2Vec2Encoder {
    pos_conv_embed: Wav2Vec2PositionalConvEmbedding,
    layer_norm: LayerNorm,
    layers: Vec<Wav2Vec2EncoderLayer>,
    stable_layer_norm: bool,
}

impl Wav2Vec2Encoder {
    pub fn new(cfg: &Wav2Vec2Config, vb: VarBuilder) -> Result<Self> {
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Wav2Vec2EncoderLayer::new(cfg, vb.pp(format!("layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            pos_conv_embed: Wav2Vec2PositionalConvEmbedding::new(cfg, vb.pp("pos_conv_embed"))?,
            layer_norm: layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("layer_norm"))?,
            layers,
            stable_layer_norm: cfg.do_stable_layer_norm,
        })
    }

    /// `attention_mask`: (batch, frames) of 1 = frame, 0 = padding, in the hidden states' dtype.
    pub fn forward(&self, hidden_states: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        let mut hidden_states = hidden_states.clone();
        let mask = match attention_mask {
            Some(m) => {
                // Padded frames are zeroed before the positional conv sees them.
                hidden_states = hidden_states.broadcast_mul(&m.unsqueeze(D::Minus1)?)?;
                Some(additive_padding_mask(m, hidden_states.dtype())?)
            }
            None => None,
        };
        let position_embeddings = self.pos_conv_embed.forward(&hidden_states)?;
        hidden_states = (hidden_states + position_embeddings)?;
        if !self.stable_layer_norm {
            hidden_states = self.layer_norm.forward(&hidden_states)?;
        }
        for layer in &self.layers {
            hidden_states = layer.forward(&hidden_states, mask.as_ref())?;
        }
        if self.stable_layer_norm {
            hidden_states = self.layer_norm.forward(&hidden_states)?;
        }
        Ok(hidden_states)
    }
}

/// `Wav2Vec2AdapterLayer`: a strided conv and a GLU over the channels.
pub struct Wav2Vec2AdapterLayer {
    conv: Conv1d,
}

impl Wav2Vec2AdapterLayer {
    pub fn new(cfg: &Wav2Vec2Config, vb: VarBuilder) -> Result<Self> {
        let o = cfg.output_hidden_size();
        let conv_cfg = Conv1dConfig {
            padding: 1,
            stride: cfg.adapter_stride,
            ..Default::default()
        };
        Ok(Self {
            conv: conv1d(o, 2 * o, cfg.adapter_kernel_size, conv_cfg, vb.pp("conv"))?,
        })
    }

    pub fn forward(&self, hidden_states: &Tensor) -> Result<Tensor> {
        let h = self.conv.forward(hidden_states)?;
        let half = h.dim(1)? / 2;
        // nn.functional.glu: one kernel, rounded once.
        crate::nn::in_f32(&h, |h| {
            h.narrow(1, 0, half)?
                .mul(&candle_nn::ops::sigmoid(&h.narrow(1, half, half)?)?)
        })
    }
}

/// `Wav2Vec2Adapter`.
pub struct Wav2Vec2Adapter {
    proj: Option<(Linear, LayerNorm)>,
    layers: Vec<Wav2Vec2AdapterLayer>,
}

impl Wav2Vec2Adapter {
    pub fn new(cfg: &Wav2Vec2Config, vb: VarBuilder) -> Result<Self> {
        let o = cfg.output_hidden_size();
        let proj = if o != cfg.hidden_size {
            Some((
                linear(cfg.hidden_size, o, vb.pp("proj"))?,
                layer_norm(o, TORCH_NORM_EPS, vb.pp("proj_layer_norm"))?,
            ))
        } else {
            None
        };
        let layers = (0..cfg.num_adapter_layers)
            .map(|i| Wav2Vec2AdapterLayer::new(cfg, vb.pp(format!("layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { proj, layers })
    }

    pub fn forward(&self, hidden_states: &Tensor) -> Result<Tensor> {
        let mut h = match &self.proj {
            Some((proj, norm)) => norm.forward(&proj.forward(hidden_states)?)?,
            None => hidden_states.clone(),
        };
        h = h.transpose(1, 2)?;
        for layer in &self.layers {
            h = layer.forward(&h)?;
        }
        // Contiguous: candle's batched matmul in lm_head misreads this transposed layout.
        h.transpose(1, 2)?.contiguous()
    }
}

pub struct Wav2Vec2Model {
    feature_extractor: Wav2Vec2FeatureEncoder,
    feature_projection: Wav2Vec2FeatureProjection,
    encoder: Wav2Vec2Encoder,
    adapter: Option<Wav2Vec2Adapter>,
    cfg: Wav2Vec2Config,
}

impl Wav2Vec2Model {
    /// `vb` points at the Wav2Vec2Model weights (the root, or `wav2vec2.` inside a head model).
    pub fn new(cfg: &Wav2Vec2Config, vb: VarBuilder) -> Result<Self> {
        let adapter = if cfg.add_adapter {
            Some(Wav2Vec2Adapter::new(cfg, vb.pp("adapter"))?)
        } else {
            None
        };
        Ok(Self {
            feature_extractor: Wav2Vec2FeatureEncoder::new(cfg, vb.pp("feature_extractor"))?,
            feature_projection: Wav2Vec2FeatureProjection::new(cfg, vb.pp("feature_projection"))?,
            encoder: Wav2Vec2Encoder::new(cfg, vb.pp("encoder"))?,
            adapter,
            cfg: cfg.clone(),
        })
    }

    /// `_get_feature_vector_attention_mask`: the sample mask (batch, samples) -> a frame mask
    /// (batch, frames), 1 up to each row's number of frames.
    fn feature_vector_attention_mask(&self, frames: usize, attention_mask: &Tensor, dtype: DType) -> Result<Tensor> {
        let lengths: Vec<u32> = attention_mask.to_dtype(DType::U32)?.sum(1)?.to_vec1()?;
        let rows: Vec<f32> = lengths
            .iter()
            .flat_map(|&n| {
                let n = self.cfg.feat_extract_output_length(n as usize);
                (0..frames).map(move |t| if t < n { 1.0 } else { 0.0 })
            })
            .collect();
        Tensor::from_vec(rows, (lengths.len(), frames), attention_mask.device())?.to_dtype(dtype)
    }

    /// `input_values`: (batch, samples); `attention_mask`: (batch, samples) of 1 = sample, 0 = padding.
    /// Returns last_hidden_state (batch, frames, hidden_size), after the adapter if the model has one.
    pub fn forward(&self, input_values: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        let extract_features = self.feature_extractor.forward(input_values)?.transpose(1, 2)?;
        let frames = extract_features.dim(1)?;
        let mask = match attention_mask {
            Some(m) => Some(self.feature_vector_attention_mask(frames, m, extract_features.dtype())?),
            None => None,
        };
        let hidden_states = self.feature_projection.forward(&extract_features)?;
        let hidden_states = self.encoder.forward(&hidden_states, mask.as_ref())?;
        match &self.adapter {
            Some(a) => a.forward(&hidden_states),
            None => Ok(hidden_states),
        }
    }
}

pub struct Wav2Vec2ForCTC {
    wav2vec2: Wav2Vec2Model,
    lm_head: Linear,
}

impl Wav2Vec2ForCTC {
    pub fn new(cfg: &Wav2Vec2Config, vb: VarBuilder) -> Result<Self> {
        let in_dim = if cfg.add_adapter {
            cfg.output_hidden_size()
        } else {
            cfg.hidden_size
        };
        Ok(Self {
            wav2vec2: Wav2Vec2Model::new(cfg, vb.pp("wav2vec2"))?,
            lm_head: linear(in_dim, cfg.vocab_size, vb.pp("lm_head"))?,
        })
    }

    /// Returns (logits, the base model's last_hidden_state).
    pub fn forward(&self, input_values: &Tensor, attention_mask: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let hidden_states = self.wav2vec2.forward(input_values, attention_mask)?;
        Ok((self.lm_head.forward(&hidden_states)?, hidden_states))
    }
}
