//! LLaVA-NeXT, ported from transformers' `models/llava_next/modeling_llava_next.py`
//! (LlavaNextForConditionalGeneration, inference with a KV cache): LLaVA's vision tower, projector and
//! language model (`llava.rs`), with "anyres" images: each image arrives as a base image plus the tiles
//! of the grid resolution picked for its size (`image_grid_pinpoints`); the tiles' features are laid
//! out as one grid, cut to the image's aspect ratio (`unpad_image`, as `hwcov_core::anyres::unpad`), and end each row with the learned
//! `image_newline` (`pack_image_features`). The resolution arithmetic is `hwcov_core::anyres`, which
//! the image processor shares.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::nn::Linear;
use hwcov_core::anyres::{anyres_grid_shape, anyres_num_patches, unpad};
use serde::Deserialize;

use crate::activation::Activation;
use crate::models::clip::CLIPVisionModel;
use crate::models::common::{DynamicCache, lm_head};
use crate::models::llama::{LlamaArch, LlamaModel};
use crate::models::llava::{
    LlavaMultiModalProjector, LlavaWeights, VisionFeatureLayer, VisionFeatureSelectStrategy, VisionSettings, d32000,
    default_strategy, gelu, masked_scatter, minus_two, project_image_features, yes,
};

/// The top-level fields of `LlavaNextConfig` (the sub-configs are read on their own).
#[derive(Debug, Clone, Deserialize)]
pub struct LlavaNextConfig {
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
    /// (height, width) of each grid resolution; null means transformers' default list.
    #[serde(default)]
    pub image_grid_pinpoints: Option<Vec<(usize, usize)>>,
}

/// The pinpoints `LlavaNextConfig.__post_init__` fills in.
pub const DEFAULT_IMAGE_GRID_PINPOINTS: [(usize, usize); 5] =
    [(336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)];

impl LlavaNextConfig {
    pub fn pinpoints(&self) -> Vec<(usize, usize)> {
        self.image_grid_pinpoints
            .clone()
            .unwrap_or_else(|| DEFAULT_IMAGE_GRID_PINPOINTS.to_vec())
    }
}

pub struct LlavaNextModel {
    pub vision_tower: CLIPVisionModel,
    pub multi_modal_projector: LlavaMultiModalProjector,
    pub image_newline: Tensor,
    pub language_model: LlamaModel,
    pub settings: VisionSettings,
    pub image_grid_pinpoints: Vec<(usize, usize)>,
    pub image_token_id: u32,
}

impl LlavaNextModel {
    pub fn new(cfg: &LlavaNextConfig, settings: VisionSettings, text: &LlamaArch, w: &LlavaWeights) -> Result<Self> {
        Ok(Self {
            vision_tower: CLIPVisionModel::new(&settings.vision, w.vision_tower.clone())?,
            multi_modal_projector: LlavaMultiModalProjector::new(
                &settings,
                text.hidden_size,
                w.multi_modal_projector.clone(),
            )?,
            image_newline: w.model.get(text.hidden_size, "image_newline")?,
            language_model: LlamaModel::new(text, w.language_model.clone())?,
            settings,
            image_grid_pinpoints: cfg.pinpoints(),
            image_token_id: cfg.image_token_index,
        })
    }

    /// The tiles (base image included) that an image of `image_size` (height, width) arrives as.
    pub fn image_num_patches(&self, image_size: (usize, usize)) -> usize {
        anyres_num_patches(image_size, &self.image_grid_pinpoints, self.settings.vision.image_size).unwrap_or(1)
    }

    /// `get_image_features`: pixel_values (images, tiles, channels, height, width), of which each
    /// image's first `image_num_patches` tiles are used, or (all tiles, channels, height, width);
    /// `image_sizes` (height, width) of each image. Returns the packed features of each image,
    /// (features, hidden).
    pub fn get_image_features(&self, pixel_values: &Tensor, image_sizes: &[(usize, usize)]) -> Result<Vec<Tensor>> {
        let image_num_patches: Vec<usize> = image_sizes.iter().map(|&s| self.image_num_patches(s)).collect();
        let pixel_values = if pixel_values.rank() == 5 {
            let per_image = image_num_patches
                .iter()
                .enumerate()
                .map(|(i, &n)| pixel_values.get(i)?.narrow(0, 0, n))
                .collect::<Result<Vec<_>>>()?;
            Tensor::cat(&per_image, 0)?
        } else {
            pixel_values.clone()
        };
        let image_features = project_image_features(
            &self.vision_tower,
            &self.multi_modal_projector,
            &self.settings,
            &pixel_values,
            true,
        )?;
        let mut split = Vec::with_capacity(image_num_patches.len());
        let mut start = 0;
        for &n in &image_num_patches {
            split.push(image_features.narrow(0, start, n)?);
            start += n;
        }
        self.pack_image_features(&split, image_sizes)
    }

    /// `pack_image_features`: per image, the base image's features, then the tiles' features as one
    /// grid, unpadded, with `image_newline` after each row.
    pub fn pack_image_features(
        &self,
        image_features: &[Tensor],
        image_sizes: &[(usize, usize)],
    ) -> Result<Vec<Tensor>> {
        let vision = &self.settings.vision;
        let hidden = self.image_newline.dim(0)?;
        let newline = &self.image_newline;
        let mut new_image_features = Vec::with_capacity(image_features.len());
        for (image_feature, &image_size) in image_features.iter().zip(image_sizes) {
            let n = image_feature.dim(0)?;
            let packed = if n > 1 {
                let base_image_feature = image_feature.get(0)?;
                let tiles = image_feature.narrow(0, 1, n - 1)?;
                let height = vision.image_size / vision.patch_size;
                let width = height;
                let (num_patch_height, num_patch_width) =
                    anyres_grid_shape(image_size, &self.image_grid_pinpoints, vision.image_size).unwrap_or((0, 0));
                let grid = tiles
                    .reshape((num_patch_height, num_patch_width, height, width, hidden))?
                    .permute((4, 0, 2, 1, 3))?
                    .contiguous()?
                    .reshape((hidden, num_patch_height * height, num_patch_width * width))?;
                let (_, current_height, current_width) = grid.dims3()?;
                let ((top, rows), (left, cols)) = unpad(image_size, (current_height, current_width));
                // An image so thin that its grid keeps no row adds nothing to the base image's features.
                if rows == 0 {
                    base_image_feature
                } else {
                    let newlines = newline
                        .reshape((hidden, 1, 1))?
                        .broadcast_as((hidden, rows, 1))?
                        .contiguous()?;
                    let grid = if cols == 0 {
                        newlines
                    } else {
                        let grid = grid.narrow(1, top, rows)?.narrow(2, left, cols)?;
                        Tensor::cat(&[&grid, &newlines], 2)?
                    };
                    let grid = grid.reshape((hidden, rows * (cols + 1)))?.t()?;
                    Tensor::cat(&[&base_image_feature, &grid], 0)?
                }
            } else {
                Tensor::cat(&[&image_feature.get(0)?, &newline.reshape((1, hidden))?], 0)?
            };
            new_image_features.push(packed);
        }
        Ok(new_image_features)
    }
}

pub struct LlavaNextForConditionalGeneration {
    pub model: LlavaNextModel,
    lm_head: Linear,
    pub dtype: DType,
}

impl LlavaNextForConditionalGeneration {
    pub fn new(cfg: &LlavaNextConfig, settings: VisionSettings, text: &LlamaArch, vb: VarBuilder) -> Result<Self> {
        let w = LlavaWeights::locate(&vb);
        let model = LlavaNextModel::new(cfg, settings, text, &w)?;
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

    /// The input embeddings of `input_ids` (batch, seq) with the image features (n, hidden) scattered
    /// over the image tokens (`mask`, see `llava::placeholder_mask`).
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
        past_key_values: Option<&mut DynamicCache>,
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
