//! hwcov's CPU kernels, given to hwcov-candle's layers through its kernel seam
//! (`hwcov_candle::kernels`) when the CPU platform loads a model.
//!
//! Profiled on this project's 2-core machine (docs/benchmarks.md, "CPU"): candle's matrix products
//! run on all threads (the `gemm` crate on rayon), but its elementwise and broadcast ops run on one
//! thread, one pass and one new tensor each, and the layers spend most of their time outside the
//! products in chains of them: a LayerNorm of about ten passes, attention's scale, mask and softmax
//! in three, each Linear's bias in a pass of its own. Here those chains are one pass each, split
//! over rayon's threads (candle's own pool, so products and passes share the threads), and a Linear's
//! bias is the product's initial value. Only contiguous f32 tensors are taken: the f32 platform's
//! numbers stay those of the plain ops to the f32 tolerance (every fixture is verified through
//! these kernels), and half precision on the CPU stays candle's.

mod copy;
mod elementwise;
mod linear;
mod rows;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Device, Result, Storage, Tensor};
use hwcov_candle::kernels::{AfterBias, Kernels};
use rayon::prelude::*;

/// The provider hwcov-cpu installs for candle's CPU device.
pub struct CpuKernels;

impl Kernels for CpuKernels {
    fn device_name(&self) -> &'static str {
        "CPU"
    }

    fn linear(&self, x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
        linear::linear(x, weight, bias)
    }

    fn bias(&self, y: &Tensor, b: &Tensor, after: AfterBias) -> Result<Option<Tensor>> {
        elementwise::bias(y, b, after)
    }

    fn gelu(&self, x: &Tensor) -> Result<Option<Tensor>> {
        elementwise::gelu(x)
    }

    fn add(&self, x: &Tensor, r: &Tensor) -> Result<Option<Tensor>> {
        elementwise::add(x, r)
    }

    fn add_broadcast(&self, x: &Tensor, b: &Tensor) -> Result<Option<Tensor>> {
        elementwise::add_broadcast(x, b)
    }

    fn silu_mul(&self, gate_up: &Tensor) -> Result<Option<Tensor>> {
        elementwise::silu_mul(gate_up)
    }

    fn contiguous(&self, x: &Tensor) -> Result<Option<Tensor>> {
        copy::contiguous(x)
    }

    fn attention_softmax(&self, scores: &Tensor, scaling: f64, mask: Option<&Tensor>) -> Result<Option<Tensor>> {
        rows::attention_softmax(scores, scaling, mask)
    }

    fn layer_norm(&self, x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Option<Tensor>> {
        rows::layer_norm(x, weight, bias, eps)
    }

    fn rms_norm(&self, x: &Tensor, weight: &Tensor, eps: f64) -> Result<Option<Tensor>> {
        rows::rms_norm(x, weight, eps)
    }
}

/// The elements of a CPU f32 tensor, held while they are read: the storage's guard and the range
/// of the tensor's elements in it.
struct F32s<G> {
    guard: G,
    start: usize,
    end: usize,
}

impl F32s<()> {
    /// The tensor's elements where it is a contiguous f32 tensor on the CPU.
    fn of(t: &Tensor) -> Option<F32s<impl std::ops::Deref<Target = Storage> + '_>> {
        if t.dtype() != DType::F32 || !matches!(t.device(), Device::Cpu) {
            return None;
        }
        let (guard, layout) = t.storage_and_layout();
        let (start, end) = layout.contiguous_offsets()?;
        if !matches!(&*guard, Storage::Cpu(s) if s.dtype() == DType::F32) {
            return None;
        }
        Some(F32s { guard, start, end })
    }
}

impl<G: std::ops::Deref<Target = Storage>> F32s<G> {
    fn values(&self) -> &[f32] {
        match &*self.guard {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.start..self.end],
            // `of` made this only for f32 CPU storage.
            _ => &[],
        }
    }
}

/// A CPU tensor of `dims` holding `values`.
fn tensor(values: Vec<f32>, dims: &[usize]) -> Result<Tensor> {
    Tensor::from_vec(values, dims, &Device::Cpu)
}

/// The fewest elements worth a task of their own: below it, a pass stays on one thread.
const ELEMENTS_PER_TASK: usize = 1 << 14;

/// `f(row index, row)` for each row of `cols` elements of `out`, rows split over the threads.
fn for_rows(out: &mut [f32], cols: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if cols == 0 {
        return;
    }
    let min_rows = (ELEMENTS_PER_TASK / cols).max(1);
    out.par_chunks_mut(cols)
        .with_min_len(min_rows)
        .enumerate()
        .for_each(|(r, row)| f(r, row));
}

/// `f(i)` for each index of a new tensor's `n` elements, split over the threads.
fn map_indices(n: usize, f: impl Fn(usize) -> f32 + Sync + Send) -> Vec<f32> {
    let mut out = vec![0f32; n];
    out.par_chunks_mut(ELEMENTS_PER_TASK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let base = c * ELEMENTS_PER_TASK;
            for (i, v) in chunk.iter_mut().enumerate() {
                *v = f(base + i);
            }
        });
    out
}
