//! The kernel seam: where a platform crate gives hwcov-candle's layers faster kernels for its device.
//!
//! Each layer of [`crate::nn`] (Linear and its epilogues, the norms, attention's softmax and key
//! padding, RoPE, convolutions, host copies, ...) first asks the [`Kernels`] installed for its
//! tensors' device; a provider answers `Ok(None)` for a case it does not take, and the layer then runs
//! the plain candle ops. A platform crate installs its provider when it opens a device (hwcov-cuda
//! installs its CUDA kernels); a device with none installed gets [`Plain`], which takes nothing.
//! A provider's answer must be the numbers the plain ops give to the rounding that transformers does:
//! the layers' doc comments say which roundings those are.

use std::sync::OnceLock;

use candle_core::{Device, Result, Tensor};
use candle_nn::Conv1dConfig;

use crate::nn::Geometry;

/// What follows a Linear's bias add, where a provider fuses it into the same pass.
#[derive(Clone, Copy, Debug)]
pub enum AfterBias<'a> {
    Nothing,
    /// torch's exact GELU of the biased product (rounded to the dtype first).
    Gelu,
    /// A residual of the output's shape added to the biased product (rounded to the dtype first).
    Residual(&'a Tensor),
}

/// The fast paths a device's kernels may take. Every method but `device_name` has a default that
/// takes nothing; a provider overrides those it has kernels for.
pub trait Kernels: Send + Sync {
    /// The device, as an error message names it ("CUDA").
    fn device_name(&self) -> &'static str;

    /// The most elements one tensor may hold on this device, where its kernels count them in a
    /// narrower integer; `None` for no limit. The layers that make the largest tensors refuse one over
    /// it before making it, naming the tensor.
    fn max_elements(&self) -> Option<usize> {
        None
    }

    /// The multiple that attention pads its number of keys to (with masked zero rows) when more than
    /// one query meets them, where the device's matrix products are faster on aligned rows; 1 for none.
    fn key_alignment(&self) -> usize {
        1
    }

    /// `x W^T + b` for a contiguous `x`, as one product rounded once (torch's `addmm`).
    fn linear(&self, _x: &Tensor, _weight: &Tensor, _bias: Option<&Tensor>) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// `y + b`, `b` over the last dimension of `y`, then `after`.
    fn bias(&self, _y: &Tensor, _b: &Tensor, _after: AfterBias) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// torch's exact GELU, in f32 and rounded once.
    fn gelu(&self, _x: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// `torch.rsqrt(x)`.
    fn rsqrt(&self, _x: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// `x + r` for two tensors of one shape.
    fn add(&self, _x: &Tensor, _r: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// `x + b` with `b` broadcast to `x`'s shape.
    fn add_broadcast(&self, _x: &Tensor, _b: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// `x.contiguous()` of a strided `x`.
    fn contiguous(&self, _x: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// `pad` rows of zeros after the rows of each matrix of `x`.
    fn pad_rows(&self, _x: &Tensor, _pad: usize) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// `softmax(scores * scaling + mask)` over the last dimension ([`crate::nn::attention_softmax`]).
    fn attention_softmax(&self, _scores: &Tensor, _scaling: f64, _mask: Option<&Tensor>) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// `nn.LayerNorm` over the last dimension.
    fn layer_norm(&self, _x: &Tensor, _weight: &Tensor, _bias: &Tensor, _eps: f64) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// `LlamaRMSNorm` / `T5LayerNorm` over the last dimension.
    fn rms_norm(&self, _x: &Tensor, _weight: &Tensor, _eps: f64) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// `F.group_norm(x, groups, weight, bias, eps)`.
    fn group_norm(
        &self,
        _x: &Tensor,
        _weight: &Tensor,
        _bias: &Tensor,
        _groups: usize,
        _eps: f64,
    ) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// transformers' `apply_rotary_pos_emb` for one of q or k ([`crate::nn::rope`]).
    fn rope(&self, _x: &Tensor, _cos: &Tensor, _sin: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// `silu(gate) * up`, the two side by side over the last dimension of `gate_up`.
    fn silu_mul(&self, _gate_up: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// `F.conv2d(x, w, bias=None)`.
    fn conv2d(&self, _x: &Tensor, _w: &Tensor, _geometry: Geometry) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// `F.conv1d(x, w, bias=None)`.
    fn conv1d(&self, _x: &Tensor, _w: &Tensor, _config: &Conv1dConfig) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// The elements of a contiguous tensor, widened to f32, copied to the host.
    fn copy_to_host(&self, _t: &Tensor) -> Result<Option<Vec<f32>>> {
        Ok(None)
    }

    /// A tensor of `shape` on `device` holding `values`.
    fn copy_from_host(&self, _values: &[f32], _shape: &[usize], _device: &Device) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

/// How `b` repeats over `x` in `x + b` where it repeats along `x`'s leading dimensions: its trailing
/// dimensions equal `x`'s (`inner` elements), and before them it has only ones, or the batch and
/// then ones. That is a bias (`[out]`, `[1, 1, out]`) or an attention mask (`[batch, 1, q_len,
/// kv_len]` on `[batch, heads, q_len, kv_len]`). Element `i` of `x` meets element
/// `(i / group) * inner + i % inner` of `b`; returns `(group, inner)`, or `None` for any other shape.
pub fn repeated_rows(x_dims: &[usize], b_dims: &[usize]) -> Option<(usize, usize)> {
    let n: usize = x_dims.iter().product();
    if b_dims.len() > x_dims.len() || n == 0 {
        return None;
    }
    let matching = b_dims
        .iter()
        .rev()
        .zip(x_dims.iter().rev())
        .take_while(|(b, x)| b == x)
        .count();
    if matching == 0 {
        return None;
    }
    let inner: usize = x_dims[x_dims.len() - matching..].iter().product();
    let lead = &b_dims[..b_dims.len() - matching];
    let ones = |s: &[usize]| s.iter().all(|&d| d == 1);
    let group = if ones(lead) {
        n
    } else if b_dims.len() == x_dims.len() && lead[0] == x_dims[0] && ones(&lead[1..]) {
        n / x_dims[0]
    } else {
        return None;
    };
    Some((group, inner))
}

/// The plain candle ops: the provider of a device for which none is installed.
pub struct Plain;

impl Kernels for Plain {
    fn device_name(&self) -> &'static str {
        "candle"
    }
}

/// The kinds of candle device, each of which may have one provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Cpu,
    Cuda,
    Metal,
}

impl Backend {
    pub fn of(device: &Device) -> Self {
        match device {
            Device::Cpu => Backend::Cpu,
            Device::Cuda(_) => Backend::Cuda,
            Device::Metal(_) => Backend::Metal,
        }
    }

    fn slot(self) -> &'static OnceLock<&'static dyn Kernels> {
        static INSTALLED: [OnceLock<&'static dyn Kernels>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
        &INSTALLED[self as usize]
    }
}

/// Installs `kernels` for every device of `backend`. The first provider installed for a backend stays
/// for the life of the process: returns false, and changes nothing, when another was there first.
pub fn install(backend: Backend, kernels: &'static dyn Kernels) -> bool {
    backend.slot().set(kernels).is_ok()
}

/// The provider for `device`'s tensors: the installed one, or [`Plain`].
pub fn of(device: &Device) -> &'static dyn Kernels {
    Backend::of(device).slot().get().copied().unwrap_or(&Plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn biases_and_masks_repeat_by_rows_and_other_shapes_do_not() {
        // A bias over rows of 48: every row of x meets all of b.
        assert_eq!(repeated_rows(&[2, 9, 48], &[48]), Some((2 * 9 * 48, 48)));
        assert_eq!(repeated_rows(&[2, 9, 48], &[1, 1, 48]), Some((2 * 9 * 48, 48)));
        // A padding mask per batch over the heads and queries.
        assert_eq!(repeated_rows(&[2, 12, 5, 7], &[2, 1, 5, 7]), Some((12 * 5 * 7, 5 * 7)));
        assert_eq!(repeated_rows(&[2, 12, 5, 7], &[2, 1, 1, 7]), Some((12 * 5 * 7, 7)));
        // A mask over the queries but not the batch repeats within rows: not this pattern.
        assert_eq!(repeated_rows(&[2, 12, 5, 7], &[1, 1, 5, 1]), None);
        assert_eq!(repeated_rows(&[2, 12, 5, 7], &[3, 1, 5, 7]), None);
        assert_eq!(repeated_rows(&[4], &[2, 4]), None);
        assert_eq!(repeated_rows(&[0, 4], &[4]), None);
    }
}
