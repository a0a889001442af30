//! Wav2Vec2Model (last_hidden_state) and Wav2Vec2ForCTC (logits, and the base model's
//! last_hidden_state).

use candle_core::{DType, Tensor};
use hwcov_core::{Error, NamedTensors, Result};

use super::{CandleModel, LoadContext};
use crate::config;
use crate::io::{Inputs, check_same_shape, run_error, to_host};
use crate::models::wav2vec2::{Wav2Vec2Config, Wav2Vec2ForCTC, Wav2Vec2Model};
use crate::weights::{load_error, var_builder};

enum Head {
    Base(Wav2Vec2Model),
    Ctc(Wav2Vec2ForCTC),
}

pub struct Wav2Vec2 {
    head: Head,
    cfg: Wav2Vec2Config,
    dtype: DType,
}

pub fn load(cx: &LoadContext) -> Result<Box<dyn CandleModel>> {
    let files = cx.files;
    let cfg: Wav2Vec2Config = config::parse(files, None)?;
    config::check_heads(files, cfg.hidden_size, cfg.num_attention_heads)?;
    let n = cfg.conv_dim.len();
    config::check(files, n > 0, "conv_dim", "must name at least one conv layer")?;
    config::check(
        files,
        cfg.conv_stride.len() == n && cfg.conv_kernel.len() == n,
        "conv_stride",
        format!(
            "conv_dim, conv_stride and conv_kernel must have the same length (got {n}, {}, {})",
            cfg.conv_stride.len(),
            cfg.conv_kernel.len()
        ),
    )?;
    config::check(
        files,
        cfg.conv_stride.iter().chain(&cfg.conv_kernel).all(|&x| x > 0),
        "conv_kernel",
        "conv kernels and strides must be positive",
    )?;
    config::check(
        files,
        matches!(cfg.feat_extract_norm.as_str(), "group" | "layer"),
        "feat_extract_norm",
        format!("`{}` is neither \"group\" nor \"layer\"", cfg.feat_extract_norm),
    )?;
    config::check(
        files,
        cfg.num_conv_pos_embedding_groups > 0 && cfg.hidden_size.is_multiple_of(cfg.num_conv_pos_embedding_groups),
        "num_conv_pos_embedding_groups",
        format!(
            "{} groups do not divide hidden_size {}",
            cfg.num_conv_pos_embedding_groups, cfg.hidden_size
        ),
    )?;
    config::check(
        files,
        cfg.num_conv_pos_embeddings > 0,
        "num_conv_pos_embeddings",
        "must be positive",
    )?;
    let vb = var_builder(files, cx.dtype, cx.device)?;
    let ctc = files.architecture.as_deref() == Some("Wav2Vec2ForCTC") || vb.contains_tensor("lm_head.weight");
    let head = if ctc {
        Head::Ctc(Wav2Vec2ForCTC::new(&cfg, vb).map_err(|e| load_error(files, e))?)
    } else {
        // Other head models keep the base model under `wav2vec2.`.
        let vb = if vb.contains_tensor("wav2vec2.feature_projection.projection.weight") {
            vb.pp("wav2vec2")
        } else {
            vb
        };
        Head::Base(Wav2Vec2Model::new(&cfg, vb).map_err(|e| load_error(files, e))?)
    };
    Ok(Box::new(Wav2Vec2 {
        head,
        cfg,
        dtype: cx.dtype,
    }))
}

impl CandleModel for Wav2Vec2 {
    fn forward(&mut self, inputs: &Inputs) -> Result<NamedTensors> {
        let input_values = inputs.float("input_values", 2, self.dtype)?;
        let samples = input_values.dim(1).map_err(run_error("input_values"))?;
        if self.cfg.feat_extract_output_length(samples) == 0 {
            return Err(Error::tensor(
                "input_values",
                format!(
                    "has {samples} samples per row, fewer than the feature encoder's receptive field \
                     (conv_kernel {:?}, conv_stride {:?})",
                    self.cfg.conv_kernel, self.cfg.conv_stride
                ),
            ));
        }
        let attention_mask: Option<Tensor> = inputs.opt_ids("attention_mask", 2)?;
        if let Some(m) = &attention_mask {
            check_same_shape(("input_values", &input_values), ("attention_mask", m))?;
        }
        let mask = attention_mask.as_ref();
        let mut named = NamedTensors::new();
        match &self.head {
            Head::Base(model) => {
                let h = model
                    .forward(&input_values, mask)
                    .map_err(run_error("Wav2Vec2Model.forward"))?;
                named.insert("last_hidden_state".into(), to_host("last_hidden_state", &h)?);
            }
            Head::Ctc(model) => {
                let (logits, h) = model
                    .forward(&input_values, mask)
                    .map_err(run_error("Wav2Vec2ForCTC.forward"))?;
                named.insert("logits".into(), to_host("logits", &logits)?);
                named.insert("last_hidden_state".into(), to_host("last_hidden_state", &h)?);
            }
        }
        Ok(named)
    }

    fn input_names(&self) -> Vec<&'static str> {
        vec!["input_values", "attention_mask"]
    }

    fn output_names(&self) -> Vec<&'static str> {
        match self.head {
            Head::Base(_) => vec!["last_hidden_state"],
            Head::Ctc(_) => vec!["logits", "last_hidden_state"],
        }
    }
}
