//! LlavaForConditionalGeneration and LlavaNextForConditionalGeneration (`models/llava.rs`,
//! `models/llava_next.rs`): `logits`, and decoding with a KV cache that holds the prompt with its
//! image features merged in. The inputs are checked against each other before the model runs: the
//! image tokens of `input_ids` must match the features that `pixel_values` (and `image_sizes`) make.

use candle_core::{DType, Device, Tensor};
use hwcov_core::anyres::{anyres_grid_shape, unpad};
use hwcov_core::{Decoder, Error, HostTensor, ModelClass, ModelFiles, NamedTensors, Result};
use serde_json::Value;

use super::causal_lm::generation_position_ids;
use super::{CandleModel, LoadContext};
use crate::config;
use crate::io::{
    Inputs, check_dim, check_ids_below, check_same_shape, check_step_tokens, last_position_logits, run_error, to_host,
};
use crate::models::clip::CLIPVisionConfig;
use crate::models::common::DynamicCache;
use crate::models::llama::{LlamaArch, LlamaConfig};
use crate::models::llava::{
    LlavaConfig, LlavaForConditionalGeneration, VisionFeatureLayer, VisionFeatureSelectStrategy, VisionSettings,
    default_vision_config, placeholder_mask,
};
use crate::models::llava_next::{LlavaNextConfig, LlavaNextForConditionalGeneration};
use crate::models::mistral::MistralConfig;
use crate::models::qwen2::Qwen2Config;
use crate::models::qwen3::Qwen3Config;
use crate::weights::{load_error, var_builder};

/// The language model of `text_config`, as `AutoModel.from_config` builds it from its model_type
/// (llama when it names none).
pub fn text_arch(files: &ModelFiles) -> Result<LlamaArch> {
    let path = &files.config_path;
    let model_type = match files.config.get("text_config").and_then(|t| t.get("model_type")) {
        None | Some(Value::Null) => "llama",
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(Error::config(
                path,
                "text_config.model_type",
                format!("expected a string, got {other}"),
            ));
        }
    };
    let named = |r: std::result::Result<LlamaArch, (String, String)>| {
        r.map_err(|(field, msg)| Error::config(path, format!("text_config.{field}"), msg))
    };
    let arch = match model_type {
        "llama" => named(config::parse_sub::<LlamaConfig>(files, "text_config")?.arch())?,
        "mistral" => named(config::parse_sub::<MistralConfig>(files, "text_config")?.arch())?,
        "qwen2" => named(config::parse_sub::<Qwen2Config>(files, "text_config")?.arch())?,
        "qwen3" => named(config::parse_sub::<Qwen3Config>(files, "text_config")?.arch())?,
        other => {
            return Err(Error::config(
                path,
                "text_config.model_type",
                format!("`{other}` is not a language model hwcov builds under LLaVA (llama, mistral, qwen2, qwen3)"),
            ));
        }
    };
    config::check(
        files,
        arch.num_attention_heads > 0,
        "text_config.num_attention_heads",
        "must be positive",
    )?;
    config::check(
        files,
        arch.num_key_value_heads > 0 && arch.num_attention_heads.is_multiple_of(arch.num_key_value_heads),
        "text_config.num_key_value_heads",
        format!(
            "{} key/value heads do not divide {} attention heads",
            arch.num_key_value_heads, arch.num_attention_heads
        ),
    )?;
    config::check(
        files,
        arch.head_dim > 0 && arch.head_dim.is_multiple_of(2),
        "text_config.head_dim",
        format!("{} is not a positive even size (RoPE rotates pairs)", arch.head_dim),
    )?;
    config::check(files, arch.vocab_size > 0, "text_config.vocab_size", "must be positive")?;
    Ok(arch)
}

/// The vision tower of `vision_config`: a CLIP vision model (the one `LlavaConfig` builds when
/// config.json names none).
pub fn vision_config(files: &ModelFiles) -> Result<CLIPVisionConfig> {
    let vision = match files.config.get("vision_config") {
        None | Some(Value::Null) => default_vision_config(),
        Some(v) => {
            let model_type = v
                .get("model_type")
                .and_then(|t| t.as_str())
                .unwrap_or("clip_vision_model");
            if model_type != "clip_vision_model" {
                return Err(Error::config(
                    &files.config_path,
                    "vision_config.model_type",
                    format!("`{model_type}`: hwcov runs LLaVA with a CLIP vision tower (clip_vision_model) only"),
                ));
            }
            config::parse_sub(files, "vision_config")?
        }
    };
    config::check(
        files,
        vision.num_attention_heads > 0 && vision.hidden_size.is_multiple_of(vision.num_attention_heads),
        "vision_config.num_attention_heads",
        format!(
            "{} heads do not divide hidden_size {}",
            vision.num_attention_heads, vision.hidden_size
        ),
    )?;
    config::check(
        files,
        vision.patch_size > 0 && vision.patch_size <= vision.image_size,
        "vision_config.patch_size",
        format!("{} does not fit image_size {}", vision.patch_size, vision.image_size),
    )?;
    Ok(vision)
}

fn settings(
    files: &ModelFiles,
    vision: CLIPVisionConfig,
    layer: &VisionFeatureLayer,
    strategy: VisionFeatureSelectStrategy,
    projector_hidden_act: crate::activation::Activation,
    multimodal_projector_bias: bool,
) -> Result<VisionSettings> {
    let feature_layers = layer.resolve(vision.num_hidden_layers).map_err(|i| {
        Error::config(
            &files.config_path,
            "vision_feature_layer",
            format!(
                "{i} is not a hidden state of the vision tower (it has {} layers: 0 to {}, or -1 to -{})",
                vision.num_hidden_layers,
                vision.num_hidden_layers,
                vision.num_hidden_layers + 1
            ),
        )
    })?;
    config::check(
        files,
        !feature_layers.is_empty(),
        "vision_feature_layer",
        "is an empty list",
    )?;
    Ok(VisionSettings {
        vision,
        feature_layers,
        strategy,
        projector_hidden_act,
        multimodal_projector_bias,
    })
}

pub fn load(cx: &LoadContext) -> Result<Box<dyn CandleModel>> {
    let files = cx.files;
    let text = text_arch(files)?;
    let vision = vision_config(files)?;
    let vb = var_builder(files, cx.dtype, cx.device)?;
    if files.class == ModelClass::LlavaNext {
        let cfg: LlavaNextConfig = config::parse(files, None)?;
        let settings = settings(
            files,
            vision,
            &cfg.vision_feature_layer,
            cfg.vision_feature_select_strategy,
            cfg.projector_hidden_act,
            cfg.multimodal_projector_bias,
        )?;
        check_next(files, &cfg, &settings)?;
        check_image_token(files, cfg.image_token_index, &text)?;
        let model =
            LlavaNextForConditionalGeneration::new(&cfg, settings, &text, vb).map_err(|e| load_error(files, e))?;
        Ok(Box::new(LlavaAdapter::new(Next(model), text, cx)))
    } else {
        let mut cfg: LlavaConfig = config::parse(files, None)?;
        // LlavaConfig.__post_init__ ties the embeddings where the text config does.
        cfg.tie_word_embeddings |= text.tie_word_embeddings;
        let settings = settings(
            files,
            vision,
            &cfg.vision_feature_layer,
            cfg.vision_feature_select_strategy,
            cfg.projector_hidden_act,
            cfg.multimodal_projector_bias,
        )?;
        check_image_token(files, cfg.image_token_index, &text)?;
        let model = LlavaForConditionalGeneration::new(&cfg, settings, &text, vb).map_err(|e| load_error(files, e))?;
        Ok(Box::new(LlavaAdapter::new(Llava(model), text, cx)))
    }
}

/// The image token is embedded before its embedding is replaced, so it must be in the vocabulary.
fn check_image_token(files: &ModelFiles, id: u32, text: &LlamaArch) -> Result<()> {
    config::check(
        files,
        (id as usize) < text.vocab_size,
        "image_token_index",
        format!("{id} is outside text_config.vocab_size {}", text.vocab_size),
    )
}

/// What `pack_image_features` needs of the config to lay the tiles out as a grid.
fn check_next(files: &ModelFiles, cfg: &LlavaNextConfig, settings: &VisionSettings) -> Result<()> {
    let tile = settings.vision.image_size;
    let pinpoints = cfg.pinpoints();
    config::check(files, !pinpoints.is_empty(), "image_grid_pinpoints", "is empty")?;
    if let Some(&(h, w)) = pinpoints
        .iter()
        .find(|&&(h, w)| h == 0 || w == 0 || !h.is_multiple_of(tile) || !w.is_multiple_of(tile))
    {
        return Err(Error::config(
            &files.config_path,
            "image_grid_pinpoints",
            format!(
                "[{h}, {w}] is not a grid of whole tiles of vision_config.image_size {tile} (transformers' pack_image_features cannot lay it out)"
            ),
        ));
    }
    config::check(
        files,
        settings.strategy == VisionFeatureSelectStrategy::Default,
        "vision_feature_select_strategy",
        "\"full\" keeps the CLS token of every tile, which transformers' pack_image_features cannot lay out as a grid with a CLIP tower; LLaVA-NeXT needs \"default\"",
    )
}

/// The two classes, as the adapter drives them.
pub trait VisionLanguageModel: Send + 'static {
    /// The class name, for error messages.
    fn name(&self) -> &'static str;
    fn settings(&self) -> &VisionSettings;
    fn image_token_id(&self) -> u32;
    /// The forward() arguments besides input_ids and attention_mask.
    fn image_inputs(&self) -> &'static [&'static str];
    /// Reads and checks the image inputs against the `image_tokens` of input_ids; returns the image
    /// features (one row per image token), or `None` without images.
    fn image_features(&self, inputs: &Inputs, dtype: DType, image_tokens: usize) -> Result<Option<Tensor>>;
    fn inputs_embeds(&self, input_ids: &Tensor, image: Option<(&[bool], &Tensor)>) -> candle_core::Result<Tensor>;
    fn forward_embeds(
        &mut self,
        inputs_embeds: &Tensor,
        attention_mask: &[Vec<u32>],
        position_ids: &[Vec<i64>],
        cache: Option<&mut DynamicCache>,
        logits_from: usize,
    ) -> candle_core::Result<Tensor>;
}

/// pixel_values without images (batch 0) count as none, as LlavaNextModel treats them.
fn pixel_values(inputs: &Inputs, rank: usize, dtype: DType) -> Result<Option<Tensor>> {
    if !inputs.has("pixel_values") {
        return Ok(None);
    }
    let px = inputs.float("pixel_values", rank, dtype)?;
    Ok((px.dim(0).map_err(run_error("pixel_values"))? > 0).then_some(px))
}

fn no_images_for_tokens(id: u32, image_tokens: usize) -> Result<Option<Tensor>> {
    if image_tokens > 0 {
        return Err(Error::tensor(
            "input_ids",
            format!("holds {image_tokens} image tokens (id {id}), but no pixel_values are given"),
        ));
    }
    Ok(None)
}

fn tokens_without_images(id: u32, images: usize) -> Error {
    Error::tensor(
        "pixel_values",
        format!(
            "holds {images} images, but input_ids holds no image token (id {id}) to put them at: the prompt needs the processor's image tokens"
        ),
    )
}

/// The channel and pixel sizes of one image (or tile), the last three dimensions of pixel_values.
fn check_pixels(px: &Tensor, vision: &CLIPVisionConfig) -> Result<()> {
    let r = px.rank();
    check_dim(
        "pixel_values",
        px,
        r - 3,
        vision.num_channels,
        "vision_config.num_channels",
    )?;
    check_dim("pixel_values", px, r - 2, vision.image_size, "vision_config.image_size")?;
    check_dim("pixel_values", px, r - 1, vision.image_size, "vision_config.image_size")
}

struct Llava(LlavaForConditionalGeneration);

impl VisionLanguageModel for Llava {
    fn name(&self) -> &'static str {
        "LlavaForConditionalGeneration"
    }
    fn settings(&self) -> &VisionSettings {
        &self.0.model.settings
    }
    fn image_token_id(&self) -> u32 {
        self.0.model.image_token_id
    }
    fn image_inputs(&self) -> &'static [&'static str] {
        &["pixel_values"]
    }

    fn image_features(&self, inputs: &Inputs, dtype: DType, image_tokens: usize) -> Result<Option<Tensor>> {
        let id = self.image_token_id();
        let Some(px) = pixel_values(inputs, 4, dtype)? else {
            return no_images_for_tokens(id, image_tokens);
        };
        check_pixels(&px, &self.settings().vision)?;
        let images = px.dims()[0];
        if image_tokens == 0 {
            return Err(tokens_without_images(id, images));
        }
        let per = self.settings().features_per_tile();
        if image_tokens != images * per {
            return Err(Error::tensor(
                "input_ids",
                format!(
                    "holds {image_tokens} image tokens (id {id}), but the {images} images of pixel_values make {} image features ({per} each): image features and image tokens do not match",
                    images * per
                ),
            ));
        }
        let features = self
            .0
            .model
            .get_image_features(&px)
            .and_then(|f| f.flatten_to(1))
            .map_err(run_error("LlavaModel.get_image_features"))?;
        Ok(Some(features))
    }

    fn inputs_embeds(&self, input_ids: &Tensor, image: Option<(&[bool], &Tensor)>) -> candle_core::Result<Tensor> {
        self.0.inputs_embeds(input_ids, image)
    }

    fn forward_embeds(
        &mut self,
        inputs_embeds: &Tensor,
        attention_mask: &[Vec<u32>],
        position_ids: &[Vec<i64>],
        cache: Option<&mut DynamicCache>,
        logits_from: usize,
    ) -> candle_core::Result<Tensor> {
        self.0
            .forward_embeds(inputs_embeds, attention_mask, position_ids, cache, logits_from)
    }
}

struct Next(LlavaNextForConditionalGeneration);

impl Next {
    /// The features LlavaNextModel makes of an image of `size` (height, width): the base image's, and
    /// the unpadded grid of its tiles with a newline after each row.
    fn image_features_of(&self, size: (usize, usize)) -> usize {
        let model = &self.0.model;
        let vision = &model.settings.vision;
        let per = model.settings.features_per_tile();
        let side = vision.image_size / vision.patch_size;
        let (rows, cols) = anyres_grid_shape(size, &model.image_grid_pinpoints, vision.image_size).unwrap_or((0, 0));
        let ((_, kept_rows), (_, kept_cols)) = unpad(size, (rows * side, cols * side));
        per + kept_rows * (kept_cols + 1)
    }
}

impl VisionLanguageModel for Next {
    fn name(&self) -> &'static str {
        "LlavaNextForConditionalGeneration"
    }
    fn settings(&self) -> &VisionSettings {
        &self.0.model.settings
    }
    fn image_token_id(&self) -> u32 {
        self.0.model.image_token_id
    }
    fn image_inputs(&self) -> &'static [&'static str] {
        &["pixel_values", "image_sizes"]
    }

    fn image_features(&self, inputs: &Inputs, dtype: DType, image_tokens: usize) -> Result<Option<Tensor>> {
        let id = self.image_token_id();
        let model = &self.0.model;
        let rank = match inputs.rank("pixel_values") {
            Some(4) => 4,
            _ => 5,
        };
        let Some(px) = pixel_values(inputs, rank, dtype)? else {
            if inputs.has("image_sizes") && image_tokens == 0 {
                return Err(Error::tensor("image_sizes", "is given without pixel_values"));
            }
            return no_images_for_tokens(id, image_tokens);
        };
        check_pixels(&px, &model.settings.vision)?;
        if !inputs.has("image_sizes") {
            return Err(Error::tensor(
                "image_sizes",
                "missing input: LLaVA-NeXT needs the (height, width) of each image of pixel_values",
            ));
        }
        let sizes_t = inputs.ids("image_sizes", 2)?;
        check_dim("image_sizes", &sizes_t, 1, 2, "height and width")?;
        let sizes: Vec<(usize, usize)> = sizes_t
            .to_vec2::<u32>()
            .map_err(run_error("image_sizes"))?
            .into_iter()
            .map(|r| (r[0] as usize, r[1] as usize))
            .collect();
        if let Some(i) = sizes.iter().position(|&(h, w)| h == 0 || w == 0) {
            return Err(Error::tensor(
                "image_sizes",
                format!("row {i} is {:?}: an image has a positive height and width", sizes[i]),
            ));
        }
        let tiles: Vec<usize> = sizes.iter().map(|&s| model.image_num_patches(s)).collect();
        let images = if rank == 5 {
            let (n, max_tiles) = (px.dims()[0], px.dims()[1]);
            if n != sizes.len() {
                return Err(Error::tensor(
                    "image_sizes",
                    format!("holds {} sizes for the {n} images of pixel_values", sizes.len()),
                ));
            }
            if let Some(i) = tiles.iter().position(|&t| t > max_tiles) {
                return Err(Error::tensor(
                    "pixel_values",
                    format!(
                        "holds {max_tiles} tiles per image, but image {i} of {}x{} (image_sizes) takes {} at the image_grid_pinpoints",
                        sizes[i].0, sizes[i].1, tiles[i]
                    ),
                ));
            }
            n
        } else {
            let total: usize = tiles.iter().sum();
            if px.dims()[0] != total {
                return Err(Error::tensor(
                    "pixel_values",
                    format!(
                        "holds {} tiles, but the {} images of image_sizes take {total} at the image_grid_pinpoints",
                        px.dims()[0],
                        sizes.len()
                    ),
                ));
            }
            sizes.len()
        };
        if image_tokens == 0 {
            return Err(tokens_without_images(id, images));
        }
        let per_image: Vec<usize> = sizes.iter().map(|&s| self.image_features_of(s)).collect();
        let expected: usize = per_image.iter().sum();
        if image_tokens != expected {
            return Err(Error::tensor(
                "input_ids",
                format!(
                    "holds {image_tokens} image tokens (id {id}), but the {images} images of pixel_values and image_sizes make {expected} image features ({per_image:?}): image features and image tokens do not match"
                ),
            ));
        }
        let features = model
            .get_image_features(&px, &sizes)
            .and_then(|f| Tensor::cat(&f, 0))
            .map_err(run_error("LlavaNextModel.get_image_features"))?;
        Ok(Some(features))
    }

    fn inputs_embeds(&self, input_ids: &Tensor, image: Option<(&[bool], &Tensor)>) -> candle_core::Result<Tensor> {
        self.0.inputs_embeds(input_ids, image)
    }

    fn forward_embeds(
        &mut self,
        inputs_embeds: &Tensor,
        attention_mask: &[Vec<u32>],
        position_ids: &[Vec<i64>],
        cache: Option<&mut DynamicCache>,
        logits_from: usize,
    ) -> candle_core::Result<Tensor> {
        self.0
            .forward_embeds(inputs_embeds, attention_mask, position_ids, cache, logits_from)
    }
}

/// The state of a batch being decoded.
struct DecodeState {
    attention_mask: Vec<Vec<u32>>,
    /// The position of each row's next token.
    next_position: Vec<i64>,
    cache: DynamicCache,
}

pub struct LlavaAdapter<M: VisionLanguageModel> {
    model: M,
    text: LlamaArch,
    dtype: DType,
    device: Device,
    state: Option<DecodeState>,
}

impl<M: VisionLanguageModel> LlavaAdapter<M> {
    fn new(model: M, text: LlamaArch, cx: &LoadContext) -> Self {
        LlavaAdapter {
            model,
            text,
            dtype: cx.dtype,
            device: cx.device.clone(),
            state: None,
        }
    }

    fn known_inputs(&self) -> Vec<&'static str> {
        let mut names = vec!["input_ids", "attention_mask"];
        names.extend_from_slice(self.model.image_inputs());
        names
    }

    /// The prompt's input embeddings (images merged in) and its attention mask as rows.
    fn prompt(&self, inputs: &Inputs) -> Result<(Tensor, Vec<Vec<u32>>)> {
        inputs.reject_unknown(&self.known_inputs())?;
        let input_ids = inputs.ids("input_ids", 2)?;
        let (batch, seq_len) = input_ids.dims2().map_err(run_error("input_ids"))?;
        if seq_len == 0 || batch == 0 {
            return Err(Error::tensor("input_ids", "is empty: there is no prompt to continue"));
        }
        check_ids_below("input_ids", &input_ids, self.text.vocab_size, "text_config.vocab_size")?;
        let attention_mask = match inputs.opt_ids("attention_mask", 2)? {
            Some(m) => m,
            None => input_ids.ones_like().map_err(run_error("attention_mask"))?,
        };
        check_same_shape(("input_ids", &input_ids), ("attention_mask", &attention_mask))?;
        let rows = attention_mask.to_vec2::<u32>().map_err(run_error("attention_mask"))?;
        if rows.iter().flatten().any(|&m| m > 1) {
            return Err(Error::tensor("attention_mask", "holds values other than 0 and 1"));
        }
        let ids = input_ids.to_vec2::<u32>().map_err(run_error("input_ids"))?;
        let mask = placeholder_mask(&ids, self.model.image_token_id());
        let image_tokens = mask.iter().filter(|&&m| m).count();
        let features = self.model.image_features(inputs, self.dtype, image_tokens)?;
        let name = self.model.name();
        let embeds = self
            .model
            .inputs_embeds(&input_ids, features.as_ref().map(|f| (mask.as_slice(), f)))
            .map_err(run_error(name))?;
        Ok((embeds, rows))
    }
}

impl<M: VisionLanguageModel> CandleModel for LlavaAdapter<M> {
    fn forward(&mut self, inputs: &Inputs) -> Result<NamedTensors> {
        let (embeds, mask) = self.prompt(inputs)?;
        // The language model's default positions: 0.. for every row.
        let seq = embeds.dim(1).map_err(run_error("input_ids"))? as i64;
        let position_ids = vec![(0..seq).collect::<Vec<i64>>(); mask.len()];
        let name = self.model.name();
        let logits = self
            .model
            .forward_embeds(&embeds, &mask, &position_ids, None, 0)
            .map_err(run_error(name))?;
        let mut named = NamedTensors::new();
        named.insert("logits".into(), to_host("logits", &logits)?);
        Ok(named)
    }

    fn input_names(&self) -> Vec<&'static str> {
        self.known_inputs()
    }

    fn output_names(&self) -> Vec<&'static str> {
        vec!["logits"]
    }

    fn decoder(&mut self) -> Option<&mut dyn Decoder> {
        Some(self)
    }
}

impl<M: VisionLanguageModel> Decoder for LlavaAdapter<M> {
    fn start(&mut self, tensors: &NamedTensors) -> Result<HostTensor> {
        self.state = None;
        let device = self.device.clone();
        let (embeds, attention_mask) = self.prompt(&Inputs::new(tensors, &device))?;
        let position_ids = generation_position_ids(&attention_mask);
        let next_position: Vec<i64> = position_ids
            .iter()
            .map(|r| r.last().copied().unwrap_or(-1) + 1)
            .collect();
        let mut cache = DynamicCache::new(self.text.num_hidden_layers);
        let l = embeds.dim(1).map_err(run_error("input_ids"))?;
        let name = self.model.name();
        let logits = self
            .model
            .forward_embeds(&embeds, &attention_mask, &position_ids, Some(&mut cache), l - 1)
            .map_err(run_error(name))?;
        let out = last_position_logits(&logits)?;
        self.state = Some(DecodeState {
            attention_mask,
            next_position,
            cache,
        });
        Ok(out)
    }

    fn step(&mut self, tokens: &[u32]) -> Result<HostTensor> {
        let vocab = self.text.vocab_size;
        let Some(mut state) = self.state.take() else {
            return Err(Error::Usage("Decoder::step before Decoder::start".to_string()));
        };
        check_step_tokens(
            "input_ids",
            tokens,
            state.attention_mask.len(),
            vocab,
            "text_config.vocab_size",
        )?;
        for row in &mut state.attention_mask {
            row.push(1);
        }
        let position_ids: Vec<Vec<i64>> = state.next_position.iter().map(|&p| vec![p]).collect();
        let ids = Tensor::from_vec(tokens.to_vec(), (tokens.len(), 1), &self.device).map_err(run_error("input_ids"))?;
        let name = self.model.name();
        let logits = self
            .model
            .inputs_embeds(&ids, None)
            .and_then(|e| {
                self.model
                    .forward_embeds(&e, &state.attention_mask, &position_ids, Some(&mut state.cache), 0)
            })
            .map_err(run_error(name))?;
        let out = last_position_logits(&logits)?;
        for p in &mut state.next_position {
            *p += 1;
        }
        self.state = Some(state);
        Ok(out)
    }
}
