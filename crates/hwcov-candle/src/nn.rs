//! The layers of the models, as transformers computes them: each intermediate that transformers
//! rounds to the activations' dtype is rounded to it here too.
//!
//! Each layer first asks the kernel provider of its device ([`crate::kernels`]) for a fast path:
//! hwcov-cuda's kernels take most of them on CUDA (fused bias epilogues, one-pass norms and softmax,
//! cuBLASLt products, cuDNN convolutions), with the same numbers. Where the provider declines (the CPU,
//! other dtypes, shapes its kernels do not cover) each function is the plain candle sequence.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::activation::Activation;
use crate::kernels::{self, AfterBias};

mod conv;

pub use conv::{Conv1d, Conv2d, Geometry, conv1d, conv1d_no_bias, conv2d, conv2d_no_bias, convolve1d, convolve2d};

/// An error naming `what` where a tensor of `dims` on `device` would hold more elements than the
/// device's kernels count ([`kernels::Kernels::max_elements`]).
pub fn check_elements(device: &Device, what: &str, dims: &[usize]) -> Result<()> {
    let k = kernels::of(device);
    match k
        .max_elements()
        .and_then(|limit| too_many_elements(what, dims, limit, k.device_name()))
    {
        Some(message) => Err(candle_core::Error::Msg(message)),
        None => Ok(()),
    }
}

fn too_many_elements(what: &str, dims: &[usize], limit: usize, device: &str) -> Option<String> {
    let count = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if count.is_some_and(|n| n <= limit) {
        return None;
    }
    let shape = dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" x ");
    let count = count.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string());
    Some(format!(
        "{what} ({shape}) would hold {count} elements, and a {device} tensor holds at most {limit} here: \
         use a shorter input or a smaller batch"
    ))
}

/// `q k^T`, the attention scores of queries (..., q_len, head_dim) and keys (..., kv_len, head_dim),
/// refused where they would hold more elements than the device's kernels count.
pub fn attention_scores(q: &Tensor, k: &Tensor) -> Result<Tensor> {
    let mut dims = q.dims().to_vec();
    if let (Some(last), Some(&kv_len)) = (dims.last_mut(), k.dims().iter().rev().nth(1)) {
        *last = kv_len;
    }
    check_elements(q.device(), "the attention scores", &dims)?;
    q.matmul(&k.t()?)
}

/// `nn.Embedding`: candle-nn's, its lookups refused where they would hold more elements than the
/// device's kernels count.
#[derive(Clone, Debug)]
pub struct Embedding(candle_nn::Embedding);

impl Embedding {
    pub fn new(embeddings: Tensor, hidden_size: usize) -> Self {
        Embedding(candle_nn::Embedding::new(embeddings, hidden_size))
    }

    pub fn embeddings(&self) -> &Tensor {
        self.0.embeddings()
    }
}

impl Module for Embedding {
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let mut dims = ids.dims().to_vec();
        dims.push(self.0.hidden_size());
        check_elements(ids.device(), "the embedding lookup", &dims)?;
        self.0.forward(ids)
    }
}

pub fn embedding(in_size: usize, out_size: usize, vb: VarBuilder) -> Result<Embedding> {
    Ok(Embedding(candle_nn::embedding(in_size, out_size, vb)?))
}

/// `nn.Linear`: y = x W^T + b, as candle-nn's Linear (same weight names, same matmul); a provider may
/// compute the product with the bias in its epilogue, or add the bias in one pass fused with what
/// follows where the caller says what that is.
#[derive(Clone, Debug)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear { weight, bias }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// x W^T, without the bias, for a contiguous `x`.
    fn matmul(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::Linear::new(self.weight.clone(), None).forward(x)
    }

    /// x W^T + b as the provider's one product, rounded once as torch's `addmm` rounds it; `None`
    /// where it declines. An output of more elements than the device's kernels count is refused first.
    fn fused_product(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let mut dims = x.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = self.weight.dim(0)?;
        }
        check_elements(x.device(), "a Linear's output", &dims)?;
        kernels::of(x.device()).linear(x, &self.weight, self.bias.as_ref())
    }

    /// `act(linear(x))`; a provider may add the bias and apply an exact GELU in one pass after the
    /// product (or the product's epilogue adds the bias, and the GELU is one pass).
    pub fn forward_act(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        let x = &contiguous(x)?;
        if let Some(y) = self.fused_product(x)? {
            return act.forward(&y);
        }
        if let (Activation::Gelu, Some(b)) = (act, &self.bias) {
            let y = self.matmul(x)?;
            if let Some(y) = kernels::of(y.device()).bias(&y, b, AfterBias::Gelu)? {
                return Ok(y);
            }
            return act.forward(&bias_add(&y, b)?);
        }
        act.forward(&self.forward(x)?)
    }

    /// `nn.Linear` on an input that torch holds as a non-contiguous view (a transposed feature map):
    /// F.linear then takes `at::matmul` and adds the bias with a kernel of its own, so the product is
    /// rounded to the dtype before the bias is added, where a contiguous input gets one rounding.
    pub fn forward_strided(&self, x: &Tensor) -> Result<Tensor> {
        let y = Linear::new(self.weight.clone(), None).forward(x)?;
        match &self.bias {
            Some(b) => bias_add(&y, b),
            None => Ok(y),
        }
    }

    /// `linear(x) + residual`; a provider may add the bias and the residual in one pass after the
    /// product (or the product's epilogue adds the bias, and the residual is one pass).
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let x = &contiguous(x)?;
        if let Some(y) = self.fused_product(x)? {
            return add(&y, residual);
        }
        if let Some(b) = &self.bias {
            let y = self.matmul(x)?;
            if let Some(y) = kernels::of(y.device()).bias(&y, b, AfterBias::Residual(residual))? {
                return Ok(y);
            }
            return bias_add(&y, b)? + residual;
        }
        add(&self.forward(x)?, residual)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // candle's CUDA matmul refuses strided inputs (a pooled [CLS] row, say) that its CPU matmul
        // takes; made contiguous once here, for both products.
        let x = &contiguous(x)?;
        if let Some(y) = self.fused_product(x)? {
            return Ok(y);
        }
        let y = self.matmul(x)?;
        match &self.bias {
            Some(b) => bias_add(&y, b),
            None => Ok(y),
        }
    }
}

/// torch's exact GELU (`nn.GELU()`): in f32, rounded once to the dtype.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if let Some(y) = kernels::of(x.device()).gelu(x)? {
        return Ok(y);
    }
    in_f32(x, |x| x.gelu_erf())
}

/// `F.group_norm(x, groups, weight, bias, eps)` for x (N, C, *) with spatial size above 1, as torch's
/// CUDA kernels compute it: the statistics in f32, the mean and rstd stored in the dtype, the output
/// rounded once. A provider may do it as those kernels do (Welford statistics, rsqrtf, fused scale and
/// shift); the plain ops take the plain mean and variance.
pub fn group_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, groups: usize, eps: f64) -> Result<Tensor> {
    if let Some(y) = kernels::of(x.device()).group_norm(x, weight, bias, groups, eps)? {
        return Ok(y);
    }
    let (dims, dtype) = (x.dims().to_vec(), x.dtype());
    let mut channel = vec![1; dims.len()];
    channel[1] = x.dim(1)?;
    // torch hands eps to its statistics in the dtype and stores the mean and rstd in it.
    let eps = round_f32(eps as f32, dtype) as f64;
    in_f32(x, |x| {
        let g = x.reshape((dims[0], groups, ()))?;
        let mean = g.mean_keepdim(2)?;
        let var = g.broadcast_sub(&mean)?.sqr()?.mean_keepdim(2)?;
        let rstd = round_to(&rsqrt(&(var + eps)?)?, dtype)?;
        let centred = g.broadcast_sub(&round_to(&mean, dtype)?)?;
        let normed = centred.broadcast_mul(&rstd)?.reshape(dims.as_slice())?;
        let f32 = |t: &Tensor| t.to_dtype(DType::F32)?.reshape(channel.as_slice());
        normed.broadcast_mul(&f32(weight)?)?.broadcast_add(&f32(bias)?)
    })
}

/// `torch.rsqrt(x)`: a provider may use its device's own (CUDA's `rsqrtf`, as torch, which is not
/// `1 / sqrt(x)` to the bit).
pub fn rsqrt(x: &Tensor) -> Result<Tensor> {
    if let Some(y) = kernels::of(x.device()).rsqrt(x)? {
        return Ok(y);
    }
    x.sqrt()?.recip()
}

/// `x + r` for two tensors of one shape (a residual).
pub fn add(x: &Tensor, r: &Tensor) -> Result<Tensor> {
    if let Some(y) = kernels::of(x.device()).add(x, r)? {
        return Ok(y);
    }
    x + r
}

/// `v` stored in a tensor of `dtype` and read back: rounded to a half-precision dtype, unchanged
/// otherwise.
pub fn round_f32(v: f32, dtype: DType) -> f32 {
    match dtype {
        DType::BF16 => half::bf16::from_f32(v).to_f32(),
        DType::F16 => half::f16::from_f32(v).to_f32(),
        _ => v,
    }
}

/// The f32 tensor `t` stored in `dtype` and read back in f32: an intermediate that torch stores in
/// the dtype (a no-op at f32).
pub fn round_to(t: &Tensor, dtype: DType) -> Result<Tensor> {
    if dtype == DType::F32 {
        return Ok(t.clone());
    }
    t.to_dtype(dtype)?.to_dtype(DType::F32)
}

/// `f(x)` computed in f32 and rounded once to `x`'s dtype: what torch's elementwise kernels do with a
/// half-precision tensor (they compute in float, "opmath", and store the result in the dtype), where
/// candle would compute in the dtype itself and round after every step.
pub fn in_f32(x: &Tensor, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let dtype = x.dtype();
    if dtype == DType::F32 {
        return f(x);
    }
    f(&x.to_dtype(DType::F32)?)?.to_dtype(dtype)
}

/// `x * s` for a Python float `s`, as torch computes it: the product in f32 with `s` in f32, rounded
/// once to `x`'s dtype. (candle rounds `s` itself to a half-precision dtype first, a different
/// product unless `s` is exact in that dtype, as a power of two is.)
pub fn mul_scalar(x: &Tensor, s: f64) -> Result<Tensor> {
    let s = s as f32;
    if round_f32(s, x.dtype()) == s {
        // One pass: the product of two values of the dtype is exact in f32, so rounding it once to
        // the dtype is what torch stores.
        return x.affine(s as f64, 0.0);
    }
    in_f32(x, |x| x.affine(s as f64, 0.0))
}

/// `x / s` for a Python float `s`, as torch's CUDA kernel computes it: `x` times the f32 reciprocal of `s`.
pub fn div_scalar(x: &Tensor, s: f64) -> Result<Tensor> {
    mul_scalar(x, (1.0f32 / s as f32) as f64)
}

/// `x / x.norm(p=2, dim=-1, keepdim=True).clamp_min(min_norm)`: the norm accumulated in f32 and rounded
/// once to the dtype, as torch's norm kernel, then the quotient in f32 rounded once.
pub fn normalize_last_dim(x: &Tensor, min_norm: f64) -> Result<Tensor> {
    let x32 = x.to_dtype(DType::F32)?;
    let norm = x32.sqr()?.sum_keepdim(candle_core::D::Minus1)?.sqrt()?;
    let norm = round_to(&norm, x.dtype())?.maximum(min_norm)?;
    x32.broadcast_div(&norm)?.to_dtype(x.dtype())
}

/// transformers' `apply_rotary_pos_emb` for one of q or k: `x * cos + rotate_half(x) * sin`, with
/// `x` (batch, heads, seq, head_dim) and `cos`, `sin` the first halves of transformers' (their second
/// halves repeat them), (batch or absent, seq, head_dim / 2). Each product and the sum are rounded to
/// the dtype, as torch stores them. candle's fused rope kernel computes the same expression in the
/// dtype's own arithmetic, which on sm_90 may fuse a product into the sum (one rounding fewer); a
/// provider's kernel computes it in f32 with every rounding in place.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if let Some(y) = kernels::of(x.device()).rope(x, cos, sin)? {
        return Ok(y);
    }
    candle_nn::rotary_emb::rope(x, cos, sin)
}

/// `y + b`, `b` a bias over the last dimension of `y`.
fn bias_add(y: &Tensor, b: &Tensor) -> Result<Tensor> {
    if let Some(y) = kernels::of(y.device()).bias(y, b, AfterBias::Nothing)? {
        return Ok(y);
    }
    y.broadcast_add(b)
}

/// Several Linears over the same input as one: their weights stacked along the output dimension (and
/// their biases, a missing one as zeros), so that one matrix product computes all their outputs side
/// by side. Each output is the same dot products as its own Linear's.
pub fn stack_linears(parts: &[Linear]) -> Result<Linear> {
    let weights: Vec<&Tensor> = parts.iter().map(|l| &l.weight).collect();
    let weight = Tensor::cat(&weights, 0)?;
    let bias = if parts.iter().all(|l| l.bias.is_none()) {
        None
    } else {
        let biases = parts
            .iter()
            .map(|l| match &l.bias {
                Some(b) => Ok(b.clone()),
                None => Tensor::zeros(l.weight.dim(0)?, l.weight.dtype(), l.weight.device()),
            })
            .collect::<Result<Vec<_>>>()?;
        Some(Tensor::cat(&biases, 0)?)
    };
    Ok(Linear { weight, bias })
}

/// `act(gate) * up` of a gated MLP, where `gate_up` holds the two side by side over its last
/// dimension (the outputs of stacked `gate_proj` and `up_proj`); the activation's output and the
/// product rounded to the dtype as transformers rounds them. A provider may do SiLU's in one pass.
pub fn gated_act(gate_up: &Tensor, act: Activation) -> Result<Tensor> {
    if act == Activation::Silu
        && let Some(y) = kernels::of(gate_up.device()).silu_mul(gate_up)?
    {
        return Ok(y);
    }
    let half = gate_up.dim(candle_core::D::Minus1)? / 2;
    let gate = gate_up.narrow(candle_core::D::Minus1, 0, half)?;
    let up = gate_up.narrow(candle_core::D::Minus1, half, half)?;
    act.forward(&gate)? * up
}

pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    linear_b(in_dim, out_dim, true, vb)
}

pub fn linear_no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    linear_b(in_dim, out_dim, false, vb)
}

pub fn linear_b(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Linear> {
    let weight = vb.get((out_dim, in_dim), "weight")?;
    let bias = if bias { Some(vb.get(out_dim, "bias")?) } else { None };
    Ok(Linear { weight, bias })
}

/// `x + b` with `b` broadcast to `x`'s shape (a bias, or an attention mask).
pub fn add_broadcast(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    if let Some(y) = kernels::of(x.device()).add_broadcast(x, b)? {
        return Ok(y);
    }
    x.broadcast_add(b)
}

/// `x.contiguous()` (the head transposes of attention, say).
pub fn contiguous(x: &Tensor) -> Result<Tensor> {
    if x.is_contiguous() {
        return Ok(x.clone());
    }
    if let Some(y) = kernels::of(x.device()).contiguous(x)? {
        return Ok(y);
    }
    x.contiguous()
}

/// `x.pad_with_zeros(D::Minus2, 0, pad)`: `pad` rows of zeros after the rows of each matrix of `x`
/// (keys padded to an aligned length).
pub fn pad_rows(x: &Tensor, pad: usize) -> Result<Tensor> {
    if let Some(y) = kernels::of(x.device()).pad_rows(x, pad)? {
        return Ok(y);
    }
    x.pad_with_zeros(candle_core::D::Minus2, 0, pad)
}

/// Where the device's kernels align keys ([`kernels::Kernels::key_alignment`], 8 on CUDA) and more
/// than one query meets a number of keys that is not a multiple of it: the keys and values with zero
/// rows after them up to the next multiple, and the mask with -inf columns over those rows. A padded
/// key's probability is exactly 0 and its value row 0, so the output is the same; but on CUDA rows of
/// scores and probabilities are then 16-byte aligned, and cuBLAS takes its tensor-core kernels for
/// both products instead of its slow align-1 ones (ViT's 197 positions, Whisper's 1500 frames in bf16:
/// docs/benchmarks.md). Elsewhere the inputs as they are.
pub fn align_keys(
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    q_len: usize,
) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let align = kernels::of(k.device()).key_alignment().max(1);
    let pad = (align - k.dim(2)? % align) % align;
    if q_len < 2 || pad == 0 {
        return Ok((k.clone(), v.clone(), mask.cloned()));
    }
    pad_keys(k, v, mask, pad)
}

/// Keys and values (batch, heads, kv_len, head_dim) with `pad` zero rows after them, and the additive
/// mask with -inf columns over those rows (a mask of zeros where there was none).
pub fn pad_keys(k: &Tensor, v: &Tensor, mask: Option<&Tensor>, pad: usize) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let kv_len = k.dim(2)?;
    let k = pad_rows(&contiguous(k)?, pad)?;
    let v = pad_rows(&contiguous(v)?, pad)?;
    // No mask is a mask of zeros, one row for every query.
    let mask = match mask {
        Some(m) => m.clone(),
        None => Tensor::zeros((1, 1, 1, kv_len), k.dtype(), k.device())?,
    };
    let (mb, mh, mq, _) = mask.dims4()?;
    let masked = Tensor::full(f32::NEG_INFINITY, (mb, mh, mq, pad), mask.device())?.to_dtype(mask.dtype())?;
    Ok((k, v, Some(Tensor::cat(&[&mask, &masked], 3)?)))
}

/// The attention probabilities of eager attention: `softmax(scores * scaling + mask)` over the last
/// dimension, the product and the sum each rounded to the scores' dtype as transformers rounds them,
/// the softmax computed in f32 and returned in the scores' dtype (`softmax(..., dtype=torch.float32)`).
/// `scores` is (batch, heads, q_len, kv_len); `mask` is additive, (batch or 1, 1, q_len or 1, kv_len).
pub fn attention_softmax(scores: &Tensor, scaling: f64, mask: Option<&Tensor>) -> Result<Tensor> {
    if let Some(y) = kernels::of(scores.device()).attention_softmax(scores, scaling, mask)? {
        return Ok(y);
    }
    let mut scores = if scaling == 1.0 {
        scores.clone()
    } else {
        mul_scalar(scores, scaling)?
    };
    if let Some(mask) = mask {
        scores = add_broadcast(&scores, mask)?;
    }
    let dtype = scores.dtype();
    if dtype == DType::F32 {
        candle_nn::ops::softmax_last_dim(&scores)
    } else {
        // candle's CPU kernel computes in the input's dtype.
        candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(dtype)
    }
}

/// `nn.LayerNorm` with the variance taken from the deviations from the mean, as torch takes it (on the
/// CPU in two passes; a provider may take it by Welford's running mean and variance in the order of
/// torch's CUDA kernels, in f32 and rounded once to the dtype). candle-nn's fused layer norm takes the
/// variance as E[x^2] - E[x]^2 in f32, which loses digits when the activations are large next to their spread.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self::from_parts(vb.get(size, "weight")?, vb.get(size, "bias")?, eps))
    }

    pub fn from_parts(weight: Tensor, bias: Tensor, eps: f64) -> Self {
        LayerNorm { weight, bias, eps }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(y) = kernels::of(x.device()).layer_norm(x, &self.weight, &self.bias, self.eps)? {
            return Ok(y);
        }
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let xc = x.broadcast_sub(&x.mean_keepdim(candle_core::D::Minus1)?)?;
        let var = xc.sqr()?.mean_keepdim(candle_core::D::Minus1)?;
        // The affine step in f32 too: torch's kernel rounds once, at the end.
        let normed = xc.broadcast_mul(&rsqrt(&(var + self.eps)?)?)?;
        normed
            .broadcast_mul(&self.weight.to_dtype(DType::F32)?)?
            .broadcast_add(&self.bias.to_dtype(DType::F32)?)?
            .to_dtype(dtype)
    }
}

pub fn layer_norm(size: usize, eps: f64, vb: VarBuilder) -> Result<LayerNorm> {
    LayerNorm::new(size, eps, vb)
}

/// `LlamaRMSNorm` / `T5LayerNorm`: x * rsqrt(mean(x^2) + eps) * weight, the statistics in f32, the
/// normalised values rounded to the dtype before the weight multiplies them.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    variance_epsilon: f64,
}

impl RmsNorm {
    pub fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(RmsNorm {
            weight: vb.get(size, "weight")?,
            variance_epsilon: eps,
        })
    }

    pub fn forward(&self, hidden_states: &Tensor) -> Result<Tensor> {
        let k = kernels::of(hidden_states.device());
        if let Some(y) = k.rms_norm(hidden_states, &self.weight, self.variance_epsilon)? {
            return Ok(y);
        }
        let input_dtype = hidden_states.dtype();
        let hs = hidden_states.to_dtype(DType::F32)?;
        let variance = hs.sqr()?.mean_keepdim(candle_core::D::Minus1)?;
        let hs = hs.broadcast_mul(&rsqrt(&(variance + self.variance_epsilon)?)?)?;
        // LlamaRMSNorm rounds to the input's dtype, T5LayerNorm to the weight's half dtype: the same
        // except in a T5 at float16, whose float32 residual stream meets float16 weights.
        let dtype = match self.weight.dtype() {
            DType::F16 | DType::BF16 => self.weight.dtype(),
            _ => input_dtype,
        };
        hs.to_dtype(dtype)?.broadcast_mul(&self.weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The element limit of a device whose kernels count in 32 bits: 2^32 - 1 passes, 2^32 is refused
    /// naming the tensor, its shape and its count, a count past 2^64 is said as such, and a device
    /// without a limit (the CPU's plain ops) takes any size.
    #[test]
    fn tensors_past_the_device_limit_are_refused_by_name() {
        let limit = u32::MAX as usize;
        assert_eq!(
            too_many_elements("the attention scores", &[3, 5, 17, 257, 65537], limit, "CUDA"),
            None
        );
        let message = too_many_elements("the causal attention mask", &[16, 1, 16384, 16384], limit, "CUDA");
        let message = message.expect("2^32 elements are refused");
        assert!(
            message.starts_with("the causal attention mask (16 x 1 x 16384 x 16384) would hold 4294967296 elements"),
            "{message}"
        );
        assert!(message.contains("a CUDA tensor holds at most 4294967295"), "{message}");
        let message = too_many_elements("a Linear's output", &[1 << 32, 1 << 32, 2], limit, "CUDA");
        assert!(message.expect("refused").contains("more than 2^64 elements"));
        assert!(check_elements(&Device::Cpu, "a CPU tensor", &[1 << 20, 1 << 20]).is_ok());
    }

    /// torch multiplies a bf16 tensor by a Python float in f32; candle's own affine rounds the float
    /// to bf16 first, which gives other products for a scale like 8 ** -0.5.
    #[test]
    fn mul_scalar_keeps_the_scale_in_f32() -> Result<()> {
        let s = 8f64.powf(-0.5);
        let x = Tensor::arange(1f32, 257.0, &Device::Cpu)?
            .affine(0.37, 0.0)?
            .to_dtype(DType::BF16)?;
        let torch = x
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?
            .iter()
            .map(|v| half::bf16::from_f32(v * s as f32))
            .collect::<Vec<_>>();
        assert_eq!(mul_scalar(&x, s)?.to_vec1::<half::bf16>()?, torch);
        let rounded_scale = (&x * s)?.to_vec1::<half::bf16>()?;
        assert_ne!(
            rounded_scale, torch,
            "the scale rounded to bf16 gives the same products here"
        );
        // A power of two is exact in bf16: one pass, the same numbers.
        let halves = x
            .to_vec1::<half::bf16>()?
            .iter()
            .map(|v| *v * half::bf16::from_f32(0.5))
            .collect::<Vec<_>>();
        assert_eq!(mul_scalar(&x, 0.5)?.to_vec1::<half::bf16>()?, halves);
        Ok(())
    }
}
