//! The image operations of transformers' torchvision backend (`TorchvisionBackend` in
//! image_processing_backends.py, torchvision 0.26 on torch 2.11's CPU kernels), so that every output
//! equals what a user with torchvision installed gets:
//!
//! - resize: `torchvision.transforms.v2.functional.resize(uint8 tensor, antialias=True)`, which calls
//!   torch's `interpolate`. Bilinear and bicubic run torch's separable antialiased kernels
//!   (aten/src/ATen/native/cpu/UpSampleKernel.cpp): width first, then height. On uint8 they weight in
//!   int16 fixed point at a precision chosen per axis and round each pass to bytes; torchvision hands
//!   bilinear uint8 images to that kernel only where torch runs its AVX2 (or AVX-512) kernels, and
//!   elsewhere (`ATEN_CPU_CAPABILITY=default`, CPUs without AVX2 such as ARM) converts them to float32,
//!   resizes both passes in float32 and rounds once at the end ([`CpuKernels`]). Bicubic takes the
//!   uint8 kernel everywhere. PIL's NEAREST becomes torch's `nearest-exact`.
//! - center crop: zero padding first where the image is smaller than the crop, the odd pixel going to
//!   the right and bottom (the PIL backend puts it on the left and top).
//! - rescale and normalize fused: `(x - mean / rescale_factor) / (std / rescale_factor)` in float32.

use super::RgbImage;
use super::pil::Resample;

/// torch's interpolation modes that transformers' torchvision backend maps PIL's filters to
/// (`pil_torch_interpolation_mapping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    NearestExact,
    Bilinear,
    Bicubic,
}

impl Interpolation {
    /// The mode transformers resizes with for a PIL filter code: NEAREST is torch's nearest-exact, and
    /// LANCZOS falls back to BICUBIC (torchvision before 0.27 has no Lanczos; transformers warns). BOX
    /// and HAMMING map to modes torch's `interpolate` refuses, and transformers has no mapping for
    /// Pillow's MKS filters: those give an error saying why.
    pub fn from_resample(resample: Resample) -> Result<Self, String> {
        match resample {
            Resample::Nearest => Ok(Interpolation::NearestExact),
            Resample::Bilinear => Ok(Interpolation::Bilinear),
            Resample::Bicubic | Resample::Lanczos => Ok(Interpolation::Bicubic),
            Resample::Box | Resample::Hamming => Err(format!(
                "the torchvision backend cannot resize with {resample:?}: torch's interpolate has no such mode, and transformers fails the same way; use the PIL backend"
            )),
            Resample::Mks2013 | Resample::Mks2021 => Err(format!(
                "the torchvision backend has no {resample:?} filter (transformers maps only PIL's NEAREST, BOX, BILINEAR, HAMMING, BICUBIC and LANCZOS); use the PIL backend"
            )),
        }
    }
}

/// Which of torch's CPU kernels resize: they round bilinear resizes of uint8 images differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuKernels {
    /// x86-64 with AVX2 and FMA (torch's AVX2 or AVX512 capability): bilinear on uint8 in fixed point.
    Avx2,
    /// Any other CPU, or `ATEN_CPU_CAPABILITY=default`: bilinear through float32.
    Default,
}

impl CpuKernels {
    /// The kernels torch picks on this machine: `ATEN_CPU_CAPABILITY=default` forces the default
    /// kernels, as it does in torch; otherwise AVX2 where the CPU has AVX2 and FMA.
    pub fn current() -> Self {
        if std::env::var("ATEN_CPU_CAPABILITY").is_ok_and(|v| v == "default") {
            return CpuKernels::Default;
        }
        Self::of_this_cpu()
    }

    #[cfg(target_arch = "x86_64")]
    fn of_this_cpu() -> Self {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            CpuKernels::Avx2
        } else {
            CpuKernels::Default
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn of_this_cpu() -> Self {
        CpuKernels::Default
    }

    pub fn name(self) -> &'static str {
        match self {
            CpuKernels::Avx2 => "avx2",
            CpuKernels::Default => "default",
        }
    }
}

/// Resizes to `width` x `height` as `tvF.resize(image, [height, width], interpolation, antialias=True)`
/// does on a uint8 image on the CPU.
pub fn resize(img: &RgbImage, width: usize, height: usize, mode: Interpolation, kernels: CpuKernels) -> RgbImage {
    if img.width == width && img.height == height {
        return img.clone();
    }
    match mode {
        Interpolation::NearestExact => resize_nearest_exact(img, width, height),
        Interpolation::Bilinear if kernels == CpuKernels::Default => resize_float(img, width, height),
        Interpolation::Bilinear => resize_uint8(img, width, height, Filter::Linear),
        Interpolation::Bicubic => resize_uint8(img, width, height, Filter::Cubic),
    }
}

#[derive(Clone, Copy)]
enum Filter {
    Linear,
    Cubic,
}

impl Filter {
    /// `interp_size` of torch's HelperInterpLinear / HelperInterpCubic.
    fn interp_size(self) -> f64 {
        match self {
            Filter::Linear => 2.0,
            Filter::Cubic => 4.0,
        }
    }

    /// `aa_filter` in double: the triangle, and Keys' cubic with a = -0.5 (as Pillow's).
    fn eval(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Linear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Cubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// One axis of a uint8 resize: for each output pixel the first input pixel and its int16 weights,
/// all at `precision` fraction bits (`_compute_index_ranges_int16_weights`).
struct FixedAxis {
    taps: Vec<(usize, Vec<i32>)>,
    precision: u32,
}

fn fixed_axis(in_size: usize, out_size: usize, filter: Filter) -> FixedAxis {
    let rows: Vec<(usize, Vec<f64>, bool)> = (0..out_size)
        .map(|i| aa_weights_f64(i, in_size, out_size, filter))
        .collect();
    // The largest normalised weight decides the precision: the most fraction bits (up to 22) under
    // which it still fits an int16.
    let max_weight = rows
        .iter()
        .filter(|r| r.2)
        .flat_map(|r| r.1.iter().copied())
        .fold(0f64, f64::max);
    let mut precision = 0u32;
    while precision < 22 {
        if (0.5 + max_weight * (1u32 << (precision + 1)) as f64) as i32 >= 1 << 15 {
            break;
        }
        precision += 1;
    }
    let scale = (1u32 << precision) as f64;
    let taps = rows
        .into_iter()
        .map(|(xmin, w, _)| {
            let w = w
                .into_iter()
                .map(|v| {
                    let v = v * scale;
                    // C's (int) truncates toward zero.
                    if v < 0.0 { (-0.5 + v) as i32 } else { (0.5 + v) as i32 }
                })
                .collect();
            (xmin, w)
        })
        .collect();
    FixedAxis { taps, precision }
}

/// `_compute_indices_min_size_weights_aa` in double: the first input pixel and the weights of output
/// pixel `i`, normalised to sum to one unless they sum to zero (then left as they are; the flag says
/// which).
fn aa_weights_f64(i: usize, in_size: usize, out_size: usize, filter: Filter) -> (usize, Vec<f64>, bool) {
    let scale = in_size as f64 / out_size as f64;
    let support = if scale >= 1.0 {
        filter.interp_size() * 0.5 * scale
    } else {
        filter.interp_size() * 0.5
    };
    let max_taps = support.ceil() as i64 * 2 + 1;
    let center = scale * (i as f64 + 0.5);
    let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    let xmin = ((center - support + 0.5) as i64).max(0);
    let xsize = (((center + support + 0.5) as i64).min(in_size as i64) - xmin).clamp(0, max_taps);
    let mut w: Vec<f64> = (0..xsize)
        .map(|j| filter.eval((j as f64 + xmin as f64 - center + 0.5) * invscale))
        .collect();
    let total: f64 = w.iter().fold(0.0, |a, &b| a + b);
    if total != 0.0 {
        for v in &mut w {
            *v /= total;
        }
    }
    (xmin as usize, w, total != 0.0)
}

/// A fixed-point pass along one axis: each sum starts at half a unit, is shifted down and clamped to
/// a byte.
fn fixed_pass(im: &RgbImage, axis: &FixedAxis, horizontal: bool) -> RgbImage {
    let (w, h) = (im.width, im.height);
    let (ow, oh) = if horizontal {
        (axis.taps.len(), h)
    } else {
        (w, axis.taps.len())
    };
    let mut out = vec![0u8; ow * oh * 3];
    let half = 1i64 << (axis.precision - 1);
    for y in 0..oh {
        for x in 0..ow {
            let (start, weights) = if horizontal { &axis.taps[x] } else { &axis.taps[y] };
            let mut sum = [half; 3];
            for (k, &wt) in weights.iter().enumerate() {
                let (sx, sy) = if horizontal { (start + k, y) } else { (x, start + k) };
                let p = &im.data[(sy * w + sx) * 3..(sy * w + sx) * 3 + 3];
                for c in 0..3 {
                    sum[c] += p[c] as i64 * wt as i64;
                }
            }
            for c in 0..3 {
                out[(y * ow + x) * 3 + c] = (sum[c] >> axis.precision).clamp(0, 255) as u8;
            }
        }
    }
    RgbImage {
        width: ow,
        height: oh,
        data: out,
    }
}

/// torch's uint8 antialiased kernel: a fixed-point pass along the width, then one along the height,
/// each only where that size changes.
fn resize_uint8(img: &RgbImage, width: usize, height: usize, filter: Filter) -> RgbImage {
    let mut cur = img.clone();
    if width != img.width {
        cur = fixed_pass(&cur, &fixed_axis(img.width, width, filter), true);
    }
    if height != img.height {
        cur = fixed_pass(&cur, &fixed_axis(img.height, height, filter), false);
    }
    cur
}

/// `_compute_indices_min_size_weights_aa<float>` for the triangle filter, with float32 and double
/// mixed as the C++ mixes them: the first input pixel and the normalised weights of output `i`.
fn aa_weights_f32(i: usize, in_size: usize, out_size: usize) -> (usize, Vec<f32>) {
    let scale = in_size as f32 / out_size as f32;
    // `(interp_size * 0.5) * scale` is a double product stored as float.
    let support = if scale >= 1.0 {
        (2.0 * 0.5 * scale as f64) as f32
    } else {
        1.0f32
    };
    let max_taps = support.ceil() as i64 * 2 + 1;
    let center = (scale as f64 * (i as f64 + 0.5)) as f32;
    let invscale = if scale >= 1.0 { (1.0 / scale as f64) as f32 } else { 1.0 };
    let xmin = (((center - support) as f64 + 0.5) as i64).max(0);
    let xsize = ((((center + support) as f64 + 0.5) as i64).min(in_size as i64) - xmin).clamp(0, max_taps);
    let mut w: Vec<f32> = (0..xsize)
        .map(|j| {
            let x = (((j + xmin) as f32 - center) as f64 + 0.5) * invscale as f64;
            let x = (x as f32).abs();
            // `1.0 - x` is computed in double and returned as float.
            if x < 1.0 { (1.0 - x as f64) as f32 } else { 0.0 }
        })
        .collect();
    let mut total = 0f32;
    for &v in &w {
        total += v;
    }
    if total != 0.0 {
        for v in &mut w {
            *v /= total;
        }
    }
    (xmin as usize, w)
}

/// A float32 pass along one axis: `t0 * w0 + t1 * w1 + ...` accumulated left to right.
fn float_pass(data: &[f32], w: usize, h: usize, taps: &[(usize, Vec<f32>)], horizontal: bool) -> Vec<f32> {
    let (ow, oh) = if horizontal { (taps.len(), h) } else { (w, taps.len()) };
    let mut out = vec![0f32; ow * oh * 3];
    for y in 0..oh {
        for x in 0..ow {
            let (start, weights) = if horizontal { &taps[x] } else { &taps[y] };
            for c in 0..3 {
                let at = |k: usize| {
                    let (sx, sy) = if horizontal { (start + k, y) } else { (x, start + k) };
                    data[(sy * w + sx) * 3 + c]
                };
                let mut acc = at(0) * weights[0];
                for (k, &wt) in weights.iter().enumerate().skip(1) {
                    acc += at(k) * wt;
                }
                out[(y * ow + x) * 3 + c] = acc;
            }
        }
    }
    out
}

/// torchvision's path for bilinear uint8 images without torch's AVX2 kernels: to float32, torch's
/// float antialiased kernel (width, then height), rounded half to even and back to bytes.
fn resize_float(img: &RgbImage, width: usize, height: usize) -> RgbImage {
    let mut data: Vec<f32> = img.data.iter().map(|&v| v as f32).collect();
    let (mut w, h) = (img.width, img.height);
    if width != img.width {
        let taps: Vec<_> = (0..width).map(|i| aa_weights_f32(i, img.width, width)).collect();
        data = float_pass(&data, w, h, &taps, true);
        w = width;
    }
    if height != img.height {
        let taps: Vec<_> = (0..height).map(|i| aa_weights_f32(i, img.height, height)).collect();
        data = float_pass(&data, w, h, &taps, false);
    }
    RgbImage {
        width,
        height,
        data: data
            .into_iter()
            .map(|v| v.round_ties_even().clamp(0.0, 255.0) as u8)
            .collect(),
    }
}

/// torch's `nearest-exact` on uint8: source index `floor((i + 0.5) * scale)`, the scale a float32
/// `in / out` and the product in double (`nearest_neighbor_exact_compute_source_index`).
fn resize_nearest_exact(img: &RgbImage, width: usize, height: usize) -> RgbImage {
    let index = |i: usize, in_size: usize, out_size: usize| -> usize {
        let scale = in_size as f32 / out_size as f32;
        let src = ((i as f64 + 0.5) * scale as f64) as f32;
        (src.floor() as usize).min(in_size - 1)
    };
    let xs: Vec<usize> = (0..width).map(|x| index(x, img.width, width)).collect();
    let mut data = Vec::with_capacity(width * height * 3);
    for y in 0..height {
        let sy = index(y, img.height, height);
        for &sx in &xs {
            let p = (sy * img.width + sx) * 3;
            data.extend_from_slice(&img.data[p..p + 3]);
        }
    }
    RgbImage { width, height, data }
}

/// `TorchvisionBackend.center_crop`: where the crop is larger than the image, zero padding of half the
/// difference on the left and top (rounded down) and the rest on the right and bottom; then the
/// window at `int((size - crop) / 2)`.
pub fn center_crop(img: &RgbImage, crop_h: usize, crop_w: usize) -> RgbImage {
    let mut img = img.clone();
    if crop_w > img.width || crop_h > img.height {
        let left = crop_w.saturating_sub(img.width) / 2;
        let top = crop_h.saturating_sub(img.height) / 2;
        let (nw, nh) = (img.width.max(crop_w), img.height.max(crop_h));
        let mut data = vec![0u8; nw * nh * 3];
        for y in 0..img.height {
            let dst = ((y + top) * nw + left) * 3;
            data[dst..dst + img.width * 3].copy_from_slice(&img.data[y * img.width * 3..(y + 1) * img.width * 3]);
        }
        img = RgbImage {
            width: nw,
            height: nh,
            data,
        };
        if (nw, nh) == (crop_w, crop_h) {
            return img;
        }
    }
    let top = (img.height - crop_h) / 2;
    let left = (img.width - crop_w) / 2;
    let mut data = Vec::with_capacity(crop_h * crop_w * 3);
    for y in top..top + crop_h {
        let row = (y * img.width + left) * 3;
        data.extend_from_slice(&img.data[row..row + crop_w * 3]);
    }
    RgbImage {
        width: crop_w,
        height: crop_h,
        data,
    }
}

/// `TorchvisionBackend.rescale_and_normalize` on a uint8 image, channel-first (3, height, width) out:
/// with both steps the mean and std are divided by the rescale factor first (`torch.tensor(mean) *
/// (1 / rescale_factor)` in float32) and the bytes normalised by them; rescaling alone multiplies by
/// the factor in float32.
pub fn rescale_and_normalize(
    img: &RgbImage,
    do_rescale: bool,
    rescale_factor: f64,
    do_normalize: bool,
    mean: [f32; 3],
    std: [f32; 3],
) -> Vec<f32> {
    let (mean, std) = if do_rescale && do_normalize {
        let inv = (1.0 / rescale_factor) as f32;
        (mean.map(|m| m * inv), std.map(|s| s * inv))
    } else {
        (mean, std)
    };
    let n = img.width * img.height;
    let mut out = vec![0f32; 3 * n];
    for c in 0..3 {
        for i in 0..n {
            let v = img.data[i * 3 + c] as f32;
            out[c * n + i] = if do_normalize {
                (v - mean[c]) / std[c]
            } else if do_rescale {
                v * rescale_factor as f32
            } else {
                v
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row of distinct pixels.
    fn ramp(w: usize) -> RgbImage {
        let data = (0..w).flat_map(|x| [x as u8, 100 + x as u8, 200 + x as u8]).collect();
        RgbImage::new(w, 1, data).unwrap()
    }

    #[test]
    fn fixed_point_weights_sum_to_one_unit() {
        for (i, o) in [(64, 16), (5, 16), (48, 9), (1333, 800), (7, 1)] {
            for f in [Filter::Linear, Filter::Cubic] {
                let axis = fixed_axis(i, o, f);
                assert!(
                    (14..=22).contains(&axis.precision),
                    "{i}->{o}: precision {}",
                    axis.precision
                );
                for (_, w) in &axis.taps {
                    let sum: i64 = w.iter().map(|&v| v as i64).sum();
                    // Each weight rounds on its own, so the sum is within a few units of 1 << precision.
                    assert!(
                        (sum - (1i64 << axis.precision)).abs() <= w.len() as i64,
                        "{i}->{o}: {sum}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_flat_image_stays_flat() {
        let img = RgbImage::new(9, 7, [10u8, 128, 250].repeat(63)).unwrap();
        for mode in [
            Interpolation::NearestExact,
            Interpolation::Bilinear,
            Interpolation::Bicubic,
        ] {
            for k in [CpuKernels::Avx2, CpuKernels::Default] {
                let r = resize(&img, 4, 13, mode, k);
                assert_eq!((r.width, r.height), (4, 13));
                assert!(r.data.chunks(3).all(|p| p == [10, 128, 250]), "{mode:?} {k:?}");
            }
        }
    }

    #[test]
    fn nearest_exact_picks_centres() {
        // 4 -> 2: sources floor((i + 0.5) * 2) = 1 and 3.
        let img = ramp(4);
        let r = resize(&img, 2, 1, Interpolation::NearestExact, CpuKernels::Avx2);
        assert_eq!(&r.data[..3], &img.data[3..6]);
        assert_eq!(&r.data[3..], &img.data[9..12]);
    }

    #[test]
    fn center_crop_pads_right_and_bottom_with_the_odd_pixel() {
        let img = RgbImage::new(2, 1, vec![1, 2, 3, 4, 5, 6]).unwrap();
        let c = center_crop(&img, 4, 5);
        assert_eq!((c.height, c.width), (4, 5));
        // Top padding (4 - 1) / 2 = 1 row, left (5 - 2) / 2 = 1 column.
        assert_eq!(&c.data[(5 + 1) * 3..(5 + 3) * 3], &[1, 2, 3, 4, 5, 6]);
        let ones = c.data.iter().filter(|&&v| v != 0).count();
        assert_eq!(ones, 6);
    }

    #[test]
    fn unsupported_filters_say_why() {
        for r in [Resample::Box, Resample::Hamming, Resample::Mks2013] {
            let e = Interpolation::from_resample(r).unwrap_err();
            assert!(e.contains("PIL backend"), "{e}");
        }
        assert_eq!(
            Interpolation::from_resample(Resample::Lanczos),
            Ok(Interpolation::Bicubic)
        );
        assert_eq!(
            Interpolation::from_resample(Resample::Nearest),
            Ok(Interpolation::NearestExact)
        );
    }
}
