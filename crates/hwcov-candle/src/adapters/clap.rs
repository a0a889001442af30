//! ClapModel: logits_per_audio, logits_per_text, text_embeds, audio_embeds.

use candle_core::{DType, Tensor};
use hwcov_core::{Error, NamedTensors, Result};

use super::{CandleModel, LoadContext};
use crate::config;
use crate::io::{Inputs, check_dim, check_ids_below, check_same_shape, run_error, to_host};
use crate::models::clap::{ClapConfig, ClapModel};
use crate::weights::{load_error, var_builder};

pub struct Clap {
    model: ClapModel,
    cfg: ClapConfig,
    dtype: DType,
}

pub fn load(cx: &LoadContext) -> Result<Box<dyn CandleModel>> {
    let files = cx.files;
    let cfg: ClapConfig = config::parse(files, None)?;
    let t = &cfg.text_config;
    let a = &cfg.audio_config;
    config::check(
        files,
        t.num_attention_heads > 0 && t.hidden_size.is_multiple_of(t.num_attention_heads),
        "text_config.num_attention_heads",
        format!(
            "{} heads do not divide hidden_size {}",
            t.num_attention_heads, t.hidden_size
        ),
    )?;
    let stages = a.depths.len();
    config::check(files, stages > 0, "audio_config.depths", "must name at least one stage")?;
    config::check(
        files,
        a.num_attention_heads.len() == stages,
        "audio_config.num_attention_heads",
        format!("has {} entries for {stages} stages", a.num_attention_heads.len()),
    )?;
    for (i, &heads) in a.num_attention_heads.iter().enumerate() {
        let dim = a.patch_embeds_hidden_size << i;
        config::check(
            files,
            heads > 0 && dim.is_multiple_of(heads),
            "audio_config.num_attention_heads",
            format!("{heads} heads do not divide the {dim} channels of stage {i}"),
        )?;
    }
    config::check(
        files,
        a.num_mel_bins > 0 && a.spec_size >= a.num_mel_bins && a.window_size > 0,
        "audio_config.spec_size",
        format!(
            "spec_size {} must be at least num_mel_bins {} (and window_size positive)",
            a.spec_size, a.num_mel_bins
        ),
    )?;
    let (s0, s1) = a.patch_stride.pair();
    config::check(files, s0 > 0 && s1 > 0, "audio_config.patch_stride", "must be positive")?;
    config::check(
        files,
        a.flatten_patch_embeds,
        "audio_config.flatten_patch_embeds",
        "only true is supported (the Swin layers take flattened patches)",
    )?;
    config::check(
        files,
        !(a.enable_fusion && a.fusion_type.as_deref() == Some("channel_map")),
        "audio_config.fusion_type",
        "\"channel_map\" is not supported (transformers' own forward cannot run it either)",
    )?;
    let vb = var_builder(files, cx.dtype, cx.device)?;
    let model = ClapModel::new(&cfg, vb).map_err(|e| load_error(files, e))?;
    Ok(Box::new(Clap {
        model,
        cfg,
        dtype: cx.dtype,
    }))
}

impl Clap {
    fn input_features(&self, inputs: &Inputs) -> Result<Tensor> {
        let a = &self.cfg.audio_config;
        let x = inputs.float("input_features", 4, self.dtype)?;
        check_dim("input_features", &x, 3, a.num_mel_bins, "audio_config.num_mel_bins")?;
        let channels = if a.enable_fusion {
            4
        } else {
            a.patch_embed_input_channels
        };
        if !a.enable_fusion && x.dims()[1] == 4 && channels == 1 {
            return Err(Error::tensor(
                "input_features",
                "holds 4 mels (ClapFeatureExtractor's truncation \"fusion\"), which only fusion models take \
                 (audio_config.enable_fusion); this model takes 1 (truncation \"rand_trunc\")",
            ));
        }
        check_dim(
            "input_features",
            &x,
            1,
            channels,
            if a.enable_fusion {
                "4 mels for a fusion model"
            } else {
                "audio_config.patch_embed_input_channels"
            },
        )?;
        let frames = x.dims()[2];
        let max = a.spec_size * a.freq_ratio();
        if frames == 0 || frames > max {
            return Err(Error::tensor(
                "input_features",
                format!(
                    "has {frames} frames; the model takes 1 to spec_size * freq_ratio = {max} \
                     (spec_size {}, num_mel_bins {})",
                    a.spec_size, a.num_mel_bins
                ),
            ));
        }
        Ok(x)
    }

    fn is_longer(&self, inputs: &Inputs, batch: usize) -> Result<Option<Vec<bool>>> {
        if !self.cfg.audio_config.enable_fusion {
            return Ok(None);
        }
        let t = inputs.ids("is_longer", 2).map_err(|e| match e {
            Error::Tensor { message, .. } if message == "missing input" => Error::tensor(
                "is_longer",
                "missing input: a fusion model (audio_config.enable_fusion) needs it",
            ),
            other => other,
        })?;
        if t.dims() != [batch, 1] {
            return Err(Error::tensor(
                "is_longer",
                format!("has shape {:?}; ({batch}, 1) is needed", t.dims()),
            ));
        }
        let v: Vec<u32> = t
            .flatten_all()
            .and_then(|x| x.to_vec1())
            .map_err(run_error("is_longer"))?;
        Ok(Some(v.into_iter().map(|x| x != 0).collect()))
    }
}

impl CandleModel for Clap {
    fn forward(&mut self, inputs: &Inputs) -> Result<NamedTensors> {
        let t = &self.cfg.text_config;
        let input_ids = inputs.ids("input_ids", 2)?;
        let seq_len = input_ids.dim(1).map_err(run_error("input_ids"))?;
        let pad = t.pad_token_id.unwrap_or(1);
        if seq_len == 0 {
            return Err(Error::tensor("input_ids", "is empty"));
        }
        if seq_len + pad + 1 > t.max_position_embeddings {
            return Err(Error::tensor(
                "input_ids",
                format!(
                    "has {seq_len} tokens; positions start at pad_token_id + 1 = {}, so the model takes at \
                     most max_position_embeddings - {} = {}",
                    pad + 1,
                    pad + 1,
                    t.max_position_embeddings.saturating_sub(pad + 1)
                ),
            ));
        }
        check_ids_below("input_ids", &input_ids, t.vocab_size, "text_config.vocab_size")?;
        let attention_mask = match inputs.opt_ids("attention_mask", 2)? {
            Some(m) => m,
            None => input_ids.ones_like().map_err(run_error("attention_mask"))?,
        };
        check_same_shape(("input_ids", &input_ids), ("attention_mask", &attention_mask))?;
        let input_features = self.input_features(inputs)?;
        let is_longer = self.is_longer(inputs, input_features.dims()[0])?;
        let out = self
            .model
            .forward(&input_ids, &attention_mask, &input_features, is_longer.as_deref())
            .map_err(run_error("ClapModel.forward"))?;
        let mut named = NamedTensors::new();
        named.insert(
            "logits_per_audio".into(),
            to_host("logits_per_audio", &out.logits_per_audio)?,
        );
        named.insert(
            "logits_per_text".into(),
            to_host("logits_per_text", &out.logits_per_text)?,
        );
        named.insert("text_embeds".into(), to_host("text_embeds", &out.text_embeds)?);
        named.insert("audio_embeds".into(), to_host("audio_embeds", &out.audio_embeds)?);
        Ok(named)
    }

    fn input_names(&self) -> Vec<&'static str> {
        vec!["input_ids", "attention_mask", "input_features", "is_longer"]
    }

    fn output_names(&self) -> Vec<&'static str> {
        vec!["logits_per_audio", "logits_per_text", "text_embeds", "audio_embeds"]
    }
}
