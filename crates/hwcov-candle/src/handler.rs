//! The Handler over candle models: checks and converts the named inputs, runs the model, names the
//! outputs as transformers does.

use candle_core::{DType, Device, Tensor};
use hwcov_core::{Error, Handler, ModelClass, ModelFiles, NamedTensors, Precision, Result};

use crate::config;
use crate::io::{Inputs, check_dim, check_same_shape, run_error, to_host};
use crate::models::bert::{BertConfig, BertModel};
use crate::models::vit::{ViTConfig, ViTForImageClassification, ViTModel};
use crate::weights::{load_error, var_builder};

enum Model {
    Bert {
        model: BertModel,
        cfg: BertConfig,
    },
    Vit {
        model: ViTModel,
        cfg: ViTConfig,
    },
    VitForImageClassification {
        model: ViTForImageClassification,
        cfg: ViTConfig,
    },
}

pub struct CandleHandler {
    model: Model,
    device: Device,
    dtype: DType,
}

pub fn candle_dtype(p: Precision) -> DType {
    match p {
        Precision::F32 => DType::F32,
        Precision::F16 => DType::F16,
        Precision::BF16 => DType::BF16,
    }
}

/// The number of labels of a classification head: the size of `id2label`, as transformers counts it.
fn num_labels(files: &ModelFiles) -> Result<usize> {
    match files.config.get("id2label") {
        Some(serde_json::Value::Object(m)) if !m.is_empty() => Ok(m.len()),
        _ => match files.config.get("num_labels").and_then(|v| v.as_u64()) {
            Some(n) => Ok(n as usize),
            None => Err(Error::config(
                &files.config_path,
                "id2label",
                "missing: a classification head needs its labels",
            )),
        },
    }
}

impl CandleHandler {
    pub fn load(files: &ModelFiles, precision: Precision, device: &Device) -> Result<Self> {
        let dtype = candle_dtype(precision);
        let model = match files.class {
            ModelClass::Bert => {
                let cfg: BertConfig = config::parse(files, None)?;
                config::check_heads(files, cfg.hidden_size, cfg.num_attention_heads)?;
                config::check(
                    files,
                    cfg.position_embedding_type == "absolute",
                    "position_embedding_type",
                    format!("`{}` is not supported (only \"absolute\")", cfg.position_embedding_type),
                )?;
                let vb = var_builder(files, dtype, device)?;
                let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
                    vb.pp("bert")
                } else {
                    vb
                };
                let model = BertModel::new(&cfg, vb).map_err(|e| load_error(files, e))?;
                Model::Bert { model, cfg }
            }
            ModelClass::Vit => {
                let cfg: ViTConfig = config::parse(files, None)?;
                config::check_heads(files, cfg.hidden_size, cfg.num_attention_heads)?;
                config::check(files, cfg.patch_size > 0, "patch_size", "must be positive")?;
                let vb = var_builder(files, dtype, device)?;
                if files.architecture.as_deref() == Some("ViTForImageClassification") {
                    let model = ViTForImageClassification::new(&cfg, num_labels(files)?, vb)
                        .map_err(|e| load_error(files, e))?;
                    Model::VitForImageClassification { model, cfg }
                } else {
                    let vb = if vb.contains_tensor("vit.embeddings.cls_token") {
                        vb.pp("vit")
                    } else {
                        vb
                    };
                    let model = ViTModel::new(&cfg, vb).map_err(|e| load_error(files, e))?;
                    Model::Vit { model, cfg }
                }
            }
            other => {
                return Err(Error::NotImplemented {
                    platform: format!("candle ({})", device_name(device)),
                    reason: format!("no candle port of model type `{other}` yet"),
                });
            }
        };
        Ok(CandleHandler {
            model,
            device: device.clone(),
            dtype,
        })
    }
}

fn device_name(d: &Device) -> &'static str {
    match d {
        Device::Cpu => "cpu",
        Device::Cuda(_) => "cuda",
        Device::Metal(_) => "metal",
    }
}

/// Checks that every id of `ids` is below `limit` (an embedding table's size), naming the input.
fn check_ids_below(name: &str, ids: &Tensor, limit: usize, what: &str) -> Result<()> {
    let max = ids
        .flatten_all()
        .and_then(|t| t.max(0))
        .and_then(|t| t.to_scalar::<u32>())
        .map_err(run_error(name))?;
    if max as usize >= limit {
        return Err(Error::tensor(name, format!("holds id {max}, but {what} is {limit}")));
    }
    Ok(())
}

fn bert_forward(model: &BertModel, cfg: &BertConfig, inputs: &Inputs) -> Result<NamedTensors> {
    let input_ids = inputs.ids("input_ids", 2)?;
    let (_, seq_len) = input_ids.dims2().map_err(run_error("input_ids"))?;
    if seq_len == 0 {
        return Err(Error::tensor("input_ids", "is empty"));
    }
    if seq_len > cfg.max_position_embeddings {
        return Err(Error::tensor(
            "input_ids",
            format!(
                "has {seq_len} tokens; the model takes at most max_position_embeddings = {}",
                cfg.max_position_embeddings
            ),
        ));
    }
    check_ids_below("input_ids", &input_ids, cfg.vocab_size, "vocab_size")?;
    let ones = || input_ids.ones_like();
    let zeros = || input_ids.zeros_like();
    let attention_mask = match inputs.opt_ids("attention_mask", 2)? {
        Some(m) => m,
        None => ones().map_err(run_error("attention_mask"))?,
    };
    check_same_shape(("input_ids", &input_ids), ("attention_mask", &attention_mask))?;
    let token_type_ids = match inputs.opt_ids("token_type_ids", 2)? {
        Some(t) => t,
        None => zeros().map_err(run_error("token_type_ids"))?,
    };
    check_same_shape(("input_ids", &input_ids), ("token_type_ids", &token_type_ids))?;
    check_ids_below(
        "token_type_ids",
        &token_type_ids,
        cfg.type_vocab_size,
        "type_vocab_size",
    )?;
    let out = model
        .forward(&input_ids, &attention_mask, &token_type_ids)
        .map_err(run_error("BertModel.forward"))?;
    let mut named = NamedTensors::new();
    named.insert(
        "last_hidden_state".into(),
        to_host("last_hidden_state", &out.last_hidden_state)?,
    );
    if let Some(p) = out.pooler_output {
        named.insert("pooler_output".into(), to_host("pooler_output", &p)?);
    }
    Ok(named)
}

fn pixel_values(cfg: &ViTConfig, inputs: &Inputs, dtype: DType) -> Result<Tensor> {
    let px = inputs.float("pixel_values", 4, dtype)?;
    check_dim("pixel_values", &px, 1, cfg.num_channels, "num_channels")?;
    check_dim("pixel_values", &px, 2, cfg.image_size, "image_size")?;
    check_dim("pixel_values", &px, 3, cfg.image_size, "image_size")?;
    Ok(px)
}

impl Handler for CandleHandler {
    fn forward(&mut self, tensors: &NamedTensors) -> Result<NamedTensors> {
        let inputs = Inputs::new(tensors, &self.device);
        match &self.model {
            Model::Bert { model, cfg } => bert_forward(model, cfg, &inputs),
            Model::Vit { model, cfg } => {
                let px = pixel_values(cfg, &inputs, self.dtype)?;
                let out = model.forward(&px).map_err(run_error("ViTModel.forward"))?;
                let mut named = NamedTensors::new();
                named.insert(
                    "last_hidden_state".into(),
                    to_host("last_hidden_state", &out.last_hidden_state)?,
                );
                if let Some(p) = out.pooler_output {
                    named.insert("pooler_output".into(), to_host("pooler_output", &p)?);
                }
                Ok(named)
            }
            Model::VitForImageClassification { model, cfg } => {
                let px = pixel_values(cfg, &inputs, self.dtype)?;
                let (logits, out) = model
                    .forward(&px)
                    .map_err(run_error("ViTForImageClassification.forward"))?;
                let mut named = NamedTensors::new();
                named.insert("logits".into(), to_host("logits", &logits)?);
                named.insert(
                    "last_hidden_state".into(),
                    to_host("last_hidden_state", &out.last_hidden_state)?,
                );
                Ok(named)
            }
        }
    }

    fn input_names(&self) -> Vec<&'static str> {
        match &self.model {
            Model::Bert { .. } => vec!["input_ids", "attention_mask", "token_type_ids"],
            Model::Vit { .. } | Model::VitForImageClassification { .. } => vec!["pixel_values"],
        }
    }

    fn output_names(&self) -> Vec<&'static str> {
        match &self.model {
            Model::Bert { .. } | Model::Vit { .. } => vec!["last_hidden_state", "pooler_output"],
            Model::VitForImageClassification { .. } => vec!["logits", "last_hidden_state"],
        }
    }
}
