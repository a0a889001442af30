//! LlamaForCausalLM, Qwen2ForCausalLM and Qwen3ForCausalLM (one graph, `models/llama.rs`): logits,
//! and decoding.

use candle_core::Tensor;
use hwcov_core::{ModelClass, ModelFiles, Result};

use super::causal_lm::{CausalLm, CausalLmAdapter};
use super::{CandleModel, LoadContext};
use crate::config;
use crate::models::common::DynamicCache;
use crate::models::llama::{LlamaArch, LlamaConfig, LlamaForCausalLM};
use crate::models::qwen2::Qwen2Config;
use crate::models::qwen3::Qwen3Config;
use crate::weights::{load_error, var_builder};

struct Llama {
    model: LlamaForCausalLM,
    arch: LlamaArch,
    name: &'static str,
}

fn arch(files: &ModelFiles) -> Result<(LlamaArch, &'static str)> {
    let named = |r: std::result::Result<LlamaArch, (String, String)>| {
        r.map_err(|(field, msg)| hwcov_core::Error::config(&files.config_path, field, msg))
    };
    match files.class {
        ModelClass::Qwen2 => Ok((
            named(config::parse::<Qwen2Config>(files, None)?.arch())?,
            "Qwen2ForCausalLM",
        )),
        ModelClass::Qwen3 => Ok((
            named(config::parse::<Qwen3Config>(files, None)?.arch())?,
            "Qwen3ForCausalLM",
        )),
        _ => Ok((
            named(config::parse::<LlamaConfig>(files, None)?.arch())?,
            "LlamaForCausalLM",
        )),
    }
}

pub fn load(cx: &LoadContext) -> Result<Box<dyn CandleModel>> {
    let files = cx.files;
    let (arch, name) = arch(files)?;
    config::check(
        files,
        arch.num_attention_heads > 0,
        "num_attention_heads",
        "must be positive",
    )?;
    config::check(
        files,
        arch.num_key_value_heads > 0 && arch.num_attention_heads.is_multiple_of(arch.num_key_value_heads),
        "num_key_value_heads",
        format!(
            "{} key/value heads do not divide {} attention heads",
            arch.num_key_value_heads, arch.num_attention_heads
        ),
    )?;
    config::check(
        files,
        arch.head_dim > 0 && arch.head_dim.is_multiple_of(2),
        "head_dim",
        format!("{} is not a positive even size (RoPE rotates pairs)", arch.head_dim),
    )?;
    config::check(files, arch.vocab_size > 0, "vocab_size", "must be positive")?;
    let vb = var_builder(files, cx.dtype, cx.device)?;
    // *ForCausalLM keeps the base model under `model.`; a bare *Model checkpoint at the root.
    let model_vb = if vb.contains_tensor("embed_tokens.weight") {
        vb.clone()
    } else {
        vb.pp("model")
    };
    let model = LlamaForCausalLM::new(&arch, vb, model_vb).map_err(|e| load_error(files, e))?;
    Ok(Box::new(CausalLmAdapter::new(Llama { model, arch, name }, cx.device)))
}

impl CausalLm for Llama {
    fn name(&self) -> &'static str {
        self.name
    }

    fn num_layers(&self) -> usize {
        self.arch.num_hidden_layers
    }

    fn vocab_size(&self) -> usize {
        self.arch.vocab_size
    }

    fn max_positions(&self) -> Option<usize> {
        None
    }

    fn forward(
        &mut self,
        input_ids: &Tensor,
        attention_mask: &[Vec<u32>],
        position_ids: Option<&[Vec<i64>]>,
        cache: Option<&mut DynamicCache>,
        logits_from: usize,
    ) -> candle_core::Result<Tensor> {
        // LlamaModel's default: arange from the number of cached positions, the same for every row.
        let past = cache.as_ref().map(|c| c.get_seq_length()).unwrap_or(0) as i64;
        let seq = input_ids.dim(1)? as i64;
        let default: Vec<Vec<i64>>;
        let position_ids = match position_ids {
            Some(p) => p,
            None => {
                default = vec![(past..past + seq).collect(); attention_mask.len()];
                &default
            }
        };
        self.model
            .forward(input_ids, attention_mask, position_ids, cache, logits_from)
    }
}
