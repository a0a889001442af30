//! DETR, ported from transformers' `models/detr/modeling_detr.py` (DetrModel and
//! DetrForObjectDetection, inference only), with the ResNet backbone of `models/resnet.rs`.
//!
//! Weight names are those of the checkpoints (what `save_pretrained` writes): the backbone under
//! `backbone.conv_encoder.model`, attention outputs `out_proj`, feed-forward `fc1`/`fc2` on the layer.

use crate::nn::{Embedding, embedding};
use candle_core::{D, DType, Device, Module, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};
use serde::Deserialize;

use crate::activation::Activation;
use crate::models::common::dtype_min;
use crate::models::resnet::{ResNetBackbone, ResNetConfig};
use crate::nn::{Conv2d, LayerNorm, Linear, conv2d, layer_norm, linear};

/// `DetrConfig` (the fields inference reads), with transformers' defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct DetrConfig {
    #[serde(default = "d100")]
    pub num_queries: usize,
    #[serde(default = "d6")]
    pub encoder_layers: usize,
    #[serde(default = "d2048")]
    pub encoder_ffn_dim: usize,
    #[serde(default = "d8")]
    pub encoder_attention_heads: usize,
    #[serde(default = "d6")]
    pub decoder_layers: usize,
    #[serde(default = "d2048")]
    pub decoder_ffn_dim: usize,
    #[serde(default = "d8")]
    pub decoder_attention_heads: usize,
    #[serde(default = "relu")]
    pub activation_function: Activation,
    #[serde(default = "d256")]
    pub d_model: usize,
    #[serde(default = "d3")]
    pub num_channels: usize,
    #[serde(default = "sine")]
    pub position_embedding_type: String,
    /// Also changes inference: the decoder's layernorm then runs after every decoder layer, and its
    /// output feeds the next layer.
    #[serde(default)]
    pub auxiliary_loss: bool,
}

fn d3() -> usize {
    3
}
fn d6() -> usize {
    6
}
fn d8() -> usize {
    8
}
fn d100() -> usize {
    100
}
fn d256() -> usize {
    256
}
fn d2048() -> usize {
    2048
}
fn relu() -> Activation {
    Activation::Relu
}
fn sine() -> String {
    "sine".to_string()
}

/// `nn.functional.interpolate(mask, size, mode="nearest")`: PyTorch's legacy nearest index,
/// floor(dst * (in / out)) in float32, with the exact cases for equal and doubled sizes.
fn nearest_index(dst: usize, in_size: usize, out_size: usize) -> usize {
    if out_size == in_size {
        dst
    } else if out_size == 2 * in_size {
        dst >> 1
    } else {
        let scale = in_size as f32 / out_size as f32;
        ((dst as f32 * scale).floor() as usize).min(in_size - 1)
    }
}

/// The pixel mask (batch, height, width) downsampled to a feature map's (h, w), as booleans.
pub fn downsample_mask(mask: &[Vec<Vec<u32>>], h: usize, w: usize) -> Vec<Vec<Vec<bool>>> {
    mask.iter()
        .map(|m| {
            let (ih, iw) = (m.len(), m.first().map_or(0, |r| r.len()));
            (0..h)
                .map(|y| {
                    let sy = nearest_index(y, ih, h);
                    (0..w).map(|x| m[sy][nearest_index(x, iw, w)] != 0).collect()
                })
                .collect()
        })
        .collect()
}

/// `DetrSinePositionEmbedding` with normalize=True, scale 2*pi, temperature 10000. transformers builds
/// it in the pixel values' dtype, each step rounded to it (the cumulative sums, the normalisation, the
/// frequencies, the arguments, their sines and cosines); the arithmetic is done here in f32 and rounded
/// where torch rounds, and the sines and cosines are taken on `device` (CUDA's `sinf` and `cosf` on a
/// GPU, as torch's). Returns (batch, 2 * npf, h, w) in `dtype`.
pub fn sine_position_embedding(mask: &[Vec<Vec<bool>>], npf: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let r = |v: f32| crate::nn::round_f32(v, dtype);
    let b = mask.len();
    let (h, w) = (mask[0].len(), mask[0][0].len());
    let scale = (2.0 * std::f64::consts::PI) as f32;
    let eps = 1e-6f32;
    // temperature ** (2 * floor(i / 2) / npf), the temperature a tensor of the dtype by then (10000
    // is 9984 in bfloat16).
    let temperature = r(10000.0);
    let dim_t: Vec<f32> = (0..npf)
        .map(|i| r(temperature.powf(r((2 * (i / 2)) as f32 / npf as f32))))
        .collect();
    let mut args = vec![0f32; b * 2 * npf * h * w];
    for (bi, m) in mask.iter().enumerate() {
        // Cumulative sums of the mask down the rows and along the columns.
        let mut y_embed = vec![0f32; h * w];
        let mut x_embed = vec![0f32; h * w];
        for y in 0..h {
            for x in 0..w {
                let v = m[y][x] as u8 as f32;
                y_embed[y * w + x] = r(v + if y > 0 { y_embed[(y - 1) * w + x] } else { 0.0 });
                x_embed[y * w + x] = r(v + if x > 0 { x_embed[y * w + x - 1] } else { 0.0 });
            }
        }
        for y in 0..h {
            for x in 0..w {
                let ye = r(r(y_embed[y * w + x] / r(y_embed[(h - 1) * w + x] + eps)) * scale);
                let xe = r(r(x_embed[y * w + x] / r(x_embed[y * w + w - 1] + eps)) * scale);
                for (i, &dt) in dim_t.iter().enumerate() {
                    args[((bi * 2 * npf + i) * h + y) * w + x] = r(ye / dt);
                    args[((bi * 2 * npf + npf + i) * h + y) * w + x] = r(xe / dt);
                }
            }
        }
    }
    let args = Tensor::from_vec(args, (b, 2 * npf, h, w), device)?;
    // Even features take the sine, odd ones the cosine (stack + flatten interleaves them).
    let odd: Vec<u8> = (0..2 * npf).map(|i| (i % npf % 2) as u8).collect();
    let odd = Tensor::from_vec(odd, (1, 2 * npf, 1, 1), device)?.broadcast_as(args.shape())?;
    odd.where_cond(&args.cos()?, &args.sin()?)?.to_dtype(dtype)
}

/// `DetrLearnedPositionEmbedding`: column and row embeddings of up to 50 positions.
pub struct DetrLearnedPositionEmbedding {
    row_embeddings: Embedding,
    column_embeddings: Embedding,
}

impl DetrLearnedPositionEmbedding {
    pub fn new(embedding_dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            row_embeddings: embedding(50, embedding_dim, vb.pp("row_embeddings"))?,
            column_embeddings: embedding(50, embedding_dim, vb.pp("column_embeddings"))?,
        })
    }

    /// (batch, 2 * dim, h, w): column embeddings first, then row embeddings.
    pub fn forward(&self, b: usize, h: usize, w: usize, device: &Device) -> Result<Tensor> {
        let x_emb = self
            .column_embeddings
            .forward(&Tensor::arange(0u32, w as u32, device)?)?;
        let y_emb = self.row_embeddings.forward(&Tensor::arange(0u32, h as u32, device)?)?;
        let d = x_emb.dim(1)?;
        let x = x_emb.unsqueeze(0)?.broadcast_as((h, w, d))?;
        let y = y_emb.unsqueeze(1)?.broadcast_as((h, w, d))?;
        let pos = Tensor::cat(&[&x, &y], D::Minus1)?.permute((2, 0, 1))?.unsqueeze(0)?;
        pos.broadcast_as((b, 2 * d, h, w))?.contiguous()
    }
}

pub enum PositionEmbedding {
    Sine(usize),
    Learned(DetrLearnedPositionEmbedding),
}

/// Additive attention mask over keys (batch, 1, 1, keys): 0 where kept, the dtype's minimum elsewhere.
fn key_mask(keep: &[Vec<bool>], dtype: DType, device: &Device) -> Result<Tensor> {
    let min = dtype_min(dtype).max(f32::MIN as f64) as f32;
    let (b, n) = (keep.len(), keep[0].len());
    let v: Vec<f32> = keep.iter().flatten().map(|&k| if k { 0.0 } else { min }).collect();
    Tensor::from_vec(v, (b, 1, 1, n), device)?.to_dtype(dtype)
}

/// Softmax attention as DETR's eager_attention_forward computes it (softmax in the input dtype, which
/// torch's kernel computes in f32 and rounds once, as `attention_softmax` does).
fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, scaling: f64) -> Result<Tensor> {
    crate::nn::attention_softmax(&crate::nn::attention_scores(q, k)?, scaling, mask)?.matmul(v)
}

/// `DetrSelfAttention` / `DetrCrossAttention`: position embeddings are added to the queries and keys,
/// never to the values.
pub struct DetrAttention {
    k_proj: Linear,
    v_proj: Linear,
    q_proj: Linear,
    o_proj: Linear,
    num_heads: usize,
    head_dim: usize,
}

impl DetrAttention {
    pub fn new(hidden: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            k_proj: linear(hidden, hidden, vb.pp("k_proj"))?,
            v_proj: linear(hidden, hidden, vb.pp("v_proj"))?,
            q_proj: linear(hidden, hidden, vb.pp("q_proj"))?,
            // `o_proj` in the module, `out_proj` in the checkpoints.
            o_proj: linear(hidden, hidden, vb.pp("out_proj"))?,
            num_heads: heads,
            head_dim: hidden / heads,
        })
    }

    /// queries from `hidden_states` (+ `query_pos`), keys from `kv` (+ `key_pos`), values from `kv`.
    /// `strided_input`: torch holds the inputs as non-contiguous views, which its Linear projects
    /// with the bias added after the product's rounding (`Linear::forward_strided`).
    pub fn forward(
        &self,
        hidden_states: &Tensor,
        query_pos: Option<&Tensor>,
        kv: &Tensor,
        key_pos: Option<&Tensor>,
        mask: Option<&Tensor>,
        strided_input: bool,
    ) -> Result<Tensor> {
        let (b, lq, _) = hidden_states.dims3()?;
        let lk = kv.dim(1)?;
        let add = |x: &Tensor, p: Option<&Tensor>| match p {
            Some(p) => x + p,
            None => Ok(x.clone()),
        };
        let heads = |x: Tensor, l: usize| {
            x.reshape((b, l, self.num_heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let project = |l: &Linear, x: &Tensor| {
            if strided_input {
                l.forward_strided(x)
            } else {
                l.forward(x)
            }
        };
        let q = heads(project(&self.q_proj, &add(hidden_states, query_pos)?)?, lq)?;
        let k = heads(project(&self.k_proj, &add(kv, key_pos)?)?, lk)?;
        let v = heads(project(&self.v_proj, kv)?, lk)?;
        let scaling = (self.head_dim as f64).powf(-0.5);
        let out = attention(&q, &k, &v, mask, scaling)?
            .transpose(1, 2)?
            .reshape((b, lq, ()))?;
        self.o_proj.forward(&out)
    }
}

/// `DetrMLP`: fc1, activation, fc2 (the checkpoints keep them on the layer, not under `mlp.`).
pub struct DetrMLP {
    fc1: Linear,
    fc2: Linear,
    activation_fn: Activation,
}

impl DetrMLP {
    pub fn new(hidden: usize, intermediate: usize, act: Activation, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fc1: linear(hidden, intermediate, vb.pp("fc1"))?,
            fc2: linear(intermediate, hidden, vb.pp("fc2"))?,
            activation_fn: act,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.activation_fn.forward(&self.fc1.forward(x)?)?)
    }
}

/// `DetrEncoderLayer`: post-norm self-attention and feed-forward.
pub struct DetrEncoderLayer {
    self_attn: DetrAttention,
    self_attn_layer_norm: LayerNorm,
    mlp: DetrMLP,
    final_layer_norm: LayerNorm,
}

impl DetrEncoderLayer {
    pub fn new(cfg: &DetrConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        Ok(Self {
            self_attn: DetrAttention::new(d, cfg.encoder_attention_heads, vb.pp("self_attn"))?,
            self_attn_layer_norm: layer_norm(d, 1e-5, vb.pp("self_attn_layer_norm"))?,
            mlp: DetrMLP::new(d, cfg.encoder_ffn_dim, cfg.activation_function, vb.clone())?,
            final_layer_norm: layer_norm(d, 1e-5, vb.pp("final_layer_norm"))?,
        })
    }

    /// `strided_input`: `h` is what transformers holds as the transposed view of the feature map
    /// (the first layer's input, where the map has more than one position).
    pub fn forward(&self, h: &Tensor, mask: &Tensor, pos: &Tensor, strided_input: bool) -> Result<Tensor> {
        let attn = self
            .self_attn
            .forward(h, Some(pos), h, Some(pos), Some(mask), strided_input)?;
        let h = self.self_attn_layer_norm.forward(&(h + attn)?)?;
        let ff = self.mlp.forward(&h)?;
        self.final_layer_norm.forward(&(h + ff)?)
    }
}

/// `DetrDecoderLayer`: self-attention over the object queries, cross-attention to the encoder.
pub struct DetrDecoderLayer {
    self_attn: DetrAttention,
    self_attn_layer_norm: LayerNorm,
    encoder_attn: DetrAttention,
    encoder_attn_layer_norm: LayerNorm,
    mlp: DetrMLP,
    final_layer_norm: LayerNorm,
}

impl DetrDecoderLayer {
    pub fn new(cfg: &DetrConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        Ok(Self {
            self_attn: DetrAttention::new(d, cfg.decoder_attention_heads, vb.pp("self_attn"))?,
            self_attn_layer_norm: layer_norm(d, 1e-5, vb.pp("self_attn_layer_norm"))?,
            encoder_attn: DetrAttention::new(d, cfg.decoder_attention_heads, vb.pp("encoder_attn"))?,
            encoder_attn_layer_norm: layer_norm(d, 1e-5, vb.pp("encoder_attn_layer_norm"))?,
            mlp: DetrMLP::new(d, cfg.decoder_ffn_dim, cfg.activation_function, vb.clone())?,
            final_layer_norm: layer_norm(d, 1e-5, vb.pp("final_layer_norm"))?,
        })
    }

    pub fn forward(
        &self,
        h: &Tensor,
        self_mask: Option<&Tensor>,
        spatial_pos: &Tensor,
        query_pos: &Tensor,
        encoder_hidden_states: &Tensor,
        encoder_mask: &Tensor,
    ) -> Result<Tensor> {
        let attn = self
            .self_attn
            .forward(h, Some(query_pos), h, Some(query_pos), self_mask, false)?;
        let h = self.self_attn_layer_norm.forward(&(h + attn)?)?;
        let cross = self.encoder_attn.forward(
            &h,
            Some(query_pos),
            encoder_hidden_states,
            Some(spatial_pos),
            Some(encoder_mask),
            false,
        )?;
        let h = self.encoder_attn_layer_norm.forward(&(h + cross)?)?;
        let ff = self.mlp.forward(&h)?;
        self.final_layer_norm.forward(&(h + ff)?)
    }
}

pub struct DetrModelOutput {
    pub last_hidden_state: Tensor,
    pub encoder_last_hidden_state: Tensor,
}

pub struct DetrModel {
    backbone: ResNetBackbone,
    position_embedding: PositionEmbedding,
    query_position_embeddings: Embedding,
    input_projection: Conv2d,
    encoder_layers: Vec<DetrEncoderLayer>,
    decoder_layers: Vec<DetrDecoderLayer>,
    decoder_layernorm: LayerNorm,
    auxiliary_loss: bool,
}

impl DetrModel {
    /// `vb` points at the DetrModel weights (`model.` inside DetrForObjectDetection).
    pub fn new(cfg: &DetrConfig, backbone: &ResNetConfig, out_indices: Vec<usize>, vb: VarBuilder) -> Result<Self> {
        let channels = backbone.num_features()[*out_indices.iter().max().unwrap_or(&0)];
        let position_embedding = match cfg.position_embedding_type.as_str() {
            "learned" => PositionEmbedding::Learned(DetrLearnedPositionEmbedding::new(
                cfg.d_model / 2,
                vb.pp("position_embedding"),
            )?),
            _ => PositionEmbedding::Sine(cfg.d_model / 2),
        };
        let encoder_layers = (0..cfg.encoder_layers)
            .map(|i| DetrEncoderLayer::new(cfg, vb.pp(format!("encoder.layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let decoder_layers = (0..cfg.decoder_layers)
            .map(|i| DetrDecoderLayer::new(cfg, vb.pp(format!("decoder.layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            backbone: ResNetBackbone::new(backbone, out_indices, vb.pp("backbone.conv_encoder.model"))?,
            position_embedding,
            query_position_embeddings: embedding(cfg.num_queries, cfg.d_model, vb.pp("query_position_embeddings"))?,
            input_projection: conv2d(
                channels,
                cfg.d_model,
                1,
                Conv2dConfig::default(),
                vb.pp("input_projection"),
            )?,
            encoder_layers,
            decoder_layers,
            decoder_layernorm: layer_norm(cfg.d_model, 1e-5, vb.pp("decoder.layernorm"))?,
            auxiliary_loss: cfg.auxiliary_loss,
        })
    }

    /// pixel_values (batch, channels, height, width); pixel_mask (batch, height, width), 1 = real pixel;
    /// decoder_attention_mask (batch, num_queries), 1 = attend to that query.
    pub fn forward(
        &self,
        pixel_values: &Tensor,
        pixel_mask: &[Vec<Vec<u32>>],
        decoder_attention_mask: Option<&[Vec<u32>]>,
    ) -> Result<DetrModelOutput> {
        let device = pixel_values.device();
        let dtype = pixel_values.dtype();
        let feature_map = self
            .backbone
            .forward(pixel_values)?
            .pop()
            .ok_or_else(|| candle_core::Error::Msg("the backbone returned no feature map".into()))?;
        let (b, _, h, w) = feature_map.dims4()?;
        let mask = downsample_mask(pixel_mask, h, w);
        let projected = self.input_projection.forward(&feature_map)?;
        let flattened = projected.flatten_from(2)?.transpose(1, 2)?.contiguous()?;
        let pos = match &self.position_embedding {
            PositionEmbedding::Sine(npf) => sine_position_embedding(&mask, *npf, dtype, device)?,
            PositionEmbedding::Learned(l) => l.forward(b, h, w, device)?,
        };
        let spatial_pos = pos.flatten_from(2)?.transpose(1, 2)?.contiguous()?;
        let keep: Vec<Vec<bool>> = mask.iter().map(|m| m.iter().flatten().copied().collect()).collect();
        let attn_mask = key_mask(&keep, dtype, device)?;

        // transformers feeds the first layer `flatten(2).transpose(1, 2)` of the projected map: a
        // view that is not contiguous where the map has more than one position and channel.
        let strided = h * w > 1 && projected.dim(1)? > 1;
        let mut enc = flattened;
        for (i, layer) in self.encoder_layers.iter().enumerate() {
            enc = layer.forward(&enc, &attn_mask, &spatial_pos, strided && i == 0)?;
        }
        let q = self.query_position_embeddings.embeddings();
        let (nq, d) = q.dims2()?;
        let query_pos = q.unsqueeze(0)?.broadcast_as((b, nq, d))?.contiguous()?;
        let self_mask = match decoder_attention_mask {
            Some(m) => {
                let keep: Vec<Vec<bool>> = m.iter().map(|r| r.iter().map(|&v| v != 0).collect()).collect();
                Some(key_mask(&keep, dtype, device)?)
            }
            None => None,
        };
        let mut dec = query_pos.zeros_like()?;
        for layer in &self.decoder_layers {
            dec = layer.forward(&dec, self_mask.as_ref(), &spatial_pos, &query_pos, &enc, &attn_mask)?;
            if self.auxiliary_loss {
                dec = self.decoder_layernorm.forward(&dec)?;
            }
        }
        Ok(DetrModelOutput {
            last_hidden_state: self.decoder_layernorm.forward(&dec)?,
            encoder_last_hidden_state: enc,
        })
    }
}

/// `DetrMLPPredictionHead`: linear layers with ReLU between them.
pub struct DetrMLPPredictionHead {
    layers: Vec<Linear>,
}

impl DetrMLPPredictionHead {
    pub fn new(
        input_dim: usize,
        hidden_dim: usize,
        output_dim: usize,
        num_layers: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let layers = (0..num_layers)
            .map(|i| {
                let n = if i == 0 { input_dim } else { hidden_dim };
                let k = if i == num_layers - 1 { output_dim } else { hidden_dim };
                linear(n, k, vb.pp(format!("layers.{i}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        let n = self.layers.len();
        for (i, l) in self.layers.iter().enumerate() {
            x = l.forward(&x)?;
            if i < n - 1 {
                x = x.relu()?;
            }
        }
        Ok(x)
    }
}

pub struct DetrObjectDetectionOutput {
    pub logits: Tensor,
    pub pred_boxes: Tensor,
    pub last_hidden_state: Tensor,
    pub encoder_last_hidden_state: Tensor,
}

pub struct DetrForObjectDetection {
    model: DetrModel,
    class_labels_classifier: Linear,
    bbox_predictor: DetrMLPPredictionHead,
}

impl DetrForObjectDetection {
    pub fn new(
        cfg: &DetrConfig,
        backbone: &ResNetConfig,
        out_indices: Vec<usize>,
        num_labels: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            model: DetrModel::new(cfg, backbone, out_indices, vb.pp("model"))?,
            // One more class than labels: "no object".
            class_labels_classifier: linear(cfg.d_model, num_labels + 1, vb.pp("class_labels_classifier"))?,
            bbox_predictor: DetrMLPPredictionHead::new(cfg.d_model, cfg.d_model, 4, 3, vb.pp("bbox_predictor"))?,
        })
    }

    pub fn forward(
        &self,
        pixel_values: &Tensor,
        pixel_mask: &[Vec<Vec<u32>>],
        decoder_attention_mask: Option<&[Vec<u32>]>,
    ) -> Result<DetrObjectDetectionOutput> {
        let out = self.model.forward(pixel_values, pixel_mask, decoder_attention_mask)?;
        let logits = self.class_labels_classifier.forward(&out.last_hidden_state)?;
        let pred_boxes = crate::nn::in_f32(
            &self.bbox_predictor.forward(&out.last_hidden_state)?,
            candle_nn::ops::sigmoid,
        )?;
        Ok(DetrObjectDetectionOutput {
            logits,
            pred_boxes,
            last_hidden_state: out.last_hidden_state,
            encoder_last_hidden_state: out.encoder_last_hidden_state,
        })
    }
}
