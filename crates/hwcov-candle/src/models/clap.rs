//! CLAP, ported from transformers' `models/clap/modeling_clap.py` (ClapModel, inference only).
//!
//! candle-transformers has no CLAP. The audio tower is HTSAT, a Swin transformer over the log-mel
//! spectrogram reshaped into an image: batch norm over the mel bins, the bicubic stretch of a short
//! time axis, patch embedding (with the attentional feature fusion of `enable_fusion` models),
//! window attention with a relative position bias, shifted windows and patch merging. The text tower
//! is RoBERTa (position ids counted from `pad_token_id + 1`), whose layers are BERT's.

use crate::nn::{Embedding, embedding};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use crate::activation::Activation;
use crate::models::bert::{BertConfig, BertLayer, BertPooler};
use crate::models::common::additive_padding_mask;
use crate::nn::{Conv2d, Geometry, LayerNorm, Linear, conv2d, layer_norm, linear, linear_b};

/// An int or an [int, int] in the config (`patch_size`, `patch_stride`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
pub enum IntOrPair {
    One(usize),
    Two([usize; 2]),
}

impl IntOrPair {
    pub fn pair(self) -> (usize, usize) {
        match self {
            IntOrPair::One(x) => (x, x),
            IntOrPair::Two([a, b]) => (a, b),
        }
    }
}

/// `ClapTextConfig`, with transformers' defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct ClapTextConfig {
    #[serde(default = "d50265")]
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
    #[serde(default = "d514")]
    pub max_position_embeddings: usize,
    #[serde(default = "d1")]
    pub type_vocab_size: usize,
    #[serde(default = "eps12")]
    pub layer_norm_eps: f64,
    #[serde(default = "d1_opt")]
    pub pad_token_id: Option<usize>,
}

/// `ClapAudioConfig`, with transformers' defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct ClapAudioConfig {
    #[serde(default = "d8")]
    pub window_size: usize,
    #[serde(default = "d64")]
    pub num_mel_bins: usize,
    #[serde(default = "d256")]
    pub spec_size: usize,
    #[serde(default = "gelu")]
    pub hidden_act: Activation,
    #[serde(default = "four")]
    pub patch_size: IntOrPair,
    #[serde(default = "four")]
    pub patch_stride: IntOrPair,
    #[serde(default = "d768")]
    pub hidden_size: usize,
    #[serde(default = "default_depths")]
    pub depths: Vec<usize>,
    #[serde(default = "default_heads")]
    pub num_attention_heads: Vec<usize>,
    #[serde(default)]
    pub enable_fusion: bool,
    #[serde(default)]
    pub fusion_type: Option<String>,
    #[serde(default = "d1")]
    pub patch_embed_input_channels: usize,
    #[serde(default = "yes")]
    pub flatten_patch_embeds: bool,
    #[serde(default = "d96")]
    pub patch_embeds_hidden_size: usize,
    #[serde(default = "yes")]
    pub enable_patch_layer_norm: bool,
    #[serde(default = "yes")]
    pub qkv_bias: bool,
    #[serde(default = "mlp_ratio")]
    pub mlp_ratio: f64,
    #[serde(default = "d4")]
    pub aff_block_r: usize,
    #[serde(default = "eps5")]
    pub layer_norm_eps: f64,
}

/// `ClapConfig`. Its `projection_dim` and `projection_hidden_act` override the sub-configs', as
/// transformers' `__post_init__` does.
#[derive(Debug, Clone, Deserialize)]
pub struct ClapConfig {
    pub text_config: ClapTextConfig,
    pub audio_config: ClapAudioConfig,
    #[serde(default = "d512")]
    pub projection_dim: usize,
    #[serde(default = "relu")]
    pub projection_hidden_act: Activation,
}

fn d1() -> usize {
    1
}
fn d1_opt() -> Option<usize> {
    Some(1)
}
fn d4() -> usize {
    4
}
fn d8() -> usize {
    8
}
fn d12() -> usize {
    12
}
fn d64() -> usize {
    64
}
fn d96() -> usize {
    96
}
fn d256() -> usize {
    256
}
fn d512() -> usize {
    512
}
fn d514() -> usize {
    514
}
fn d768() -> usize {
    768
}
fn d3072() -> usize {
    3072
}
fn d50265() -> usize {
    50265
}
fn four() -> IntOrPair {
    IntOrPair::One(4)
}
fn yes() -> bool {
    true
}
fn gelu() -> Activation {
    Activation::Gelu
}
fn relu() -> Activation {
    Activation::Relu
}
fn eps12() -> f64 {
    1e-12
}
fn eps5() -> f64 {
    1e-5
}
fn mlp_ratio() -> f64 {
    4.0
}
fn default_depths() -> Vec<usize> {
    vec![2, 2, 6, 2]
}
fn default_heads() -> Vec<usize> {
    vec![4, 8, 16, 32]
}

/// PyTorch's default eps of `nn.LayerNorm(n)` and `nn.BatchNorm2d(n)`.
const TORCH_NORM_EPS: f64 = 1e-5;

impl ClapAudioConfig {
    pub fn freq_ratio(&self) -> usize {
        self.spec_size / self.num_mel_bins.max(1)
    }

    /// Channels after the last stage: `patch_embeds_hidden_size * 2 ** (stages - 1)`.
    pub fn num_features(&self) -> usize {
        self.patch_embeds_hidden_size << self.depths.len().saturating_sub(1)
    }

    pub fn grid_size(&self) -> (usize, usize) {
        let (s0, s1) = self.patch_stride.pair();
        (self.spec_size / s0.max(1), self.spec_size / s1.max(1))
    }
}

// ---------------------------------------------------------------------------------------------------
// Pieces transformers takes from torch.

/// `nn.BatchNorm2d` in eval mode: normalises dim 1 with the running statistics.
pub struct BatchNorm2d {
    scale: Tensor,
    shift: Tensor,
}

impl BatchNorm2d {
    pub fn new(n: usize, vb: VarBuilder) -> Result<Self> {
        let mean = vb.get(n, "running_mean")?;
        let var = vb.get(n, "running_var")?;
        let weight = vb.get(n, "weight")?;
        let bias = vb.get(n, "bias")?;
        // In f32, as torch's batch norm computes at any dtype; the output is rounded once.
        let f32 = |t: Tensor| t.to_dtype(DType::F32);
        let (mean, var, weight, bias) = (f32(mean)?, f32(var)?, f32(weight)?, f32(bias)?);
        let scale = weight.div(&(var + TORCH_NORM_EPS)?.sqrt()?)?;
        let shift = bias.sub(&mean.mul(&scale)?)?;
        Ok(Self {
            scale: scale.reshape((1, n, 1, 1))?,
            shift: shift.reshape((1, n, 1, 1))?,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        crate::nn::in_f32(xs, |x| x.broadcast_mul(&self.scale)?.broadcast_add(&self.shift))
    }
}

/// `nn.Conv2d` with a stride and padding per axis.
fn conv2d_hw(
    in_c: usize,
    out_c: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    vb: VarBuilder,
) -> Result<Conv2d> {
    let geometry = Geometry {
        stride: [stride.0, stride.1],
        padding: [padding.0, padding.1],
        dilation: [1, 1],
        groups: 1,
    };
    let weight = vb.get((out_c, in_c, kernel.0, kernel.1), "weight")?;
    Ok(Conv2d::with_geometry(weight, Some(vb.get(out_c, "bias")?), geometry))
}

/// The (out, in) matrix of PyTorch's bicubic interpolation along one axis with
/// `align_corners=True` (cubic convolution with A = -0.75, indices clamped at the edges).
pub fn bicubic_matrix(n_in: usize, n_out: usize, device: &Device) -> Result<Tensor> {
    const A: f64 = -0.75;
    let cc1 = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let cc2 = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let scale = if n_out > 1 {
        (n_in as f64 - 1.0) / (n_out as f64 - 1.0)
    } else {
        0.0
    };
    let mut m = vec![0f32; n_out * n_in];
    for o in 0..n_out {
        let real = scale * o as f64;
        let base = real.floor();
        let t = real - base;
        let w = [cc2(t + 1.0), cc1(t), cc1(1.0 - t), cc2(2.0 - t)];
        for (k, wk) in w.iter().enumerate() {
            let i = (base as i64 - 1 + k as i64).clamp(0, n_in as i64 - 1) as usize;
            m[o * n_in + i] += *wk as f32;
        }
    }
    Tensor::from_vec(m, (n_out, n_in), device)
}

// ---------------------------------------------------------------------------------------------------
// The audio tower.

/// `ClapAudioAFFBlock`: attentional feature fusion of the global and the local patch embeddings.
pub struct ClapAudioAFFBlock {
    local_att: (Conv2d, BatchNorm2d, Conv2d, BatchNorm2d),
    global_att: (Conv2d, BatchNorm2d, Conv2d, BatchNorm2d),
}

impl ClapAudioAFFBlock {
    pub fn new(cfg: &ClapAudioConfig, vb: VarBuilder) -> Result<Self> {
        let channels = cfg.patch_embeds_hidden_size;
        let inter = channels / cfg.aff_block_r.max(1);
        let c1 = |i: usize, o: usize, vb: VarBuilder| conv2d(i, o, 1, Default::default(), vb);
        let branch = |vb: VarBuilder, first: usize| -> Result<(Conv2d, BatchNorm2d, Conv2d, BatchNorm2d)> {
            Ok((
                c1(channels, inter, vb.pp(first))?,
                BatchNorm2d::new(inter, vb.pp(first + 1))?,
                c1(inter, channels, vb.pp(first + 3))?,
                BatchNorm2d::new(channels, vb.pp(first + 4))?,
            ))
        };
        Ok(Self {
            // nn.Sequential indices: local_att = conv, bn, relu, conv, bn; global_att has the
            // average pool in front.
            local_att: branch(vb.pp("local_att"), 0)?,
            global_att: branch(vb.pp("global_att"), 1)?,
        })
    }

    pub fn forward(&self, hidden_states: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let run = |b: &(Conv2d, BatchNorm2d, Conv2d, BatchNorm2d), x: &Tensor| -> Result<Tensor> {
            let x = b.1.forward(&b.0.forward(x)?)?.relu()?;
            b.3.forward(&b.2.forward(&x)?)
        };
        let attention_input = (hidden_states + residual)?;
        // AdaptiveAvgPool2d(1): one f32 average over both axes, rounded once.
        let pooled = crate::nn::in_f32(&attention_input, |x| x.mean_keepdim(3)?.mean_keepdim(2))?;
        let fused = run(&self.local_att, &attention_input)?.broadcast_add(&run(&self.global_att, &pooled)?)?;
        let w = candle_nn::ops::sigmoid(&fused)?;
        let a = (hidden_states.mul(&w)? * 2.0)?;
        let b = (residual.mul(&(1.0 - &w)?)? * 2.0)?;
        a + b
    }
}

/// `ClapAudioPatchEmbed`.
pub struct ClapAudioPatchEmbed {
    proj: Conv2d,
    norm: Option<LayerNorm>,
    fusion: Option<(ClapAudioAFFBlock, Conv2d)>,
    img_size: (usize, usize),
}

impl ClapAudioPatchEmbed {
    pub fn new(cfg: &ClapAudioConfig, vb: VarBuilder) -> Result<Self> {
        let patch = cfg.patch_size.pair();
        let stride = cfg.patch_stride.pair();
        let padding = (
            patch.0.saturating_sub(stride.0) / 2,
            patch.1.saturating_sub(stride.1) / 2,
        );
        let c = cfg.patch_embeds_hidden_size;
        let proj = conv2d_hw(cfg.patch_embed_input_channels, c, patch, stride, padding, vb.pp("proj"))?;
        let norm = if cfg.enable_patch_layer_norm {
            Some(layer_norm(c, TORCH_NORM_EPS, vb.pp("norm"))?)
        } else {
            None
        };
        let fusion = if cfg.enable_fusion {
            Some((
                ClapAudioAFFBlock::new(cfg, vb.pp("fusion_model"))?,
                conv2d_hw(
                    cfg.patch_embed_input_channels,
                    c,
                    (patch.0, patch.1 * 3),
                    (stride.0, stride.1 * 3),
                    padding,
                    vb.pp("mel_conv2d"),
                )?,
            ))
        } else {
            None
        };
        Ok(Self {
            proj,
            norm,
            fusion,
            img_size: (cfg.spec_size, cfg.spec_size),
        })
    }

    /// `hidden_states`: (batch, channels, spec_size, spec_size); `is_longer_idx`: the rows whose
    /// local crops are fused in (fusion models only).
    pub fn forward(&self, hidden_states: &Tensor, is_longer_idx: &[u32]) -> Result<Tensor> {
        let (_, _, height, width) = hidden_states.dims4()?;
        if (height, width) != self.img_size {
            candle_core::bail!(
                "Input audio size ({height}*{width}) doesn't match model ({}*{}).",
                self.img_size.0,
                self.img_size.1
            );
        }
        let hidden_states = match &self.fusion {
            None => self.proj.forward(hidden_states)?,
            Some((fusion_model, mel_conv2d)) => {
                let mut global = self.proj.forward(&hidden_states.narrow(1, 0, 1)?)?;
                let output_width = global.dim(3)?;
                if !is_longer_idx.is_empty() {
                    let idx = Tensor::new(is_longer_idx, hidden_states.device())?;
                    let local = hidden_states.index_select(&idx, 0)?;
                    let local = local.narrow(1, 1, local.dim(1)? - 1)?.contiguous()?;
                    let (n, ch, h, w) = local.dims4()?;
                    let local = mel_conv2d.forward(&local.reshape((n * ch, 1, h, w))?)?;
                    let (_, features, h2, w2) = local.dims4()?;
                    let local = local
                        .reshape((n, ch, features, h2, w2))?
                        .permute((0, 2, 3, 1, 4))?
                        .contiguous()?
                        .flatten_from(3)?;
                    let local_width = local.dim(3)?;
                    // F.pad to the global width (a negative pad crops).
                    let local = if local_width <= output_width {
                        local.pad_with_zeros(3, 0, output_width - local_width)?
                    } else {
                        local.narrow(3, 0, output_width)?
                    };
                    let fused = fusion_model.forward(&global.index_select(&idx, 0)?, &local)?;
                    global = global.index_add(&idx, &(fused - global.index_select(&idx, 0)?)?, 0)?;
                }
                global
            }
        };
        // flatten(2).transpose(1, 2)
        let hidden_states = hidden_states.flatten_from(2)?.transpose(1, 2)?;
        match &self.norm {
            Some(n) => n.forward(&hidden_states),
            None => Ok(hidden_states),
        }
    }
}

/// `ClapAudioSelfAttention`: window attention with a learned relative position bias.
pub struct ClapAudioSelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    /// The bias table gathered by `relative_position_index`: (heads, N, N), N = window area.
    relative_position_bias: Tensor,
    num_attention_heads: usize,
    attention_head_size: usize,
}

impl ClapAudioSelfAttention {
    pub fn new(
        cfg: &ClapAudioConfig,
        dim: usize,
        num_heads: usize,
        window_size: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let table = vb.get(
            ((2 * window_size - 1) * (2 * window_size - 1), num_heads),
            "relative_position_bias_table",
        )?;
        let index = relative_position_index(window_size);
        let n = window_size * window_size;
        let index = Tensor::from_vec(index, n * n, vb.device())?;
        let relative_position_bias = table
            .index_select(&index, 0)?
            .reshape((n, n, num_heads))?
            .permute((2, 0, 1))?
            .contiguous()?;
        Ok(Self {
            query: linear_b(dim, dim, cfg.qkv_bias, vb.pp("query"))?,
            key: linear_b(dim, dim, cfg.qkv_bias, vb.pp("key"))?,
            value: linear_b(dim, dim, cfg.qkv_bias, vb.pp("value"))?,
            relative_position_bias,
            num_attention_heads: num_heads,
            attention_head_size: dim / num_heads,
        })
    }

    /// `hidden_states`: (batch * windows, N, dim); `attention_mask`: (windows, N, N) or None.
    pub fn forward(&self, hidden_states: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        let (batch_size, dim, _) = hidden_states.dims3()?;
        let heads = |x: Tensor| {
            x.reshape((batch_size, dim, self.num_attention_heads, self.attention_head_size))?
                .transpose(1, 2)?
                .contiguous()
        };
        let query_layer = heads(self.query.forward(hidden_states)?)?;
        let key_layer = heads(self.key.forward(hidden_states)?)?;
        let value_layer = heads(self.value.forward(hidden_states)?)?;
        let mut attention_scores = crate::nn::div_scalar(
            &crate::nn::attention_scores(&query_layer, &key_layer)?,
            (self.attention_head_size as f64).sqrt(),
        )?;
        attention_scores = attention_scores.broadcast_add(&self.relative_position_bias.unsqueeze(0)?)?;
        if let Some(mask) = attention_mask {
            let mask_shape = mask.dim(0)?;
            attention_scores = attention_scores
                .reshape((batch_size / mask_shape, mask_shape, self.num_attention_heads, dim, dim))?
                .broadcast_add(&mask.unsqueeze(1)?.unsqueeze(0)?)?
                .reshape((batch_size, self.num_attention_heads, dim, dim))?;
        }
        // Softmax in f32, rounded once (candle's own kernel rounds exp(x - max) before dividing).
        let attention_probs = crate::nn::attention_softmax(&attention_scores, 1.0, None)?;
        attention_probs
            .matmul(&value_layer)?
            .transpose(1, 2)?
            .reshape((batch_size, dim, ()))
    }
}

/// `create_relative_position_index`, flattened: (N * N) indices into the bias table.
fn relative_position_index(window_size: usize) -> Vec<u32> {
    let n = window_size * window_size;
    let mut out = Vec::with_capacity(n * n);
    for i in 0..n {
        for j in 0..n {
            let (hi, wi) = ((i / window_size) as i64, (i % window_size) as i64);
            let (hj, wj) = ((j / window_size) as i64, (j % window_size) as i64);
            let dh = hi - hj + window_size as i64 - 1;
            let dw = wi - wj + window_size as i64 - 1;
            out.push((dh * (2 * window_size as i64 - 1) + dw) as u32);
        }
    }
    out
}

/// `window_partition`: (b, h, w, c) -> (b * windows, ws, ws, c).
fn window_partition(x: &Tensor, ws: usize) -> Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    x.reshape((b, h / ws, ws, w / ws, ws, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .contiguous()?
        .reshape(((), ws, ws, c))
}

/// `window_reverse`: (b * windows, ws, ws, c) -> (b, h, w, c).
fn window_reverse(windows: &Tensor, ws: usize, h: usize, w: usize) -> Result<Tensor> {
    let c = windows.dim(3)?;
    let b = windows.dim(0)? / ((h / ws) * (w / ws));
    windows
        .reshape((b, h / ws, w / ws, ws, ws, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .contiguous()?
        .reshape(((), h, w, c))
}

/// `ClapAudioLayer`: a Swin block.
pub struct ClapAudioLayer {
    layernorm_before: LayerNorm,
    attention: ClapAudioSelfAttention,
    attention_output: Linear,
    layernorm_after: LayerNorm,
    intermediate: Linear,
    act: Activation,
    output: Linear,
    shift_size: usize,
    window_size: usize,
}

impl ClapAudioLayer {
    pub fn new(
        cfg: &ClapAudioConfig,
        dim: usize,
        input_resolution: (usize, usize),
        num_heads: usize,
        shift_size: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let hidden = (cfg.mlp_ratio * dim as f64) as usize;
        let mut layer = Self {
            layernorm_before: layer_norm(dim, cfg.layer_norm_eps, vb.pp("layernorm_before"))?,
            attention: ClapAudioSelfAttention::new(cfg, dim, num_heads, cfg.window_size, vb.pp("attention.self"))?,
            attention_output: linear(dim, dim, vb.pp("attention.output.dense"))?,
            layernorm_after: layer_norm(dim, cfg.layer_norm_eps, vb.pp("layernorm_after"))?,
            intermediate: linear(dim, hidden, vb.pp("intermediate.dense"))?,
            act: cfg.hidden_act,
            output: linear(hidden, dim, vb.pp("output.dense"))?,
            shift_size,
            window_size: cfg.window_size,
        };
        // set_shift_and_window_size: a window as large as the input is not partitioned or shifted.
        let min_res = input_resolution.0.min(input_resolution.1);
        if min_res <= layer.window_size {
            if min_res != layer.window_size {
                candle_core::bail!(
                    "a stage of {input_resolution:?} patches is smaller than window_size {}: the relative \
                     position bias does not fit (transformers fails here too)",
                    cfg.window_size
                );
            }
            layer.shift_size = 0;
        }
        Ok(layer)
    }

    /// `get_attn_mask`: (windows, N, N), -100 between positions of different shifted regions.
    fn get_attn_mask(&self, height: usize, width: usize, dtype: DType, device: &Device) -> Result<Option<Tensor>> {
        if self.shift_size == 0 {
            return Ok(None);
        }
        let (ws, ss) = (self.window_size, self.shift_size);
        let region = |i: usize, n: usize| (i >= n - ws) as usize + (i >= n - ss) as usize;
        let img: Vec<f32> = (0..height)
            .flat_map(|h| (0..width).map(move |w| (region(h, height) * 3 + region(w, width)) as f32))
            .collect();
        let img = Tensor::from_vec(img, (1, height, width, 1), device)?;
        let windows = window_partition(&img, ws)?.reshape(((), ws * ws))?;
        let diff = windows.unsqueeze(1)?.broadcast_sub(&windows.unsqueeze(2)?)?;
        let mask = diff.ne(0f32)?.to_dtype(DType::F32)?.affine(-100.0, 0.0)?;
        Ok(Some(mask.to_dtype(dtype)?))
    }

    pub fn forward(&self, hidden_states: &Tensor, input_dimensions: (usize, usize)) -> Result<Tensor> {
        let (height, width) = input_dimensions;
        let (batch_size, _, channels) = hidden_states.dims3()?;
        let shortcut = hidden_states;
        let ws = self.window_size;
        let h = self
            .layernorm_before
            .forward(hidden_states)?
            .reshape((batch_size, height, width, channels))?;
        // maybe_pad: to multiples of the window size, right and bottom.
        let pad_right = (ws - width % ws) % ws;
        let pad_bottom = (ws - height % ws) % ws;
        let h = h.pad_with_zeros(2, 0, pad_right)?.pad_with_zeros(1, 0, pad_bottom)?;
        let (height_pad, width_pad) = (height + pad_bottom, width + pad_right);
        let shifted = if self.shift_size > 0 {
            roll2(&h, -(self.shift_size as i64))?
        } else {
            h
        };
        let windows = window_partition(&shifted, ws)?.reshape(((), ws * ws, channels))?;
        let attn_mask = self.get_attn_mask(height_pad, width_pad, windows.dtype(), windows.device())?;
        let attention = self.attention.forward(&windows, attn_mask.as_ref())?;
        let attention = self.attention_output.forward(&attention)?;
        let attention_windows = attention.reshape(((), ws, ws, channels))?;
        let shifted = window_reverse(&attention_windows, ws, height_pad, width_pad)?;
        let attention_windows = if self.shift_size > 0 {
            roll2(&shifted, self.shift_size as i64)?
        } else {
            shifted
        };
        let attention_windows = attention_windows
            .narrow(1, 0, height)?
            .narrow(2, 0, width)?
            .contiguous()?
            .reshape((batch_size, height * width, channels))?;
        let hidden_states = (shortcut + attention_windows)?;
        let layer_output = self.act.forward(
            &self
                .intermediate
                .forward(&self.layernorm_after.forward(&hidden_states)?)?,
        )?;
        &hidden_states + self.output.forward(&layer_output)?
    }
}

/// `torch.roll(x, shifts=(s, s), dims=(1, 2))`.
fn roll2(x: &Tensor, s: i64) -> Result<Tensor> {
    let roll = |x: &Tensor, dim: usize| -> Result<Tensor> {
        let n = x.dim(dim)? as i64;
        x.roll(s.rem_euclid(n) as i32, dim)
    };
    roll(&roll(x, 1)?, 2)
}

/// `ClapAudioPatchMerging`: 2x2 neighbours concatenated, normed and reduced to twice the channels.
pub struct ClapAudioPatchMerging {
    reduction: Linear,
    norm: LayerNorm,
}

impl ClapAudioPatchMerging {
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            reduction: crate::nn::linear_no_bias(4 * dim, 2 * dim, vb.pp("reduction"))?,
            norm: layer_norm(4 * dim, TORCH_NORM_EPS, vb.pp("norm"))?,
        })
    }

    pub fn forward(&self, input_feature: &Tensor, input_dimensions: (usize, usize)) -> Result<Tensor> {
        let (height, width) = input_dimensions;
        let (batch_size, _, num_channels) = input_feature.dims3()?;
        let x = input_feature
            .reshape((batch_size, height, width, num_channels))?
            .pad_with_zeros(1, 0, height % 2)?
            .pad_with_zeros(2, 0, width % 2)?;
        let (h2, w2) = (height.div_ceil(2), width.div_ceil(2));
        // cat([x[:, row::2, col::2] for col in 0..2 for row in 0..2], -1): column-major over (row, col).
        let x = x
            .reshape((batch_size, h2, 2, w2, 2, num_channels))?
            .permute((0, 1, 3, 4, 2, 5))?
            .contiguous()?
            .reshape((batch_size, h2 * w2, 4 * num_channels))?;
        self.reduction.forward(&self.norm.forward(&x)?)
    }
}

/// `ClapAudioStage`.
pub struct ClapAudioStage {
    blocks: Vec<ClapAudioLayer>,
    downsample: Option<ClapAudioPatchMerging>,
}

impl ClapAudioStage {
    pub fn forward(&self, hidden_states: &Tensor, input_dimensions: (usize, usize)) -> Result<Tensor> {
        let mut h = hidden_states.clone();
        for block in &self.blocks {
            h = block.forward(&h, input_dimensions)?;
        }
        match &self.downsample {
            Some(d) => d.forward(&h, input_dimensions),
            None => Ok(h),
        }
    }
}

/// `ClapAudioEncoder`.
pub struct ClapAudioEncoder {
    patch_embed: ClapAudioPatchEmbed,
    layers: Vec<ClapAudioStage>,
    batch_norm: BatchNorm2d,
    norm: LayerNorm,
    input_resolutions: Vec<(usize, usize)>,
    spec_size: usize,
    freq_ratio: usize,
    enable_fusion: bool,
}

pub struct ClapAudioOutput {
    /// The normed tokens of the last stage, (batch, tokens, channels).
    pub last_hidden_state: Tensor,
    pub pooler_output: Tensor,
}

impl ClapAudioEncoder {
    pub fn new(cfg: &ClapAudioConfig, vb: VarBuilder) -> Result<Self> {
        let grid = cfg.grid_size();
        let n = cfg.depths.len();
        let input_resolutions: Vec<(usize, usize)> = (0..n).map(|i| (grid.0 >> i, grid.1 >> i)).collect();
        let mut layers = Vec::with_capacity(n);
        for (i, &depth) in cfg.depths.iter().enumerate() {
            let dim = cfg.patch_embeds_hidden_size << i;
            let vbl = vb.pp(format!("layers.{i}"));
            let blocks = (0..depth)
                .map(|j| {
                    let shift = if j % 2 == 0 { 0 } else { cfg.window_size / 2 };
                    ClapAudioLayer::new(
                        cfg,
                        dim,
                        input_resolutions[i],
                        cfg.num_attention_heads[i],
                        shift,
                        vbl.pp(format!("blocks.{j}")),
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let downsample = if i + 1 < n {
                Some(ClapAudioPatchMerging::new(dim, vbl.pp("downsample"))?)
            } else {
                None
            };
            layers.push(ClapAudioStage { blocks, downsample });
        }
        Ok(Self {
            patch_embed: ClapAudioPatchEmbed::new(cfg, vb.pp("patch_embed"))?,
            layers,
            batch_norm: BatchNorm2d::new(cfg.num_mel_bins, vb.pp("batch_norm"))?,
            norm: layer_norm(cfg.num_features(), TORCH_NORM_EPS, vb.pp("norm"))?,
            input_resolutions,
            spec_size: cfg.spec_size,
            freq_ratio: cfg.freq_ratio(),
            enable_fusion: cfg.enable_fusion,
        })
    }

    /// `reshape_mel2img`: (batch, channels, time, freq) -> (batch, channels, spec_size, spec_size),
    /// stretching a short time axis by bicubic interpolation first.
    pub fn reshape_mel2img(&self, normalized_input_features: &Tensor) -> Result<Tensor> {
        let (_, _, time_length, freq_length) = normalized_input_features.dims4()?;
        let spec_width = self.spec_size * self.freq_ratio;
        let spec_height = self.spec_size / self.freq_ratio;
        if time_length > spec_width || freq_length > spec_height {
            candle_core::bail!(
                "the wav size should be less than or equal to the swin input size: {time_length} frames x \
                 {freq_length} bins for at most {spec_width} x {spec_height}"
            );
        }
        // Contiguous: candle's batched matmul rejects (or misreads) transposed layouts.
        let mut x = normalized_input_features.contiguous()?;
        let device = x.device().clone();
        if time_length < spec_width {
            let m = bicubic_matrix(time_length, spec_width, &device)?.to_dtype(x.dtype())?;
            x = m.broadcast_matmul(&x)?;
        }
        if freq_length < spec_height {
            // As transformers does: the time axis goes back to its original length here.
            let t = bicubic_matrix(x.dim(2)?, time_length, &device)?.to_dtype(x.dtype())?;
            let f = bicubic_matrix(freq_length, spec_height, &device)?.to_dtype(x.dtype())?;
            x = t.broadcast_matmul(&x)?.broadcast_matmul(&f.t()?)?;
        }
        let (batch, channels, time, freq) = x.dims4()?;
        let r = self.freq_ratio;
        x.reshape((batch, channels * r, time / r, freq))?
            .permute((0, 1, 3, 2))?
            .contiguous()?
            .reshape((batch, channels, freq * r, time / r))
    }

    /// `input_features`: (batch, channels, time, mel bins); `is_longer`: one flag per row (fusion).
    pub fn forward(&self, input_features: &Tensor, is_longer: Option<&[bool]>) -> Result<ClapAudioOutput> {
        let x = input_features.transpose(1, 3)?;
        let x = self.batch_norm.forward(&x)?.transpose(1, 3)?;
        let is_longer_idx: Vec<u32> = match (self.enable_fusion, is_longer) {
            (true, Some(flags)) => (0..flags.len() as u32).filter(|&i| flags[i as usize]).collect(),
            _ => Vec::new(),
        };
        let hidden_states = self.reshape_mel2img(&x)?;
        let mut hidden_states = self.patch_embed.forward(&hidden_states, &is_longer_idx)?;
        for (i, stage) in self.layers.iter().enumerate() {
            hidden_states = stage.forward(&hidden_states, self.input_resolutions[i])?;
        }
        let last_hidden_state = self.norm.forward(&hidden_states)?;
        // transformers regroups the tokens by frequency bands and then takes AdaptiveAvgPool1d(1) over
        // all of them: the mean over every token.
        let pooler_output = crate::nn::in_f32(&last_hidden_state, |x| x.mean(1))?;
        Ok(ClapAudioOutput {
            last_hidden_state,
            pooler_output,
        })
    }
}

// ---------------------------------------------------------------------------------------------------
// The text tower.

/// `ClapTextEmbeddings` (RoBERTa's): position ids count the non-padding tokens from
/// `padding_idx + 1`; padding keeps `padding_idx`.
pub struct ClapTextEmbeddings {
    word_embeddings: Embedding,
    token_type_embeddings: Embedding,
    position_embeddings: Embedding,
    layer_norm: LayerNorm,
    padding_idx: u32,
}

impl ClapTextEmbeddings {
    pub fn new(cfg: &ClapTextConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            word_embeddings: embedding(cfg.vocab_size, cfg.hidden_size, vb.pp("word_embeddings"))?,
            token_type_embeddings: embedding(cfg.type_vocab_size, cfg.hidden_size, vb.pp("token_type_embeddings"))?,
            position_embeddings: embedding(
                cfg.max_position_embeddings,
                cfg.hidden_size,
                vb.pp("position_embeddings"),
            )?,
            layer_norm: layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("LayerNorm"))?,
            padding_idx: cfg.pad_token_id.unwrap_or(1) as u32,
        })
    }

    /// `create_position_ids_from_input_ids`.
    pub fn position_ids(&self, input_ids: &Tensor) -> Result<Tensor> {
        let pad = self.padding_idx;
        let rows: Vec<Vec<u32>> = input_ids.to_vec2()?;
        let ids: Vec<u32> = rows
            .iter()
            .flat_map(|row| {
                let mut count = 0;
                row.iter().map(move |&id| {
                    if id == pad {
                        pad
                    } else {
                        count += 1;
                        count + pad
                    }
                })
            })
            .collect();
        Tensor::from_vec(ids, input_ids.dims(), input_ids.device())
    }

    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        let position_ids = self.position_ids(input_ids)?;
        let token_type_ids = input_ids.zeros_like()?;
        let embeddings =
            (self.word_embeddings.forward(input_ids)? + self.token_type_embeddings.forward(&token_type_ids)?)?;
        let embeddings = (embeddings + self.position_embeddings.forward(&position_ids)?)?;
        self.layer_norm.forward(&embeddings)
    }
}

/// `ClapTextModel`: its layers are BERT's (transformers copies them from modeling_bert).
pub struct ClapTextModel {
    embeddings: ClapTextEmbeddings,
    layer: Vec<BertLayer>,
    pooler: BertPooler,
}

impl ClapTextModel {
    pub fn new(cfg: &ClapTextConfig, vb: VarBuilder) -> Result<Self> {
        let bert = BertConfig {
            vocab_size: cfg.vocab_size,
            hidden_size: cfg.hidden_size,
            num_hidden_layers: cfg.num_hidden_layers,
            num_attention_heads: cfg.num_attention_heads,
            intermediate_size: cfg.intermediate_size,
            hidden_act: cfg.hidden_act,
            max_position_embeddings: cfg.max_position_embeddings,
            type_vocab_size: cfg.type_vocab_size,
            layer_norm_eps: cfg.layer_norm_eps,
            position_embedding_type: "absolute".to_string(),
        };
        let layer = (0..cfg.num_hidden_layers)
            .map(|i| BertLayer::new(&bert, vb.pp(format!("encoder.layer.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embeddings: ClapTextEmbeddings::new(cfg, vb.pp("embeddings"))?,
            layer,
            pooler: BertPooler::new(&bert, vb.pp("pooler"))?,
        })
    }

    /// Returns (last_hidden_state, pooler_output).
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<(Tensor, Tensor)> {
        let mut hidden_states = self.embeddings.forward(input_ids)?;
        let mask = additive_padding_mask(attention_mask, hidden_states.dtype())?;
        for layer in &self.layer {
            hidden_states = layer.forward(&hidden_states, &mask)?;
        }
        let pooled = self.pooler.forward(&hidden_states)?;
        Ok((hidden_states, pooled))
    }
}

// ---------------------------------------------------------------------------------------------------
// The two towers together.

/// `ClapProjectionLayer`.
pub struct ClapProjectionLayer {
    linear1: Linear,
    activation: Activation,
    linear2: Linear,
}

impl ClapProjectionLayer {
    pub fn new(hidden_size: usize, cfg: &ClapConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            linear1: linear(hidden_size, cfg.projection_dim, vb.pp("linear1"))?,
            activation: cfg.projection_hidden_act,
            linear2: linear(cfg.projection_dim, cfg.projection_dim, vb.pp("linear2"))?,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.linear2
            .forward(&self.activation.forward(&self.linear1.forward(xs)?)?)
    }
}

pub struct ClapOutput {
    pub logits_per_audio: Tensor,
    pub logits_per_text: Tensor,
    pub text_embeds: Tensor,
    pub audio_embeds: Tensor,
}

pub struct ClapModel {
    text_model: ClapTextModel,
    text_projection: ClapProjectionLayer,
    audio_encoder: ClapAudioEncoder,
    audio_projection: ClapProjectionLayer,
    logit_scale_a: Tensor,
    logit_scale_t: Tensor,
}

/// `F.normalize(x, dim=-1)`: x / max(||x||_2, 1e-12), the norm rounded once to the dtype.
fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    crate::nn::normalize_last_dim(x, 1e-12)
}

impl ClapModel {
    pub fn new(cfg: &ClapConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            text_model: ClapTextModel::new(&cfg.text_config, vb.pp("text_model"))?,
            text_projection: ClapProjectionLayer::new(cfg.text_config.hidden_size, cfg, vb.pp("text_projection"))?,
            audio_encoder: ClapAudioEncoder::new(&cfg.audio_config, vb.pp("audio_model.audio_encoder"))?,
            audio_projection: ClapProjectionLayer::new(cfg.audio_config.hidden_size, cfg, vb.pp("audio_projection"))?,
            logit_scale_a: vb.get((), "logit_scale_a")?,
            logit_scale_t: vb.get((), "logit_scale_t")?,
        })
    }

    /// `get_audio_features`: the normalised audio embeddings.
    pub fn get_audio_features(&self, input_features: &Tensor, is_longer: Option<&[bool]>) -> Result<Tensor> {
        let out = self.audio_encoder.forward(input_features, is_longer)?;
        l2_normalize(&self.audio_projection.forward(&out.pooler_output)?)
    }

    /// `get_text_features`: the normalised text embeddings.
    pub fn get_text_features(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let (_, pooled) = self.text_model.forward(input_ids, attention_mask)?;
        l2_normalize(&self.text_projection.forward(&pooled)?)
    }

    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        input_features: &Tensor,
        is_longer: Option<&[bool]>,
    ) -> Result<ClapOutput> {
        let audio_embeds = self.get_audio_features(input_features, is_longer)?;
        let text_embeds = self.get_text_features(input_ids, attention_mask)?;
        let scale_t = crate::nn::in_f32(&self.logit_scale_t, |s| s.exp())?;
        let scale_a = crate::nn::in_f32(&self.logit_scale_a, |s| s.exp())?;
        let logits_per_text = text_embeds.matmul(&audio_embeds.t()?)?.broadcast_mul(&scale_t)?;
        let logits_per_audio = audio_embeds.matmul(&text_embeds.t()?)?.broadcast_mul(&scale_a)?;
        Ok(ClapOutput {
            logits_per_audio,
            logits_per_text,
            text_embeds,
            audio_embeds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_position_index_matches_swin() {
        // transformers' create_relative_position_index for a 2x2 window.
        let want = [4, 3, 1, 0, 5, 4, 2, 1, 7, 6, 4, 3, 8, 7, 5, 4];
        assert_eq!(relative_position_index(2), want);
    }

    #[test]
    fn bicubic_rows_sum_to_one_and_keep_the_ends() {
        let m = bicubic_matrix(5, 9, &Device::Cpu).unwrap();
        let rows: Vec<Vec<f32>> = m.to_vec2().unwrap();
        for r in &rows {
            assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        assert_eq!(rows[0][0], 1.0);
        assert_eq!(rows[8][4], 1.0);
    }
}
