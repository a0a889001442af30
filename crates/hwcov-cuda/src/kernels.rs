//! hwcov's CUDA kernels, given to hwcov-candle's layers through its kernel seam
//! (`hwcov_candle::kernels`), with the same numbers as the plain candle sequence each replaces.
//!
//! Profiled on H100 and H200 GPUs (docs/benchmarks.md): candle's broadcast add and strided copy
//! compute every element's source index with 64-bit divisions (the bias of each Linear, the attention
//! mask, the head transposes), attention's scores went through three passes (scale, mask, softmax),
//! and candle's matmul asks cuBLAS's strided-batched GEMM, whose kernels for these shapes are slower
//! than those torch gets from cuBLASLt. Here Linear runs through cuBLASLt with the bias in the
//! product's epilogue (`cublaslt`), convolutions through cuDNN (`cudnn`), and the NVRTC kernels
//! (`hwcov_kernels.cu`) do the other steps with 32-bit indexing, fusing the steps that follow one
//! another, while keeping every rounding of the unfused sequence: each intermediate that transformers
//! rounds to the activations' dtype is rounded to it here too. A case the kernels do not take (other
//! dtypes, strided inputs, shapes they do not cover) is declined, and the layer runs candle's ops.

mod attention;
mod copy;
mod cublaslt;
mod cudnn;
mod elementwise;
mod launch;
mod norm;

use candle_core::{Device, Result, Tensor};
use candle_nn::Conv1dConfig;
use hwcov_candle::kernels::{AfterBias, Kernels};
use hwcov_candle::nn::Geometry;

use attention::{AttentionSoftmax, Rope};
use copy::{PadBlocks, StridedCopy};
use elementwise::{AddBroadcast, BiasEpilogue, Map, SiluMul};
use launch::OnCuda;
use norm::{GroupNorm, NormRows};

pub use cudnn::version as cudnn_version;

/// The most elements a CUDA tensor may hold here. candle's CUDA kernels count a tensor's elements
/// with 32-bit indices (`unsigned int`, launch grids sized from a `u32`), so a longer tensor would be
/// computed in part, or loop without end. The layers that make the largest tensors (Linear outputs,
/// attention scores, convolutions, embedding lookups, attention masks) refuse one before making it.
pub const CUDA_MAX_ELEMENTS: usize = u32::MAX as usize;

/// The provider hwcov-cuda installs for candle's CUDA devices.
pub struct CudaKernels;

impl Kernels for CudaKernels {
    fn device_name(&self) -> &'static str {
        "CUDA"
    }

    fn max_elements(&self) -> Option<usize> {
        Some(CUDA_MAX_ELEMENTS)
    }

    /// Rows of scores and probabilities 16-byte aligned: cuBLAS then takes its tensor-core kernels for
    /// both of attention's products instead of its slow align-1 ones (ViT's 197 positions, Whisper's
    /// 1500 frames in bf16: docs/benchmarks.md).
    fn key_alignment(&self) -> usize {
        8
    }

    fn linear(&self, x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
        cublaslt::linear(x, weight, bias)
    }

    fn bias(&self, y: &Tensor, b: &Tensor, after: AfterBias) -> Result<Option<Tensor>> {
        match after {
            AfterBias::Nothing => BiasEpilogue::plan_add(y, b)
                .map(|op| y.apply_op2_no_bwd(b, &OnCuda(&op)))
                .transpose(),
            AfterBias::Gelu => BiasEpilogue::plan_gelu(y, b)
                .map(|op| y.apply_op2_no_bwd(b, &OnCuda(&op)))
                .transpose(),
            AfterBias::Residual(r) => BiasEpilogue::plan_residual(y, b, r)
                .map(|op| y.apply_op3_no_bwd(b, r, &OnCuda(&op)))
                .transpose(),
        }
    }

    fn gelu(&self, x: &Tensor) -> Result<Option<Tensor>> {
        Map::Gelu
            .plan(x, None)
            .map(|op| x.apply_op1_no_bwd(&OnCuda(&op)))
            .transpose()
    }

    fn rsqrt(&self, x: &Tensor) -> Result<Option<Tensor>> {
        Map::Rsqrt
            .plan(x, None)
            .map(|op| x.apply_op1_no_bwd(&OnCuda(&op)))
            .transpose()
    }

    fn add(&self, x: &Tensor, r: &Tensor) -> Result<Option<Tensor>> {
        Map::Add
            .plan(x, Some(r))
            .map(|op| x.apply_op2_no_bwd(r, &OnCuda(&op)))
            .transpose()
    }

    fn add_broadcast(&self, x: &Tensor, b: &Tensor) -> Result<Option<Tensor>> {
        AddBroadcast::plan(x, b)
            .map(|op| x.apply_op2_no_bwd(b, &OnCuda(&op)))
            .transpose()
    }

    fn contiguous(&self, x: &Tensor) -> Result<Option<Tensor>> {
        StridedCopy::plan(x)
            .map(|op| x.apply_op1_no_bwd(&OnCuda(&op)))
            .transpose()
    }

    fn pad_rows(&self, x: &Tensor, pad: usize) -> Result<Option<Tensor>> {
        PadBlocks::plan(x, pad)
            .map(|op| x.apply_op1_no_bwd(&OnCuda(&op)))
            .transpose()
    }

    fn attention_softmax(&self, scores: &Tensor, scaling: f64, mask: Option<&Tensor>) -> Result<Option<Tensor>> {
        let Some(op) = AttentionSoftmax::plan(scores, scaling, mask) else {
            return Ok(None);
        };
        match mask {
            Some(m) => scores.apply_op2_no_bwd(m, &OnCuda(&op)),
            None => scores.apply_op1_no_bwd(&OnCuda(&op)),
        }
        .map(Some)
    }

    fn layer_norm(&self, x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Option<Tensor>> {
        NormRows::plan_layer_norm(x, weight, bias, eps)
            .map(|op| x.apply_op3_no_bwd(weight, bias, &OnCuda(&op)))
            .transpose()
    }

    fn rms_norm(&self, x: &Tensor, weight: &Tensor, eps: f64) -> Result<Option<Tensor>> {
        NormRows::plan_rms_norm(x, weight, eps)
            .map(|op| x.apply_op2_no_bwd(weight, &OnCuda(&op)))
            .transpose()
    }

    fn group_norm(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        groups: usize,
        eps: f64,
    ) -> Result<Option<Tensor>> {
        GroupNorm::plan(x, weight, bias, groups, eps)
            .map(|op| x.apply_op3_no_bwd(weight, bias, &OnCuda(&op)))
            .transpose()
    }

    fn rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Option<Tensor>> {
        Rope::plan(x, cos, sin)
            .map(|op| x.apply_op3_no_bwd(cos, sin, &OnCuda(&op)))
            .transpose()
    }

    fn silu_mul(&self, gate_up: &Tensor) -> Result<Option<Tensor>> {
        SiluMul::plan(gate_up)
            .map(|op| gate_up.apply_op1_no_bwd(&OnCuda(&op)))
            .transpose()
    }

    /// Every convolution on CUDA goes through cuDNN, as torch's does.
    fn conv2d(&self, x: &Tensor, w: &Tensor, geometry: Geometry) -> Result<Option<Tensor>> {
        cudnn::conv2d(x, w, geometry).map(Some)
    }

    /// torch's cuDNN path views a conv1d as a conv2d of height 1 (`view4d`).
    fn conv1d(&self, x: &Tensor, w: &Tensor, config: &Conv1dConfig) -> Result<Option<Tensor>> {
        let g = Geometry {
            stride: [1, config.stride],
            padding: [0, config.padding],
            dilation: [1, config.dilation],
            groups: config.groups,
        };
        hwcov_candle::nn::convolve2d(&x.unsqueeze(2)?, &w.unsqueeze(2)?, g)?
            .squeeze(2)
            .map(Some)
    }

    fn copy_to_host(&self, t: &Tensor) -> Result<Option<Vec<f32>>> {
        crate::host_copy::to_host_f32(t)
    }

    fn copy_from_host(&self, values: &[f32], shape: &[usize], device: &Device) -> Result<Option<Tensor>> {
        match device {
            Device::Cuda(dev) => crate::host_copy::from_host_f32(values, shape, dev).map(Some),
            _ => Ok(None),
        }
    }
}
