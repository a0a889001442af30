//! `PIL.Image.resize` on 8-bit RGB images, ported from Pillow 13's `libImaging/Resample.c` (the
//! convolution filters, their 8-bit fixed-point rounding and the order of the two passes) and
//! `libImaging/Geometry.c` (NEAREST, an affine scale), so that every output byte equals Pillow's.

use super::RgbImage;

/// PIL's resampling filters, by the codes `preprocessor_config.json` stores in `resample`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    Nearest,
    Lanczos,
    Bilinear,
    Bicubic,
    Box,
    Hamming,
    Mks2013,
    Mks2021,
}

impl Resample {
    /// `PIL.Image.Resampling` codes: NEAREST 0, LANCZOS 1, BILINEAR 2, BICUBIC 3, BOX 4, HAMMING 5,
    /// MKS2013 6, MKS2021 7.
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            0 => Resample::Nearest,
            1 => Resample::Lanczos,
            2 => Resample::Bilinear,
            3 => Resample::Bicubic,
            4 => Resample::Box,
            5 => Resample::Hamming,
            6 => Resample::Mks2013,
            7 => Resample::Mks2021,
            _ => return None,
        })
    }

    /// The filter and its support, for the convolution filters.
    fn filter(self) -> (fn(f64) -> f64, f64) {
        match self {
            Resample::Nearest | Resample::Box => (box_filter, 0.5),
            Resample::Bilinear => (bilinear_filter, 1.0),
            Resample::Hamming => (hamming_filter, 1.0),
            Resample::Bicubic => (bicubic_filter, 2.0),
            Resample::Lanczos => (lanczos_filter, 3.0),
            Resample::Mks2013 => (mks_2013_filter, 2.5),
            Resample::Mks2021 => (mks_2021_filter, 4.5),
        }
    }
}

fn box_filter(x: f64) -> f64 {
    if x > -0.5 && x <= 0.5 { 1.0 } else { 0.0 }
}

fn bilinear_filter(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

fn hamming_filter(x: f64) -> f64 {
    let x = x.abs();
    if x == 0.0 {
        1.0
    } else if x >= 1.0 {
        0.0
    } else {
        let x = x * std::f64::consts::PI;
        // Pillow writes these constants as C floats.
        x.sin() / x * (0.54f32 as f64 + 0.46f32 as f64 * x.cos())
    }
}

fn bicubic_filter(x: f64) -> f64 {
    // Pillow's bicubic uses a = -0.5.
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn sinc_filter(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

fn lanczos_filter(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc_filter(x) * sinc_filter(x / 3.0)
    } else {
        0.0
    }
}

fn mks_2013_filter(x: f64) -> f64 {
    let x = x.abs();
    if x < 0.5 {
        17.0 / 16.0 - 7.0 / 4.0 * x.powi(2)
    } else if x < 1.5 {
        (1.0 - x) * (7.0 / 4.0 - x)
    } else if x < 2.5 {
        -1.0 / 8.0 * (x - 5.0 / 2.0).powi(2)
    } else {
        0.0
    }
}

fn mks_2021_filter(x: f64) -> f64 {
    let x = x.abs();
    if x < 0.5 {
        577.0 / 576.0 - 239.0 / 144.0 * x.powi(2)
    } else if x < 1.5 {
        35.0 / 36.0 * (x - 1.0) * (x - 239.0 / 140.0)
    } else if x < 2.5 {
        1.0 / 6.0 * (x - 2.0) * (65.0 / 24.0 - x)
    } else if x < 3.5 {
        1.0 / 36.0 * (x - 3.0) * (x - 15.0 / 4.0)
    } else if x < 4.5 {
        -1.0 / 288.0 * (x - 9.0 / 2.0).powi(2)
    } else {
        0.0
    }
}

/// Pillow keeps 8-bit filter weights as fixed point with this many fraction bits.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// For each output pixel along one axis: the first input pixel, the number of input pixels, and
/// their fixed-point weights (`precompute_coeffs` + `normalize_coeffs_8bpc`).
struct Coeffs {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

fn precompute_coeffs(in_size: usize, out_size: usize, filter: fn(f64) -> f64, support: f64) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = support * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) cast truncates toward zero; both ends are then clamped to the image.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = filter((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for (x, kx) in k.iter().enumerate().take(n) {
            let w = if ww != 0.0 { kx / ww } else { *kx };
            let fixed = w * (1u32 << PRECISION_BITS) as f64;
            weights[xx * ksize + x] = if w < 0.0 {
                (-0.5 + fixed) as i32
            } else {
                (0.5 + fixed) as i32
            };
        }
        bounds.push((xmin, n));
    }
    Coeffs { ksize, bounds, weights }
}

/// Pillow's `clip8`: the fixed-point sum back to a byte, clamped.
fn clip8(ss: i64) -> u8 {
    (ss >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes an RGB image to `width` x `height` exactly as `PIL.Image.resize(size, resample)` does
/// (no `box`, no `reducing_gap`).
pub fn resize(img: &RgbImage, width: usize, height: usize, resample: Resample) -> RgbImage {
    if img.width == width && img.height == height {
        return img.clone();
    }
    if resample == Resample::Nearest {
        return resize_nearest(img, width, height);
    }
    let (filter, support) = resample.filter();
    let (need_horizontal, need_vertical) = (width != img.width, height != img.height);
    // Pillow runs the vertical pass first where the height shrinks by more than twice as many
    // pixels as the width; each pass rounds to bytes.
    let (dh, dw) = (img.height as i64 - height as i64, img.width as i64 - width as i64);
    let horizontal_first = !(dh > 0 && dh > dw * 2);
    let horizontal = |im: &RgbImage| resample_horizontal(im, &precompute_coeffs(img.width, width, filter, support));
    let vertical = |im: &RgbImage| resample_vertical(im, &precompute_coeffs(img.height, height, filter, support));
    let mut cur = img.clone();
    if horizontal_first {
        if need_horizontal {
            cur = horizontal(&cur);
        }
        if need_vertical {
            cur = vertical(&cur);
        }
    } else {
        if need_vertical {
            cur = vertical(&cur);
        }
        if need_horizontal {
            cur = horizontal(&cur);
        }
    }
    cur
}

fn resample_horizontal(im: &RgbImage, c: &Coeffs) -> RgbImage {
    let width = c.bounds.len();
    let mut out = vec![0u8; width * im.height * 3];
    for y in 0..im.height {
        let row = &im.data[y * im.width * 3..(y + 1) * im.width * 3];
        for (xx, &(xmin, n)) in c.bounds.iter().enumerate() {
            let k = &c.weights[xx * c.ksize..xx * c.ksize + n];
            let mut ss = [1i64 << (PRECISION_BITS - 1); 3];
            for (x, &w) in k.iter().enumerate() {
                let p = &row[(xmin + x) * 3..(xmin + x) * 3 + 3];
                for ch in 0..3 {
                    ss[ch] += p[ch] as i64 * w as i64;
                }
            }
            for ch in 0..3 {
                out[(y * width + xx) * 3 + ch] = clip8(ss[ch]);
            }
        }
    }
    RgbImage {
        width,
        height: im.height,
        data: out,
    }
}

fn resample_vertical(im: &RgbImage, c: &Coeffs) -> RgbImage {
    let (w, height) = (im.width, c.bounds.len());
    let mut out = vec![0u8; w * height * 3];
    for (yy, &(ymin, n)) in c.bounds.iter().enumerate() {
        let k = &c.weights[yy * c.ksize..yy * c.ksize + n];
        for xx in 0..w {
            let mut ss = [1i64 << (PRECISION_BITS - 1); 3];
            for (y, &wt) in k.iter().enumerate() {
                let p = &im.data[((ymin + y) * w + xx) * 3..((ymin + y) * w + xx) * 3 + 3];
                for ch in 0..3 {
                    ss[ch] += p[ch] as i64 * wt as i64;
                }
            }
            for ch in 0..3 {
                out[(yy * w + xx) * 3 + ch] = clip8(ss[ch]);
            }
        }
    }
    RgbImage {
        width: w,
        height,
        data: out,
    }
}

/// NEAREST: Pillow resizes with an affine scale (`ImagingScaleAffine`), stepping the source
/// coordinate by repeated addition from the first pixel's centre.
fn resize_nearest(img: &RgbImage, width: usize, height: usize) -> RgbImage {
    let coord = |v: f64| if v < 0.0 { -1 } else { v as i64 };
    let tab = |in_size: usize, out_size: usize| -> Vec<Option<usize>> {
        let a = in_size as f64 / out_size as f64;
        let mut o = a * 0.5;
        (0..out_size)
            .map(|_| {
                let i = coord(o);
                o += a;
                (i >= 0 && (i as usize) < in_size).then_some(i as usize)
            })
            .collect()
    };
    let xs = tab(img.width, width);
    let ys = tab(img.height, height);
    let mut data = vec![0u8; width * height * 3];
    for (y, yi) in ys.iter().enumerate() {
        let Some(yi) = yi else { continue };
        for (x, xi) in xs.iter().enumerate() {
            let Some(xi) = xi else { continue };
            let src = (yi * img.width + xi) * 3;
            data[(y * width + x) * 3..(y * width + x) * 3 + 3].copy_from_slice(&img.data[src..src + 3]);
        }
    }
    RgbImage { width, height, data }
}
