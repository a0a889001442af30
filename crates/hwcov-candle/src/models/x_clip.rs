//! X-CLIP, ported from transformers' `models/x_clip/modeling_x_clip.py` (XCLIPModel, inference only).
//!
//! The text tower, attention, MLP and encoder layers are CLIP's (transformers copies them); what X-CLIP
//! adds is here: the vision layers' cross-frame message tokens, the multi-frame integration
//! transformer (mit) and the video-specific prompt generator.

use candle_core::{D, IndexOp, Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use crate::activation::Activation;
use crate::models::clip::{
    CLIPAttention, CLIPEncoder, CLIPMLP, CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionEmbeddings,
    EncoderDims, EosPooling,
};
use crate::models::common::eager_attention;
use crate::nn::{LayerNorm, Linear, layer_norm, linear, linear_no_bias};

/// `XCLIPVisionConfig`: CLIP's vision fields (same defaults) and X-CLIP's own.
#[derive(Debug, Clone, Deserialize)]
pub struct XCLIPVisionConfig {
    #[serde(flatten)]
    pub clip: CLIPVisionConfig,
    #[serde(default = "d512")]
    pub mit_hidden_size: usize,
    #[serde(default = "d2048")]
    pub mit_intermediate_size: usize,
    #[serde(default = "d1")]
    pub mit_num_hidden_layers: usize,
    #[serde(default = "d8")]
    pub mit_num_attention_heads: usize,
    #[serde(default = "d8")]
    pub num_frames: usize,
}

/// The top-level fields of `XCLIPConfig`.
#[derive(Debug, Clone, Deserialize)]
pub struct XCLIPConfig {
    #[serde(default = "d512")]
    pub projection_dim: usize,
    #[serde(default = "d2")]
    pub prompt_layers: usize,
    #[serde(default = "quick_gelu")]
    pub prompt_hidden_act: Activation,
    #[serde(default = "d8")]
    pub prompt_num_attention_heads: usize,
}

fn d1() -> usize {
    1
}
fn d2() -> usize {
    2
}
fn d8() -> usize {
    8
}
fn d512() -> usize {
    512
}
fn d2048() -> usize {
    2048
}
fn quick_gelu() -> Activation {
    Activation::QuickGelu
}

impl XCLIPVisionConfig {
    /// The config the mit is built from: the vision config with the `mit_*` sizes.
    pub fn mit_dims(&self) -> EncoderDims {
        EncoderDims {
            hidden_size: self.mit_hidden_size,
            intermediate_size: self.mit_intermediate_size,
            num_attention_heads: self.mit_num_attention_heads,
            num_hidden_layers: self.mit_num_hidden_layers,
            hidden_act: self.clip.hidden_act,
            layer_norm_eps: self.clip.layer_norm_eps,
        }
    }
}

/// `XCLIPVisionEncoderLayer` (CrossFramelAttentionBlock): each frame's [CLS] state becomes a message
/// token; the tokens of a video attend to each other and join every frame's self-attention.
pub struct XCLIPVisionEncoderLayer {
    self_attn: CLIPAttention,
    layer_norm1: LayerNorm,
    mlp: CLIPMLP,
    layer_norm2: LayerNorm,
    num_frames: usize,
    message_fc: Linear,
    message_ln: LayerNorm,
    message_attn: CLIPAttention,
}

impl XCLIPVisionEncoderLayer {
    pub fn new(cfg: &XCLIPVisionConfig, vb: VarBuilder) -> Result<Self> {
        let dims = cfg.clip.dims();
        let (h, eps) = (dims.hidden_size, dims.layer_norm_eps);
        Ok(Self {
            self_attn: CLIPAttention::new(h, dims.num_attention_heads, vb.pp("self_attn"))?,
            layer_norm1: layer_norm(h, eps, vb.pp("layer_norm1"))?,
            mlp: CLIPMLP::new(&dims, vb.pp("mlp"))?,
            layer_norm2: layer_norm(h, eps, vb.pp("layer_norm2"))?,
            num_frames: cfg.num_frames,
            message_fc: linear(h, h, vb.pp("message_fc"))?,
            message_ln: layer_norm(h, eps, vb.pp("message_ln"))?,
            message_attn: CLIPAttention::new(h, dims.num_attention_heads, vb.pp("message_attn"))?,
        })
    }

    /// hidden_states (batch * frames, seq, hidden).
    pub fn forward(&self, hidden_states: &Tensor) -> Result<Tensor> {
        let (batch_time, seq_length, hidden_size) = hidden_states.dims3()?;
        let batch_size = batch_time / self.num_frames;
        let msg_token = self.message_fc.forward(&hidden_states.i((.., 0, ..))?)?;
        let msg_token = msg_token.reshape((batch_size, self.num_frames, hidden_size))?;
        let msg_token = (&msg_token + self.message_attn.forward(&self.message_ln.forward(&msg_token)?, None)?)?;
        let msg_token = msg_token.reshape((batch_time, 1, hidden_size))?;
        let hidden_states = Tensor::cat(&[hidden_states, &msg_token], 1)?;
        let residual = &hidden_states;
        let h = self
            .self_attn
            .forward(&self.layer_norm1.forward(&hidden_states)?, None)?;
        let h = (residual + h)?.narrow(1, 0, seq_length)?;
        let mlp = self.mlp.forward(&self.layer_norm2.forward(&h)?)?;
        h + mlp
    }
}

/// XCLIPVisionModel: CLIP's vision tower with cross-frame layers.
pub struct XCLIPVisionModel {
    embeddings: CLIPVisionEmbeddings,
    pre_layernorm: LayerNorm,
    layers: Vec<XCLIPVisionEncoderLayer>,
    post_layernorm: LayerNorm,
}

impl XCLIPVisionModel {
    pub fn new(cfg: &XCLIPVisionConfig, vb: VarBuilder) -> Result<Self> {
        let layers = (0..cfg.clip.num_hidden_layers)
            .map(|i| XCLIPVisionEncoderLayer::new(cfg, vb.pp(format!("encoder.layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let (h, eps) = (cfg.clip.hidden_size, cfg.clip.layer_norm_eps);
        Ok(Self {
            embeddings: CLIPVisionEmbeddings::new(&cfg.clip, vb.pp("embeddings"))?,
            pre_layernorm: layer_norm(h, eps, vb.pp("pre_layernorm"))?,
            layers,
            post_layernorm: layer_norm(h, eps, vb.pp("post_layernorm"))?,
        })
    }

    /// pixel_values (batch * frames, channels, height, width) -> (last_hidden_state, pooler_output).
    pub fn forward(&self, pixel_values: &Tensor) -> Result<(Tensor, Tensor)> {
        let mut h = self.pre_layernorm.forward(&self.embeddings.forward(pixel_values)?)?;
        for layer in &self.layers {
            h = layer.forward(&h)?;
        }
        let pooled = self.post_layernorm.forward(&h.i((.., 0, ..))?)?;
        Ok((h, pooled))
    }
}

/// XCLIPMultiframeIntegrationTransformer: a CLIP encoder over the frames' embeddings, with a residual,
/// mean-pooled over frames.
pub struct XCLIPMultiframeIntegrationTransformer {
    position_embedding: Tensor,
    encoder: CLIPEncoder,
}

impl XCLIPMultiframeIntegrationTransformer {
    pub fn new(cfg: &XCLIPVisionConfig, vb: VarBuilder) -> Result<Self> {
        let dims = cfg.mit_dims();
        Ok(Self {
            position_embedding: vb.get((1, cfg.num_frames, dims.hidden_size), "position_embedding")?,
            encoder: CLIPEncoder::new(&dims, vb.pp("encoder"))?,
        })
    }

    /// Returns the pooled output (batch, hidden).
    pub fn forward(&self, hidden_states: &Tensor) -> Result<Tensor> {
        let residual = hidden_states;
        let h = hidden_states.broadcast_add(&self.position_embedding)?;
        let last = (self.encoder.forward(&h, None)? + residual)?;
        // torch's mean accumulates in f32 and rounds once.
        crate::nn::in_f32(&last, |x| x.mean(1))
    }
}

/// XCLIPCrossAttention: text queries attend to the frames' patch features.
pub struct XCLIPCrossAttention {
    k_proj: Linear,
    v_proj: Linear,
    q_proj: Linear,
    proj: Linear,
    num_heads: usize,
    head_dim: usize,
    scale: f64,
}

impl XCLIPCrossAttention {
    pub fn new(cfg: &XCLIPConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.projection_dim;
        let head_dim = d / cfg.prompt_num_attention_heads;
        Ok(Self {
            k_proj: linear_no_bias(d, d, vb.pp("k_proj"))?,
            v_proj: linear_no_bias(d, d, vb.pp("v_proj"))?,
            q_proj: linear_no_bias(d, d, vb.pp("q_proj"))?,
            proj: linear(d, d, vb.pp("proj"))?,
            num_heads: cfg.prompt_num_attention_heads,
            head_dim,
            scale: (head_dim as f64).powf(-0.5),
        })
    }

    pub fn forward(&self, queries: &Tensor, keys: &Tensor, values: &Tensor) -> Result<Tensor> {
        let (b, lq, _) = queries.dims3()?;
        let lk = keys.dim(1)?;
        let heads = |x: Tensor, l: usize| {
            x.reshape((b, l, self.num_heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = heads(self.q_proj.forward(queries)?, lq)?;
        let k = heads(self.k_proj.forward(keys)?, lk)?;
        let v = heads(self.v_proj.forward(values)?, lk)?;
        let out = eager_attention(&q, &k, &v, None, self.scale)?
            .transpose(1, 2)?
            .reshape((b, lq, ()))?;
        self.proj.forward(&out)
    }
}

pub struct PromptGeneratorLayer {
    cross_attn: XCLIPCrossAttention,
    norm1: LayerNorm,
    norm3: LayerNorm,
    mlp_fc1: Linear,
    mlp_act: Activation,
    mlp_fc2: Linear,
}

impl PromptGeneratorLayer {
    pub fn new(cfg: &XCLIPConfig, text_eps: f64, vb: VarBuilder) -> Result<Self> {
        let d = cfg.projection_dim;
        Ok(Self {
            cross_attn: XCLIPCrossAttention::new(cfg, vb.pp("cross_attn"))?,
            norm1: layer_norm(d, text_eps, vb.pp("norm1"))?,
            norm3: layer_norm(d, text_eps, vb.pp("norm3"))?,
            // nn.Sequential(Linear, act, Dropout, Linear): weights at mlp.0 and mlp.3.
            mlp_fc1: linear(d, d * 4, vb.pp("mlp.0"))?,
            mlp_act: cfg.prompt_hidden_act,
            mlp_fc2: linear(d * 4, d, vb.pp("mlp.3"))?,
        })
    }

    pub fn forward(&self, hidden_states: &Tensor, visual: &Tensor) -> Result<Tensor> {
        let h = (hidden_states
            + self
                .cross_attn
                .forward(&self.norm1.forward(hidden_states)?, visual, visual)?)?;
        let mlp = self
            .mlp_fc2
            .forward(&self.mlp_act.forward(&self.mlp_fc1.forward(&self.norm3.forward(&h)?)?)?)?;
        h + mlp
    }
}

/// XCLIPPromptGenerator (VideoSpecificPrompt).
pub struct XCLIPPromptGenerator {
    layernorm: LayerNorm,
    decoder: Vec<PromptGeneratorLayer>,
    alpha: Tensor,
}

impl XCLIPPromptGenerator {
    pub fn new(cfg: &XCLIPConfig, text_eps: f64, vision_eps: f64, vb: VarBuilder) -> Result<Self> {
        let d = cfg.projection_dim;
        let decoder = (0..cfg.prompt_layers)
            .map(|i| PromptGeneratorLayer::new(cfg, text_eps, vb.pp(format!("decoder.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layernorm: layer_norm(d, vision_eps, vb.pp("layernorm"))?,
            decoder,
            alpha: vb.get(d, "alpha")?,
        })
    }

    pub fn forward(&self, text: &Tensor, visual: &Tensor) -> Result<Tensor> {
        let visual = self.layernorm.forward(visual)?;
        let mut text = text.clone();
        for layer in &self.decoder {
            text = layer.forward(&text, &visual)?;
        }
        text.broadcast_mul(&self.alpha)
    }
}

pub struct XCLIPOutput {
    pub logits_per_video: Tensor,
    pub logits_per_text: Tensor,
    pub text_embeds: Tensor,
    pub video_embeds: Tensor,
}

pub struct XCLIPModel {
    text_model: CLIPTextModel,
    vision_model: XCLIPVisionModel,
    visual_projection: Linear,
    text_projection: Linear,
    logit_scale: Tensor,
    prompts_visual_layernorm: LayerNorm,
    prompts_visual_projection: Tensor,
    mit: XCLIPMultiframeIntegrationTransformer,
    prompts_generator: XCLIPPromptGenerator,
}

impl XCLIPModel {
    pub fn new(cfg: &XCLIPConfig, text: &CLIPTextConfig, vision: &XCLIPVisionConfig, vb: VarBuilder) -> Result<Self> {
        let (vh, p) = (vision.clip.hidden_size, cfg.projection_dim);
        Ok(Self {
            // XCLIPTextModel forces the legacy eos rule: it pools at the highest token id.
            text_model: CLIPTextModel::new(text, EosPooling::LegacyArgmax, vb.pp("text_model"))?,
            vision_model: XCLIPVisionModel::new(vision, vb.pp("vision_model"))?,
            visual_projection: linear_no_bias(vh, p, vb.pp("visual_projection"))?,
            text_projection: linear_no_bias(text.hidden_size, p, vb.pp("text_projection"))?,
            logit_scale: vb.get((), "logit_scale")?,
            prompts_visual_layernorm: layer_norm(vh, vision.clip.layer_norm_eps, vb.pp("prompts_visual_layernorm"))?,
            prompts_visual_projection: vb.get((vh, p), "prompts_visual_projection")?,
            mit: XCLIPMultiframeIntegrationTransformer::new(vision, vb.pp("mit"))?,
            prompts_generator: XCLIPPromptGenerator::new(
                cfg,
                text.layer_norm_eps,
                vision.clip.layer_norm_eps,
                vb.pp("prompts_generator"),
            )?,
        })
    }

    /// input_ids (texts, seq); pixel_values (batch, frames, channels, height, width).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        pixel_values: &Tensor,
        attention_mask: Option<&Tensor>,
        position_ids: Option<&Tensor>,
    ) -> Result<XCLIPOutput> {
        let (batch_size, num_frames, c, h, w) = pixel_values.dims5()?;
        let pixel_values = pixel_values.reshape((batch_size * num_frames, c, h, w))?;
        let (last, pooled) = self.vision_model.forward(&pixel_values)?;
        let cls_features = self
            .visual_projection
            .forward(&pooled)?
            .reshape((batch_size, num_frames, ()))?;
        let video_embeds = self.mit.forward(&cls_features)?;

        let n = last.dim(1)? - 1;
        let img_features = self.prompts_visual_layernorm.forward(&last.narrow(1, 1, n)?)?;
        // `img_features @ prompts_visual_projection`: torch folds the batch into the rows of one product.
        let vh = img_features.dim(2)?;
        let img_features = img_features
            .reshape((batch_size * num_frames * n, vh))?
            .matmul(&self.prompts_visual_projection)?
            .reshape((batch_size, num_frames, n, ()))?;
        let img_features = crate::nn::in_f32(&img_features, |x| x.mean(1))?;

        let (_, text_pooled) = self.text_model.forward(input_ids, attention_mask, position_ids)?;
        let text_embeds = self.text_projection.forward(&text_pooled)?;
        let (k, p) = text_embeds.dims2()?;
        let text_embeds = text_embeds
            .unsqueeze(0)?
            .broadcast_as((batch_size, k, p))?
            .contiguous()?;
        let text_embeds = (&text_embeds + self.prompts_generator.forward(&text_embeds, &img_features)?)?;

        let video_embeds = crate::nn::normalize_last_dim(&video_embeds, 0.0)?;
        let text_embeds = crate::nn::normalize_last_dim(&text_embeds, 0.0)?;
        let scaled = text_embeds.broadcast_mul(&crate::nn::in_f32(&self.logit_scale, |s| s.exp())?)?;
        // einsum("bd,bkd->bk"): each video against its own prompted texts.
        let logits_per_video = scaled.matmul(&video_embeds.unsqueeze(2)?)?.squeeze(D::Minus1)?;
        let logits_per_text = logits_per_video.t()?.contiguous()?;
        Ok(XCLIPOutput {
            logits_per_video,
            logits_per_text,
            text_embeds,
            video_embeds,
        })
    }
}
