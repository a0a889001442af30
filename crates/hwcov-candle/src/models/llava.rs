//! LLaVA, ported from transformers' `models/llava/modeling_llava.py` (LlavaForConditionalGeneration,
//! inference with a KV cache): a CLIP vision tower (`clip.rs`), the multi-modal projector, and a
//! decoder-only language model (`llama.rs`, which also builds Mistral, Qwen2 and Qwen3) whose input
//! embeddings take the projected image features at the positions of the image token.
//!
//! candle-transformers' llava module ports the original LLaVA repository rather than transformers:
//! its own config format, no padding mask, and (for LLaVA-NeXT) a different rounding in
//! `unpad_image`; so the model is written here on our CLIP and LLaMA ports.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::nn::{Linear, linear_b};
use serde::Deserialize;

use crate::activation::Activation;
use crate::models::clip::{CLIPVisionConfig, CLIPVisionModel};
use crate::models::common::lm_head;
use crate::models::llama::{LlamaArch, LlamaModel};

/// `vision_feature_layer`: one hidden state of the vision tower, or several concatenated along the
/// features. Negative indices count from the end, as Python indexes `hidden_states`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum VisionFeatureLayer {
    One(i64),
    Many(Vec<i64>),
}

impl VisionFeatureLayer {
    pub fn indices(&self) -> Vec<i64> {
        match self {
            VisionFeatureLayer::One(i) => vec![*i],
            VisionFeatureLayer::Many(v) => v.clone(),
        }
    }

    /// The indices into the `num_hidden_layers + 1` hidden states, or the first that is out of range.
    pub fn resolve(&self, num_hidden_layers: usize) -> std::result::Result<Vec<usize>, i64> {
        let n = num_hidden_layers as i64 + 1;
        self.indices()
            .into_iter()
            .map(|i| {
                let j = if i < 0 { i + n } else { i };
                if (0..n).contains(&j) { Ok(j as usize) } else { Err(i) }
            })
            .collect()
    }
}

/// `vision_feature_select_strategy`: "default" drops the CLS token of every tile, "full" keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VisionFeatureSelectStrategy {
    Default,
    Full,
}

/// The top-level fields of `LlavaConfig` (the sub-configs are read on their own).
#[derive(Debug, Clone, Deserialize)]
pub struct LlavaConfig {
    #[serde(default = "d32000", alias = "image_token_id")]
    pub image_token_index: u32,
    #[serde(default = "gelu")]
    pub projector_hidden_act: Activation,
    #[serde(default = "default_strategy")]
    pub vision_feature_select_strategy: VisionFeatureSelectStrategy,
    #[serde(default = "minus_two")]
    pub vision_feature_layer: VisionFeatureLayer,
    #[serde(default = "yes")]
    pub multimodal_projector_bias: bool,
    #[serde(default)]
    pub tie_word_embeddings: bool,
}

pub(crate) fn d32000() -> u32 {
    32000
}
pub(crate) fn gelu() -> Activation {
    Activation::Gelu
}
pub(crate) fn default_strategy() -> VisionFeatureSelectStrategy {
    VisionFeatureSelectStrategy::Default
}
pub(crate) fn minus_two() -> VisionFeatureLayer {
    VisionFeatureLayer::One(-2)
}
pub(crate) fn yes() -> bool {
    true
}

/// The vision tower that `LlavaConfig.__post_init__` builds when config.json has no vision_config.
pub fn default_vision_config() -> CLIPVisionConfig {
    CLIPVisionConfig {
        hidden_size: 1024,
        intermediate_size: 4096,
        num_hidden_layers: 24,
        num_attention_heads: 16,
        num_channels: 3,
        image_size: 336,
        patch_size: 14,
        hidden_act: Activation::QuickGelu,
        layer_norm_eps: 1e-5,
    }
}

/// What the vision and projector parts read from the config, shared by LLaVA and LLaVA-NeXT.
#[derive(Debug, Clone)]
pub struct VisionSettings {
    pub vision: CLIPVisionConfig,
    /// Resolved indices of `vision_feature_layer` into the vision tower's hidden states.
    pub feature_layers: Vec<usize>,
    pub strategy: VisionFeatureSelectStrategy,
    pub projector_hidden_act: Activation,
    pub multimodal_projector_bias: bool,
}

impl VisionSettings {
    /// The features each image (or tile) contributes: one per patch, and the CLS token with "full".
    pub fn features_per_tile(&self) -> usize {
        self.vision.num_patches() + usize::from(self.strategy == VisionFeatureSelectStrategy::Full)
    }
}

pub struct LlavaMultiModalProjector {
    linear_1: Linear,
    act: Activation,
    linear_2: Linear,
}

impl LlavaMultiModalProjector {
    pub fn new(settings: &VisionSettings, text_hidden_size: usize, vb: VarBuilder) -> Result<Self> {
        let num_feature_layers = settings.feature_layers.len();
        let bias = settings.multimodal_projector_bias;
        Ok(Self {
            linear_1: linear_b(
                settings.vision.hidden_size * num_feature_layers,
                text_hidden_size,
                bias,
                vb.pp("linear_1"),
            )?,
            act: settings.projector_hidden_act,
            linear_2: linear_b(text_hidden_size, text_hidden_size, bias, vb.pp("linear_2"))?,
        })
    }

    /// `strided`: transformers hands the projector a non-contiguous view (the CLS token sliced off
    /// more than one tile's features), which its `linear_1` takes as a product rounded to the dtype
    /// before the bias is added (`Linear::forward_strided`).
    pub fn forward(&self, image_features: &Tensor, strided: bool) -> Result<Tensor> {
        let hidden_states = if strided {
            self.linear_1.forward_strided(image_features)?
        } else {
            self.linear_1.forward(image_features)?
        };
        let hidden_states = self.act.forward(&hidden_states)?;
        self.linear_2.forward(&hidden_states)
    }
}

/// `get_image_features` of both LlavaModel and LlavaNextModel, up to the projector: the selected
/// hidden states of the vision tower (concatenated along the features when there are several, the CLS
/// token dropped with "default"), projected. pixel_values (n, channels, height, width) ->
/// (n, features_per_tile, text hidden size). `cls_dropped_after_cat`: LLaVA-NeXT drops the CLS token
/// from the concatenated features, LLaVA from each layer's before concatenating them; the values are
/// the same, but only LLaVA's concatenation gives the projector a contiguous tensor.
pub fn project_image_features(
    vision_tower: &CLIPVisionModel,
    multi_modal_projector: &LlavaMultiModalProjector,
    settings: &VisionSettings,
    pixel_values: &Tensor,
    cls_dropped_after_cat: bool,
) -> Result<Tensor> {
    let last = settings.feature_layers.iter().copied().max().unwrap_or(0);
    let hidden_states = vision_tower.hidden_states(pixel_values, last)?;
    let selected: Vec<Tensor> = settings
        .feature_layers
        .iter()
        .map(|&i| hidden_states[i].clone())
        .collect();
    let mut selected_image_feature = Tensor::cat(&selected, 2)?;
    let mut strided = false;
    if settings.strategy == VisionFeatureSelectStrategy::Default {
        let (n, l, _) = selected_image_feature.dims3()?;
        selected_image_feature = selected_image_feature.narrow(1, 1, l - 1)?;
        // `[:, 1:]` of more than one tile is a view that is not contiguous, unless a concatenation
        // follows it.
        strided = n > 1 && (cls_dropped_after_cat || selected.len() == 1);
    }
    multi_modal_projector.forward(&selected_image_feature, strided)
}

/// `get_placeholder_mask` from `input_ids`: where each row holds the image token, flattened row by row.
pub fn placeholder_mask(input_ids: &[Vec<u32>], image_token_id: u32) -> Vec<bool> {
    input_ids.iter().flatten().map(|&t| t == image_token_id).collect()
}

/// `inputs_embeds.masked_scatter(special_image_mask, image_features)`: the rows of `image_features`
/// (n, hidden) replace, in order, the embeddings (batch, seq, hidden) at the flattened positions where
/// `mask` holds. The caller has checked that the mask holds exactly n positions.
pub fn masked_scatter(inputs_embeds: &Tensor, mask: &[bool], image_features: &Tensor) -> Result<Tensor> {
    let (b, l, h) = inputs_embeds.dims3()?;
    let n = image_features.dim(0)?;
    let mut next = 0usize;
    let index: Vec<u32> = mask
        .iter()
        .enumerate()
        .map(|(p, &m)| {
            if m {
                next += 1;
                (b * l + next - 1) as u32
            } else {
                p as u32
            }
        })
        .collect();
    if next != n || mask.len() != b * l {
        candle_core::bail!("{next} image tokens for {n} image features");
    }
    let all = Tensor::cat(
        &[
            &inputs_embeds.reshape((b * l, h))?,
            &image_features.to_dtype(inputs_embeds.dtype())?,
        ],
        0,
    )?;
    let index = Tensor::from_vec(index, b * l, inputs_embeds.device())?;
    all.index_select(&index, 0)?.reshape((b, l, h))
}

/// Where the parts of a LLaVA-family checkpoint are: transformers 5 (and the Hub's llava-hf
/// repositories) save them as `vision_tower.`, `multi_modal_projector.`, `language_model.model.` and
/// `language_model.lm_head.`; transformers 4.52 to 4.57 saved them under `model.` with the head at
/// `lm_head.`, as the modules are named. The CLIP tower may or may not keep its `vision_model.` level.
pub struct LlavaWeights<'a> {
    pub vision_tower: VarBuilder<'a>,
    pub multi_modal_projector: VarBuilder<'a>,
    pub language_model: VarBuilder<'a>,
    /// Where `lm_head.weight` is (or would be, for tied embeddings).
    pub lm_head_root: VarBuilder<'a>,
    /// Where LLaVA-NeXT's `image_newline` is.
    pub model: VarBuilder<'a>,
}

impl<'a> LlavaWeights<'a> {
    pub fn locate(vb: &VarBuilder<'a>) -> Self {
        let first = |candidates: &[&str], probe: &str| -> VarBuilder<'a> {
            candidates
                .iter()
                .map(|c| if c.is_empty() { vb.clone() } else { vb.pp(*c) })
                .find(|v| v.contains_tensor(probe))
                .unwrap_or_else(|| vb.pp(candidates[0]))
        };
        let vision_tower = first(
            &[
                "model.vision_tower",
                "model.vision_tower.vision_model",
                "vision_tower",
                "vision_tower.vision_model",
            ],
            "embeddings.class_embedding",
        );
        let multi_modal_projector = first(
            &["model.multi_modal_projector", "multi_modal_projector"],
            "linear_1.weight",
        );
        let language_model = first(&["model.language_model", "language_model.model"], "embed_tokens.weight");
        let lm_head_root = first(&["", "language_model"], "lm_head.weight");
        let model = first(&["model", ""], "image_newline");
        LlavaWeights {
            vision_tower,
            multi_modal_projector,
            language_model,
            lm_head_root,
            model,
        }
    }
}

pub struct LlavaModel {
    pub vision_tower: CLIPVisionModel,
    pub multi_modal_projector: LlavaMultiModalProjector,
    pub language_model: LlamaModel,
    pub settings: VisionSettings,
    pub image_token_id: u32,
}

impl LlavaModel {
    pub fn new(cfg: &LlavaConfig, settings: VisionSettings, text: &LlamaArch, w: &LlavaWeights) -> Result<Self> {
        Ok(Self {
            vision_tower: CLIPVisionModel::new(&settings.vision, w.vision_tower.clone())?,
            multi_modal_projector: LlavaMultiModalProjector::new(
                &settings,
                text.hidden_size,
                w.multi_modal_projector.clone(),
            )?,
            language_model: LlamaModel::new(text, w.language_model.clone())?,
            settings,
            image_token_id: cfg.image_token_index,
        })
    }

    /// `get_image_features`: pixel_values (n, channels, height, width) -> (n, features_per_tile,
    /// hidden): one list entry per image, as transformers returns them, stacked.
    pub fn get_image_features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        project_image_features(
            &self.vision_tower,
            &self.multi_modal_projector,
            &self.settings,
            pixel_values,
            false,
        )
    }
}

pub struct LlavaForConditionalGeneration {
    pub model: LlavaModel,
    lm_head: Linear,
    pub dtype: DType,
}

impl LlavaForConditionalGeneration {
    pub fn new(cfg: &LlavaConfig, settings: VisionSettings, text: &LlamaArch, vb: VarBuilder) -> Result<Self> {
        let w = LlavaWeights::locate(&vb);
        let model = LlavaModel::new(cfg, settings, text, &w)?;
        let lm_head = lm_head(
            &w.lm_head_root,
            model.language_model.embeddings(),
            cfg.tie_word_embeddings,
            text.hidden_size,
            text.vocab_size,
        )?;
        Ok(Self {
            model,
            lm_head,
            dtype: vb.dtype(),
        })
    }

    /// The input embeddings of `input_ids` (batch, seq) with the image features (n, hidden) of
    /// `image_features` scattered over the image tokens (`mask`, see [`placeholder_mask`]).
    pub fn inputs_embeds(&self, input_ids: &Tensor, image: Option<(&[bool], &Tensor)>) -> Result<Tensor> {
        let embeds = self.model.language_model.embed(input_ids)?;
        match image {
            Some((mask, features)) => masked_scatter(&embeds, mask, features),
            None => Ok(embeds),
        }
    }

    /// Logits (batch, seq - logits_from, vocab) of `inputs_embeds` (batch, seq, hidden).
    pub fn forward_embeds(
        &mut self,
        inputs_embeds: &Tensor,
        attention_mask: &[Vec<u32>],
        position_ids: &[Vec<i64>],
        past_key_values: Option<&mut crate::models::common::DynamicCache>,
        logits_from: usize,
    ) -> Result<Tensor> {
        let hidden_states =
            self.model
                .language_model
                .forward_embeds(inputs_embeds, attention_mask, position_ids, past_key_values)?;
        let l = hidden_states.dim(1)?;
        self.lm_head
            .forward(&hidden_states.narrow(1, logits_from, l - logits_from)?)
    }
}
