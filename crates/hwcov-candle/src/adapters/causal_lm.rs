//! What every decoder-only language model shares behind the Handler: the checks of `input_ids` and
//! `attention_mask`, the `logits` output, and token-by-token decoding with a KV cache, positions
//! derived from the attention mask as transformers' `generate()` derives them.

use candle_core::{Device, Tensor};
use hwcov_core::{Decoder, Error, HostTensor, NamedTensors, Result};

use super::CandleModel;
use crate::io::{
    Inputs, check_ids_below, check_same_shape, check_step_tokens, last_position_logits, run_error, to_host,
};
use crate::models::common::DynamicCache;

/// A decoder-only LM as the adapter drives it.
pub trait CausalLm: Send + 'static {
    /// The class name, for error messages (`LlamaForCausalLM`).
    fn name(&self) -> &'static str;
    fn num_layers(&self) -> usize;
    fn vocab_size(&self) -> usize;
    /// The most positions the model can embed (learned position tables); `None` for RoPE.
    fn max_positions(&self) -> Option<usize>;
    /// Logits (batch, seq - logits_from, vocab) of `input_ids` (batch, seq); `attention_mask` covers
    /// the cached and new positions; `position_ids` None means the model's own default.
    fn forward(
        &mut self,
        input_ids: &Tensor,
        attention_mask: &[Vec<u32>],
        position_ids: Option<&[Vec<i64>]>,
        cache: Option<&mut DynamicCache>,
        logits_from: usize,
    ) -> candle_core::Result<Tensor>;
}

/// `_prepare_position_ids_for_generation`: cumsum(mask) - 1 along each row, padding at 0.
pub fn generation_position_ids(attention_mask: &[Vec<u32>]) -> Vec<Vec<i64>> {
    attention_mask
        .iter()
        .map(|row| {
            let mut sum = 0i64;
            row.iter()
                .map(|&m| {
                    sum += m as i64;
                    if m == 0 { 0 } else { sum - 1 }
                })
                .collect()
        })
        .collect()
}

/// The state of a batch being decoded.
struct DecodeState {
    attention_mask: Vec<Vec<u32>>,
    /// The position of each row's next token.
    next_position: Vec<i64>,
    cache: DynamicCache,
}

pub struct CausalLmAdapter<M: CausalLm> {
    model: M,
    device: Device,
    state: Option<DecodeState>,
}

impl<M: CausalLm> CausalLmAdapter<M> {
    pub fn new(model: M, device: &Device) -> Self {
        CausalLmAdapter {
            model,
            device: device.clone(),
            state: None,
        }
    }

    /// `input_ids` and its `attention_mask` (all ones when absent), checked, with the mask as rows.
    fn read_inputs(&self, inputs: &Inputs) -> Result<(Tensor, Vec<Vec<u32>>)> {
        let input_ids = inputs.ids("input_ids", 2)?;
        let (_, seq_len) = input_ids.dims2().map_err(run_error("input_ids"))?;
        if seq_len == 0 {
            return Err(Error::tensor("input_ids", "is empty: there is no prompt to continue"));
        }
        check_ids_below("input_ids", &input_ids, self.model.vocab_size(), "vocab_size")?;
        let attention_mask = match inputs.opt_ids("attention_mask", 2)? {
            Some(m) => m,
            None => input_ids.ones_like().map_err(run_error("attention_mask"))?,
        };
        check_same_shape(("input_ids", &input_ids), ("attention_mask", &attention_mask))?;
        let rows = attention_mask.to_vec2::<u32>().map_err(run_error("attention_mask"))?;
        if rows.iter().flatten().any(|&m| m > 1) {
            return Err(Error::tensor("attention_mask", "holds values other than 0 and 1"));
        }
        if let Some(max) = self.model.max_positions()
            && seq_len > max
        {
            return Err(Error::tensor(
                "input_ids",
                format!("has {seq_len} tokens; the model takes at most max_position_embeddings = {max}"),
            ));
        }
        Ok((input_ids, rows))
    }

    fn check_position(&self, position: i64) -> Result<()> {
        if let Some(max) = self.model.max_positions()
            && position >= max as i64
        {
            return Err(Error::tensor(
                "input_ids",
                format!("position {position} is past the model's max_position_embeddings = {max}"),
            ));
        }
        Ok(())
    }
}

impl<M: CausalLm> CandleModel for CausalLmAdapter<M> {
    fn forward(&mut self, inputs: &Inputs) -> Result<NamedTensors> {
        let (input_ids, mask) = self.read_inputs(inputs)?;
        let name = self.model.name();
        let logits = self
            .model
            .forward(&input_ids, &mask, None, None, 0)
            .map_err(run_error(name))?;
        let mut named = NamedTensors::new();
        named.insert("logits".into(), to_host("logits", &logits)?);
        Ok(named)
    }

    fn input_names(&self) -> Vec<&'static str> {
        vec!["input_ids", "attention_mask"]
    }

    fn output_names(&self) -> Vec<&'static str> {
        vec!["logits"]
    }

    fn decoder(&mut self) -> Option<&mut dyn Decoder> {
        Some(self)
    }
}

impl<M: CausalLm> Decoder for CausalLmAdapter<M> {
    fn start(&mut self, tensors: &NamedTensors) -> Result<HostTensor> {
        self.state = None;
        let device = self.device.clone();
        let (input_ids, attention_mask) = self.read_inputs(&Inputs::new(tensors, &device))?;
        let position_ids = generation_position_ids(&attention_mask);
        let next_position: Vec<i64> = position_ids
            .iter()
            .map(|r| r.last().copied().unwrap_or(-1) + 1)
            .collect();
        let mut cache = DynamicCache::new(self.model.num_layers());
        let l = input_ids.dim(1).map_err(run_error("input_ids"))?;
        let name = self.model.name();
        let logits = self
            .model
            .forward(
                &input_ids,
                &attention_mask,
                Some(&position_ids),
                Some(&mut cache),
                l - 1,
            )
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
        let vocab = self.model.vocab_size();
        let Some(mut state) = self.state.take() else {
            return Err(Error::Usage("Decoder::step before Decoder::start".to_string()));
        };
        check_step_tokens("input_ids", tokens, state.attention_mask.len(), vocab, "vocab_size")?;
        for &p in &state.next_position {
            self.check_position(p)?;
        }
        for row in &mut state.attention_mask {
            row.push(1);
        }
        let position_ids: Vec<Vec<i64>> = state.next_position.iter().map(|&p| vec![p]).collect();
        let ids = Tensor::from_vec(tokens.to_vec(), (tokens.len(), 1), &self.device).map_err(run_error("input_ids"))?;
        let name = self.model.name();
        let logits = self
            .model
            .forward(
                &ids,
                &state.attention_mask,
                Some(&position_ids),
                Some(&mut state.cache),
                0,
            )
            .map_err(run_error(name))?;
        let out = last_position_logits(&logits)?;
        for p in &mut state.next_position {
            *p += 1;
        }
        self.state = Some(state);
        Ok(out)
    }

    fn max_positions(&self) -> Option<usize> {
        self.model.max_positions()
    }
}
