//! The two backends of transformers' image processors, and which one transformers picks.
//!
//! transformers 5.17 writes each image processor twice: `XImageProcessor` on torchvision (the one
//! called "fast" before 5.0) and `XImageProcessorPil` on PIL and NumPy. They resize differently (torch's
//! kernels against Pillow's: a grey level here and there, 0.008 to 0.018 after normalising; Lanczos,
//! which torchvision 0.26 lacks, becomes bicubic), and the torchvision one pads a centre crop larger
//! than the image on the other side. `AutoImageProcessor.from_pretrained`,
//! `AutoProcessor` and the pipelines choose between them by `_resolve_backend`
//! (models/auto/image_processing_auto.py), in this order:
//!
//! 1. `backend="pil"` or `backend="torchvision"` passed by the caller;
//! 2. else the deprecated `use_fast=True` (torchvision) or `use_fast=False` (PIL);
//! 3. else PIL for the processors that resize with Lanczos (Chameleon, Flava, Idefics3, SmolVLM)
//!    where torchvision is older than 0.27;
//! 4. else torchvision where it is installed, PIL where it is not. A torchvision choice without
//!    torchvision falls back to PIL with a warning.
//!
//! The folder does not take part: both classes save the same `image_processor_type`, the base name
//! (`PilBackend.to_dict` drops the `Pil` suffix), and loading strips a legacy `Fast` suffix, maps a
//! hand-written `...Pil` name to the same class pair and then applies the rule above; a `use_fast` key
//! in preprocessor_config.json is ignored and a `backend` key breaks loading. Calling a class
//! directly fixes the backend (`ViTImageProcessorPil.from_pretrained`), and so does naming it with
//! `ViTImageProcessor`, which is the torchvision class (PIL where torchvision is missing).
//!
//! hwcov therefore computes what a user with torchvision 0.26 installed gets by default: the
//! torchvision backend, unless the caller asks for PIL ([`Backend::default_for`]).

use std::fmt;
use std::str::FromStr;

use super::pil::{self, Resample};
use super::torchvision::{self, CpuKernels, Interpolation};
use super::{RgbImage, center_crop};

/// transformers' image processor backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `XImageProcessorPil`: Pillow's resize, NumPy's rescale and normalise.
    Pil,
    /// `XImageProcessor`: torchvision's resize on torch's CPU kernels, fused rescale and normalise.
    Torchvision,
}

/// The processors that transformers 5.17 keeps on PIL by default where torchvision is older than
/// 0.27, which has no Lanczos (`_LANCZOS_IMAGE_PROCESSORS`).
const PIL_BY_DEFAULT: [&str; 4] = [
    "ChameleonImageProcessor",
    "FlavaImageProcessor",
    "Idefics3ImageProcessor",
    "SmolVLMImageProcessor",
];

impl Backend {
    /// The backend `AutoImageProcessor.from_pretrained` picks without `backend` or `use_fast` where
    /// torchvision 0.26 is installed, for the processor class named `class_name` (its base name, as
    /// `image_processor_type` records it; a `Fast` or `Pil` suffix is ignored as transformers ignores it).
    pub fn default_for(class_name: &str) -> Backend {
        let base = class_name
            .strip_suffix("Fast")
            .or_else(|| class_name.strip_suffix("Pil"))
            .unwrap_or(class_name);
        if PIL_BY_DEFAULT.contains(&base) {
            Backend::Pil
        } else {
            Backend::Torchvision
        }
    }

    /// The name transformers gives the backend (`backend=` and the processor's `.backend`).
    pub fn name(self) -> &'static str {
        match self {
            Backend::Pil => "pil",
            Backend::Torchvision => "torchvision",
        }
    }

    /// Resizes to `width` x `height` with the PIL filter `resample` (a processor's `resample`), as
    /// this backend's `resize` does; `kernels` matter only to torchvision. An error says why the
    /// backend cannot use the filter.
    pub fn resize(
        self,
        img: &RgbImage,
        width: usize,
        height: usize,
        resample: Resample,
        kernels: CpuKernels,
    ) -> Result<RgbImage, String> {
        Ok(match self {
            Backend::Pil => pil::resize(img, width, height, resample),
            Backend::Torchvision => {
                torchvision::resize(img, width, height, Interpolation::from_resample(resample)?, kernels)
            }
        })
    }

    /// The backend's `center_crop` (zero padding where the image is smaller than the crop).
    pub fn center_crop(self, img: &RgbImage, crop_h: usize, crop_w: usize) -> RgbImage {
        match self {
            Backend::Pil => center_crop(img, crop_h, crop_w),
            Backend::Torchvision => torchvision::center_crop(img, crop_h, crop_w),
        }
    }

    /// Rescales and normalises as the backend does: channel-first (3, height, width) values.
    pub fn rescale_and_normalize(
        self,
        img: &RgbImage,
        do_rescale: bool,
        rescale_factor: f64,
        do_normalize: bool,
        mean: [f32; 3],
        std: [f32; 3],
    ) -> Vec<f32> {
        match self {
            Backend::Pil => pil_rescale_and_normalize(img, do_rescale, rescale_factor, do_normalize, mean, std),
            Backend::Torchvision => {
                torchvision::rescale_and_normalize(img, do_rescale, rescale_factor, do_normalize, mean, std)
            }
        }
    }
}

/// `PilBackend.rescale` then `normalize`: the bytes times the factor in float64, stored as float32,
/// then `(x - mean) / std` in float32.
fn pil_rescale_and_normalize(
    img: &RgbImage,
    do_rescale: bool,
    rescale_factor: f64,
    do_normalize: bool,
    mean: [f32; 3],
    std: [f32; 3],
) -> Vec<f32> {
    let n = img.width * img.height;
    let mut out = vec![0f32; 3 * n];
    for c in 0..3 {
        for i in 0..n {
            let v = img.data[i * 3 + c];
            let mut x = if do_rescale {
                (v as f64 * rescale_factor) as f32
            } else {
                v as f32
            };
            if do_normalize {
                x = (x - mean[c]) / std[c];
            }
            out[c * n + i] = x;
        }
    }
    out
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pil" => Ok(Backend::Pil),
            "torchvision" => Ok(Backend::Torchvision),
            other => Err(format!("unknown image backend `{other}`: use pil or torchvision")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchvision_unless_the_class_keeps_to_pil() {
        for name in [
            "ViTImageProcessor",
            "ViTImageProcessorPil",
            "ViTImageProcessorFast",
            "CLIPImageProcessor",
            "DetrImageProcessor",
            "VideoMAEImageProcessor",
            "LlavaNextImageProcessor",
        ] {
            assert_eq!(Backend::default_for(name), Backend::Torchvision, "{name}");
        }
        for name in [
            "Idefics3ImageProcessor",
            "SmolVLMImageProcessorFast",
            "FlavaImageProcessorPil",
        ] {
            assert_eq!(Backend::default_for(name), Backend::Pil, "{name}");
        }
    }

    #[test]
    fn names_round_trip() {
        for b in [Backend::Pil, Backend::Torchvision] {
            assert_eq!(b.name().parse::<Backend>(), Ok(b));
        }
        let e = "fast".parse::<Backend>().unwrap_err();
        assert!(e.contains("pil or torchvision"), "{e}");
    }
}
