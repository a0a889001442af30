//! DetrForObjectDetection (logits, pred_boxes, last_hidden_state, encoder_last_hidden_state) and
//! DetrModel (last_hidden_state, encoder_last_hidden_state), with a ResNet backbone from
//! `backbone_config`.

use hwcov_core::{Error, ModelFiles, NamedTensors, Result};

use super::{CandleModel, LoadContext};
use crate::config;
use crate::io::{Inputs, check_dim, run_error, to_host};
use crate::models::detr::{DetrConfig, DetrForObjectDetection, DetrModel};
use crate::models::resnet::ResNetConfig;
use crate::weights::{load_error, var_builder};

enum Head {
    Base(DetrModel),
    ObjectDetection(DetrForObjectDetection),
}

/// The inputs DetrForObjectDetection and DetrModel take.
const INPUTS: [&str; 3] = ["pixel_values", "pixel_mask", "decoder_attention_mask"];

pub struct Detr {
    head: Head,
    num_queries: usize,
    num_channels: usize,
    dtype: candle_core::DType,
}

/// The backbone config, checked: transformers builds DETR's backbone from `backbone_config`; without
/// one it would load a timm model, which hwcov does not run.
fn backbone(files: &ModelFiles) -> Result<(ResNetConfig, Vec<usize>)> {
    let field = |f: &str| format!("backbone_config.{f}");
    let Some(bc) = files.config.get("backbone_config").filter(|v| !v.is_null()) else {
        return Err(Error::config(
            &files.config_path,
            "backbone_config",
            "missing: without it transformers builds a timm backbone (use_timm_backbone), which hwcov does not run; hwcov runs DETR with a transformers ResNet backbone_config",
        ));
    };
    match bc.get("model_type").and_then(|v| v.as_str()) {
        Some("resnet") => {}
        other => {
            return Err(Error::config(
                &files.config_path,
                field("model_type"),
                format!("{other:?} is not supported; hwcov runs DETR with a \"resnet\" backbone"),
            ));
        }
    }
    let cfg: ResNetConfig = config::parse_sub(files, "backbone_config")?;
    config::check(
        files,
        !cfg.depths.is_empty() && cfg.depths.len() == cfg.hidden_sizes.len(),
        &field("depths"),
        format!(
            "{} depths for {} hidden_sizes; they must pair up",
            cfg.depths.len(),
            cfg.hidden_sizes.len()
        ),
    )?;
    config::check(
        files,
        cfg.layer_type == "basic" || cfg.layer_type == "bottleneck",
        &field("layer_type"),
        format!("`{}` is neither basic nor bottleneck", cfg.layer_type),
    )?;
    config::check(
        files,
        cfg.depths.iter().all(|&d| d > 0) && cfg.hidden_sizes.iter().all(|&h| h > 0) && cfg.embedding_size > 0,
        &field("hidden_sizes"),
        "sizes and depths must be positive",
    )?;
    let out = cfg
        .out_indices()
        .map_err(|m| Error::config(&files.config_path, field("out_indices"), m))?;
    config::check(files, !out.is_empty(), &field("out_features"), "names no stage")?;
    Ok((cfg, out))
}

pub fn load(cx: &LoadContext) -> Result<Box<dyn CandleModel>> {
    let files = cx.files;
    let cfg: DetrConfig = config::parse(files, None)?;
    let (resnet, out_indices) = backbone(files)?;
    config::check(
        files,
        cfg.d_model.is_multiple_of(2) && cfg.d_model > 0,
        "d_model",
        "must be even (half for rows, half for columns of the position embedding)",
    )?;
    for (field, heads) in [
        ("encoder_attention_heads", cfg.encoder_attention_heads),
        ("decoder_attention_heads", cfg.decoder_attention_heads),
    ] {
        config::check(
            files,
            heads > 0 && cfg.d_model.is_multiple_of(heads),
            field,
            format!("{heads} heads do not divide d_model {}", cfg.d_model),
        )?;
    }
    config::check(
        files,
        matches!(cfg.position_embedding_type.as_str(), "sine" | "learned"),
        "position_embedding_type",
        format!("`{}` is neither sine nor learned", cfg.position_embedding_type),
    )?;
    let num_channels = resnet.num_channels;
    let vb = var_builder(files, cx.dtype, cx.device)?;
    let head = match files.architecture.as_deref() {
        Some("DetrForObjectDetection") | None if vb.contains_tensor("class_labels_classifier.weight") => {
            let n = config::num_labels(files)?;
            Head::ObjectDetection(
                DetrForObjectDetection::new(&cfg, &resnet, out_indices, n, vb).map_err(|e| load_error(files, e))?,
            )
        }
        Some("DetrModel") | None => {
            let vb = if vb.contains_tensor("model.query_position_embeddings.weight") {
                vb.pp("model")
            } else {
                vb
            };
            Head::Base(DetrModel::new(&cfg, &resnet, out_indices, vb).map_err(|e| load_error(files, e))?)
        }
        Some(other) => {
            return Err(Error::config(
                &files.config_path,
                "architectures",
                format!("{other} is not supported; hwcov runs DetrForObjectDetection and DetrModel"),
            ));
        }
    };
    Ok(Box::new(Detr {
        head,
        num_queries: cfg.num_queries,
        num_channels,
        dtype: cx.dtype,
    }))
}

impl CandleModel for Detr {
    fn forward(&mut self, inputs: &Inputs) -> Result<NamedTensors> {
        inputs.reject_unknown(&INPUTS)?;
        let px = inputs.float("pixel_values", 4, self.dtype)?;
        let (b, _, h, w) = px.dims4().map_err(run_error("pixel_values"))?;
        if b == 0 || h == 0 || w == 0 {
            return Err(Error::tensor(
                "pixel_values",
                format!("is empty (shape {:?})", px.dims()),
            ));
        }
        check_dim(
            "pixel_values",
            &px,
            1,
            self.num_channels,
            "backbone_config.num_channels",
        )?;
        let mask: Vec<Vec<Vec<u32>>> = match inputs.opt_ids("pixel_mask", 3)? {
            Some(m) => {
                if m.dims() != [b, h, w] {
                    return Err(Error::tensor(
                        "pixel_mask",
                        format!("has shape {:?}; pixel_values needs ({b}, {h}, {w})", m.dims()),
                    ));
                }
                m.to_vec3::<u32>().map_err(run_error("pixel_mask"))?
            }
            None => vec![vec![vec![1; w]; h]; b],
        };
        let decoder_mask: Option<Vec<Vec<u32>>> = match inputs.opt_ids("decoder_attention_mask", 2)? {
            Some(m) => {
                if m.dims() != [b, self.num_queries] {
                    return Err(Error::tensor(
                        "decoder_attention_mask",
                        format!(
                            "has shape {:?}; ({b}, num_queries = {}) is needed",
                            m.dims(),
                            self.num_queries
                        ),
                    ));
                }
                Some(m.to_vec2::<u32>().map_err(run_error("decoder_attention_mask"))?)
            }
            None => None,
        };
        let decoder_mask = decoder_mask.as_deref();
        let mut named = NamedTensors::new();
        match &self.head {
            Head::ObjectDetection(model) => {
                let out = model
                    .forward(&px, &mask, decoder_mask)
                    .map_err(run_error("DetrForObjectDetection.forward"))?;
                for (name, t) in [
                    ("logits", &out.logits),
                    ("pred_boxes", &out.pred_boxes),
                    ("last_hidden_state", &out.last_hidden_state),
                    ("encoder_last_hidden_state", &out.encoder_last_hidden_state),
                ] {
                    named.insert(name.into(), to_host(name, t)?);
                }
            }
            Head::Base(model) => {
                let out = model
                    .forward(&px, &mask, decoder_mask)
                    .map_err(run_error("DetrModel.forward"))?;
                for (name, t) in [
                    ("last_hidden_state", &out.last_hidden_state),
                    ("encoder_last_hidden_state", &out.encoder_last_hidden_state),
                ] {
                    named.insert(name.into(), to_host(name, t)?);
                }
            }
        }
        Ok(named)
    }

    fn input_names(&self) -> Vec<&'static str> {
        INPUTS.to_vec()
    }

    fn output_names(&self) -> Vec<&'static str> {
        match self.head {
            Head::ObjectDetection(_) => vec!["logits", "pred_boxes", "last_hidden_state", "encoder_last_hidden_state"],
            Head::Base(_) => vec!["last_hidden_state", "encoder_last_hidden_state"],
        }
    }
}
