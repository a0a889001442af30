//! Rotary position embeddings, ported from transformers' `modeling_rope_utils.py` (the inverse
//! frequencies of each `rope_type`) and the `*RotaryEmbedding` modules of the models that use them.
//!
//! The frequencies are computed on the host in f32, step by step as transformers computes them in
//! float32 tensors, so that cos/sin agree to the last bits.

use candle_core::{DType, Device, Result, Tensor};
use serde::Deserialize;

/// The `rope_parameters` dict of a config (or the legacy `rope_scaling`), every field optional as
/// in the JSON; [`RopeParameters::standardize`] fills in what transformers fills in.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RopeParameters {
    #[serde(default)]
    pub rope_type: Option<String>,
    /// The legacy spelling of `rope_type`.
    #[serde(default, rename = "type")]
    pub legacy_type: Option<String>,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub factor: Option<f64>,
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
    #[serde(default)]
    pub attention_factor: Option<f64>,
    #[serde(default)]
    pub beta_fast: Option<f64>,
    #[serde(default)]
    pub beta_slow: Option<f64>,
    #[serde(default)]
    pub mscale: Option<f64>,
    #[serde(default)]
    pub mscale_all_dim: Option<f64>,
    #[serde(default)]
    pub truncate: Option<bool>,
    #[serde(default)]
    pub partial_rotary_factor: Option<f64>,
}

/// The RoPE variants implemented here.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeType {
    Default,
    Linear {
        factor: f32,
    },
    Dynamic {
        factor: f64,
    },
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: f32,
    },
    Yarn {
        factor: f64,
        attention_factor: Option<f64>,
        beta_fast: f64,
        beta_slow: f64,
        mscale: Option<f64>,
        mscale_all_dim: Option<f64>,
        original_max_position_embeddings: f64,
        truncate: bool,
    },
}

/// What [`RopeParameters::standardize`] found wrong: the field (under `rope_parameters`) and why.
pub type RopeError = (String, String);

/// transformers' `RotaryEmbeddingConfigMixin.default_theta`.
pub const DEFAULT_THETA: f64 = 10000.0;

impl RopeParameters {
    /// `convert_rope_params_to_dict` + `standardize_rope_params`: `rope_scaling` (legacy) wins over
    /// `rope_parameters`; `rope_theta` comes from the dict, else the config's top-level `rope_theta`,
    /// else the default; `original_max_position_embeddings` defaults to `max_position_embeddings`.
    pub fn standardize(
        rope_parameters: Option<&RopeParameters>,
        rope_scaling: Option<&RopeParameters>,
        rope_theta: Option<f64>,
        max_position_embeddings: usize,
    ) -> std::result::Result<(f64, RopeType), RopeError> {
        let p = rope_scaling.or(rope_parameters).cloned().unwrap_or_default();
        let theta = p.rope_theta.or(rope_theta).unwrap_or(DEFAULT_THETA);
        let kind = p
            .rope_type
            .clone()
            .or(p.legacy_type.clone())
            .unwrap_or_else(|| "default".to_string());
        let need = |v: Option<f64>, name: &str| {
            v.ok_or_else(|| (name.to_string(), format!("required by rope_type \"{kind}\"")))
        };
        if let Some(f) = p.partial_rotary_factor
            && f != 1.0
        {
            return Err((
                "partial_rotary_factor".into(),
                format!("{f} is not supported by this model family (only 1.0)"),
            ));
        }
        let original = p.original_max_position_embeddings.unwrap_or(max_position_embeddings);
        let t = match kind.as_str() {
            "default" => RopeType::Default,
            "linear" => RopeType::Linear {
                factor: need(p.factor, "factor")? as f32,
            },
            "dynamic" => RopeType::Dynamic {
                factor: need(p.factor, "factor")?,
            },
            "llama3" => RopeType::Llama3 {
                factor: need(p.factor, "factor")? as f32,
                low_freq_factor: need(p.low_freq_factor, "low_freq_factor")? as f32,
                high_freq_factor: need(p.high_freq_factor, "high_freq_factor")? as f32,
                original_max_position_embeddings: original as f32,
            },
            "yarn" => RopeType::Yarn {
                factor: p.factor.unwrap_or(max_position_embeddings as f64 / original as f64),
                attention_factor: p.attention_factor,
                beta_fast: p.beta_fast.unwrap_or(32.0),
                beta_slow: p.beta_slow.unwrap_or(1.0),
                mscale: p.mscale,
                mscale_all_dim: p.mscale_all_dim,
                original_max_position_embeddings: original as f64,
                truncate: p.truncate.unwrap_or(true),
            },
            other => {
                return Err((
                    "rope_type".into(),
                    format!("`{other}` is not supported (default, linear, dynamic, llama3 and yarn are)"),
                ));
            }
        };
        Ok((theta, t))
    }
}

/// `1.0 / (base ** (arange(0, dim, 2) / dim))` in float32.
fn default_inv_freq(base: f32, dim: usize) -> Vec<f32> {
    (0..dim)
        .step_by(2)
        .map(|i| 1.0 / base.powf(i as f32 / dim as f32))
        .collect()
}

/// The inverse frequencies and the attention scaling of a RoPE type (`ROPE_INIT_FUNCTIONS`), for a
/// sequence of `seq_len` positions where that matters (dynamic).
pub fn compute_inv_freq(
    rope: RopeType,
    base: f64,
    dim: usize,
    max_position_embeddings: usize,
    seq_len: Option<usize>,
) -> (Vec<f32>, f32) {
    match rope {
        RopeType::Default => (default_inv_freq(base as f32, dim), 1.0),
        RopeType::Linear { factor } => (
            default_inv_freq(base as f32, dim)
                .into_iter()
                .map(|f| f / factor)
                .collect(),
            1.0,
        ),
        RopeType::Dynamic { factor } => {
            // At init (no seq_len) the arithmetic is Python floats; in forward, float32 tensors.
            let inv = match seq_len {
                None => {
                    let s = max_position_embeddings as f64;
                    let b = base
                        * ((factor * s / max_position_embeddings as f64) - (factor - 1.0))
                            .powf(dim as f64 / (dim as f64 - 2.0));
                    default_inv_freq(b as f32, dim)
                }
                Some(s) => {
                    let s = s.max(max_position_embeddings) as f32;
                    let f = factor as f32;
                    let b = base as f32
                        * ((f * s / max_position_embeddings as f32) - (f - 1.0)).powf(dim as f32 / (dim as f32 - 2.0));
                    default_inv_freq(b, dim)
                }
            };
            (inv, 1.0)
        }
        RopeType::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old_context_len,
        } => {
            let low_freq_wavelen = old_context_len / low_freq_factor;
            let high_freq_wavelen = old_context_len / high_freq_factor;
            let inv = default_inv_freq(base as f32, dim)
                .into_iter()
                .map(|inv_freq| {
                    let wavelen = 2.0 * std::f32::consts::PI / inv_freq;
                    let inv_freq_llama = if wavelen > low_freq_wavelen {
                        inv_freq / factor
                    } else {
                        inv_freq
                    };
                    let smooth_factor =
                        (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                    let smoothed = (1.0 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama;
                    // `~(wavelen < high) * ~(wavelen > low)`; wavelen is finite, so this is the range.
                    let is_medium = wavelen >= high_freq_wavelen && wavelen <= low_freq_wavelen;
                    if is_medium { smoothed } else { inv_freq_llama }
                })
                .collect();
            (inv, 1.0)
        }
        RopeType::Yarn {
            factor,
            attention_factor,
            beta_fast,
            beta_slow,
            mscale,
            mscale_all_dim,
            original_max_position_embeddings,
            truncate,
        } => {
            let get_mscale = |scale: f64, m: f64| {
                if scale <= 1.0 { 1.0 } else { 0.1 * m * scale.ln() + 1.0 }
            };
            let attention_factor = attention_factor.unwrap_or(match (mscale, mscale_all_dim) {
                (Some(m), Some(a)) if m != 0.0 && a != 0.0 => get_mscale(factor, m) / get_mscale(factor, a),
                _ => get_mscale(factor, 1.0),
            });
            let d = dim as f64;
            let correction_dim = |rot: f64| {
                (d * (original_max_position_embeddings / (rot * 2.0 * std::f64::consts::PI)).ln()) / (2.0 * base.ln())
            };
            let (mut low, mut high) = (correction_dim(beta_fast), correction_dim(beta_slow));
            if truncate {
                low = low.floor();
                high = high.ceil();
            }
            let (low, mut high) = (low.max(0.0), high.min(d - 1.0));
            if low == high {
                high += 0.001;
            }
            let inv = (0..dim)
                .step_by(2)
                .enumerate()
                .map(|(j, i)| {
                    let pos_freq = (base as f32).powf(i as f32 / dim as f32);
                    let extrapolation = 1.0 / pos_freq;
                    let interpolation = 1.0 / (factor as f32 * pos_freq);
                    let ramp = ((j as f32 - low as f32) / (high as f32 - low as f32)).clamp(0.0, 1.0);
                    let extrapolation_factor = 1.0 - ramp;
                    interpolation * (1.0 - extrapolation_factor) + extrapolation * extrapolation_factor
                })
                .collect();
            (inv, attention_factor as f32)
        }
    }
}

/// `LlamaRotaryEmbedding` (and its copies in Qwen2/Qwen3): cos and sin of `position_ids *
/// inv_freq`, the frequencies updated by sequence length for dynamic RoPE (`dynamic_rope_update`).
#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    rope: RopeType,
    base: f64,
    dim: usize,
    inv_freq: Vec<f32>,
    original_inv_freq: Vec<f32>,
    attention_scaling: f32,
    max_seq_len_cached: usize,
    original_max_seq_len: usize,
}

impl RotaryEmbedding {
    pub fn new(rope: RopeType, base: f64, head_dim: usize, max_position_embeddings: usize) -> Self {
        let (inv_freq, attention_scaling) = compute_inv_freq(rope, base, head_dim, max_position_embeddings, None);
        RotaryEmbedding {
            rope,
            base,
            dim: head_dim,
            original_inv_freq: inv_freq.clone(),
            inv_freq,
            attention_scaling,
            max_seq_len_cached: max_position_embeddings,
            original_max_seq_len: max_position_embeddings,
        }
    }

    fn dynamic_frequency_update(&mut self, seq_len: usize) {
        if seq_len > self.max_seq_len_cached {
            let (inv, scaling) =
                compute_inv_freq(self.rope, self.base, self.dim, self.original_max_seq_len, Some(seq_len));
            self.inv_freq = inv;
            self.attention_scaling = scaling;
            self.max_seq_len_cached = seq_len;
        }
        if seq_len < self.original_max_seq_len && self.max_seq_len_cached > self.original_max_seq_len {
            self.inv_freq = self.original_inv_freq.clone();
            self.max_seq_len_cached = self.original_max_seq_len;
        }
    }

    /// cos and sin for position ids given per row, each (batch, seq, head_dim / 2): the first halves
    /// of transformers' cos and sin, whose second halves repeat them (what `nn::rope` takes). The
    /// angles are products in f32 as transformers' (its float32 matmul of inverse frequencies and
    /// positions); their cosines and sines are taken on the device, as transformers takes them, since
    /// the host's libm and the GPU's math library may part in the last bit of an f32.
    pub fn forward(&mut self, position_ids: &[Vec<i64>], dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
        if matches!(self.rope, RopeType::Dynamic { .. }) {
            let max = position_ids.iter().flatten().copied().max().unwrap_or(0);
            self.dynamic_frequency_update((max + 1).max(0) as usize);
        }
        let b = position_ids.len();
        let l = position_ids.first().map(|r| r.len()).unwrap_or(0);
        let half = self.inv_freq.len();
        let freqs: Vec<f32> = position_ids
            .iter()
            .flatten()
            .flat_map(|&p| self.inv_freq.iter().map(move |&f| p as f32 * f))
            .collect();
        let freqs = Tensor::from_vec(freqs, (b, l, half), device)?;
        let scaled = |t: Tensor| -> Result<Tensor> {
            let t = if self.attention_scaling == 1.0 {
                t
            } else {
                t.affine(self.attention_scaling as f64, 0.0)?
            };
            t.to_dtype(dtype)
        };
        Ok((scaled(freqs.cos()?)?, scaled(freqs.sin()?)?))
    }
}

/// `rotate_half`: (x1, x2) -> (-x2, x1) over the last dimension.
pub fn rotate_half(x: &Tensor) -> Result<Tensor> {
    let d = x.dim(candle_core::D::Minus1)?;
    let x1 = x.narrow(candle_core::D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(candle_core::D::Minus1, d / 2, d - d / 2)?;
    Tensor::cat(&[&x2.neg()?, &x1], candle_core::D::Minus1)
}

/// `apply_rotary_pos_emb` with `unsqueeze_dim=1`: q and k are (batch, heads, seq, head_dim), cos and
/// sin (batch, seq, head_dim).
pub fn apply_rotary_pos_emb(q: &Tensor, k: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<(Tensor, Tensor)> {
    let cos = cos.unsqueeze(1)?;
    let sin = sin.unsqueeze(1)?;
    let q_embed = (q.broadcast_mul(&cos)? + rotate_half(q)?.broadcast_mul(&sin)?)?;
    let k_embed = (k.broadcast_mul(&cos)? + rotate_half(k)?.broadcast_mul(&sin)?)?;
    Ok((q_embed, k_embed))
}
