//! CLIPModel: logits_per_image, logits_per_text, text_embeds, image_embeds.

use candle_core::Tensor;
use hwcov_core::{Error, ModelFiles, NamedTensors, Result};

use super::{CandleModel, LoadContext};
use crate::config;
use crate::io::{Inputs, check_dim, check_ids_below, check_same_shape, run_error, to_host};
use crate::models::clip::{CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig, EosPooling, TokenIds};
use crate::weights::{load_error, var_builder};

pub struct Clip {
    model: CLIPModel,
    text: CLIPTextConfig,
    vision: CLIPVisionConfig,
    dtype: candle_core::DType,
}

/// How the text tower pools, from `text_config.eos_token_id` as CLIPTextModel reads it.
pub fn eos_pooling(files: &ModelFiles, eos: &Option<TokenIds>) -> Result<EosPooling> {
    match eos {
        Some(TokenIds::One(2)) => Ok(EosPooling::LegacyArgmax),
        Some(TokenIds::One(id)) => Ok(EosPooling::FirstEos(*id)),
        // CLIPTextModel compares input_ids with the value itself, which fails for a list.
        _ => Err(Error::config(
            &files.config_path,
            "text_config.eos_token_id",
            "CLIP pools the text at its eos token and needs one integer eos_token_id",
        )),
    }
}

/// Checks shared by the CLIP-style towers: heads divide the widths, patches fit the image.
pub fn check_towers(
    files: &ModelFiles,
    text: &CLIPTextConfig,
    vision: &CLIPVisionConfig,
    vision_key: &str,
) -> Result<()> {
    config::check(
        files,
        text.num_attention_heads > 0 && text.hidden_size.is_multiple_of(text.num_attention_heads),
        "text_config.num_attention_heads",
        format!(
            "{} heads do not divide hidden_size {}",
            text.num_attention_heads, text.hidden_size
        ),
    )?;
    config::check(
        files,
        vision.num_attention_heads > 0 && vision.hidden_size.is_multiple_of(vision.num_attention_heads),
        &format!("{vision_key}.num_attention_heads"),
        format!(
            "{} heads do not divide hidden_size {}",
            vision.num_attention_heads, vision.hidden_size
        ),
    )?;
    config::check(
        files,
        vision.patch_size > 0 && vision.patch_size <= vision.image_size,
        &format!("{vision_key}.patch_size"),
        format!("{} does not fit image_size {}", vision.patch_size, vision.image_size),
    )
}

pub fn load(cx: &LoadContext) -> Result<Box<dyn CandleModel>> {
    let files = cx.files;
    if let Some(arch) = files.architecture.as_deref()
        && arch != "CLIPModel"
    {
        return Err(Error::config(
            &files.config_path,
            "architectures",
            format!("{arch} is not supported; hwcov runs CLIPModel"),
        ));
    }
    let cfg: CLIPConfig = config::parse(files, None)?;
    let text: CLIPTextConfig = config::parse_sub(files, "text_config")?;
    let vision: CLIPVisionConfig = config::parse_sub(files, "vision_config")?;
    check_towers(files, &text, &vision, "vision_config")?;
    let pooling = eos_pooling(files, &text.eos_token_id)?;
    let vb = var_builder(files, cx.dtype, cx.device)?;
    let model = CLIPModel::new(&cfg, &text, &vision, pooling, vb).map_err(|e| load_error(files, e))?;
    Ok(Box::new(Clip {
        model,
        text,
        vision,
        dtype: cx.dtype,
    }))
}

/// The text inputs of a CLIP-style text tower, checked.
pub struct TextInputs {
    pub input_ids: Tensor,
    pub attention_mask: Option<Tensor>,
    pub position_ids: Option<Tensor>,
}

/// input_ids, attention_mask and position_ids of a CLIP-style text tower, checked.
pub fn text_inputs(inputs: &Inputs, text: &CLIPTextConfig) -> Result<TextInputs> {
    let input_ids = inputs.ids("input_ids", 2)?;
    let seq_len = input_ids.dim(1).map_err(run_error("input_ids"))?;
    if seq_len == 0 || input_ids.dim(0).map_err(run_error("input_ids"))? == 0 {
        return Err(Error::tensor("input_ids", "is empty"));
    }
    if seq_len > text.max_position_embeddings {
        return Err(Error::tensor(
            "input_ids",
            format!(
                "has {seq_len} tokens; the model takes at most max_position_embeddings = {}",
                text.max_position_embeddings
            ),
        ));
    }
    check_ids_below("input_ids", &input_ids, text.vocab_size, "vocab_size")?;
    let attention_mask = inputs.opt_ids("attention_mask", 2)?;
    if let Some(m) = &attention_mask {
        check_same_shape(("input_ids", &input_ids), ("attention_mask", m))?;
    }
    let position_ids = inputs.opt_ids("position_ids", 2)?;
    if let Some(p) = &position_ids {
        let (b, l) = input_ids.dims2().map_err(run_error("input_ids"))?;
        let (pb, pl) = p.dims2().map_err(run_error("position_ids"))?;
        if pl != l || (pb != b && pb != 1) {
            return Err(Error::tensor(
                "position_ids",
                format!("has shape {:?}; input_ids needs ({b} or 1, {l})", p.dims()),
            ));
        }
        check_ids_below(
            "position_ids",
            p,
            text.max_position_embeddings,
            "max_position_embeddings",
        )?;
    }
    Ok(TextInputs {
        input_ids,
        attention_mask,
        position_ids,
    })
}

/// The inputs CLIPModel and XCLIPModel take.
pub const INPUTS: [&str; 4] = ["input_ids", "attention_mask", "position_ids", "pixel_values"];

impl CandleModel for Clip {
    fn forward(&mut self, inputs: &Inputs) -> Result<NamedTensors> {
        inputs.reject_unknown(&INPUTS)?;
        let text = text_inputs(inputs, &self.text)?;
        let px = inputs.float("pixel_values", 4, self.dtype)?;
        if px.dim(0).map_err(run_error("pixel_values"))? == 0 {
            return Err(Error::tensor("pixel_values", "holds no image"));
        }
        check_dim("pixel_values", &px, 1, self.vision.num_channels, "num_channels")?;
        check_dim("pixel_values", &px, 2, self.vision.image_size, "image_size")?;
        check_dim("pixel_values", &px, 3, self.vision.image_size, "image_size")?;
        let out = self
            .model
            .forward(
                &text.input_ids,
                &px,
                text.attention_mask.as_ref(),
                text.position_ids.as_ref(),
            )
            .map_err(run_error("CLIPModel.forward"))?;
        let mut named = NamedTensors::new();
        for (name, t) in [
            ("logits_per_image", &out.logits_per_image),
            ("logits_per_text", &out.logits_per_text),
            ("text_embeds", &out.text_embeds),
            ("image_embeds", &out.image_embeds),
        ] {
            named.insert(name.into(), to_host(name, t)?);
        }
        Ok(named)
    }

    fn input_names(&self) -> Vec<&'static str> {
        INPUTS.to_vec()
    }

    fn output_names(&self) -> Vec<&'static str> {
        vec!["logits_per_image", "logits_per_text", "text_embeds", "image_embeds"]
    }
}
