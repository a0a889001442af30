//! OPTForCausalLM (and an OPTModel checkpoint with its tied head): logits, and decoding.

use candle_core::Tensor;
use hwcov_core::Result;

use super::causal_lm::{CausalLm, CausalLmAdapter};
use super::{CandleModel, LoadContext};
use crate::config;
use crate::models::common::DynamicCache;
use crate::models::opt::{OPTConfig, OPTForCausalLM};
use crate::weights::{load_error, var_builder};

struct Opt {
    model: OPTForCausalLM,
    cfg: OPTConfig,
}

pub fn load(cx: &LoadContext) -> Result<Box<dyn CandleModel>> {
    let files = cx.files;
    let cfg: OPTConfig = config::parse(files, None)?;
    config::check_heads(files, cfg.hidden_size, cfg.num_attention_heads)?;
    config::check(files, cfg.vocab_size > 0, "vocab_size", "must be positive")?;
    let vb = var_builder(files, cx.dtype, cx.device)?;
    // OPTForCausalLM keeps the decoder under `model.decoder.`, OPTModel under `decoder.`.
    let decoder_vb = if vb.contains_tensor("decoder.embed_tokens.weight") {
        vb.pp("decoder")
    } else {
        vb.pp("model.decoder")
    };
    let model = OPTForCausalLM::new(&cfg, vb, decoder_vb).map_err(|e| load_error(files, e))?;
    Ok(Box::new(CausalLmAdapter::new(Opt { model, cfg }, cx.device)))
}

impl CausalLm for Opt {
    fn name(&self) -> &'static str {
        "OPTForCausalLM"
    }

    fn num_layers(&self) -> usize {
        self.model.num_layers
    }

    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }

    fn max_positions(&self) -> Option<usize> {
        Some(self.cfg.max_position_embeddings)
    }

    fn forward(
        &mut self,
        input_ids: &Tensor,
        attention_mask: &[Vec<u32>],
        position_ids: Option<&[Vec<i64>]>,
        cache: Option<&mut DynamicCache>,
        logits_from: usize,
    ) -> candle_core::Result<Tensor> {
        self.model
            .forward(input_ids, attention_mask, position_ids, cache, logits_from)
    }
}
