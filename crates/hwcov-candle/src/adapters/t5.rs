//! T5ForConditionalGeneration: logits and encoder_last_hidden_state, and decoding over the encoder
//! output with a KV cache.

use candle_core::{Device, Tensor};
use hwcov_core::{Decoder, Error, HostTensor, NamedTensors, Result};

use super::{CandleModel, LoadContext};
use crate::config;
use crate::io::{
    Inputs, check_ids_below, check_same_shape, check_step_tokens, last_position_logits, run_error, to_host,
};
use crate::models::t5::{EncoderDecoderCache, T5Config, T5ForConditionalGeneration};
use crate::weights::{load_error, var_builder};

struct DecodeState {
    encoder_hidden_states: Tensor,
    encoder_attention_mask: Tensor,
    decoder_attention_mask: Vec<Vec<u32>>,
    cache: EncoderDecoderCache,
}

pub struct T5 {
    model: T5ForConditionalGeneration,
    cfg: T5Config,
    device: Device,
    state: Option<DecodeState>,
}

pub fn load(cx: &LoadContext) -> Result<Box<dyn CandleModel>> {
    let files = cx.files;
    let cfg: T5Config = config::parse(files, None)?;
    let (act, gated) = cfg
        .dense_act()
        .map_err(|(field, msg)| Error::config(&files.config_path, field, msg))?;
    config::check(files, cfg.num_heads > 0, "num_heads", "must be positive")?;
    config::check(files, cfg.vocab_size > 0, "vocab_size", "must be positive")?;
    config::check(
        files,
        cfg.relative_attention_num_buckets >= 4,
        "relative_attention_num_buckets",
        "must be at least 4",
    )?;
    config::check(
        files,
        cfg.relative_attention_max_distance > cfg.relative_attention_num_buckets / 4,
        "relative_attention_max_distance",
        "must exceed a quarter of relative_attention_num_buckets",
    )?;
    let vb = var_builder(files, cx.dtype, cx.device)?;
    let model = T5ForConditionalGeneration::new(&cfg, act, gated, vb).map_err(|e| load_error(files, e))?;
    Ok(Box::new(T5 {
        model,
        cfg,
        device: cx.device.clone(),
        state: None,
    }))
}

impl T5 {
    /// `name` (ids) and its mask `mask_name` (all ones when absent), checked.
    fn ids_and_mask(&self, inputs: &Inputs, name: &str, mask_name: &str) -> Result<(Tensor, Tensor)> {
        let ids = inputs.ids(name, 2)?;
        if ids.dim(1).map_err(run_error(name))? == 0 {
            return Err(Error::tensor(name, "is empty"));
        }
        check_ids_below(name, &ids, self.cfg.vocab_size, "vocab_size")?;
        let mask = match inputs.opt_ids(mask_name, 2)? {
            Some(m) => m,
            None => ids.ones_like().map_err(run_error(mask_name))?,
        };
        check_same_shape((name, &ids), (mask_name, &mask))?;
        Ok((ids, mask))
    }

    fn encode(&self, inputs: &Inputs) -> Result<(Tensor, Tensor)> {
        let (input_ids, attention_mask) = self.ids_and_mask(inputs, "input_ids", "attention_mask")?;
        let rows = attention_mask.to_vec2::<u32>().map_err(run_error("attention_mask"))?;
        let hidden = self
            .model
            .encode(&input_ids, &rows)
            .map_err(run_error("T5Stack.forward (encoder)"))?;
        Ok((hidden, attention_mask))
    }

    fn decoder_ids(&self, inputs: &Inputs, batch: usize) -> Result<(Tensor, Vec<Vec<u32>>)> {
        let (ids, mask) = self.ids_and_mask(inputs, "decoder_input_ids", "decoder_attention_mask")?;
        crate::io::check_dim("decoder_input_ids", &ids, 0, batch, "the batch size of input_ids")?;
        let rows = mask.to_vec2::<u32>().map_err(run_error("decoder_attention_mask"))?;
        Ok((ids, rows))
    }
}

impl CandleModel for T5 {
    fn forward(&mut self, inputs: &Inputs) -> Result<NamedTensors> {
        let (encoder_hidden_states, encoder_mask) = self.encode(inputs)?;
        let batch = encoder_hidden_states.dim(0).map_err(run_error("input_ids"))?;
        let (decoder_input_ids, decoder_mask) = self.decoder_ids(inputs, batch)?;
        let logits = self
            .model
            .decode(
                &decoder_input_ids,
                &decoder_mask,
                &encoder_hidden_states,
                &encoder_mask,
                None,
            )
            .map_err(run_error("T5ForConditionalGeneration.forward"))?;
        let mut named = NamedTensors::new();
        named.insert("logits".into(), to_host("logits", &logits)?);
        named.insert(
            "encoder_last_hidden_state".into(),
            to_host("encoder_last_hidden_state", &encoder_hidden_states)?,
        );
        Ok(named)
    }

    fn input_names(&self) -> Vec<&'static str> {
        vec![
            "input_ids",
            "decoder_input_ids",
            "attention_mask",
            "decoder_attention_mask",
        ]
    }

    fn output_names(&self) -> Vec<&'static str> {
        vec!["logits", "encoder_last_hidden_state"]
    }

    fn decoder(&mut self) -> Option<&mut dyn Decoder> {
        Some(self)
    }
}

impl Decoder for T5 {
    fn start(&mut self, tensors: &NamedTensors) -> Result<HostTensor> {
        self.state = None;
        let device = self.device.clone();
        let inputs = Inputs::new(tensors, &device);
        let (encoder_hidden_states, encoder_attention_mask) = self.encode(&inputs)?;
        let batch = encoder_hidden_states.dim(0).map_err(run_error("input_ids"))?;
        let (decoder_input_ids, decoder_attention_mask) = self.decoder_ids(&inputs, batch)?;
        let mut cache = EncoderDecoderCache::new(self.model.num_decoder_layers);
        let logits = self
            .model
            .decode(
                &decoder_input_ids,
                &decoder_attention_mask,
                &encoder_hidden_states,
                &encoder_attention_mask,
                Some(&mut cache),
            )
            .map_err(run_error("T5ForConditionalGeneration.forward"))?;
        let out = last_position_logits(&logits)?;
        self.state = Some(DecodeState {
            encoder_hidden_states,
            encoder_attention_mask,
            decoder_attention_mask,
            cache,
        });
        Ok(out)
    }

    fn step(&mut self, tokens: &[u32]) -> Result<HostTensor> {
        let Some(mut state) = self.state.take() else {
            return Err(Error::Usage("Decoder::step before Decoder::start".to_string()));
        };
        check_step_tokens(
            "decoder_input_ids",
            tokens,
            state.decoder_attention_mask.len(),
            self.cfg.vocab_size,
            "vocab_size",
        )?;
        for row in &mut state.decoder_attention_mask {
            row.push(1);
        }
        let ids = Tensor::from_vec(tokens.to_vec(), (tokens.len(), 1), &self.device)
            .map_err(run_error("decoder_input_ids"))?;
        let logits = self
            .model
            .decode(
                &ids,
                &state.decoder_attention_mask,
                &state.encoder_hidden_states,
                &state.encoder_attention_mask,
                Some(&mut state.cache),
            )
            .map_err(run_error("T5ForConditionalGeneration.forward"))?;
        let out = last_position_logits(&logits)?;
        self.state = Some(state);
        Ok(out)
    }
}
