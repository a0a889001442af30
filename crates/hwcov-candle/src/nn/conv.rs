//! `nn.Conv1d` and `nn.Conv2d`, as candle-nn's (same weight names and shapes, same configs), run as
//! torch runs them: the convolution by the device's kernel provider where it has one (hwcov-cuda's is
//! cuDNN's, a conv1d as a conv2d of height 1), else by candle's, and the bias added afterwards in its
//! own rounding.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv1dConfig, Conv2dConfig, VarBuilder};

use crate::kernels;

/// Per axis (height, width): stride, padding, dilation, and the groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Geometry {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

/// `F.conv2d(x, w, bias=None)` with a geometry per axis: `x` (N, C, H, W), `w` (K, C / groups, R, S).
pub fn convolve2d(x: &Tensor, w: &Tensor, g: Geometry) -> Result<Tensor> {
    let ((n, _, h, width), (k, _, r, s)) = (x.dims4()?, w.dims4()?);
    let out = |len: usize, axis: usize, kernel: usize| {
        (len + 2 * g.padding[axis]).saturating_sub(g.dilation[axis] * kernel.saturating_sub(1) + 1) / g.stride[axis] + 1
    };
    super::check_elements(
        x.device(),
        "a convolution's output",
        &[n, k, out(h, 0, r), out(width, 1, s)],
    )?;
    if let Some(y) = kernels::of(x.device()).conv2d(x, w, g)? {
        return Ok(y);
    }
    let square = |a: [usize; 2]| (a[0] == a[1]).then_some(a[0]);
    if let (Some(stride), Some(padding), Some(dilation)) = (square(g.stride), square(g.padding), square(g.dilation)) {
        return x.conv2d(w, padding, stride, dilation, g.groups);
    }
    if g.dilation != [1, 1] {
        candle_core::bail!(
            "convolution with dilation {:?}: per-axis dilation is not supported here",
            g.dilation
        );
    }
    // candle takes one stride and padding for both axes: pad each axis, convolve with stride 1, keep
    // every stride-th output.
    let x = x
        .pad_with_zeros(2, g.padding[0], g.padding[0])?
        .pad_with_zeros(3, g.padding[1], g.padding[1])?;
    let full = x.conv2d(w, 0, 1, 1, g.groups)?;
    let pick = |t: &Tensor, dim: usize, step: usize| -> Result<Tensor> {
        let idx: Vec<u32> = (0..t.dim(dim)?).step_by(step).map(|i| i as u32).collect();
        t.index_select(&Tensor::new(idx, t.device())?, dim)
    };
    pick(&pick(&full, 2, g.stride[0])?, 3, g.stride[1])
}

/// `F.conv1d(x, w, bias=None)`: `x` (N, C, L), `w` (K, C / groups, S).
pub fn convolve1d(x: &Tensor, w: &Tensor, cfg: &Conv1dConfig) -> Result<Tensor> {
    if let Some(y) = kernels::of(x.device()).conv1d(x, w, cfg)? {
        return Ok(y);
    }
    x.conv1d(w, cfg.padding, cfg.stride, cfg.dilation, cfg.groups)
}

/// `y + bias` over the channel axis (1), as torch adds a convolution's bias: after the convolution.
fn add_bias(y: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let Some(b) = bias else { return Ok(y.clone()) };
    let mut shape = vec![1; y.rank()];
    shape[1] = b.dims1()?;
    super::add_broadcast(y, &b.reshape(shape)?)
}

/// `nn.Conv1d`.
#[derive(Clone, Debug)]
pub struct Conv1d {
    weight: Tensor,
    bias: Option<Tensor>,
    config: Conv1dConfig,
}

impl Conv1d {
    pub fn new(weight: Tensor, bias: Option<Tensor>, config: Conv1dConfig) -> Self {
        Self { weight, bias, config }
    }
}

impl Module for Conv1d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        add_bias(&convolve1d(x, &self.weight, &self.config)?, self.bias.as_ref())
    }
}

/// `nn.Conv2d`, with a geometry per axis (candle-nn's config takes one for both).
#[derive(Clone, Debug)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    geometry: Geometry,
}

impl Conv2d {
    pub fn new(weight: Tensor, bias: Option<Tensor>, cfg: Conv2dConfig) -> Self {
        let geometry = Geometry {
            stride: [cfg.stride; 2],
            padding: [cfg.padding; 2],
            dilation: [cfg.dilation; 2],
            groups: cfg.groups,
        };
        Self::with_geometry(weight, bias, geometry)
    }

    pub fn with_geometry(weight: Tensor, bias: Option<Tensor>, geometry: Geometry) -> Self {
        Self { weight, bias, geometry }
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        add_bias(&convolve2d(x, &self.weight, self.geometry)?, self.bias.as_ref())
    }
}

fn conv1d_weight(in_c: usize, out_c: usize, k: usize, cfg: &Conv1dConfig, vb: &VarBuilder) -> Result<Tensor> {
    vb.get((out_c, in_c / cfg.groups, k), "weight")
}

fn conv2d_weight(in_c: usize, out_c: usize, k: usize, cfg: &Conv2dConfig, vb: &VarBuilder) -> Result<Tensor> {
    vb.get((out_c, in_c / cfg.groups, k, k), "weight")
}

pub fn conv1d(in_c: usize, out_c: usize, k: usize, cfg: Conv1dConfig, vb: VarBuilder) -> Result<Conv1d> {
    let weight = conv1d_weight(in_c, out_c, k, &cfg, &vb)?;
    Ok(Conv1d::new(weight, Some(vb.get(out_c, "bias")?), cfg))
}

pub fn conv1d_no_bias(in_c: usize, out_c: usize, k: usize, cfg: Conv1dConfig, vb: VarBuilder) -> Result<Conv1d> {
    Ok(Conv1d::new(conv1d_weight(in_c, out_c, k, &cfg, &vb)?, None, cfg))
}

pub fn conv2d(in_c: usize, out_c: usize, k: usize, cfg: Conv2dConfig, vb: VarBuilder) -> Result<Conv2d> {
    let weight = conv2d_weight(in_c, out_c, k, &cfg, &vb)?;
    Ok(Conv2d::new(weight, Some(vb.get(out_c, "bias")?), cfg))
}

pub fn conv2d_no_bias(in_c: usize, out_c: usize, k: usize, cfg: Conv2dConfig, vb: VarBuilder) -> Result<Conv2d> {
    Ok(Conv2d::new(conv2d_weight(in_c, out_c, k, &cfg, &vb)?, None, cfg))
}
