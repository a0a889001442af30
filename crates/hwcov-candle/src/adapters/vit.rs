//! ViTModel (last_hidden_state, pooler_output) and ViTForImageClassification (logits, and the base
//! model's last_hidden_state).

use candle_core::Tensor;
use hwcov_core::{NamedTensors, Result};

use super::{CandleModel, LoadContext};
use crate::config;
use crate::io::{Inputs, check_dim, run_error, to_host};
use crate::models::vit::{ViTConfig, ViTForImageClassification, ViTModel};
use crate::weights::{load_error, var_builder};

enum Head {
    Base(ViTModel),
    ImageClassification(ViTForImageClassification),
}

pub struct Vit {
    head: Head,
    cfg: ViTConfig,
    dtype: candle_core::DType,
}

pub fn load(cx: &LoadContext) -> Result<Box<dyn CandleModel>> {
    let files = cx.files;
    let cfg: ViTConfig = config::parse(files, None)?;
    config::check_heads(files, cfg.hidden_size, cfg.num_attention_heads)?;
    config::check(files, cfg.patch_size > 0, "patch_size", "must be positive")?;
    let vb = var_builder(files, cx.dtype, cx.device)?;
    let head = if files.architecture.as_deref() == Some("ViTForImageClassification") {
        let model =
            ViTForImageClassification::new(&cfg, config::num_labels(files)?, vb).map_err(|e| load_error(files, e))?;
        Head::ImageClassification(model)
    } else {
        let vb = if vb.contains_tensor("vit.embeddings.cls_token") {
            vb.pp("vit")
        } else {
            vb
        };
        Head::Base(ViTModel::new(&cfg, vb).map_err(|e| load_error(files, e))?)
    };
    Ok(Box::new(Vit {
        head,
        cfg,
        dtype: cx.dtype,
    }))
}

impl Vit {
    fn pixel_values(&self, inputs: &Inputs) -> Result<Tensor> {
        let px = inputs.float("pixel_values", 4, self.dtype)?;
        check_dim("pixel_values", &px, 1, self.cfg.num_channels, "num_channels")?;
        check_dim("pixel_values", &px, 2, self.cfg.image_size, "image_size")?;
        check_dim("pixel_values", &px, 3, self.cfg.image_size, "image_size")?;
        Ok(px)
    }
}

impl CandleModel for Vit {
    fn forward(&mut self, inputs: &Inputs) -> Result<NamedTensors> {
        let px = self.pixel_values(inputs)?;
        let mut named = NamedTensors::new();
        match &self.head {
            Head::Base(model) => {
                let out = model.forward(&px).map_err(run_error("ViTModel.forward"))?;
                named.insert(
                    "last_hidden_state".into(),
                    to_host("last_hidden_state", &out.last_hidden_state)?,
                );
                if let Some(p) = out.pooler_output {
                    named.insert("pooler_output".into(), to_host("pooler_output", &p)?);
                }
            }
            Head::ImageClassification(model) => {
                let (logits, out) = model
                    .forward(&px)
                    .map_err(run_error("ViTForImageClassification.forward"))?;
                named.insert("logits".into(), to_host("logits", &logits)?);
                named.insert(
                    "last_hidden_state".into(),
                    to_host("last_hidden_state", &out.last_hidden_state)?,
                );
            }
        }
        Ok(named)
    }

    fn input_names(&self) -> Vec<&'static str> {
        vec!["pixel_values"]
    }

    fn output_names(&self) -> Vec<&'static str> {
        match self.head {
            Head::Base(_) => vec!["last_hidden_state", "pooler_output"],
            Head::ImageClassification(_) => vec!["logits", "last_hidden_state"],
        }
    }
}
