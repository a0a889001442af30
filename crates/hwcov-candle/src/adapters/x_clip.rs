//! XCLIPModel: logits_per_video, logits_per_text, text_embeds, video_embeds.

use hwcov_core::{Error, NamedTensors, Result};

use super::clip::{INPUTS, check_towers, text_inputs};
use super::{CandleModel, LoadContext};
use crate::config;
use crate::io::{Inputs, check_dim, run_error, to_host};
use crate::models::clip::CLIPTextConfig;
use crate::models::x_clip::{XCLIPConfig, XCLIPModel, XCLIPVisionConfig};
use crate::weights::{load_error, var_builder};

pub struct XClip {
    model: XCLIPModel,
    text: CLIPTextConfig,
    vision: XCLIPVisionConfig,
    dtype: candle_core::DType,
}

pub fn load(cx: &LoadContext) -> Result<Box<dyn CandleModel>> {
    let files = cx.files;
    if let Some(arch) = files.architecture.as_deref()
        && arch != "XCLIPModel"
    {
        return Err(Error::config(
            &files.config_path,
            "architectures",
            format!("{arch} is not supported; hwcov runs XCLIPModel"),
        ));
    }
    let cfg: XCLIPConfig = config::parse(files, None)?;
    let text: CLIPTextConfig = config::parse_sub(files, "text_config")?;
    let vision: XCLIPVisionConfig = config::parse_sub(files, "vision_config")?;
    check_towers(files, &text, &vision.clip, "vision_config")?;
    config::check(
        files,
        vision.mit_hidden_size == cfg.projection_dim,
        "vision_config.mit_hidden_size",
        format!(
            "{} must equal projection_dim {}: the mit runs on the projected frame embeddings",
            vision.mit_hidden_size, cfg.projection_dim
        ),
    )?;
    config::check(
        files,
        vision.mit_num_attention_heads > 0 && vision.mit_hidden_size.is_multiple_of(vision.mit_num_attention_heads),
        "vision_config.mit_num_attention_heads",
        format!(
            "{} heads do not divide mit_hidden_size {}",
            vision.mit_num_attention_heads, vision.mit_hidden_size
        ),
    )?;
    config::check(
        files,
        cfg.prompt_num_attention_heads > 0 && cfg.projection_dim.is_multiple_of(cfg.prompt_num_attention_heads),
        "prompt_num_attention_heads",
        format!(
            "{} heads do not divide projection_dim {}",
            cfg.prompt_num_attention_heads, cfg.projection_dim
        ),
    )?;
    config::check(
        files,
        vision.num_frames > 0,
        "vision_config.num_frames",
        "must be positive",
    )?;
    let vb = var_builder(files, cx.dtype, cx.device)?;
    let model = XCLIPModel::new(&cfg, &text, &vision, vb).map_err(|e| load_error(files, e))?;
    Ok(Box::new(XClip {
        model,
        text,
        vision,
        dtype: cx.dtype,
    }))
}

impl CandleModel for XClip {
    fn forward(&mut self, inputs: &Inputs) -> Result<NamedTensors> {
        inputs.reject_unknown(&INPUTS)?;
        let text = text_inputs(inputs, &self.text)?;
        let px = inputs.float("pixel_values", 5, self.dtype)?;
        if px.dim(0).map_err(run_error("pixel_values"))? == 0 {
            return Err(Error::tensor("pixel_values", "holds no video"));
        }
        check_dim("pixel_values", &px, 1, self.vision.num_frames, "num_frames")?;
        check_dim("pixel_values", &px, 2, self.vision.clip.num_channels, "num_channels")?;
        check_dim("pixel_values", &px, 3, self.vision.clip.image_size, "image_size")?;
        check_dim("pixel_values", &px, 4, self.vision.clip.image_size, "image_size")?;
        let out = self
            .model
            .forward(
                &text.input_ids,
                &px,
                text.attention_mask.as_ref(),
                text.position_ids.as_ref(),
            )
            .map_err(run_error("XCLIPModel.forward"))?;
        let mut named = NamedTensors::new();
        for (name, t) in [
            ("logits_per_video", &out.logits_per_video),
            ("logits_per_text", &out.logits_per_text),
            ("text_embeds", &out.text_embeds),
            ("video_embeds", &out.video_embeds),
        ] {
            named.insert(name.into(), to_host(name, t)?);
        }
        Ok(named)
    }

    fn input_names(&self) -> Vec<&'static str> {
        INPUTS.to_vec()
    }

    fn output_names(&self) -> Vec<&'static str> {
        vec!["logits_per_video", "logits_per_text", "text_embeds", "video_embeds"]
    }
}
