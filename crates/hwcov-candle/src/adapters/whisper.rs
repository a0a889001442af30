//! WhisperForConditionalGeneration: logits and encoder_last_hidden_state, and decoding over the
//! encoder output with a KV cache (self-attention keys and values grown per token, cross-attention
//! ones computed once).

use candle_core::{DType, Device, Tensor};
use hwcov_core::{Decoder, Error, HostTensor, NamedTensors, Result};

use super::{CandleModel, LoadContext};
use crate::config;
use crate::io::{
    Inputs, check_dim, check_ids_below, check_same_shape, check_step_tokens, last_position_logits, run_error, to_host,
};
use crate::models::t5::EncoderDecoderCache;
use crate::models::whisper::{WhisperConfig, WhisperForConditionalGeneration};
use crate::weights::{load_error, var_builder};

struct DecodeState {
    encoder_hidden_states: Tensor,
    decoder_attention_mask: Vec<Vec<u32>>,
    cache: EncoderDecoderCache,
}

pub struct Whisper {
    model: WhisperForConditionalGeneration,
    cfg: WhisperConfig,
    dtype: DType,
    device: Device,
    state: Option<DecodeState>,
}

pub fn load(cx: &LoadContext) -> Result<Box<dyn CandleModel>> {
    let files = cx.files;
    let cfg: WhisperConfig = config::parse(files, None)?;
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
    for (field, v) in [
        ("vocab_size", cfg.vocab_size),
        ("num_mel_bins", cfg.num_mel_bins),
        ("max_source_positions", cfg.max_source_positions),
        ("max_target_positions", cfg.max_target_positions),
    ] {
        config::check(files, v > 0, field, "must be positive")?;
    }
    let vb = var_builder(files, cx.dtype, cx.device)?;
    let model = WhisperForConditionalGeneration::new(&cfg, vb).map_err(|e| load_error(files, e))?;
    Ok(Box::new(Whisper {
        model,
        cfg,
        dtype: cx.dtype,
        device: cx.device.clone(),
        state: None,
    }))
}

impl Whisper {
    /// `input_features` (batch, num_mel_bins, 2 * max_source_positions), checked, through the encoder.
    fn encode(&self, inputs: &Inputs) -> Result<Tensor> {
        let name = "input_features";
        let features = inputs.float(name, 3, self.dtype)?;
        check_dim(name, &features, 1, self.cfg.num_mel_bins, "num_mel_bins of config.json")?;
        let frames = self.cfg.expected_seq_length();
        check_dim(
            name,
            &features,
            2,
            frames,
            &format!(
                "Whisper's encoder takes exactly 2 * max_source_positions = {frames} mel frames; pad or cut the features to {frames}"
            ),
        )?;
        if features.dim(0).map_err(run_error(name))? == 0 {
            return Err(Error::tensor(name, "is empty (a batch of 0)"));
        }
        self.model
            .encode(&features)
            .map_err(run_error("WhisperEncoder.forward"))
    }

    /// `decoder_input_ids` and `decoder_attention_mask` (all ones when absent), checked against the
    /// batch, the vocabulary and the learned positions.
    fn decoder_ids(&self, inputs: &Inputs, batch: usize) -> Result<(Tensor, Vec<Vec<u32>>)> {
        let name = "decoder_input_ids";
        let ids = inputs.ids(name, 2)?;
        let len = ids.dim(1).map_err(run_error(name))?;
        if len == 0 {
            return Err(Error::tensor(name, "is empty"));
        }
        check_dim(name, &ids, 0, batch, "the batch size of input_features")?;
        check_ids_below(name, &ids, self.cfg.vocab_size, "vocab_size")?;
        if len > self.cfg.max_target_positions {
            return Err(Error::tensor(
                name,
                format!(
                    "has {len} tokens; the decoder takes at most max_target_positions = {}",
                    self.cfg.max_target_positions
                ),
            ));
        }
        let mask_name = "decoder_attention_mask";
        let mask = match inputs.opt_ids(mask_name, 2)? {
            Some(m) => m,
            None => ids.ones_like().map_err(run_error(mask_name))?,
        };
        check_same_shape((name, &ids), (mask_name, &mask))?;
        let rows = mask.to_vec2::<u32>().map_err(run_error(mask_name))?;
        Ok((ids, rows))
    }
}

impl CandleModel for Whisper {
    fn forward(&mut self, inputs: &Inputs) -> Result<NamedTensors> {
        let encoder_hidden_states = self.encode(inputs)?;
        let batch = encoder_hidden_states.dim(0).map_err(run_error("input_features"))?;
        let (decoder_input_ids, decoder_mask) = self.decoder_ids(inputs, batch)?;
        let logits = self
            .model
            .decode(&decoder_input_ids, &decoder_mask, &encoder_hidden_states, None)
            .map_err(run_error("WhisperForConditionalGeneration.forward"))?;
        let mut named = NamedTensors::new();
        named.insert("logits".into(), to_host("logits", &logits)?);
        named.insert(
            "encoder_last_hidden_state".into(),
            to_host("encoder_last_hidden_state", &encoder_hidden_states)?,
        );
        Ok(named)
    }

    fn input_names(&self) -> Vec<&'static str> {
        vec!["input_features", "decoder_input_ids", "decoder_attention_mask"]
    }

    fn output_names(&self) -> Vec<&'static str> {
        vec!["logits", "encoder_last_hidden_state"]
    }

    fn decoder(&mut self) -> Option<&mut dyn Decoder> {
        Some(self)
    }
}

impl Decoder for Whisper {
    fn start(&mut self, tensors: &NamedTensors) -> Result<HostTensor> {
        self.state = None;
        let device = self.device.clone();
        let inputs = Inputs::new(tensors, &device);
        let encoder_hidden_states = self.encode(&inputs)?;
        let batch = encoder_hidden_states.dim(0).map_err(run_error("input_features"))?;
        let (decoder_input_ids, decoder_attention_mask) = self.decoder_ids(&inputs, batch)?;
        let mut cache = EncoderDecoderCache::new(self.model.decoder_layers);
        let logits = self
            .model
            .decode(
                &decoder_input_ids,
                &decoder_attention_mask,
                &encoder_hidden_states,
                Some(&mut cache),
            )
            .map_err(run_error("WhisperForConditionalGeneration.forward"))?;
        let out = last_position_logits(&logits)?;
        self.state = Some(DecodeState {
            encoder_hidden_states,
            decoder_attention_mask,
            cache,
        });
        Ok(out)
    }

    fn step(&mut self, tokens: &[u32]) -> Result<HostTensor> {
        let Some(mut state) = self.state.take() else {
            return Err(Error::Usage("Decoder::step before Decoder::start".to_string()));
        };
        let name = "decoder_input_ids";
        check_step_tokens(
            name,
            tokens,
            state.decoder_attention_mask.len(),
            self.cfg.vocab_size,
            "vocab_size",
        )?;
        let position = state.cache.self_attention_cache.get_seq_length();
        if position >= self.cfg.max_target_positions {
            return Err(Error::tensor(
                name,
                format!(
                    "position {position} is past the decoder's max_target_positions = {}",
                    self.cfg.max_target_positions
                ),
            ));
        }
        for row in &mut state.decoder_attention_mask {
            row.push(1);
        }
        let ids = Tensor::from_vec(tokens.to_vec(), (tokens.len(), 1), &self.device).map_err(run_error(name))?;
        let logits = self
            .model
            .decode(
                &ids,
                &state.decoder_attention_mask,
                &state.encoder_hidden_states,
                Some(&mut state.cache),
            )
            .map_err(run_error("WhisperForConditionalGeneration.forward"))?;
        let out = last_position_logits(&logits)?;
        self.state = Some(state);
        Ok(out)
    }

    fn max_positions(&self) -> Option<usize> {
        Some(self.cfg.max_target_positions)
    }
}
