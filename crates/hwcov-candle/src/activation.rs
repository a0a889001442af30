//! Activation functions by their transformers names (`ACT2FN` in activations.py).
//!
//! Each is computed as torch computes it for a half-precision tensor: a torch kernel works in f32 and
//! stores its result in the dtype, so a module that is one torch call (`nn.GELU`, `nn.SiLU`) rounds
//! once, and one written as Python arithmetic (`NewGELUActivation`, `QuickGELUActivation`) rounds
//! after every operation. At f32 the roundings are no-ops.

use candle_core::{Result, Tensor};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Activation {
    /// The exact GELU, with erf (`nn.GELU()`).
    #[serde(rename = "gelu")]
    Gelu,
    /// `GELUActivation(use_gelu_python=True)`: the exact GELU written out in Python.
    #[serde(rename = "gelu_python")]
    GeluPython,
    /// `NewGELUActivation`: the tanh approximation written out in Python.
    #[serde(rename = "gelu_new")]
    GeluNew,
    /// `PytorchGELUTanh`: torch's own tanh approximation, one kernel.
    #[serde(rename = "gelu_pytorch_tanh")]
    GeluPytorchTanh,
    /// `FastGELUActivation`: another Python form of the tanh approximation.
    #[serde(rename = "gelu_fast")]
    GeluFast,
    /// `QuickGELUActivation`: x * sigmoid(1.702 x), as in CLIP.
    #[serde(rename = "quick_gelu")]
    QuickGelu,
    #[serde(rename = "relu")]
    Relu,
    #[serde(rename = "silu", alias = "swish")]
    Silu,
    #[serde(rename = "tanh")]
    Tanh,
}

impl Activation {
    pub fn forward(self, xs: &Tensor) -> Result<Tensor> {
        let dtype = xs.dtype();
        // An intermediate that torch stores in the dtype, rounded to it and back.
        let r = |t: Tensor| crate::nn::round_to(&t, dtype);
        let one_plus = |t: &Tensor| r(t.affine(1.0, 1.0)?);
        let times = |t: &Tensor, s: f64| r(crate::nn::mul_scalar(t, s)?);
        match self {
            Activation::Gelu => crate::nn::gelu(xs),
            Activation::Relu => xs.relu(),
            Activation::GeluPytorchTanh => crate::nn::in_f32(xs, |x| x.gelu()),
            Activation::Silu => crate::nn::in_f32(xs, |x| x.silu()),
            Activation::Tanh => crate::nn::in_f32(xs, |x| x.tanh()),
            Activation::GeluPython => crate::nn::in_f32(xs, |x| {
                // input * 0.5 * (1.0 + torch.erf(input / math.sqrt(2.0)))
                let half = times(x, 0.5)?;
                let erf = r(times(x, (1.0f32 / 2f32.sqrt()) as f64)?.erf()?)?;
                half.mul(&one_plus(&erf)?)
            }),
            Activation::GeluNew => crate::nn::in_f32(xs, |x| {
                // 0.5 * input * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (input + 0.044715 * torch.pow(input, 3.0))))
                let half = times(x, 0.5)?;
                // torch.pow(x, 3.0) is `base * base * base` in the dtype's own arithmetic: rounded twice.
                let cube = r(r(x.sqr()?)?.mul(x)?)?;
                let inner = r(x.add(&times(&cube, 0.044715)?)?)?;
                let t = r(times(&inner, (2.0 / std::f64::consts::PI).sqrt())?.tanh()?)?;
                half.mul(&one_plus(&t)?)
            }),
            Activation::GeluFast => crate::nn::in_f32(xs, |x| {
                // 0.5 * input * (1.0 + torch.tanh(input * 0.7978845608 * (1.0 + 0.044715 * input * input)))
                let half = times(x, 0.5)?;
                let a = times(x, 0.7978845608)?;
                let b = one_plus(&r(times(x, 0.044715)?.mul(x)?)?)?;
                let t = r(r(a.mul(&b)?)?.tanh()?)?;
                half.mul(&one_plus(&t)?)
            }),
            Activation::QuickGelu => crate::nn::in_f32(xs, |x| {
                // input * torch.sigmoid(1.702 * input)
                let s = r(candle_nn::ops::sigmoid(&times(x, 1.702)?)?)?;
                x.mul(&s)
            }),
        }
    }
}
