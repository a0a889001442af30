//! BertModel (and the BertModel inside any Bert* head): last_hidden_state, pooler_output.

use candle_core::Tensor;
use hwcov_core::{Error, NamedTensors, Result};

use super::{CandleModel, LoadContext};
use crate::config;
use crate::io::{Inputs, check_ids_below, check_same_shape, run_error, to_host};
use crate::models::bert::{BertConfig, BertModel};
use crate::weights::{load_error, var_builder};

pub struct Bert {
    model: BertModel,
    cfg: BertConfig,
}

pub fn load(cx: &LoadContext) -> Result<Box<dyn CandleModel>> {
    let files = cx.files;
    let cfg: BertConfig = config::parse(files, None)?;
    config::check_heads(files, cfg.hidden_size, cfg.num_attention_heads)?;
    config::check(
        files,
        cfg.position_embedding_type == "absolute",
        "position_embedding_type",
        format!("`{}` is not supported (only \"absolute\")", cfg.position_embedding_type),
    )?;
    let vb = var_builder(files, cx.dtype, cx.device)?;
    // Head models (BertForMaskedLM, ...) keep the base model under `bert.`.
    let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
        vb.pp("bert")
    } else {
        vb
    };
    let model = BertModel::new(&cfg, vb).map_err(|e| load_error(files, e))?;
    Ok(Box::new(Bert { model, cfg }))
}

impl CandleModel for Bert {
    fn forward(&mut self, inputs: &Inputs) -> Result<NamedTensors> {
        let cfg = &self.cfg;
        let input_ids = inputs.ids("input_ids", 2)?;
        let seq_len = input_ids.dim(1).map_err(run_error("input_ids"))?;
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
        let attention_mask = match inputs.opt_ids("attention_mask", 2)? {
            Some(m) => m,
            None => input_ids.ones_like().map_err(run_error("attention_mask"))?,
        };
        check_same_shape(("input_ids", &input_ids), ("attention_mask", &attention_mask))?;
        let token_type_ids: Tensor = match inputs.opt_ids("token_type_ids", 2)? {
            Some(t) => t,
            None => input_ids.zeros_like().map_err(run_error("token_type_ids"))?,
        };
        check_same_shape(("input_ids", &input_ids), ("token_type_ids", &token_type_ids))?;
        check_ids_below(
            "token_type_ids",
            &token_type_ids,
            cfg.type_vocab_size,
            "type_vocab_size",
        )?;
        let out = self
            .model
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

    fn input_names(&self) -> Vec<&'static str> {
        vec!["input_ids", "attention_mask", "token_type_ids"]
    }

    fn output_names(&self) -> Vec<&'static str> {
        vec!["last_hidden_state", "pooler_output"]
    }
}
