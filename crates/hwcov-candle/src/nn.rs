//! Layers and elementwise steps whose candle versions are slow on CUDA, with the same numbers.
//!
//! Profiled on H100 and H200 GPUs (docs/benchmarks.md): candle's broadcast add and strided copy
//! compute every element's source index with 64-bit divisions (the bias of each Linear, the attention
//! mask, the head transposes), attention's scores went through three passes (scale, mask, softmax),
//! and candle's matmul asks cuBLAS's strided-batched GEMM, whose kernels for these shapes are slower
//! than those torch gets from cuBLASLt. On CUDA, Linear runs through cuBLASLt with the bias in the
//! product's epilogue (`cublaslt`), and the kernels here do the other steps with 32-bit indexing, fusing
//! the steps that follow one another, while keeping every rounding of the unfused sequence: each
//! intermediate that transformers rounds to the activations' dtype is rounded to it here too.
//! Elsewhere (the CPU, other dtypes, shapes they do not cover) each function is the plain candle
//! sequence.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::activation::Activation;

mod conv;
#[cfg(feature = "cuda")]
mod cublaslt;
#[cfg(feature = "cuda")]
mod cudnn;

pub use conv::{Conv1d, Conv2d, Geometry, conv1d, conv1d_no_bias, conv2d, conv2d_no_bias, convolve1d, convolve2d};
#[cfg(feature = "cuda")]
pub use cudnn::version as cudnn_version;

/// The most elements a CUDA tensor may hold here. candle's CUDA kernels count a tensor's elements
/// with 32-bit indices (`unsigned int`, launch grids sized from a `u32`), so a longer tensor would be
/// computed in part, or loop without end. The layers that make the largest tensors (Linear outputs,
/// attention scores, convolutions, embedding lookups, attention masks) refuse one before making it.
pub const CUDA_MAX_ELEMENTS: usize = u32::MAX as usize;

/// An error naming `what` where a tensor of `dims` on `device` (a CUDA one) would hold more than
/// [`CUDA_MAX_ELEMENTS`].
pub fn check_elements(device: &candle_core::Device, what: &str, dims: &[usize]) -> Result<()> {
    match too_many_elements(what, dims) {
        Some(message) if device.is_cuda() => Err(candle_core::Error::Msg(message)),
        _ => Ok(()),
    }
}

fn too_many_elements(what: &str, dims: &[usize]) -> Option<String> {
    let count = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if count.is_some_and(|n| n <= CUDA_MAX_ELEMENTS) {
        return None;
    }
    let shape = dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" x ");
    let count = count.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string());
    Some(format!(
        "{what} ({shape}) would hold {count} elements, and a CUDA tensor holds at most {CUDA_MAX_ELEMENTS} \
         (2^32 - 1) here: use a shorter input or a smaller batch"
    ))
}

/// `q k^T`, the attention scores of queries (..., q_len, head_dim) and keys (..., kv_len, head_dim),
/// refused on CUDA where they would hold more than [`CUDA_MAX_ELEMENTS`].
pub fn attention_scores(q: &Tensor, k: &Tensor) -> Result<Tensor> {
    let mut dims = q.dims().to_vec();
    if let (Some(last), Some(&kv_len)) = (dims.last_mut(), k.dims().iter().rev().nth(1)) {
        *last = kv_len;
    }
    check_elements(q.device(), "the attention scores", &dims)?;
    q.matmul(&k.t()?)
}

/// `nn.Embedding`: candle-nn's, its lookups refused on CUDA where they would hold more than
/// [`CUDA_MAX_ELEMENTS`].
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

/// `nn.Linear`: y = x W^T + b, as candle-nn's Linear (same weight names, same matmul), with the bias
/// added by one pass of hwcov's own on CUDA (fused with what follows where the caller says what that is).
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

    /// Refuses, on CUDA, an output of more than [`CUDA_MAX_ELEMENTS`]. Every product on CUDA asks
    /// `lt_product` first, which checks; only after it declines does `matmul` run.
    #[cfg(feature = "cuda")]
    fn check_output(&self, x: &Tensor) -> Result<()> {
        let mut dims = x.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = self.weight.dim(0)?;
        }
        check_elements(x.device(), "a Linear's output", &dims)
    }

    /// x W^T + b as one cuBLASLt product on CUDA, rounded once as torch's `addmm` rounds it (`cublaslt`
    /// says how); `None` elsewhere.
    #[cfg(feature = "cuda")]
    fn lt_product(&self, x: &Tensor) -> Result<Option<Tensor>> {
        self.check_output(x)?;
        cublaslt::linear(x, &self.weight, self.bias.as_ref())
    }

    #[cfg(not(feature = "cuda"))]
    fn lt_product(&self, _x: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// `act(linear(x))`; on CUDA the bias add and an exact GELU are one pass after the product (or
    /// the product's epilogue adds the bias, and the GELU is one pass).
    pub fn forward_act(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        let x = &contiguous(x)?;
        if let Some(y) = self.lt_product(x)? {
            return act.forward(&y);
        }
        #[cfg(feature = "cuda")]
        if let (Activation::Gelu, Some(b)) = (act, &self.bias) {
            let y = self.matmul(x)?;
            if let Some(op) = cuda::BiasEpilogue::plan_gelu(&y, b) {
                return y.apply_op2_no_bwd(b, &op);
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

    /// `linear(x) + residual`; on CUDA the bias add and the residual add are one pass after the
    /// product (or the product's epilogue adds the bias, and the residual is one pass).
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let x = &contiguous(x)?;
        if let Some(y) = self.lt_product(x)? {
            return add(&y, residual);
        }
        #[cfg(feature = "cuda")]
        if let Some(b) = &self.bias {
            let y = self.matmul(x)?;
            if let Some(op) = cuda::BiasEpilogue::plan_residual(&y, b, residual) {
                return y.apply_op3_no_bwd(b, residual, &op);
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
        if let Some(y) = self.lt_product(x)? {
            return Ok(y);
        }
        let y = self.matmul(x)?;
        match &self.bias {
            Some(b) => bias_add(&y, b),
            None => Ok(y),
        }
    }
}

/// torch's exact GELU (`nn.GELU()`): in f32, rounded once to the dtype; one pass on CUDA.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Some(op) = cuda::Map::Gelu.plan(x, None) {
        return x.apply_op1_no_bwd(&op);
    }
    in_f32(x, |x| x.gelu_erf())
}

/// `F.group_norm(x, groups, weight, bias, eps)` for x (N, C, *) with spatial size above 1, as torch's
/// CUDA kernels compute it: the statistics in f32, the mean and rstd stored in the dtype, the output
/// rounded once. On CUDA with their Welford statistics, rsqrtf and fused scale and shift; elsewhere with
/// the plain mean and variance.
pub fn group_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, groups: usize, eps: f64) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Some(op) = cuda::GroupNorm::plan(x, weight, bias, groups, eps) {
        return x.apply_op3_no_bwd(weight, bias, &op);
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

/// `torch.rsqrt(x)`: on CUDA with CUDA's `rsqrtf`, as torch (which is not `1 / sqrt(x)` to the bit).
pub fn rsqrt(x: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Some(op) = cuda::Map::Rsqrt.plan(x, None) {
        return x.apply_op1_no_bwd(&op);
    }
    x.sqrt()?.recip()
}

/// `x + r` for two tensors of one shape (a residual); one pass on CUDA, eight elements a thread.
pub fn add(x: &Tensor, r: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Some(op) = cuda::Map::Add.plan(x, Some(r)) {
        return x.apply_op2_no_bwd(r, &op);
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
/// dtype's own arithmetic, which on sm_90 may fuse a product into the sum (one rounding fewer); on
/// CUDA hwcov's kernel computes it in f32 with every rounding in place.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Some(op) = cuda::Rope::plan(x, cos, sin) {
        return x.apply_op3_no_bwd(cos, sin, &op);
    }
    candle_nn::rotary_emb::rope(x, cos, sin)
}

/// `y + b`, `b` a bias over the last dimension of `y`.
fn bias_add(y: &Tensor, b: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Some(op) = cuda::BiasEpilogue::plan_add(y, b) {
        return y.apply_op2_no_bwd(b, &op);
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
/// product rounded to the dtype as transformers rounds them. One pass on CUDA for SiLU.
pub fn gated_act(gate_up: &Tensor, act: Activation) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let (Activation::Silu, Some(op)) = (act, cuda::SiluMul::plan(gate_up)) {
        return gate_up.apply_op1_no_bwd(&op);
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

/// `x + b` with `b` broadcast to `x`'s shape. On CUDA, one pass for the two shapes models use: a row
/// vector added to every row, and a per-batch row added to every row of that batch (an attention
/// mask).
pub fn add_broadcast(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Some(plan) = cuda::AddBroadcast::plan(x, b) {
        return x.apply_op2_no_bwd(b, &plan);
    }
    x.broadcast_add(b)
}

/// `x.contiguous()`; on CUDA a strided copy (the head transposes of attention) with 32-bit indexing.
pub fn contiguous(x: &Tensor) -> Result<Tensor> {
    if x.is_contiguous() {
        return Ok(x.clone());
    }
    #[cfg(feature = "cuda")]
    if let Some(plan) = cuda::StridedCopy::plan(x) {
        return x.apply_op1_no_bwd(&plan);
    }
    x.contiguous()
}

/// `x.pad_with_zeros(D::Minus2, 0, pad)`: `pad` rows of zeros after the rows of each matrix of `x`
/// (keys padded to an aligned length). One pass on CUDA.
pub fn pad_rows(x: &Tensor, pad: usize) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Some(plan) = cuda::PadBlocks::plan(x, pad) {
        return x.apply_op1_no_bwd(&plan);
    }
    x.pad_with_zeros(candle_core::D::Minus2, 0, pad)
}

/// The attention probabilities of eager attention: `softmax(scores * scaling + mask)` over the last
/// dimension, the product and the sum each rounded to the scores' dtype as transformers rounds them,
/// the softmax computed in f32 and returned in the scores' dtype (`softmax(..., dtype=torch.float32)`).
/// `scores` is (batch, heads, q_len, kv_len); `mask` is additive, (batch or 1, 1, q_len or 1, kv_len).
/// One pass on CUDA.
pub fn attention_softmax(scores: &Tensor, scaling: f64, mask: Option<&Tensor>) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Some(op) = cuda::AttentionSoftmax::plan(scores, scaling, mask) {
        return match mask {
            Some(m) => scores.apply_op2_no_bwd(m, &op),
            None => scores.apply_op1_no_bwd(&op),
        };
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
/// CPU in two passes; on CUDA by Welford's running mean and variance in the order of torch's CUDA
/// kernels, in f32 and rounded once to the dtype). candle-nn's fused layer norm takes the variance as
/// E[x^2] - E[x]^2 in f32, which loses digits when the activations are large next to their spread.
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
        #[cfg(feature = "cuda")]
        if let Some(op) = cuda::NormRows::plan_layer_norm(x, &self.weight, &self.bias, self.eps) {
            return x.apply_op3_no_bwd(&self.weight, &self.bias, &op);
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
/// normalised values rounded to the dtype before the weight multiplies them. One pass on CUDA.
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
        #[cfg(feature = "cuda")]
        if let Some(op) = cuda::NormRows::plan_rms_norm(hidden_states, &self.weight, self.variance_epsilon) {
            return hidden_states.apply_op2_no_bwd(&self.weight, &op);
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

#[cfg(feature = "cuda")]
mod cuda {
    use std::sync::OnceLock;

    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{CudaFunction, CudaSlice};
    use candle_core::cuda_backend::cudarc::driver::{DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{
        CpuStorage, CudaDevice, CudaStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, WithDType,
    };

    /// Every kernel in f32 arithmetic; `R` rounds an intermediate to the dtype and back, where
    /// transformers stores that intermediate in the dtype.
    const SOURCE: &str = r#"
__device__ __forceinline__ float bf16_to_f32(unsigned short h) { return __uint_as_float(((unsigned int)h) << 16); }
__device__ __forceinline__ unsigned short f32_to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
    return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
__device__ __forceinline__ float f16_to_f32(unsigned short h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ unsigned short f32_to_f16(float f) { unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
#define ID(v) (v)
#define GRID_STRIDE(i, n) for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
/* A row of `inner` elements per blockIdx.y: no division to find an element's bias. */
#define ROWS(r, c, rows, inner) \
    for (unsigned int r = blockIdx.y; r < rows; r += gridDim.y) \
    for (unsigned int c = blockIdx.x * blockDim.x + threadIdx.x; c < inner; c += blockDim.x * gridDim.x)
#define WARP_SUM(v) for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o)
#define WARP_MAX(v) for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o))

#define KERNELS(SUF, T, LOAD, STORE) \
/* y = x + b[(i / group) * inner + i % inner] (an attention mask) */ \
extern "C" __global__ void add_broadcast_##SUF(const T* x, const T* b, T* y, unsigned int n, unsigned int group, unsigned int inner) { \
    GRID_STRIDE(i, n) { y[i] = STORE(LOAD(x[i]) + LOAD(b[(i / group) * inner + i % inner])); } \
} \
/* y = x + b, b over the last dimension (a Linear's bias) */ \
extern "C" __global__ void bias_add_##SUF(const T* x, const T* b, T* y, unsigned int rows, unsigned int inner) { \
    ROWS(r, c, rows, inner) { unsigned long long i = (unsigned long long)r * inner + c; y[i] = STORE(LOAD(x[i]) + LOAD(b[c])); } \
} \
/* y = gelu(R(x + b)), torch's exact GELU: v / 2 * (1 + erf(v / sqrt(2))) */ \
extern "C" __global__ void bias_gelu_##SUF(const T* x, const T* b, T* y, unsigned int rows, unsigned int inner) { \
    ROWS(r, c, rows, inner) { \
        unsigned long long i = (unsigned long long)r * inner + c; \
        float v = LOAD(STORE(LOAD(x[i]) + LOAD(b[c]))); \
        y[i] = STORE(v * 0.5f * (1.0f + erff(v * 0.70710678118654752440f))); \
    } \
} \
/* y = R(x + b) + res */ \
extern "C" __global__ void bias_residual_##SUF(const T* x, const T* b, const T* res, T* y, unsigned int rows, unsigned int inner) { \
    ROWS(r, c, rows, inner) { \
        unsigned long long i = (unsigned long long)r * inner + c; \
        y[i] = STORE(LOAD(STORE(LOAD(x[i]) + LOAD(b[c]))) + LOAD(res[i])); \
    } \
} \
/* y[r, c] = R(silu(x[r, c])) * x[r, inner + c], x rows of 2 * inner (gate, then up) */ \
extern "C" __global__ void silu_mul_##SUF(const T* x, T* y, unsigned int rows, unsigned int inner) { \
    ROWS(r, c, rows, inner) { \
        unsigned long long i = (unsigned long long)r * 2 * inner + c; \
        float g = LOAD(x[i]); \
        float a = LOAD(STORE(g / (1.0f + expf(-g)))); \
        y[(unsigned long long)r * inner + c] = STORE(a * LOAD(x[i + inner])); \
    } \
}
KERNELS(f32, float, ID, ID)
KERNELS(bf16, unsigned short, bf16_to_f32, f32_to_bf16)
KERNELS(f16, unsigned short, f16_to_f32, f32_to_f16)

/* Row kernels: one warp per row. A row of up to 32 * N elements is held in registers (N per lane,
   N the smallest of 4, 8, 16, 32, 64 that holds it), so that all its loads are in flight at once;
   longer rows are read again for each pass. D is the dtype: its storage type and conversions. */
struct F32 { typedef float T; typedef float4 T4;
    static __device__ float ld(float v) { return v; }
    static __device__ float st(float v) { return v; } };
struct BF16 { typedef unsigned short T; typedef ushort4 T4;
    static __device__ float ld(unsigned short v) { return bf16_to_f32(v); }
    static __device__ unsigned short st(float v) { return f32_to_bf16(v); } };
struct F16 { typedef unsigned short T; typedef ushort4 T4;
    static __device__ float ld(unsigned short v) { return f16_to_f32(v); }
    static __device__ unsigned short st(float v) { return f32_to_f16(v); } };
/* Elementwise kernels: eight elements a thread, moved as 16- or 8-byte accesses of four where the
   host found every pointer aligned to four elements (vec), else one at a time. */
template <typename D> __device__ __forceinline__ void load4(const typename D::T* p, float v[4]) {
    typename D::T4 q = *reinterpret_cast<const typename D::T4*>(p);
    v[0] = D::ld(q.x); v[1] = D::ld(q.y); v[2] = D::ld(q.z); v[3] = D::ld(q.w);
}
template <typename D> __device__ __forceinline__ void store4(typename D::T* p, const float v[4]) {
    typename D::T4 q; q.x = D::st(v[0]); q.y = D::st(v[1]); q.z = D::st(v[2]); q.w = D::st(v[3]);
    *reinterpret_cast<typename D::T4*>(p) = q;
}
/* torch's exact GELU: v / 2 * (1 + erf(v / sqrt(2))) */
struct Gelu { static __device__ __forceinline__ float f(float v, float) { return v * 0.5f * (1.0f + erff(v * 0.70710678118654752440f)); } };
struct Add { static __device__ __forceinline__ float f(float v, float r) { return v + r; } };
/* torch.rsqrt: CUDA's rsqrtf (within 2 ulp, not 1 / sqrt). */
struct Rsqrt { static __device__ __forceinline__ float f(float v, float) { return rsqrtf(v); } };
/* y = OP(x, r) in f32, rounded once to the dtype; r may be null. */
template <typename D, typename OP> __device__ void map8(const typename D::T* x, const typename D::T* r, typename D::T* y,
        unsigned int n, unsigned int vec) {
    for (unsigned long long i = 8ull * (blockIdx.x * blockDim.x + threadIdx.x); i < n; i += 8ull * blockDim.x * gridDim.x) {
        if (vec && i + 8 <= n) {
            float a[8], b[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
            load4<D>(x + i, a); load4<D>(x + i + 4, a + 4);
            if (r != 0) { load4<D>(r + i, b); load4<D>(r + i + 4, b + 4); }
            #pragma unroll
            for (int k = 0; k < 8; k++) a[k] = OP::f(a[k], b[k]);
            store4<D>(y + i, a); store4<D>(y + i + 4, a + 4);
        } else {
            for (unsigned long long j = i; j < i + 8 && j < n; j++) y[j] = D::st(OP::f(D::ld(x[j]), r != 0 ? D::ld(r[j]) : 0.0f));
        }
    }
}
#define MAP_KERNELS(SUF, D) \
extern "C" __global__ void gelu_##SUF(const D::T* x, D::T* y, unsigned int n, unsigned int vec) { map8<D, Gelu>(x, 0, y, n, vec); } \
extern "C" __global__ void add_##SUF(const D::T* x, const D::T* r, D::T* y, unsigned int n, unsigned int vec) { map8<D, Add>(x, r, y, n, vec); } \
extern "C" __global__ void rsqrt_##SUF(const D::T* x, D::T* y, unsigned int n, unsigned int vec) { map8<D, Rsqrt>(x, 0, y, n, vec); }
MAP_KERNELS(f32, F32)
MAP_KERNELS(bf16, BF16)
MAP_KERNELS(f16, F16)

/* Rounds to the dtype and back: what storing an intermediate in the dtype does. */
template <typename D> __device__ __forceinline__ float rnd(float v) { return D::ld(D::st(v)); }

/* torch's GroupNorm statistics (RowwiseMomentsCUDAKernel): Welford's running mean and sum of squared
   deviations over each row of `len` elements, one block per row (32 threads, or 512 for rows of 512
   and more), combined as its WarpReduce and BlockReduce combine them; rstd = rsqrtf(var + eps). torch
   stores the mean and rstd in the tensor's dtype, so they are rounded to it here. */
struct Welford { float mean, m2; long long n; float nf; };
__device__ __forceinline__ Welford welford_reduce(Welford a, float x) {
    long long n = a.n + 1; float nf = (float)n;
    float delta = x - a.mean; float mean = a.mean + delta / nf; float delta2 = x - mean;
    Welford r = {mean, a.m2 + delta * delta2, n, nf}; return r;
}
__device__ __forceinline__ Welford welford_combine(Welford a, Welford b) {
    if (a.nf == 0.0f) return b;
    if (b.nf == 0.0f) return a;
    float delta = b.mean - a.mean; float count = a.nf + b.nf; float nb_over_n = b.nf / count;
    Welford r = {a.mean + delta * nb_over_n, a.m2 + b.m2 + delta * delta * a.nf * nb_over_n, -1, count}; return r;
}
__device__ __forceinline__ Welford welford_warp_reduce(Welford v) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        Welford o = {__shfl_down_sync(0xffffffffu, v.mean, offset), __shfl_down_sync(0xffffffffu, v.m2, offset),
                     __shfl_down_sync(0xffffffffu, v.n, offset), __shfl_down_sync(0xffffffffu, v.nf, offset)};
        v = welford_combine(v, o);
    }
    return v;
}
template <typename D> __device__ void group_norm_stats(const typename D::T* x, float* mean, float* rstd, unsigned int len, float eps) {
    __shared__ Welford shared[32];
    const unsigned long long row = blockIdx.x;
    Welford v = {0.0f, 0.0f, 0, 0.0f};
    for (unsigned int j = threadIdx.x; j < len; j += blockDim.x) v = welford_reduce(v, D::ld(x[row * len + j]));
    v = welford_warp_reduce(v);
    if (blockDim.x > 32) {
        unsigned int lid = threadIdx.x % 32, wid = threadIdx.x / 32;
        __syncthreads();
        if (lid == 0) shared[wid] = v;
        __syncthreads();
        Welford zero = {0.0f, 0.0f, 0, 0.0f};
        v = threadIdx.x < blockDim.x / 32 ? shared[lid] : zero;
        if (wid == 0) v = welford_warp_reduce(v);
    }
    if (threadIdx.x == 0) { mean[row] = rnd<D>(v.mean); rstd[row] = rnd<D>(rsqrtf(v.m2 / v.nf + eps)); }
}
/* torch's GroupNorm output: a = rstd * gamma, b = -a * mean + beta, y = a * x + b in f32, rounded once. */
template <typename D> __device__ void group_norm_apply(const typename D::T* x, const float* mean, const float* rstd,
        const typename D::T* gamma, const typename D::T* beta, typename D::T* y, unsigned int channels,
        unsigned int per_group, unsigned int hw, unsigned int n) {
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        unsigned int nc = i / hw, c = nc % channels, ng = nc / per_group;
        float a = rstd[ng] * D::ld(gamma[c]);
        float b = -a * mean[ng] + D::ld(beta[c]);
        y[i] = D::st(a * D::ld(x[i]) + b);
    }
}
#define GROUP_NORM_KERNELS(SUF, D) \
extern "C" __global__ void group_norm_stats_##SUF(const D::T* x, float* mean, float* rstd, unsigned int len, float eps) { \
    group_norm_stats<D>(x, mean, rstd, len, eps); } \
extern "C" __global__ void group_norm_apply_##SUF(const D::T* x, const float* mean, const float* rstd, const D::T* gamma, \
        const D::T* beta, D::T* y, unsigned int channels, unsigned int per_group, unsigned int hw, unsigned int n) { \
    group_norm_apply<D>(x, mean, rstd, gamma, beta, y, channels, per_group, hw, n); }
GROUP_NORM_KERNELS(f32, F32)
GROUP_NORM_KERNELS(bf16, BF16)
GROUP_NORM_KERNELS(f16, F16)

/* transformers' apply_rotary_pos_emb on pairs (x1, x2) half a row apart: y1 = R(R(x1 c) - R(x2 s)),
   y2 = R(R(x2 c) + R(x1 s)), as torch's separate kernels store each product and the sum; the _rn
   intrinsics keep the compiler from fusing a product into the sum. x is rows of 2 * half, a row's
   position is row % seq and its batch row / rows_per_batch; cos and sin are (batch or 1, seq, half). */
template <typename D> __device__ void rope(const typename D::T* x, const typename D::T* cos, const typename D::T* sin,
        typename D::T* y, unsigned int pairs, unsigned int half, unsigned int seq, unsigned int rows_per_batch,
        unsigned int cs_batch_stride) {
    GRID_STRIDE(i, pairs) {
        unsigned int row = i / half, j = i - row * half;
        unsigned long long cs = (unsigned long long)(row / rows_per_batch) * cs_batch_stride + (row % seq) * half + j;
        unsigned long long i1 = (unsigned long long)row * 2 * half + j, i2 = i1 + half;
        float c = D::ld(cos[cs]), s = D::ld(sin[cs]), x1 = D::ld(x[i1]), x2 = D::ld(x[i2]);
        y[i1] = D::st(__fsub_rn(rnd<D>(__fmul_rn(x1, c)), rnd<D>(__fmul_rn(x2, s))));
        y[i2] = D::st(__fadd_rn(rnd<D>(__fmul_rn(x2, c)), rnd<D>(__fmul_rn(x1, s))));
    }
}
#define ROPE_KERNEL(SUF, D) \
extern "C" __global__ void rope_##SUF(const D::T* x, const D::T* cos, const D::T* sin, D::T* y, unsigned int pairs, \
        unsigned int half, unsigned int seq, unsigned int rows_per_batch, unsigned int cs_batch_stride) { \
    rope<D>(x, cos, sin, y, pairs, half, seq, rows_per_batch, cs_batch_stride); \
}
ROPE_KERNEL(f32, F32)
ROPE_KERNEL(bf16, BF16)
ROPE_KERNEL(f16, F16)

/* v = R(R(x * scale) + mask), from the score x and its mask m (read where mr is not null) */
template <typename D> __device__ __forceinline__ float scored(float x, float m, const typename D::T* mr, float scale) {
    float v = x;
    if (scale != 1.0f) v = rnd<D>(v * scale);
    if (mr != 0) v = rnd<D>(v + m);
    return v;
}
template <typename D> __device__ __forceinline__ float score(const typename D::T* xr, const typename D::T* mr, unsigned int c, float scale) {
    return scored<D>(D::ld(xr[c]), mr == 0 ? 0.0f : D::ld(mr[c]), mr, scale);
}
/* The row's scores and mask are all read before any is used: a read inside the loop that takes the
   maximum would be waited for before the next read is issued, one memory latency per element held
   (47 of them for Whisper's 1500 frames). */
template <typename D, int N> __device__ void softmax_held(const typename D::T* xr, const typename D::T* mr, typename D::T* yr,
        unsigned int cols, unsigned int lane, float scale) {
    float v[N], mk[N]; float m = __int_as_float(0xff800000), s = 0.0f;
    #pragma unroll
    for (int j = 0; j < N; j++) { unsigned int c = lane + 32 * j; v[j] = c < cols ? D::ld(xr[c]) : 0.0f; }
    #pragma unroll
    for (int j = 0; j < N; j++) { unsigned int c = lane + 32 * j; mk[j] = mr != 0 && c < cols ? D::ld(mr[c]) : 0.0f; }
    #pragma unroll
    for (int j = 0; j < N; j++) { unsigned int c = lane + 32 * j; if (c < cols) { v[j] = scored<D>(v[j], mk[j], mr, scale); m = fmaxf(m, v[j]); } }
    WARP_MAX(m);
    #pragma unroll
    for (int j = 0; j < N; j++) { unsigned int c = lane + 32 * j; if (c < cols) { v[j] = expf(v[j] - m); s += v[j]; } }
    WARP_SUM(s);
    #pragma unroll
    for (int j = 0; j < N; j++) { unsigned int c = lane + 32 * j; if (c < cols) yr[c] = D::st(v[j] / s); }
}
template <typename D> __device__ void softmax_long(const typename D::T* xr, const typename D::T* mr, typename D::T* yr,
        unsigned int cols, unsigned int lane, float scale) {
    float m = __int_as_float(0xff800000), s = 0.0f;
    for (unsigned int c = lane; c < cols; c += 32) m = fmaxf(m, score<D>(xr, mr, c, scale));
    WARP_MAX(m);
    for (unsigned int c = lane; c < cols; c += 32) s += expf(score<D>(xr, mr, c, scale) - m);
    WARP_SUM(s);
    for (unsigned int c = lane; c < cols; c += 32) yr[c] = D::st(expf(score<D>(xr, mr, c, scale) - m) / s);
}

/* Where a lane's j-th held element lies in its row: in quads of four neighbours where the row is
   moved four elements at a time (vec: the row's length and pointers are multiples of four elements),
   else every 32nd element from the lane. */
__device__ __forceinline__ unsigned int held_col(unsigned int lane, int j, unsigned int vec) {
    return vec ? 4 * (lane + 32 * (j >> 2)) + (j & 3) : lane + 32 * j;
}
template <typename D, int N> __device__ __forceinline__ void load_held(const typename D::T* xr, unsigned int cols,
        unsigned int lane, unsigned int vec, float v[N]) {
    if (vec) {
        #pragma unroll
        for (int q = 0; q < N / 4; q++) { unsigned int c = 4 * (lane + 32 * q); if (c < cols) load4<D>(xr + c, &v[4 * q]); }
    } else {
        #pragma unroll
        for (int j = 0; j < N; j++) { unsigned int c = lane + 32 * j; if (c < cols) v[j] = D::ld(xr[c]); }
    }
}

/* torch's LayerNorm statistics, one warp per row playing the threads of torch's block in turn.
   Rows of a multiple of 4 elements on aligned pointers (`vec`) take vectorized_layer_norm_kernel's:
   128 threads (4 warps), thread t folds the quads t, t + 128, ... into a running mean and sum of squared
   deviations (WelfordDataLN), each warp combines its threads (shfl_down), then warps 2 and 3 are combined
   into 0 and 1, and 1 into 0; var = sum / n. Other rows take RowwiseMomentsCUDAKernel's: 512 threads
   (16 warps), thread t folds the elements t, t + 512, ... (WelfordOps), and the block reduction. Lane l
   plays thread l + 32 w of warp w; X(c) reads element c. */
struct LNW { float mean, sigma2, count; };
__device__ __forceinline__ LNW ln_online(float val, LNW c) {
    float delta = val - c.mean;
    float new_count = c.count + 1.f;
    float new_mean = c.mean + delta * (1.f / new_count);
    LNW r = {new_mean, c.sigma2 + delta * (val - new_mean), new_count}; return r;
}
__device__ __forceinline__ LNW ln_combine(LNW dataB, LNW dataA) {
    float delta = dataB.mean - dataA.mean;
    float count = dataA.count + dataB.count;
    float mean, sigma2;
    if (count > 0.f) {
        float coef = 1.f / count;
        float nA = dataA.count * coef;
        float nB = dataB.count * coef;
        mean = nA * dataA.mean + nB * dataB.mean;
        sigma2 = dataA.sigma2 + dataB.sigma2 + delta * delta * dataA.count * nB;
    } else { mean = 0.f; sigma2 = 0.f; }
    LNW r = {mean, sigma2, count}; return r;
}
/* A warp's combination, as lane 0 holds it, given to every lane. */
__device__ __forceinline__ LNW ln_warp(LNW wd) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        LNW o = {__shfl_down_sync(0xffffffffu, wd.mean, offset), __shfl_down_sync(0xffffffffu, wd.sigma2, offset),
                 __shfl_down_sync(0xffffffffu, wd.count, offset)};
        wd = ln_combine(wd, o);
    }
    LNW r = {__shfl_sync(0xffffffffu, wd.mean, 0), __shfl_sync(0xffffffffu, wd.sigma2, 0), __shfl_sync(0xffffffffu, wd.count, 0)};
    return r;
}
#define LN_STATS(X, cols, lane, vec, eps, mean, rstd) { \
    if (vec) { \
        LNW r[4]; \
        for (int wp = 0; wp < 4; wp++) { \
            LNW wd = {0.f, 0.f, 0.f}; \
            for (unsigned int q = lane + 32 * wp; 4 * q < cols; q += 128) \
                for (int t = 0; t < 4; t++) wd = ln_online(X(4 * q + t), wd); \
            r[wp] = ln_warp(wd); \
        } \
        LNW f = ln_combine(ln_combine(r[0], r[2]), ln_combine(r[1], r[3])); \
        mean = f.mean; rstd = rsqrtf(f.sigma2 / (float)cols + eps); \
    } else { \
        Welford res = {0.0f, 0.0f, 0, 0.0f}; \
        for (unsigned int wp = 0; wp < 16; wp++) { \
            Welford wd = {0.0f, 0.0f, 0, 0.0f}; \
            for (unsigned int c = lane + 32 * wp; c < cols; c += 512) wd = welford_reduce(wd, X(c)); \
            wd = welford_warp_reduce(wd); \
            Welford w0 = {__shfl_sync(0xffffffffu, wd.mean, 0), __shfl_sync(0xffffffffu, wd.m2, 0), \
                          __shfl_sync(0xffffffffu, wd.n, 0), __shfl_sync(0xffffffffu, wd.nf, 0)}; \
            if (lane == wp) res = w0; \
        } \
        res = welford_warp_reduce(res); \
        mean = __shfl_sync(0xffffffffu, res.mean, 0); \
        rstd = rsqrtf(__shfl_sync(0xffffffffu, res.m2, 0) / __shfl_sync(0xffffffffu, res.nf, 0) + eps); \
    } \
}

/* torch's LayerNorm: its statistics (above), then w * (rstd * (x - mean)) + b in f32, rounded once. */
template <typename D, int N> __device__ void layer_norm_held(const typename D::T* xr, const typename D::T* w, const typename D::T* b,
        typename D::T* yr, unsigned int cols, unsigned int lane, float eps, unsigned int vec) {
    float v[N]; float mean, rstd;
    load_held<D, N>(xr, cols, lane, vec, v);
    /* The statistics read the row again (from cache), in the order torch's threads take it. */
    #define X_ROW(c) D::ld(xr[c])
    LN_STATS(X_ROW, cols, lane, vec, eps, mean, rstd)
    #undef X_ROW
    if (vec) {
        #pragma unroll
        for (int q = 0; q < N / 4; q++) {
            unsigned int c = 4 * (lane + 32 * q);
            if (c < cols) {
                float wq[4], bq[4], o[4];
                load4<D>(w + c, wq); load4<D>(b + c, bq);
                #pragma unroll
                for (int t = 0; t < 4; t++) o[t] = wq[t] * (rstd * (v[4 * q + t] - mean)) + bq[t];
                store4<D>(yr + c, o);
            }
        }
    } else {
        #pragma unroll
        for (int j = 0; j < N; j++) { unsigned int c = lane + 32 * j; if (c < cols) yr[c] = D::st(D::ld(w[c]) * (rstd * (v[j] - mean)) + D::ld(b[c])); }
    }
}
template <typename D> __device__ void layer_norm_long(const typename D::T* xr, const typename D::T* w, const typename D::T* b,
        typename D::T* yr, unsigned int cols, unsigned int lane, float eps, unsigned int vec) {
    float mean, rstd;
    #define X_ROW(c) D::ld(xr[c])
    LN_STATS(X_ROW, cols, lane, vec, eps, mean, rstd)
    #undef X_ROW
    for (unsigned int c = lane; c < cols; c += 32) yr[c] = D::st(D::ld(w[c]) * (rstd * (D::ld(xr[c]) - mean)) + D::ld(b[c]));
}

/* LlamaRMSNorm: x * rsqrt(mean(x^2) + eps) in f32, rounded to the dtype, times w. As torch computes
   it: each square rounded to f32 (pow is its own kernel), the mean a sum times 1/n, rsqrtf. */
template <typename D, int N> __device__ void rms_norm_held(const typename D::T* xr, const typename D::T* w, typename D::T* yr,
        unsigned int cols, unsigned int lane, float eps, unsigned int vec) {
    float v[N]; float sq = 0.0f;
    load_held<D, N>(xr, cols, lane, vec, v);
    #pragma unroll
    for (int j = 0; j < N; j++) if (held_col(lane, j, vec) < cols) sq += __fmul_rn(v[j], v[j]);
    WARP_SUM(sq);
    float r = rsqrtf(__fmul_rn(sq, 1.0f / cols) + eps);
    if (vec) {
        #pragma unroll
        for (int q = 0; q < N / 4; q++) {
            unsigned int c = 4 * (lane + 32 * q);
            if (c < cols) {
                float wq[4], o[4];
                load4<D>(w + c, wq);
                #pragma unroll
                for (int t = 0; t < 4; t++) o[t] = wq[t] * rnd<D>(v[4 * q + t] * r);
                store4<D>(yr + c, o);
            }
        }
    } else {
        #pragma unroll
        for (int j = 0; j < N; j++) { unsigned int c = lane + 32 * j; if (c < cols) yr[c] = D::st(D::ld(w[c]) * rnd<D>(v[j] * r)); }
    }
}
template <typename D> __device__ void rms_norm_long(const typename D::T* xr, const typename D::T* w, typename D::T* yr,
        unsigned int cols, unsigned int lane, float eps, unsigned int) {
    float sq = 0.0f;
    for (unsigned int c = lane; c < cols; c += 32) { float v = D::ld(xr[c]); sq += __fmul_rn(v, v); }
    WARP_SUM(sq);
    float r = rsqrtf(__fmul_rn(sq, 1.0f / cols) + eps);
    for (unsigned int c = lane; c < cols; c += 32) yr[c] = D::st(D::ld(w[c]) * rnd<D>(D::ld(xr[c]) * r));
}

/* Calls NAME_held<D, N>, or NAME_long<D> where N is 0. N is a kernel's constant, so that each kernel
   is compiled for its own row length: one kernel for all lengths would take the registers of the
   longest everywhere, and fit fewer warps on each multiprocessor. */
#define BY_LENGTH(NAME, D, N, ...) \
    if (N == 0) NAME##_long<D>(__VA_ARGS__); else NAME##_held<D, (N == 0 ? 1 : N)>(__VA_ARGS__);
#define ROW_START(T) \
    unsigned int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); \
    if (row >= rows) return; \
    unsigned int lane = threadIdx.x & 31; \
    const T* xr = x + (unsigned long long)row * cols; \
    T* yr = y + (unsigned long long)row * cols;

/* The row kernels of dtype SUF for rows held N per lane, named NAME_SUF_LEN. */
#define ROW_KERNELS(SUF, D, N, LEN) \
/* The mask row of a score row: (row / rows_per_batch) * mask_batch_stride + (row % q_len) * mask_row_stride. */ \
extern "C" __global__ void attention_softmax_##SUF##_##LEN(const D::T* x, const D::T* mask, D::T* y, unsigned int rows, unsigned int cols, \
        float scale, unsigned int rows_per_batch, unsigned int q_len, unsigned int mask_batch_stride, unsigned int mask_row_stride) { \
    ROW_START(D::T) \
    const D::T* mr = mask == 0 ? 0 : mask + (unsigned long long)(row / rows_per_batch) * mask_batch_stride \
        + (unsigned long long)(row % q_len) * mask_row_stride; \
    BY_LENGTH(softmax, D, N, xr, mr, yr, cols, lane, scale) \
} \
extern "C" __global__ void layer_norm_##SUF##_##LEN(const D::T* x, const D::T* w, const D::T* b, D::T* y, unsigned int rows, unsigned int cols, \
        float eps, unsigned int vec) { \
    ROW_START(D::T) \
    BY_LENGTH(layer_norm, D, N, xr, w, b, yr, cols, lane, eps, vec) \
} \
extern "C" __global__ void rms_norm_##SUF##_##LEN(const D::T* x, const D::T* w, D::T* y, unsigned int rows, unsigned int cols, \
        float eps, unsigned int vec) { \
    ROW_START(D::T) \
    BY_LENGTH(rms_norm, D, N, xr, w, yr, cols, lane, eps, vec) \
}
/* The lengths match row_length() on the host. */
#define ROW_KERNELS_ALL_LENGTHS(SUF, D) \
    ROW_KERNELS(SUF, D, 4, 4) ROW_KERNELS(SUF, D, 8, 8) ROW_KERNELS(SUF, D, 16, 16) \
    ROW_KERNELS(SUF, D, 32, 32) ROW_KERNELS(SUF, D, 64, 64) ROW_KERNELS(SUF, D, 0, long)
ROW_KERNELS_ALL_LENGTHS(f32, F32)
ROW_KERNELS_ALL_LENGTHS(bf16, BF16)
ROW_KERNELS_ALL_LENGTHS(f16, F16)


/* y[i] = x[i0 * s0 + i1 * s1 + i2 * s2 + i3 * s3], (i0, i1, i2, i3) the index of i in (d0, d1, d2, d3);
   the element type is only its width. */
#define STRIDED_COPY(NAME, T) \
extern "C" __global__ void NAME(const T* x, T* y, unsigned int n, unsigned int d1, unsigned int d2, unsigned int d3, \
        unsigned int s0, unsigned int s1, unsigned int s2, unsigned int s3) { \
    GRID_STRIDE(i, n) { \
        unsigned int t = i; \
        unsigned int i3 = t % d3; t /= d3; \
        unsigned int i2 = t % d2; t /= d2; \
        unsigned int i1 = t % d1; \
        y[i] = x[(t / d1) * s0 + i1 * s1 + i2 * s2 + i3 * s3]; \
    } \
}
STRIDED_COPY(strided_copy_u16, unsigned short)
STRIDED_COPY(strided_copy_u32, unsigned int)
STRIDED_COPY(strided_copy_u64, unsigned long long)

/* y = blocks of `inner` units of x, each followed by zero units up to `outer` (the rows of each
   matrix followed by rows of zeros); the unit is only a width. */
#define PAD_BLOCKS(NAME, T) \
extern "C" __global__ void NAME(const T* x, T* y, unsigned int n, unsigned int inner, unsigned int outer) { \
    GRID_STRIDE(i, n) { unsigned int r = i % outer; y[i] = r < inner ? x[(i / outer) * inner + r] : (T)0; } \
}
PAD_BLOCKS(pad_blocks_u16, unsigned short)
PAD_BLOCKS(pad_blocks_u32, unsigned int)
PAD_BLOCKS(pad_blocks_u64, unsigned long long)
"#;

    fn ptx() -> candle_core::Result<&'static str> {
        static PTX: OnceLock<Result<String, String>> = OnceLock::new();
        PTX.get_or_init(|| {
            candle_core::cuda_backend::cudarc::nvrtc::compile_ptx(SOURCE)
                .map(|p| p.to_src())
                .map_err(|e| e.to_string())
        })
        .as_deref()
        .map_err(|e| candle_core::Error::Cuda(format!("compiling hwcov's CUDA kernels: {e}").into()))
    }

    fn suffix(dtype: DType) -> Option<&'static str> {
        match dtype {
            DType::F32 => Some("f32"),
            DType::BF16 => Some("bf16"),
            DType::F16 => Some("f16"),
            _ => None,
        }
    }

    /// Whether the kernels take `t`: a contiguous CUDA tensor of a float dtype with fewer than 2^32
    /// elements.
    fn fits(t: &Tensor) -> bool {
        t.device().is_cuda()
            && t.is_contiguous()
            && suffix(t.dtype()).is_some()
            && u32::try_from(t.elem_count()).is_ok()
    }

    pub(super) fn not_cuda() -> candle_core::Error {
        candle_core::Error::Msg("hwcov's fused kernels run on CUDA tensors only".into())
    }

    /// The output of `n` elements and the kernel `name`_`dtype`.
    fn prepare<T: DeviceRepr + WithDType>(
        dev: &CudaDevice,
        name: &str,
        n: usize,
    ) -> candle_core::Result<(CudaSlice<T>, CudaFunction)> {
        prepare_kernel(dev, name, "", n)
    }

    /// The output of `n` elements and the row kernel `name`_`dtype`_`length` for rows of `cols`.
    fn prepare_rows<T: DeviceRepr + WithDType>(
        dev: &CudaDevice,
        name: &str,
        cols: u32,
        n: usize,
    ) -> candle_core::Result<(CudaSlice<T>, CudaFunction)> {
        // The elements each lane holds, as ROW_KERNELS_ALL_LENGTHS names them; "long" reads the row again.
        let length = match cols {
            0..=128 => "_4",
            129..=256 => "_8",
            257..=512 => "_16",
            513..=1024 => "_32",
            1025..=2048 => "_64",
            _ => "_long",
        };
        prepare_kernel(dev, name, length, n)
    }

    fn prepare_kernel<T: DeviceRepr + WithDType>(
        dev: &CudaDevice,
        name: &str,
        length: &str,
        n: usize,
    ) -> candle_core::Result<(CudaSlice<T>, CudaFunction)> {
        let f = kernel::<T>(dev, name, length)?;
        // SAFETY: every kernel here writes all n elements of its output.
        let y = unsafe { dev.alloc::<T>(n)? };
        Ok((y, f))
    }

    /// The kernel `name`_`dtype``length` of T's dtype.
    fn kernel<T: WithDType>(dev: &CudaDevice, name: &str, length: &str) -> candle_core::Result<CudaFunction> {
        let dtype_suffix = suffix(T::DTYPE).ok_or_else(not_cuda)?;
        Ok(dev
            .get_or_load_custom_func(&format!("{name}_{dtype_suffix}{length}"), "hwcov_nn", ptx()?)?
            .into_cuda_function())
    }

    /// 1 where rows of `cols` elements divide into quads of four elements (`quad_bytes`) and every
    /// pointer is aligned to one: the row kernels then move four elements at a time.
    fn quads(cols: u32, pointers: &[u64], quad_bytes: usize) -> u32 {
        (cols.is_multiple_of(4) && pointers.iter().all(|p| p.is_multiple_of(quad_bytes as u64))) as u32
    }

    /// A launch of one warp per row, four rows per block.
    fn warp_per_row(rows: u32) -> LaunchConfig {
        const WARPS: u32 = 4;
        LaunchConfig {
            grid_dim: (rows.div_ceil(WARPS), 1, 1),
            block_dim: (32 * WARPS, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// The elements of `s` from the layout's start offset.
    pub(super) fn input<'a, T: CudaDType>(
        s: &'a CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<candle_core::cuda_backend::cudarc::driver::CudaView<'a, T>> {
        Ok(s.as_cuda_slice::<T>()?.slice(l.start_offset()..))
    }

    /// Calls `$f::<T>($args)` for the storage's dtype.
    macro_rules! by_dtype {
        ($storage:expr, $f:ident($($arg:expr),*)) => {
            match $storage.dtype() {
                DType::F32 => $f::<f32>($($arg),*),
                DType::BF16 => $f::<half::bf16>($($arg),*),
                DType::F16 => $f::<half::f16>($($arg),*),
                _ => Err(not_cuda()),
            }
        };
    }
    pub(super) use by_dtype;

    /// `x + b`, `b` repeating every `inner` elements within groups of `group` elements of `x`.
    pub struct AddBroadcast {
        group: u32,
        inner: u32,
    }

    impl AddBroadcast {
        /// A plan when `b` repeats along `x`'s leading dimensions: its trailing dimensions equal `x`'s
        /// (`inner` elements), and before them it has only ones, or the batch and then ones. That is a
        /// bias (`[out]`, `[1, 1, out]`) or an attention mask (`[batch, 1, q_len, kv_len]` on
        /// `[batch, heads, q_len, kv_len]`). `None` for anything else.
        pub fn plan(x: &Tensor, b: &Tensor) -> Option<Self> {
            if !fits(x) || !fits(b) || x.dtype() != b.dtype() || x.elem_count() == 0 {
                return None;
            }
            let (xd, bd) = (x.dims(), b.dims());
            let n = x.elem_count() as u32;
            if bd.len() > xd.len() {
                return None;
            }
            let matching = bd.iter().rev().zip(xd.iter().rev()).take_while(|(b, x)| b == x).count();
            if matching == 0 {
                return None;
            }
            let inner: usize = xd[xd.len() - matching..].iter().product();
            let lead = &bd[..bd.len() - matching];
            let ones = |s: &[usize]| s.iter().all(|&d| d == 1);
            let group = if ones(lead) {
                n
            } else if bd.len() == xd.len() && lead[0] == xd[0] && ones(&lead[1..]) {
                n / xd[0] as u32
            } else {
                return None;
            };
            Some(Self {
                group,
                inner: inner as u32,
            })
        }
    }

    fn add_broadcast<T: CudaDType + DeviceRepr + WithDType>(
        p: &AddBroadcast,
        xs: &CudaStorage,
        xl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> candle_core::Result<CudaStorage> {
        let n = xl.shape().elem_count() as u32;
        let (x, b) = (input::<T>(xs, xl)?, input::<T>(bs, bl)?);
        let (y, f) = prepare::<T>(xs.device(), "add_broadcast", n as usize)?;
        let stream = xs.device().cuda_stream();
        let mut builder = stream.launch_builder(&f);
        builder.arg(&x).arg(&b).arg(&y).arg(&n).arg(&p.group).arg(&p.inner);
        // SAFETY: the arguments match the kernel's signature; n bounds every access.
        unsafe { builder.launch(LaunchConfig::for_num_elems(n)) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(y, xs.device().clone()))
    }

    impl CustomOp2 for AddBroadcast {
        fn name(&self) -> &'static str {
            "add_broadcast"
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            Err(not_cuda())
        }

        fn cuda_fwd(
            &self,
            xs: &CudaStorage,
            xl: &Layout,
            bs: &CudaStorage,
            bl: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            Ok((by_dtype!(xs, add_broadcast(self, xs, xl, bs, bl))?, xl.shape().clone()))
        }
    }

    /// The bias of a Linear over the last dimension of its output `y`: (rows, inner).
    fn bias_shape(y: &Tensor, b: &Tensor) -> Option<(u32, u32)> {
        let inner = *y.dims().last()?;
        let fine = fits(y) && fits(b) && y.dtype() == b.dtype() && b.elem_count() == inner && inner > 0;
        fine.then(|| ((y.elem_count() / inner) as u32, inner as u32))
    }

    /// One thread per element, a row per blockIdx.y.
    fn rows_config(rows: u32, inner: u32) -> LaunchConfig {
        const THREADS: u32 = 256;
        LaunchConfig {
            grid_dim: (inner.div_ceil(THREADS).min(65535), rows.min(65535), 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// A Linear's bias, and what follows it: nothing, the exact GELU, or a residual add.
    #[derive(Clone, Copy)]
    enum Epilogue {
        Add,
        Gelu,
        Residual,
    }

    /// `y + b` (then GELU, or plus a residual) over rows of `inner` elements.
    pub struct BiasEpilogue {
        rows: u32,
        inner: u32,
        epilogue: Epilogue,
    }

    impl BiasEpilogue {
        fn with(y: &Tensor, b: &Tensor, epilogue: Epilogue) -> Option<Self> {
            let (rows, inner) = bias_shape(y, b)?;
            Some(Self { rows, inner, epilogue })
        }

        pub fn plan_add(y: &Tensor, b: &Tensor) -> Option<Self> {
            Self::with(y, b, Epilogue::Add)
        }

        pub fn plan_gelu(y: &Tensor, b: &Tensor) -> Option<Self> {
            Self::with(y, b, Epilogue::Gelu)
        }

        pub fn plan_residual(y: &Tensor, b: &Tensor, r: &Tensor) -> Option<Self> {
            let same = fits(r) && r.dtype() == y.dtype() && r.dims() == y.dims();
            Self::with(y, b, Epilogue::Residual).filter(|_| same)
        }

        fn kernel(&self) -> &'static str {
            match self.epilogue {
                Epilogue::Add => "bias_add",
                Epilogue::Gelu => "bias_gelu",
                Epilogue::Residual => "bias_residual",
            }
        }
    }

    fn bias_epilogue<T: CudaDType + DeviceRepr + WithDType>(
        p: &BiasEpilogue,
        (xs, xl): (&CudaStorage, &Layout),
        (bs, bl): (&CudaStorage, &Layout),
        residual: Option<(&CudaStorage, &Layout)>,
    ) -> candle_core::Result<CudaStorage> {
        let (x, b) = (input::<T>(xs, xl)?, input::<T>(bs, bl)?);
        let r = residual.map(|(rs, rl)| input::<T>(rs, rl)).transpose()?;
        let (y, f) = prepare::<T>(xs.device(), p.kernel(), xl.shape().elem_count())?;
        let stream = xs.device().cuda_stream();
        let mut builder = stream.launch_builder(&f);
        builder.arg(&x).arg(&b);
        if let Some(r) = &r {
            builder.arg(r);
        }
        builder.arg(&y).arg(&p.rows).arg(&p.inner);
        // SAFETY: the arguments match the kernel's signature (the residual kernel alone takes a
        // residual); rows and inner bound every access.
        unsafe { builder.launch(rows_config(p.rows, p.inner)) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(y, xs.device().clone()))
    }

    impl CustomOp2 for BiasEpilogue {
        fn name(&self) -> &'static str {
            self.kernel()
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            Err(not_cuda())
        }

        fn cuda_fwd(
            &self,
            xs: &CudaStorage,
            xl: &Layout,
            bs: &CudaStorage,
            bl: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            if matches!(self.epilogue, Epilogue::Residual) {
                return Err(candle_core::Error::Msg(
                    "bias_residual takes the residual as a third tensor".into(),
                ));
            }
            Ok((
                by_dtype!(xs, bias_epilogue(self, (xs, xl), (bs, bl), None))?,
                xl.shape().clone(),
            ))
        }
    }

    impl CustomOp3 for BiasEpilogue {
        fn name(&self) -> &'static str {
            self.kernel()
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            Err(not_cuda())
        }

        fn cuda_fwd(
            &self,
            xs: &CudaStorage,
            xl: &Layout,
            bs: &CudaStorage,
            bl: &Layout,
            rs: &CudaStorage,
            rl: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let out = by_dtype!(xs, bias_epilogue(self, (xs, xl), (bs, bl), Some((rs, rl))))?;
            Ok((out, xl.shape().clone()))
        }
    }

    /// `F.group_norm` of (N, C, *) in `groups` groups with weight and bias of C, as torch's kernels
    /// compute it.
    pub struct GroupNorm {
        rows: u32,
        len: u32,
        channels: u32,
        per_group: u32,
        hw: u32,
        eps: f32,
    }

    impl GroupNorm {
        pub fn plan(x: &Tensor, w: &Tensor, b: &Tensor, groups: usize, eps: f64) -> Option<Self> {
            let (n, c) = (*x.dims().first()?, *x.dims().get(1)?);
            let fine = |t: &Tensor| fits(t) && t.dtype() == x.dtype() && t.dims() == [c];
            let fits_all = fits(x) && fine(w) && fine(b) && x.elem_count() > 0;
            if !fits_all || groups == 0 || !c.is_multiple_of(groups) {
                return None;
            }
            let hw = x.elem_count() / (n * c);
            // torch hands eps to the statistics kernel in the tensor's dtype.
            let eps = super::round_f32(eps as f32, x.dtype());
            Some(Self {
                rows: (n * groups) as u32,
                len: (c / groups * hw) as u32,
                channels: c as u32,
                per_group: (c / groups) as u32,
                hw: hw as u32,
                eps,
            })
        }
    }

    fn group_norm<T: CudaDType + DeviceRepr + WithDType>(
        p: &GroupNorm,
        (xs, xl): (&CudaStorage, &Layout),
        (ws, wl): (&CudaStorage, &Layout),
        (bs, bl): (&CudaStorage, &Layout),
    ) -> candle_core::Result<CudaStorage> {
        let dev = xs.device();
        let (x, w, b) = (input::<T>(xs, xl)?, input::<T>(ws, wl)?, input::<T>(bs, bl)?);
        let n = xl.shape().elem_count() as u32;
        let (y, apply) = prepare::<T>(dev, "group_norm_apply", n as usize)?;
        let stats = kernel::<T>(dev, "group_norm_stats", "")?;
        // SAFETY: the statistics kernel writes one mean and one rstd per row.
        let (mean, rstd) = unsafe { (dev.alloc::<f32>(p.rows as usize)?, dev.alloc::<f32>(p.rows as usize)?) };
        let stream = dev.cuda_stream();
        let mut builder = stream.launch_builder(&stats);
        builder.arg(&x).arg(&mean).arg(&rstd).arg(&p.len).arg(&p.eps);
        let rows = LaunchConfig {
            grid_dim: (p.rows, 1, 1),
            block_dim: (if p.len < 512 { 32 } else { 512 }, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match the kernel's signature; each block reads its row of len elements.
        unsafe { builder.launch(rows) }.w()?;
        let mut builder = stream.launch_builder(&apply);
        builder.arg(&x).arg(&mean).arg(&rstd).arg(&w).arg(&b).arg(&y);
        builder.arg(&p.channels).arg(&p.per_group).arg(&p.hw).arg(&n);
        // SAFETY: the arguments match the kernel's signature; n bounds every access.
        unsafe { builder.launch(LaunchConfig::for_num_elems(n)) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
    }

    impl CustomOp3 for GroupNorm {
        fn name(&self) -> &'static str {
            "group_norm"
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            Err(not_cuda())
        }

        fn cuda_fwd(
            &self,
            xs: &CudaStorage,
            xl: &Layout,
            ws: &CudaStorage,
            wl: &Layout,
            bs: &CudaStorage,
            bl: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let out = by_dtype!(xs, group_norm(self, (xs, xl), (ws, wl), (bs, bl)))?;
            Ok((out, xl.shape().clone()))
        }
    }

    /// An elementwise step: torch's exact GELU or rsqrt, or the sum of two tensors of one shape.
    #[derive(Clone, Copy)]
    pub enum Map {
        Gelu,
        Add,
        Rsqrt,
    }

    impl Map {
        /// `self` where the kernels take `x` (and `r`, of `x`'s shape and dtype).
        pub fn plan(self, x: &Tensor, r: Option<&Tensor>) -> Option<Self> {
            let same = r.is_none_or(|r| fits(r) && r.dtype() == x.dtype() && r.dims() == x.dims());
            (fits(x) && same && x.elem_count() > 0).then_some(self)
        }

        fn kernel(self) -> &'static str {
            match self {
                Map::Gelu => "gelu",
                Map::Add => "add",
                Map::Rsqrt => "rsqrt",
            }
        }
    }

    fn map<T: CudaDType + DeviceRepr + WithDType>(
        p: Map,
        (xs, xl): (&CudaStorage, &Layout),
        r: Option<(&CudaStorage, &Layout)>,
    ) -> candle_core::Result<CudaStorage> {
        let n = xl.shape().elem_count();
        let x = input::<T>(xs, xl)?;
        let r = r.map(|(rs, rl)| input::<T>(rs, rl)).transpose()?;
        let (y, f) = prepare::<T>(xs.device(), p.kernel(), n)?;
        let stream = xs.device().cuda_stream();
        // Four elements move as one access where every pointer is aligned to four elements.
        let mut pointers = vec![x.device_ptr(&stream).0, y.device_ptr(&stream).0];
        pointers.extend(r.as_ref().map(|r| r.device_ptr(&stream).0));
        let vec = quads(4, &pointers, 4 * std::mem::size_of::<T>());
        let n = n as u32;
        let mut builder = stream.launch_builder(&f);
        builder.arg(&x);
        if let Some(r) = &r {
            builder.arg(r);
        }
        builder.arg(&y).arg(&n).arg(&vec);
        // SAFETY: the arguments match the kernel's signature (add alone takes r); n bounds every
        // access, and vec is set only where the accesses of four elements are aligned.
        // Eight elements a thread, 256 threads a block so that several blocks share a multiprocessor.
        let threads = n.div_ceil(8);
        let cfg = LaunchConfig {
            grid_dim: (threads.div_ceil(256), 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        unsafe { builder.launch(cfg) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(y, xs.device().clone()))
    }

    impl CustomOp1 for Map {
        fn name(&self) -> &'static str {
            self.kernel()
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            Err(not_cuda())
        }

        fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            Ok((by_dtype!(xs, map(*self, (xs, xl), None))?, xl.shape().clone()))
        }
    }

    impl CustomOp2 for Map {
        fn name(&self) -> &'static str {
            self.kernel()
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            Err(not_cuda())
        }

        fn cuda_fwd(
            &self,
            xs: &CudaStorage,
            xl: &Layout,
            rs: &CudaStorage,
            rl: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            Ok((by_dtype!(xs, map(*self, (xs, xl), Some((rs, rl))))?, xl.shape().clone()))
        }
    }

    /// `silu(gate) * up` over rows of `2 * inner` elements (gate, then up).
    pub struct SiluMul {
        rows: u32,
        inner: u32,
    }

    impl SiluMul {
        pub fn plan(x: &Tensor) -> Option<Self> {
            let last = *x.dims().last()?;
            if !fits(x) || last == 0 || last % 2 != 0 {
                return None;
            }
            Some(Self {
                rows: (x.elem_count() / last) as u32,
                inner: (last / 2) as u32,
            })
        }
    }

    fn silu_mul<T: CudaDType + DeviceRepr + WithDType>(
        p: &SiluMul,
        xs: &CudaStorage,
        xl: &Layout,
    ) -> candle_core::Result<CudaStorage> {
        let x = input::<T>(xs, xl)?;
        let (y, f) = prepare::<T>(xs.device(), "silu_mul", xl.shape().elem_count() / 2)?;
        let stream = xs.device().cuda_stream();
        let mut builder = stream.launch_builder(&f);
        builder.arg(&x).arg(&y).arg(&p.rows).arg(&p.inner);
        // SAFETY: the arguments match the kernel's signature; rows and inner bound every access.
        unsafe { builder.launch(rows_config(p.rows, p.inner)) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(y, xs.device().clone()))
    }

    impl CustomOp1 for SiluMul {
        fn name(&self) -> &'static str {
            "silu_mul"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            Err(not_cuda())
        }

        fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            let mut dims = xl.dims().to_vec();
            if let Some(last) = dims.last_mut() {
                *last /= 2;
            }
            Ok((by_dtype!(xs, silu_mul(self, xs, xl))?, Shape::from(dims)))
        }
    }

    /// transformers' `apply_rotary_pos_emb` on x (batch, heads, seq, 2 * half) with cos and sin
    /// (batch or absent, seq, half).
    pub struct Rope {
        pairs: u32,
        half: u32,
        seq: u32,
        rows_per_batch: u32,
        cs_batch_stride: u32,
    }

    impl Rope {
        pub fn plan(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Option<Self> {
            let (b, h, seq, d) = x.dims4().ok()?;
            let half = d / 2;
            let same = |t: &Tensor| fits(t) && t.dtype() == x.dtype() && t.dims() == cos.dims();
            if !fits(x) || !same(cos) || !same(sin) || d % 2 != 0 || x.elem_count() == 0 {
                return None;
            }
            let cs_batch_stride = match cos.dims() {
                [s, c] if *s == seq && *c == half => 0,
                [cb, s, c] if *cb == b && *s == seq && *c == half => seq * half,
                [1, s, c] if *s == seq && *c == half => 0,
                _ => return None,
            };
            Some(Self {
                pairs: (x.elem_count() / 2) as u32,
                half: half as u32,
                seq: seq as u32,
                rows_per_batch: (h * seq) as u32,
                cs_batch_stride: cs_batch_stride as u32,
            })
        }
    }

    fn rope<T: CudaDType + DeviceRepr + WithDType>(
        p: &Rope,
        (xs, xl): (&CudaStorage, &Layout),
        (cs, cl): (&CudaStorage, &Layout),
        (ss, sl): (&CudaStorage, &Layout),
    ) -> candle_core::Result<CudaStorage> {
        let (x, cos, sin) = (input::<T>(xs, xl)?, input::<T>(cs, cl)?, input::<T>(ss, sl)?);
        let (y, f) = prepare::<T>(xs.device(), "rope", xl.shape().elem_count())?;
        let stream = xs.device().cuda_stream();
        let mut builder = stream.launch_builder(&f);
        builder.arg(&x).arg(&cos).arg(&sin).arg(&y);
        builder
            .arg(&p.pairs)
            .arg(&p.half)
            .arg(&p.seq)
            .arg(&p.rows_per_batch)
            .arg(&p.cs_batch_stride);
        // SAFETY: the arguments match the kernel's signature; pairs bounds x and y, and the plan
        // checked that cos and sin hold (batch or 1, seq, half) elements.
        unsafe { builder.launch(LaunchConfig::for_num_elems(p.pairs)) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(y, xs.device().clone()))
    }

    impl CustomOp3 for Rope {
        fn name(&self) -> &'static str {
            "rope"
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            Err(not_cuda())
        }

        fn cuda_fwd(
            &self,
            xs: &CudaStorage,
            xl: &Layout,
            cs: &CudaStorage,
            cl: &Layout,
            ss: &CudaStorage,
            sl: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let out = by_dtype!(xs, rope(self, (xs, xl), (cs, cl), (ss, sl)))?;
            Ok((out, xl.shape().clone()))
        }
    }

    /// `softmax(R(R(scores * scale) + mask))` over the last dimension, one warp per row.
    pub struct AttentionSoftmax {
        rows: u32,
        cols: u32,
        scale: f32,
        rows_per_batch: u32,
        q_len: u32,
        mask_batch_stride: u32,
        mask_row_stride: u32,
    }

    impl AttentionSoftmax {
        /// `scores` (batch, heads, q_len, kv_len); `mask` (batch or 1, 1, q_len or 1, kv_len).
        pub fn plan(scores: &Tensor, scaling: f64, mask: Option<&Tensor>) -> Option<Self> {
            let (b, h, q, k) = scores.dims4().ok()?;
            if !fits(scores) || k == 0 {
                return None;
            }
            let (mask_batch_stride, mask_row_stride) = match mask {
                None => (0, 0),
                Some(m) => {
                    let (mb, mh, mq, mk) = m.dims4().ok()?;
                    if !fits(m)
                        || m.dtype() != scores.dtype()
                        || mh != 1
                        || mk != k
                        || (mb != b && mb != 1)
                        || (mq != q && mq != 1)
                    {
                        return None;
                    }
                    (if mb == 1 { 0 } else { mq * mk }, if mq == 1 { 0 } else { mk })
                }
            };
            Some(Self {
                rows: (b * h * q) as u32,
                cols: k as u32,
                scale: scaling as f32,
                rows_per_batch: (h * q) as u32,
                q_len: q as u32,
                mask_batch_stride: mask_batch_stride as u32,
                mask_row_stride: mask_row_stride as u32,
            })
        }

        fn launch<T: CudaDType + DeviceRepr + WithDType>(
            &self,
            (xs, xl): (&CudaStorage, &Layout),
            mask: Option<(&CudaStorage, &Layout)>,
        ) -> candle_core::Result<CudaStorage> {
            let x = input::<T>(xs, xl)?;
            let (y, f) = prepare_rows::<T>(xs.device(), "attention_softmax", self.cols, xl.shape().elem_count())?;
            let null: u64 = 0;
            let mask = mask.map(|(ms, ml)| input::<T>(ms, ml)).transpose()?;
            let stream = xs.device().cuda_stream();
            let mut builder = stream.launch_builder(&f);
            builder.arg(&x);
            match &mask {
                Some(m) => builder.arg(m),
                None => builder.arg(&null),
            };
            builder
                .arg(&y)
                .arg(&self.rows)
                .arg(&self.cols)
                .arg(&self.scale)
                .arg(&self.rows_per_batch)
                .arg(&self.q_len)
                .arg(&self.mask_batch_stride)
                .arg(&self.mask_row_stride);
            // SAFETY: the arguments match the kernel's signature; rows and cols bound every access,
            // and the plan checked the mask's shape against the strides.
            unsafe { builder.launch(warp_per_row(self.rows)) }.w()?;
            Ok(CudaStorage::wrap_cuda_slice(y, xs.device().clone()))
        }
    }

    fn attention_softmax<T: CudaDType + DeviceRepr + WithDType>(
        p: &AttentionSoftmax,
        x: (&CudaStorage, &Layout),
        mask: Option<(&CudaStorage, &Layout)>,
    ) -> candle_core::Result<CudaStorage> {
        p.launch::<T>(x, mask)
    }

    impl CustomOp1 for AttentionSoftmax {
        fn name(&self) -> &'static str {
            "attention_softmax"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            Err(not_cuda())
        }

        fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            Ok((
                by_dtype!(xs, attention_softmax(self, (xs, xl), None))?,
                xl.shape().clone(),
            ))
        }
    }

    impl CustomOp2 for AttentionSoftmax {
        fn name(&self) -> &'static str {
            "attention_softmax"
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            Err(not_cuda())
        }

        fn cuda_fwd(
            &self,
            xs: &CudaStorage,
            xl: &Layout,
            ms: &CudaStorage,
            ml: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let out = by_dtype!(xs, attention_softmax(self, (xs, xl), Some((ms, ml))))?;
            Ok((out, xl.shape().clone()))
        }
    }

    /// LayerNorm (with a bias) or RMSNorm (without) over rows of `cols` elements, one warp per row.
    pub struct NormRows {
        kernel: &'static str,
        rows: u32,
        cols: u32,
        eps: f32,
    }

    impl NormRows {
        fn plan(kernel: &'static str, x: &Tensor, params: &[&Tensor], eps: f64) -> Option<Self> {
            let cols = *x.dims().last()?;
            let fine = |t: &Tensor| fits(t) && t.dtype() == x.dtype() && t.dims() == [cols];
            if !fits(x) || cols == 0 || !params.iter().all(|t| fine(t)) {
                return None;
            }
            Some(Self {
                kernel,
                rows: (x.elem_count() / cols) as u32,
                cols: cols as u32,
                eps: eps as f32,
            })
        }

        pub fn plan_layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Option<Self> {
            Self::plan("layer_norm", x, &[w, b], eps)
        }

        pub fn plan_rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Option<Self> {
            Self::plan("rms_norm", x, &[w], eps)
        }
    }

    fn norm_rows<T: CudaDType + DeviceRepr + WithDType>(
        p: &NormRows,
        (xs, xl): (&CudaStorage, &Layout),
        (ws, wl): (&CudaStorage, &Layout),
        bias: Option<(&CudaStorage, &Layout)>,
    ) -> candle_core::Result<CudaStorage> {
        let (x, w) = (input::<T>(xs, xl)?, input::<T>(ws, wl)?);
        let b = bias.map(|(bs, bl)| input::<T>(bs, bl)).transpose()?;
        let (y, f) = prepare_rows::<T>(xs.device(), p.kernel, p.cols, xl.shape().elem_count())?;
        let stream = xs.device().cuda_stream();
        let mut pointers = vec![
            x.device_ptr(&stream).0,
            w.device_ptr(&stream).0,
            y.device_ptr(&stream).0,
        ];
        pointers.extend(b.as_ref().map(|b| b.device_ptr(&stream).0));
        let vec = quads(p.cols, &pointers, 4 * std::mem::size_of::<T>());
        let mut builder = stream.launch_builder(&f);
        builder.arg(&x).arg(&w);
        if let Some(b) = &b {
            builder.arg(b);
        }
        builder.arg(&y).arg(&p.rows).arg(&p.cols).arg(&p.eps).arg(&vec);
        // SAFETY: the arguments match the kernel's signature (layer_norm alone takes a bias); rows and
        // cols bound every access, and vec is set only where rows divide into aligned quads.
        unsafe { builder.launch(warp_per_row(p.rows)) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(y, xs.device().clone()))
    }

    impl CustomOp2 for NormRows {
        fn name(&self) -> &'static str {
            self.kernel
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            Err(not_cuda())
        }

        fn cuda_fwd(
            &self,
            xs: &CudaStorage,
            xl: &Layout,
            ws: &CudaStorage,
            wl: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            Ok((
                by_dtype!(xs, norm_rows(self, (xs, xl), (ws, wl), None))?,
                xl.shape().clone(),
            ))
        }
    }

    impl CustomOp3 for NormRows {
        fn name(&self) -> &'static str {
            self.kernel
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            Err(not_cuda())
        }

        fn cuda_fwd(
            &self,
            xs: &CudaStorage,
            xl: &Layout,
            ws: &CudaStorage,
            wl: &Layout,
            bs: &CudaStorage,
            bl: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let out = by_dtype!(xs, norm_rows(self, (xs, xl), (ws, wl), Some((bs, bl))))?;
            Ok((out, xl.shape().clone()))
        }
    }

    /// A strided tensor made contiguous: its dimensions merged where they are contiguous with each
    /// other, at most four left, every source offset under 2^32. Where rows of the innermost
    /// dimension are contiguous and 8-byte aligned, 8 bytes are copied at a time.
    pub struct StridedCopy {
        dims: [u32; 4],
        strides: [u32; 4],
        /// Bytes per copied unit: the element's, or 8.
        unit: usize,
    }

    impl StridedCopy {
        pub fn plan(x: &Tensor) -> Option<Self> {
            let copied = matches!(x.dtype(), DType::F32 | DType::U32 | DType::BF16 | DType::F16);
            if !x.device().is_cuda() || !copied || x.elem_count() == 0 {
                return None;
            }
            u32::try_from(x.elem_count()).ok()?;
            let layout = x.layout();
            // (dim, stride) outermost first, size-1 dimensions dropped, contiguous neighbours merged.
            let mut merged: Vec<(usize, usize)> = Vec::new();
            for (&d, &s) in layout.dims().iter().zip(layout.stride()) {
                if d == 1 {
                    continue;
                }
                match merged.last_mut() {
                    Some((pd, ps)) if *ps == s * d => {
                        *pd *= d;
                        *ps = s;
                    }
                    _ => merged.push((d, s)),
                }
            }
            if merged.len() > 4 {
                return None;
            }
            let last_offset: usize = merged.iter().map(|(d, s)| (d - 1) * s).sum();
            u32::try_from(last_offset).ok()?;
            let elem = x.dtype().size_in_bytes();
            let per_unit = 8 / elem;
            let widen = matches!(merged.last(), Some(&(d, 1)) if d % per_unit == 0)
                && merged.iter().all(|&(_, s)| s == 1 || s % per_unit == 0)
                && layout.start_offset().is_multiple_of(per_unit);
            let (unit, factor) = if widen { (8, per_unit) } else { (elem, 1) };
            let mut dims = [1u32; 4];
            let mut strides = [0u32; 4];
            let pad = 4 - merged.len();
            let inner = merged.len().saturating_sub(1);
            for (i, (d, s)) in merged.into_iter().enumerate() {
                let inner_dim = i == inner;
                dims[pad + i] = (if inner_dim { d / factor } else { d }) as u32;
                strides[pad + i] = (if inner_dim { s } else { s / factor }) as u32;
            }
            Some(Self { dims, strides, unit })
        }
    }

    /// Runs the kernel `prefix`_u{8, 16, 32, 64} that moves `xs` as units of `unit` bytes (its element
    /// type's width, or wider where the plan found the bytes aligned), writing `out_bytes` bytes. The
    /// kernel takes x, y, the number of output units, then `scalars`.
    fn move_units(
        prefix: &str,
        unit: usize,
        xs: &CudaStorage,
        xl: &Layout,
        out_bytes: usize,
        scalars: &[u32],
    ) -> candle_core::Result<CudaStorage> {
        let args = (prefix, xs, xl, out_bytes, scalars);
        match (xs.dtype(), unit) {
            (DType::F32, 8) => move_units_as::<f32, u64>(args),
            (DType::F32, 4) => move_units_as::<f32, u32>(args),
            (DType::U32, 8) => move_units_as::<u32, u64>(args),
            (DType::U32, 4) => move_units_as::<u32, u32>(args),
            (DType::BF16, 8) => move_units_as::<half::bf16, u64>(args),
            (DType::BF16, 4) => move_units_as::<half::bf16, u32>(args),
            (DType::BF16, 2) => move_units_as::<half::bf16, u16>(args),
            (DType::F16, 8) => move_units_as::<half::f16, u64>(args),
            (DType::F16, 4) => move_units_as::<half::f16, u32>(args),
            (DType::F16, 2) => move_units_as::<half::f16, u16>(args),
            _ => Err(not_cuda()),
        }
    }

    fn move_units_as<T: CudaDType + DeviceRepr, U: DeviceRepr>(
        (prefix, xs, xl, out_bytes, scalars): (&str, &CudaStorage, &Layout, usize, &[u32]),
    ) -> candle_core::Result<CudaStorage> {
        let dev = xs.device();
        let (t, u) = (std::mem::size_of::<T>(), std::mem::size_of::<U>());
        let units = (out_bytes / u) as u32;
        let x = input::<T>(xs, xl)?;
        let misfit =
            || candle_core::Error::Msg(format!("{prefix}: the tensor does not divide into units of {u} bytes"));
        // SAFETY: the same bytes read as wider units; the plan checked their alignment.
        let xu = unsafe { x.transmute::<U>(x.len() * t / u) }.ok_or_else(misfit)?;
        let f = dev.get_or_load_custom_func(&format!("{prefix}_u{}", 8 * u), "hwcov_nn", ptx()?)?;
        // SAFETY: the kernel writes all out_bytes bytes.
        let mut y = unsafe { dev.alloc::<T>(out_bytes / t)? };
        {
            // SAFETY: as for the input.
            let mut yu = unsafe { y.transmute_mut::<U>(units as usize) }.ok_or_else(misfit)?;
            let mut builder = f.builder();
            builder.arg(&xu).arg(&mut yu).arg(&units);
            for s in scalars {
                builder.arg(s);
            }
            // SAFETY: the arguments match the kernel's signature; the plan bounded every source offset
            // within the input.
            unsafe { builder.launch(LaunchConfig::for_num_elems(units)) }.w()?;
        }
        Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
    }

    impl CustomOp1 for StridedCopy {
        fn name(&self) -> &'static str {
            "strided_copy"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            Err(not_cuda())
        }

        fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            // The copy moves bits: each element type goes through the kernel of its width, or of 8 bytes.
            let (p, bytes) = (self, xl.shape().elem_count() * xs.dtype().size_in_bytes());
            let [_, d1, d2, d3] = p.dims;
            let [s0, s1, s2, s3] = p.strides;
            let out = move_units("strided_copy", p.unit, xs, xl, bytes, &[d1, d2, d3, s0, s1, s2, s3])?;
            Ok((out, xl.shape().clone()))
        }
    }

    /// Zero rows after the rows of each matrix: blocks of `inner` units of 8, 4 or 2 bytes, padded to
    /// `outer` units.
    pub struct PadBlocks {
        rows: usize,
        pad: usize,
        inner: u32,
        outer: u32,
        unit: usize,
    }

    impl PadBlocks {
        pub fn plan(x: &Tensor, pad: usize) -> Option<Self> {
            let copied = matches!(x.dtype(), DType::F32 | DType::U32 | DType::BF16 | DType::F16);
            let dims = x.dims();
            if !x.device().is_cuda()
                || !x.is_contiguous()
                || !copied
                || dims.len() < 2
                || x.elem_count() == 0
                || pad == 0
            {
                return None;
            }
            let (rows, cols) = (dims[dims.len() - 2], dims[dims.len() - 1]);
            let elem = x.dtype().size_in_bytes();
            let (inner, outer, offset) = (
                rows * cols * elem,
                (rows + pad) * cols * elem,
                x.layout().start_offset() * elem,
            );
            let unit = [8, 4, 2].into_iter().find(|u| {
                *u >= elem && inner.is_multiple_of(*u) && outer.is_multiple_of(*u) && offset.is_multiple_of(*u)
            })?;
            let total = x.elem_count() / (rows * cols) * outer / unit;
            u32::try_from(total).ok()?;
            Some(Self {
                rows,
                pad,
                inner: (inner / unit) as u32,
                outer: (outer / unit) as u32,
                unit,
            })
        }
    }

    impl CustomOp1 for PadBlocks {
        fn name(&self) -> &'static str {
            "pad_rows"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            Err(not_cuda())
        }

        fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            let in_units = xl.shape().elem_count() * xs.dtype().size_in_bytes() / self.unit;
            let out_bytes = in_units / self.inner as usize * self.outer as usize * self.unit;
            let out = move_units("pad_blocks", self.unit, xs, xl, out_bytes, &[self.inner, self.outer])?;
            let mut dims = xl.dims().to_vec();
            let at = dims.len() - 2;
            dims[at] = self.rows + self.pad;
            Ok((out, Shape::from(dims)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The element limit of CUDA tensors: 2^32 - 1 passes, 2^32 is refused naming the tensor, its
    /// shape and its count, a count past 2^64 is said as such, and the CPU takes any size.
    #[test]
    fn cuda_tensors_past_2_to_the_32_are_refused_by_name() {
        assert_eq!(too_many_elements("the attention scores", &[3, 5, 17, 257, 65537]), None);
        let message = too_many_elements("the causal attention mask", &[16, 1, 16384, 16384]);
        let message = message.expect("2^32 elements are refused");
        assert!(
            message.starts_with("the causal attention mask (16 x 1 x 16384 x 16384) would hold 4294967296 elements"),
            "{message}"
        );
        let message = too_many_elements("a Linear's output", &[1 << 32, 1 << 32, 2]);
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
