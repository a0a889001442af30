//! Resize's taps: separable, so each axis's taps are computed once per shape on the host (for every
//! output coordinate: which input indices and with what weight), exactly as the ONNX reference
//! (onnx/reference/ops/op_resize.py) computes them in double precision. A platform sums, for each
//! output element, the products of the taps of every axis.

use crate::ir::{CoordinateTransform, NearestMode, Resize, ResizeMode};

/// The taps of one output coordinate along one axis: (input index, weight), or none where the
/// coordinate is extrapolated.
pub type Taps = Option<Vec<(usize, f64)>>;

fn coeffs(r: &Resize, ratio: f64, scale: f64) -> Vec<f64> {
    let a = r.cubic_coeff_a as f64;
    match (r.mode, r.antialias && scale < 1.0) {
        (ResizeMode::Nearest, _) => {
            if ratio.fract() == 0.0 {
                return vec![0.0, 1.0];
            }
            let up = match r.nearest {
                NearestMode::RoundPreferFloor => ratio > 0.5,
                NearestMode::RoundPreferCeil => ratio >= 0.5,
                NearestMode::Floor => false,
                NearestMode::Ceil => true,
            };
            if up { vec![0.0, 1.0] } else { vec![1.0, 0.0] }
        }
        (ResizeMode::Linear, false) => vec![1.0 - ratio, ratio],
        (ResizeMode::Linear, true) => {
            let start = (-1.0 / scale).floor() as i64 + 1;
            let footprint = 2 - 2 * start;
            let c: Vec<f64> = (start..start + footprint)
                .map(|i| (1.0 - ((i as f64 - ratio) * scale).abs()).clamp(0.0, 1.0))
                .collect();
            let sum: f64 = c.iter().sum();
            c.into_iter().map(|x| x / sum).collect()
        }
        (ResizeMode::Cubic, false) => {
            let r1 = ratio + 1.0;
            let r2 = 1.0 - ratio;
            let r3 = r2 + 1.0;
            vec![
                ((a * r1 - 5.0 * a) * r1 + 8.0 * a) * r1 - 4.0 * a,
                ((a + 2.0) * ratio - (a + 3.0)) * ratio * ratio + 1.0,
                ((a + 2.0) * r2 - (a + 3.0)) * r2 * r2 + 1.0,
                ((a * r3 - 5.0 * a) * r3 + 8.0 * a) * r3 - 4.0 * a,
            ]
        }
        (ResizeMode::Cubic, true) => {
            let f = |x: f64| {
                let x = x.abs();
                let (x2, x3) = (x * x, x * x * x);
                if x <= 1.0 {
                    (a + 2.0) * x3 - (a + 3.0) * x2 + 1.0
                } else if x < 2.0 {
                    a * x3 - 5.0 * a * x2 + 8.0 * a * x - 4.0 * a
                } else {
                    0.0
                }
            };
            let start = (-2.0 / scale).floor() as i64 + 1;
            let end = 2 - start;
            let c: Vec<f64> = (start..end).map(|i| f(scale * (i as f64 - ratio))).collect();
            let sum: f64 = c.iter().sum();
            c.into_iter().map(|x| x / sum).collect()
        }
    }
}

/// The taps of every output coordinate along one axis (`_interpolate_1d_along_axis`).
pub fn axis_taps(r: &Resize, axis: usize, input: usize, output: usize) -> Vec<Taps> {
    let scale = r.scales[axis];
    let (roi_start, roi_end) = r.roi[axis];
    let identity = (scale - 1.0).abs() <= 1e-9 * scale.abs().max(1.0)
        && output == input
        && (r.transform != CoordinateTransform::TfCropAndResize
            || (roi_start.abs() <= 1e-9 && (roi_end - 1.0).abs() <= 1e-9));
    if identity {
        return (0..output).map(|i| Some(vec![(i, 1.0)])).collect();
    }
    let out_w = scale * input as f64;
    (0..output)
        .map(|y| {
            let y = y as f64;
            let x = match r.transform {
                CoordinateTransform::AlignCorners => {
                    if out_w == 1.0 {
                        0.0
                    } else {
                        y * (input as f64 - 1.0) / (out_w - 1.0)
                    }
                }
                CoordinateTransform::Asymmetric => y / scale,
                CoordinateTransform::TfCropAndResize => {
                    let x = if out_w == 1.0 {
                        (roi_end - roi_start) * (input as f64 - 1.0) / 2.0
                    } else {
                        y * (roi_end - roi_start) * (input as f64 - 1.0) / (out_w - 1.0)
                    } + roi_start * (input as f64 - 1.0);
                    if x < 0.0 || x > input as f64 - 1.0 {
                        return None;
                    }
                    x
                }
                CoordinateTransform::PytorchHalfPixel => {
                    if out_w == 1.0 {
                        -0.5
                    } else {
                        (y + 0.5) / scale - 0.5
                    }
                }
                CoordinateTransform::HalfPixel => (y + 0.5) / scale - 0.5,
                CoordinateTransform::HalfPixelSymmetric => {
                    let adjustment = output as f64 / out_w;
                    let center = input as f64 / 2.0;
                    center * (1.0 - adjustment) + (y + 0.5) / scale - 0.5
                }
            };
            let floor = x.floor();
            let ratio = if x == floor { 1.0 } else { x - floor };
            let mut c = coeffs(r, ratio, scale);
            let n = c.len() as i64;
            let pad = (n + 1) / 2;
            let xp = x + pad as f64;
            let p = xp.floor();
            let frac = xp - p;
            let offset = if n % 2 == 0 {
                if frac == 0.0 { -(n / 2) } else { -(n / 2) + 1 }
            } else {
                let base = -((n - 1) / 2);
                if frac <= 0.5 { base } else { base + 1 }
            };
            let start = p as i64 + offset;
            let idx: Vec<i64> = (0..n).map(|k| start + k - pad).collect();
            if r.exclude_outside {
                for (k, &i) in idx.iter().enumerate() {
                    if i < 0 || i >= input as i64 {
                        c[k] = 0.0;
                    }
                }
                let sum: f64 = c.iter().sum();
                if sum != 0.0 {
                    c.iter_mut().for_each(|v| *v /= sum);
                }
            }
            Some(
                idx.iter()
                    .zip(c)
                    .map(|(&i, w)| (i.clamp(0, input as i64 - 1) as usize, w))
                    .collect(),
            )
        })
        .collect()
}
