//! Image files to `pixel_values` (and DETR's `pixel_mask`), identical to transformers' image processors
//! (ViT, CLIP, DETR, VideoMAE; LLaVA and LLaVA-NeXT on PIL only) with either of their backends ([`Backend`]): torchvision
//! (`ViTImageProcessor`, ...), which transformers picks where torchvision is installed and hwcov
//! therefore uses by default, or PIL (`ViTImageProcessorPil`, ...), which it picks where torchvision is
//! not (see `backend.rs` for transformers' rule, `torchvision.rs` and `pil.rs` for the two).
//!
//! A file is read as `transformers.image_utils.load_image` reads a path: decoded (JPEGs exactly as
//! libjpeg-turbo decodes them for PIL, see `jpeg.rs`), turned by its EXIF orientation, and converted to
//! 8-bit RGB as PIL's `convert("RGB")` converts:
//!
//! - grayscale is repeated over the three channels; alpha is dropped (not composited);
//! - palette images take their palette colours;
//! - 16-bit RGB, RGBA and gray+alpha PNGs keep the high byte of each sample (PIL reads them so);
//! - 16-bit grayscale PNGs are clipped at 255, not scaled (PIL's `I;16` to `RGB` conversion), so
//!   most of such an image turns white, as it does in transformers.
//!
//! Both backends get images read so: the pipelines read files with `load_image` and hand PIL images to
//! either backend, which the torchvision one turns into tensors with `pil_to_tensor`. (Handed a path
//! string, transformers' torchvision backend decodes it with `torchvision.io.decode_image` instead:
//! the same pixels for 8-bit PNGs and JPEGs, but no EXIF orientation, 16-bit PNGs kept at 16 bits and
//! every frame of a GIF.)
//!
//! The processor is the one transformers' `AutoImageProcessor` picks for the model folder: the
//! `image_processor` of `processor_config.json`, else `preprocessor_config.json` (its
//! `image_processor_type`, or a legacy `feature_extractor_type`), else the `model_type` of config.json.
//! Keys the file leaves out (or sets to null) take the processor class's defaults.

mod backend;
mod jpeg;
mod pil;
pub mod torchvision;

use std::path::{Path, PathBuf};

use hwcov_core::anyres::select_best_resolution;
use hwcov_core::error::read_json;
use hwcov_core::{Error, HostTensor, NamedTensors, Result};
use serde_json::Value;

pub use backend::Backend;
pub use pil::{Resample, resize};
pub use torchvision::CpuKernels;

/// An 8-bit RGB image, rows top to bottom, pixels interleaved (height, width, 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl RgbImage {
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Result<Self> {
        if data.len() != width * height * 3 {
            return Err(Error::Usage(format!(
                "an RGB image of {width}x{height} needs {} bytes, got {}",
                width * height * 3,
                data.len()
            )));
        }
        Ok(RgbImage { width, height, data })
    }
}

/// The most pixels an image may declare. PIL refuses an image of more than twice its
/// `MAX_IMAGE_PIXELS` (89,478,485) as a decompression bomb (`DecompressionBombError`), so
/// transformers' `load_image` never reads one; hwcov refuses it from the header, before decoding.
pub const MAX_PIXELS: u64 = 2 * 89_478_485;

/// Refuses dimensions of more than [`MAX_PIXELS`] pixels, naming the file.
pub fn check_pixels(path: &Path, width: u64, height: u64) -> Result<()> {
    let pixels = width.saturating_mul(height);
    if pixels > MAX_PIXELS {
        return Err(Error::format(
            path,
            format!(
                "the image declares {width}x{height} = {pixels} pixels, more than the {MAX_PIXELS} hwcov \
                 decodes (PIL's decompression bomb limit)"
            ),
        ));
    }
    Ok(())
}

/// Reads an image file as transformers' `load_image` does (see the module documentation).
pub fn load_image(path: &Path) -> Result<RgbImage> {
    let bytes = hwcov_core::error::read_file(path)?;
    decode_image(path, &bytes)
}

/// Decodes the bytes of an image file; `path` names it in errors.
pub fn decode_image(path: &Path, bytes: &[u8]) -> Result<RgbImage> {
    use ::image::ImageDecoder;
    if bytes.is_empty() {
        return Err(Error::format(path, "the image file is empty"));
    }
    let reader = ::image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    if reader.format().is_none() {
        return Err(Error::format(
            path,
            "not an image format hwcov reads (PNG, JPEG or GIF)",
        ));
    }
    let format = reader.format();
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| Error::format(path, format!("cannot decode the image: {e}")))?;
    let orientation = decoder
        .orientation()
        .map_err(|e| Error::format(path, format!("cannot read the image's EXIF orientation: {e}")))?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(Error::format(path, format!("the image is empty ({w}x{h} pixels)")));
    }
    check_pixels(path, w.into(), h.into())?;
    let rgb = if format == Some(::image::ImageFormat::Jpeg) {
        // libjpeg-exact pixels; the image crate's decoder only reads the orientation.
        let img = jpeg::decode(path, bytes)?;
        ::image::RgbImage::from_raw(img.width as u32, img.height as u32, img.data)
            .ok_or_else(|| Error::format(path, "the decoded pixels do not fill the image"))?
    } else {
        let decoded = ::image::DynamicImage::from_decoder(decoder)
            .map_err(|e| Error::format(path, format!("cannot decode the image (truncated or corrupt?): {e}")))?;
        to_rgb_as_pil(path, decoded)?
    };
    let mut img = ::image::DynamicImage::ImageRgb8(rgb);
    img.apply_orientation(orientation);
    let rgb = img.into_rgb8();
    let (width, height) = (rgb.width() as usize, rgb.height() as usize);
    Ok(RgbImage {
        width,
        height,
        data: rgb.into_raw(),
    })
}

/// The decoded pixels as PIL's `convert("RGB")` makes them of the mode PIL opens the file in.
pub(crate) fn to_rgb_as_pil(path: &Path, img: ::image::DynamicImage) -> Result<::image::RgbImage> {
    use ::image::DynamicImage as D;
    let (w, h) = (img.width(), img.height());
    let from_gray = |v: Vec<u8>| -> Vec<u8> { v.into_iter().flat_map(|g| [g, g, g]).collect() };
    let data: Vec<u8> = match img {
        D::ImageRgb8(b) => b.into_raw(),
        D::ImageRgba8(b) => b.into_raw().chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        D::ImageLuma8(b) => from_gray(b.into_raw()),
        D::ImageLumaA8(b) => from_gray(b.into_raw().chunks_exact(2).map(|p| p[0]).collect()),
        // PIL opens a 16-bit grayscale PNG as mode I;16 and converts it to RGB by clipping.
        D::ImageLuma16(b) => from_gray(b.into_raw().into_iter().map(|v| v.min(255) as u8).collect()),
        // 16-bit gray+alpha, RGB and RGBA: PIL keeps the high byte of each sample.
        D::ImageLumaA16(b) => from_gray(b.into_raw().chunks_exact(2).map(|p| (p[0] >> 8) as u8).collect()),
        D::ImageRgb16(b) => b.into_raw().into_iter().map(|v| (v >> 8) as u8).collect(),
        D::ImageRgba16(b) => b
            .into_raw()
            .chunks_exact(4)
            .flat_map(|p| [(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8])
            .collect(),
        other => {
            return Err(Error::format(
                path,
                format!("unsupported pixel format {:?}", other.color()),
            ));
        }
    };
    ::image::RgbImage::from_raw(w, h, data)
        .ok_or_else(|| Error::format(path, "the decoded pixels do not fill the image"))
}

/// Sizes as transformers' `SizeDict` holds them (`size`, `crop_size`, `pad_size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SizeDict {
    pub height: Option<usize>,
    pub width: Option<usize>,
    pub shortest_edge: Option<usize>,
    pub longest_edge: Option<usize>,
    pub max_height: Option<usize>,
    pub max_width: Option<usize>,
}

/// The image processor classes hwcov ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessorKind {
    Vit,
    Clip,
    Detr,
    VideoMae,
    /// CLIP's steps, with an optional pad to a square of the mean colour first.
    Llava,
    /// "anyres": the image resized and padded to the best grid resolution, cut into tiles, after
    /// the whole image resized to one tile (`image_grid_pinpoints`).
    LlavaNext,
}

impl ProcessorKind {
    /// The class by its name in `image_processor_type` (with or without the `Pil`/`Fast` suffix).
    pub fn from_class_name(name: &str) -> Option<Self> {
        let base = name
            .strip_suffix("Fast")
            .or_else(|| name.strip_suffix("Pil"))
            .unwrap_or(name);
        Some(match base {
            "ViTImageProcessor" => ProcessorKind::Vit,
            "CLIPImageProcessor" => ProcessorKind::Clip,
            "DetrImageProcessor" => ProcessorKind::Detr,
            "VideoMAEImageProcessor" => ProcessorKind::VideoMae,
            "LlavaImageProcessor" => ProcessorKind::Llava,
            "LlavaNextImageProcessor" => ProcessorKind::LlavaNext,
            _ => return None,
        })
    }

    /// `AutoImageProcessor`'s choice for a config.json `model_type` (its IMAGE_PROCESSOR_MAPPING).
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        Some(match model_type {
            "vit" => ProcessorKind::Vit,
            "clip" | "xclip" => ProcessorKind::Clip,
            "llava" => ProcessorKind::Llava,
            "llava_next" => ProcessorKind::LlavaNext,
            "detr" => ProcessorKind::Detr,
            "videomae" => ProcessorKind::VideoMae,
            _ => return None,
        })
    }

    /// The backend that computes the pixels unless asked otherwise: transformers' choice with
    /// torchvision installed, except for LLaVA's processors, whose torchvision backend hwcov does not
    /// reproduce yet (their PIL backend it does, exactly).
    pub fn default_backend(self) -> Backend {
        match self {
            ProcessorKind::Llava | ProcessorKind::LlavaNext => Backend::Pil,
            _ => Backend::default_for(self.class_name()),
        }
    }

    pub fn class_name(self) -> &'static str {
        match self {
            ProcessorKind::Vit => "ViTImageProcessor",
            ProcessorKind::Clip => "CLIPImageProcessor",
            ProcessorKind::Detr => "DetrImageProcessor",
            ProcessorKind::VideoMae => "VideoMAEImageProcessor",
            ProcessorKind::Llava => "LlavaImageProcessor",
            ProcessorKind::LlavaNext => "LlavaNextImageProcessor",
        }
    }
}

// transformers' constants (Python floats, cast to float32 when an image is normalised).
const IMAGENET_STANDARD: [f64; 3] = [0.5, 0.5, 0.5];
const IMAGENET_DEFAULT_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
const IMAGENET_DEFAULT_STD: [f64; 3] = [0.229, 0.224, 0.225];
const OPENAI_CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const OPENAI_CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// An image processor: the class's defaults overridden by its preprocessor config.
#[derive(Debug, Clone)]
pub struct ImageProcessor {
    pub kind: ProcessorKind,
    /// The file the settings came from (for errors).
    pub source: PathBuf,
    pub do_resize: bool,
    pub size: SizeDict,
    pub resample: Resample,
    pub do_center_crop: bool,
    pub crop_size: Option<SizeDict>,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    pub do_pad: bool,
    pub pad_size: Option<SizeDict>,
    /// LlavaImageProcessor's padding colour: `int(mean * 255)` of each channel.
    pub background_color: [u8; 3],
    /// LlavaNextImageProcessor's grid resolutions, (height, width).
    pub image_grid_pinpoints: Vec<(usize, usize)>,
    /// Which of transformers' backends computes the pixels (default: as transformers picks with
    /// torchvision installed, [`Backend::default_for`]).
    pub backend: Backend,
    /// torch's CPU kernels the torchvision backend resizes as (default: this machine's).
    pub cpu_kernels: CpuKernels,
}

/// `LlavaNextImageProcessor.image_grid_pinpoints` where the config has none.
pub const DEFAULT_IMAGE_GRID_PINPOINTS: [(usize, usize); 5] =
    [(336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)];

impl ImageProcessor {
    /// The image processor of a model folder, as `AutoImageProcessor.from_pretrained` picks it.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let processor = dir.join("processor_config.json");
        if processor.is_file()
            && let Some(nested) = read_json(&processor)?.get("image_processor")
        {
            return Self::from_config(&processor, nested, dir);
        }
        let path = dir.join("preprocessor_config.json");
        if !path.is_file() {
            return Err(Error::io(
                &path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the model folder has no preprocessor_config.json (the image processor's settings)",
                ),
            ));
        }
        let json = read_json(&path)?;
        Self::from_config(&path, &json, dir)
    }

    /// An image processor from its JSON settings; `path` names the file in errors, `dir` is searched
    /// for config.json when the settings do not name their class.
    pub fn from_config(path: &Path, json: &Value, dir: &Path) -> Result<Self> {
        if !json.is_object() {
            return Err(Error::format(path, "must hold a JSON object"));
        }
        let kind = processor_kind(path, json, dir)?;
        let cfg = Settings { path, json };
        let (resample, mean, std, size, default_to_square, crop, do_center_crop) = match kind {
            ProcessorKind::Vit => (
                Resample::Bilinear,
                IMAGENET_STANDARD,
                IMAGENET_STANDARD,
                serde_json::json!({"height": 224, "width": 224}),
                true,
                None,
                false,
            ),
            ProcessorKind::Clip | ProcessorKind::Llava | ProcessorKind::LlavaNext => (
                Resample::Bicubic,
                OPENAI_CLIP_MEAN,
                OPENAI_CLIP_STD,
                serde_json::json!({"shortest_edge": 224}),
                false,
                Some(serde_json::json!({"height": 224, "width": 224})),
                true,
            ),
            ProcessorKind::Detr => (
                Resample::Bilinear,
                IMAGENET_DEFAULT_MEAN,
                IMAGENET_DEFAULT_STD,
                serde_json::json!({"shortest_edge": 800, "longest_edge": 1333}),
                false,
                None,
                false,
            ),
            ProcessorKind::VideoMae => (
                Resample::Bilinear,
                IMAGENET_STANDARD,
                IMAGENET_STANDARD,
                serde_json::json!({"shortest_edge": 224}),
                false,
                Some(serde_json::json!({"height": 224, "width": 224})),
                true,
            ),
        };
        let default_to_square = cfg.bool("default_to_square")?.unwrap_or(default_to_square);
        let size = match kind {
            ProcessorKind::Detr => detr_size(&cfg, default_to_square)?,
            _ => match cfg.get("size") {
                Some(v) => parse_size(path, "size", v, default_to_square)?,
                None => parse_size(path, "size", &size, default_to_square)?,
            },
        };
        let crop_size = match cfg.get("crop_size") {
            Some(v) => Some(parse_size(path, "crop_size", v, true)?),
            None => crop.map(|c| parse_size(path, "crop_size", &c, true)).transpose()?,
        };
        let resample = match cfg.get("resample") {
            None => resample,
            Some(v) => v.as_i64().and_then(Resample::from_code).ok_or_else(|| {
                Error::config(
                    path,
                    "resample",
                    format!("{v} is not a PIL resampling filter code (0 to 5)"),
                )
            })?,
        };
        // DETR's legacy `pad_and_return_pixel_mask` stands for do_pad.
        let do_pad = match cfg.bool("do_pad")? {
            Some(b) => b,
            None => cfg
                .bool("pad_and_return_pixel_mask")?
                .unwrap_or(matches!(kind, ProcessorKind::Detr | ProcessorKind::LlavaNext)),
        };
        let mean64 = cfg.triple_f64("image_mean")?.unwrap_or(mean);
        // Python's int() of mean * 255, in f64 as the JSON holds it.
        let background_color = mean64.map(|m| (m * 255.0).clamp(0.0, 255.0) as u8);
        let image_grid_pinpoints = match cfg.get("image_grid_pinpoints") {
            None => DEFAULT_IMAGE_GRID_PINPOINTS.to_vec(),
            Some(v) => parse_pinpoints(path, v)?,
        };
        let processor = ImageProcessor {
            kind,
            source: path.to_path_buf(),
            do_resize: cfg.bool("do_resize")?.unwrap_or(true),
            size,
            resample,
            do_center_crop: cfg.bool("do_center_crop")?.unwrap_or(do_center_crop),
            crop_size,
            do_rescale: cfg.bool("do_rescale")?.unwrap_or(true),
            rescale_factor: match cfg.get("rescale_factor") {
                None => 1.0 / 255.0,
                Some(v) => v
                    .as_f64()
                    .ok_or_else(|| Error::config(path, "rescale_factor", format!("{v} is not a number")))?,
            },
            do_normalize: cfg.bool("do_normalize")?.unwrap_or(true),
            image_mean: mean64.map(|x| x as f32),
            image_std: cfg.triple("image_std")?.unwrap_or(std.map(|x| x as f32)),
            do_pad,
            pad_size: cfg
                .get("pad_size")
                .map(|v| parse_size(path, "pad_size", v, true))
                .transpose()?,
            background_color,
            image_grid_pinpoints,
            backend: kind.default_backend(),
            cpu_kernels: CpuKernels::current(),
        };
        processor.validate()?;
        Ok(processor)
    }

    /// The same processor computed with `backend` (as `backend=` of transformers' `from_pretrained`).
    pub fn with_backend(mut self, backend: Backend) -> Result<Self> {
        if backend == Backend::Torchvision && matches!(self.kind, ProcessorKind::Llava | ProcessorKind::LlavaNext) {
            return Err(Error::config(
                &self.source,
                "image_processor_type",
                format!(
                    "{} is reproduced on transformers' PIL backend only; use --image-backend pil",
                    self.kind.class_name()
                ),
            ));
        }
        self.backend = backend;
        Ok(self)
    }

    /// The checks of transformers' `validate_preprocess_arguments`, plus the size rules each
    /// resize path needs.
    fn validate(&self) -> Result<()> {
        let p = &self.source;
        if self.do_center_crop && self.kind != ProcessorKind::Detr {
            match self.crop_size {
                Some(SizeDict {
                    height: Some(h),
                    width: Some(w),
                    ..
                }) if h > 0 && w > 0 => {}
                _ => {
                    return Err(Error::config(
                        p,
                        "crop_size",
                        "do_center_crop needs a crop_size with a positive height and width",
                    ));
                }
            }
        }
        if self.do_normalize && self.image_std.contains(&0.0) {
            return Err(Error::config(p, "image_std", "must not hold a zero"));
        }
        if self.do_resize {
            let s = &self.size;
            let ok = match self.kind {
                ProcessorKind::Detr => {
                    (s.shortest_edge.is_some() && s.longest_edge.is_some())
                        || (s.max_height.is_some() && s.max_width.is_some())
                        || (s.height.is_some() && s.width.is_some())
                }
                _ => {
                    s.shortest_edge.is_some()
                        || (s.max_height.is_some() && s.max_width.is_some())
                        || (s.height.is_some() && s.width.is_some())
                }
            };
            let positive = [
                s.height,
                s.width,
                s.shortest_edge,
                s.longest_edge,
                s.max_height,
                s.max_width,
            ]
            .iter()
            .all(|v| v.is_none_or(|v| v > 0));
            if !ok || !positive {
                return Err(Error::config(
                    p,
                    "size",
                    format!(
                        "{} cannot resize to {s:?}: it takes height and width, shortest_edge{}, or max_height and max_width (all positive)",
                        self.kind.class_name(),
                        if self.kind == ProcessorKind::Detr {
                            " and longest_edge"
                        } else {
                            ""
                        }
                    ),
                ));
            }
        }
        Ok(())
    }

    /// One image, resized, cropped, rescaled and normalised: (3, height, width) channel-first.
    fn process_one(&self, img: &RgbImage) -> Result<Planar> {
        let b = self.backend;
        let mut img = img.clone();
        if self.kind == ProcessorKind::Llava && self.do_pad {
            img = pad_to_square(&img, self.background_color);
        }
        if self.do_resize {
            let (h, w) = self.output_size(img.height, img.width)?;
            img = b
                .resize(&img, w, h, self.resample, self.cpu_kernels)
                .map_err(|e| Error::config(&self.source, "resample", e))?;
        }
        if self.do_center_crop
            && self.kind != ProcessorKind::Detr
            && let Some(SizeDict {
                height: Some(h),
                width: Some(w),
                ..
            }) = self.crop_size
        {
            img = b.center_crop(&img, h, w);
        }
        let data = b.rescale_and_normalize(
            &img,
            self.do_rescale,
            self.rescale_factor,
            self.do_normalize,
            self.image_mean,
            self.image_std,
        );
        Ok(Planar {
            height: img.height,
            width: img.width,
            data,
        })
    }

    /// The (height, width) an image of (height, width) is resized to.
    pub fn output_size(&self, height: usize, width: usize) -> Result<(usize, usize)> {
        let s = &self.size;
        let out = match (
            s.shortest_edge,
            s.longest_edge,
            s.max_height,
            s.max_width,
            s.height,
            s.width,
        ) {
            (Some(short), Some(long), ..) => size_with_aspect_ratio(height, width, short, Some(long)),
            (Some(short), None, ..) if self.kind != ProcessorKind::Detr => {
                resize_output_image_size(height, width, short)
            }
            (_, _, Some(mh), Some(mw), ..) => size_for_max_height_width(height, width, mh, mw),
            (.., Some(h), Some(w)) => (h, w),
            _ => {
                return Err(Error::config(&self.source, "size", format!("cannot resize to {s:?}")));
            }
        };
        if out.0 == 0 || out.1 == 0 {
            return Err(Error::Usage(format!(
                "an image of {width}x{height} pixels resizes to {}x{} under `size` of {}: too thin to process",
                out.1,
                out.0,
                self.source.display()
            )));
        }
        Ok(out)
    }

    /// A batch of images: `pixel_values` (batch, 3, height, width), and `pixel_mask` (batch, height,
    /// width) where the processor pads (DETR).
    pub fn preprocess(&self, images: &[RgbImage]) -> Result<NamedTensors> {
        if images.is_empty() {
            return Err(Error::Usage("no image to preprocess".to_string()));
        }
        if self.kind == ProcessorKind::VideoMae {
            return self.preprocess_videos(&[images.to_vec()]);
        }
        if self.kind == ProcessorKind::LlavaNext {
            return self.preprocess_anyres(images);
        }
        let planes = images.iter().map(|i| self.process_one(i)).collect::<Result<Vec<_>>>()?;
        let mut out = NamedTensors::new();
        // LlavaImageProcessor's do_pad pads each image to a square (above), not the batch.
        if self.do_pad && self.kind != ProcessorKind::Llava {
            let (ph, pw) = self.pad_target(&planes)?;
            let mut values = Vec::with_capacity(planes.len() * 3 * ph * pw);
            let mut mask = Vec::with_capacity(planes.len() * ph * pw);
            for p in &planes {
                values.extend(p.padded(ph, pw));
                for y in 0..ph {
                    for x in 0..pw {
                        mask.push((y < p.height && x < p.width) as i64);
                    }
                }
            }
            out.insert(
                "pixel_values".into(),
                HostTensor::f32(vec![planes.len(), 3, ph, pw], values)?,
            );
            // Only DETR's processor returns the mask; the others pad without one.
            if self.kind == ProcessorKind::Detr {
                out.insert("pixel_mask".into(), HostTensor::i64(vec![planes.len(), ph, pw], mask)?);
            }
        } else {
            let (h, w) = same_size(&planes)?;
            let values = planes.into_iter().flat_map(|p| p.data).collect();
            out.insert(
                "pixel_values".into(),
                HostTensor::f32(vec![images.len(), 3, h, w], values)?,
            );
        }
        Ok(out)
    }

    /// LlavaNextImageProcessor: per image, the whole image resized to one tile, then the tiles of the
    /// image resized and padded to its best grid resolution, each through the usual resize, crop,
    /// rescale and normalisation. `pixel_values` (batch, most tiles, 3, height, width), zero-padded
    /// to the image with the most tiles (`do_pad`), and `image_sizes` (batch, 2): each image's
    /// (height, width).
    fn preprocess_anyres(&self, images: &[RgbImage]) -> Result<NamedTensors> {
        let s = &self.size;
        let size_tuple = match (s.height, s.width, s.shortest_edge) {
            (Some(h), Some(w), _) if h > 0 && w > 0 => (h, w),
            (_, _, Some(e)) => (e, e),
            _ => {
                return Err(Error::config(
                    &self.source,
                    "size",
                    "LlavaNextImageProcessor needs height and width, or shortest_edge",
                ));
            }
        };
        let patch_size = match (self.crop_size.and_then(|c| c.height), s.height, s.shortest_edge) {
            (Some(h), _, _) | (None, Some(h), _) | (None, None, Some(h)) if h > 0 => h,
            _ => {
                return Err(Error::config(
                    &self.source,
                    "crop_size",
                    "LlavaNextImageProcessor needs a tile size (crop_size.height, size.height or size.shortest_edge)",
                ));
            }
        };
        let mut per_image = Vec::with_capacity(images.len());
        let mut image_sizes = Vec::with_capacity(images.len() * 2);
        for img in images {
            let best = select_best_resolution((img.height, img.width), &self.image_grid_pinpoints)
                .ok_or_else(|| Error::config(&self.source, "image_grid_pinpoints", "is empty"))?;
            let (nh, nw) = patch_output_size((img.height, img.width), best);
            let resized = resize(img, nw, nh, self.resample);
            // `_pad_for_patching` measures the resized image again.
            let (ph, pw) = patch_output_size((resized.height, resized.width), best);
            let (top, bottom) = ((best.0 - ph) / 2, (best.0 - ph) / 2 + (best.0 - ph) % 2);
            let (left, right) = ((best.1 - pw) / 2, (best.1 - pw) / 2 + (best.1 - pw) % 2);
            let padded = pad_rgb(&resized, (top, bottom), (left, right), [0, 0, 0]);
            let mut patches = vec![resize(img, size_tuple.1, size_tuple.0, self.resample)];
            patches.extend(divide_to_patches(&padded, patch_size));
            let planes = patches
                .iter()
                .map(|p| self.process_one(p))
                .collect::<Result<Vec<_>>>()?;
            let (h, w) = same_size(&planes)?;
            per_image.push((planes, h, w));
            image_sizes.extend([img.height as i64, img.width as i64]);
        }
        let (h, w) = (per_image[0].1, per_image[0].2);
        if let Some((_, ph, pw)) = per_image.iter().find(|(_, ph, pw)| (*ph, *pw) != (h, w)) {
            return Err(Error::Usage(format!(
                "the images end at tiles of different sizes ({h}x{w} and {ph}x{pw}); give one image at a time"
            )));
        }
        let most = per_image.iter().map(|(p, ..)| p.len()).max().unwrap_or(0);
        if !self.do_pad && per_image.iter().any(|(p, ..)| p.len() != most) {
            return Err(Error::Usage(format!(
                "the images make different numbers of tiles and {} sets do_pad to false; give one image at a time",
                self.source.display()
            )));
        }
        let mut values = Vec::with_capacity(images.len() * most * 3 * h * w);
        for (planes, ..) in &per_image {
            for p in planes {
                values.extend_from_slice(&p.data);
            }
            values.extend(std::iter::repeat_n(0f32, (most - planes.len()) * 3 * h * w));
        }
        let mut out = NamedTensors::new();
        out.insert(
            "pixel_values".into(),
            HostTensor::f32(vec![images.len(), most, 3, h, w], values)?,
        );
        out.insert(
            "image_sizes".into(),
            HostTensor::i64(vec![images.len(), 2], image_sizes)?,
        );
        Ok(out)
    }

    /// Videos (each a list of frames, all videos of the same length): `pixel_values` (batch, frames, 3,
    /// height, width), as the VideoMAE image processor makes them.
    pub fn preprocess_videos(&self, videos: &[Vec<RgbImage>]) -> Result<NamedTensors> {
        let frames = videos.first().map(|v| v.len()).unwrap_or(0);
        if frames == 0 || videos.iter().any(|v| v.len() != frames) {
            return Err(Error::Usage(
                "videos of a batch must hold the same, non-zero number of frames".to_string(),
            ));
        }
        let planes = videos
            .iter()
            .flatten()
            .map(|f| self.process_one(f))
            .collect::<Result<Vec<_>>>()?;
        let (h, w) = same_size(&planes)?;
        let values = planes.into_iter().flat_map(|p| p.data).collect();
        let mut out = NamedTensors::new();
        out.insert(
            "pixel_values".into(),
            HostTensor::f32(vec![videos.len(), frames, 3, h, w], values)?,
        );
        Ok(out)
    }

    fn pad_target(&self, planes: &[Planar]) -> Result<(usize, usize)> {
        let max_h = planes.iter().map(|p| p.height).max().unwrap_or(0);
        let max_w = planes.iter().map(|p| p.width).max().unwrap_or(0);
        match self.pad_size {
            Some(SizeDict {
                height: Some(h),
                width: Some(w),
                ..
            }) => {
                if h < max_h || w < max_w {
                    return Err(Error::config(
                        &self.source,
                        "pad_size",
                        format!("{h}x{w} is smaller than a processed image ({max_h}x{max_w})"),
                    ));
                }
                Ok((h, w))
            }
            Some(_) => Err(Error::config(&self.source, "pad_size", "must hold height and width")),
            None => Ok((max_h, max_w)),
        }
    }
}

/// A processed image, channel-first.
struct Planar {
    height: usize,
    width: usize,
    data: Vec<f32>,
}

impl Planar {
    /// Zero-padded at the bottom and right to (h, w).
    fn padded(&self, h: usize, w: usize) -> Vec<f32> {
        let mut out = vec![0f32; 3 * h * w];
        for c in 0..3 {
            for y in 0..self.height {
                let src = &self.data[(c * self.height + y) * self.width..][..self.width];
                out[(c * h + y) * w..][..self.width].copy_from_slice(src);
            }
        }
        out
    }
}

fn same_size(planes: &[Planar]) -> Result<(usize, usize)> {
    let (h, w) = (planes[0].height, planes[0].width);
    if let Some(p) = planes.iter().find(|p| (p.height, p.width) != (h, w)) {
        return Err(Error::Usage(format!(
            "the images of a batch end at different sizes ({h}x{w} and {}x{}) and the processor does not pad; give one image at a time",
            p.height, p.width
        )));
    }
    Ok((h, w))
}

/// `get_patch_output_size`: the size an image of (height, width) is resized to on its way to the
/// `target` (height, width) resolution, keeping its aspect ratio (the ceiling of the scaled side).
pub fn patch_output_size(original: (usize, usize), target: (usize, usize)) -> (usize, usize) {
    let (oh, ow) = (original.0 as f64, original.1 as f64);
    let (th, tw) = target;
    let scale_w = tw as f64 / ow;
    let scale_h = th as f64 / oh;
    if scale_w < scale_h {
        (((oh * scale_w).ceil() as usize).min(th), tw)
    } else {
        (th, ((ow * scale_h).ceil() as usize).min(tw))
    }
}

/// Pads an image with `color` by (top, bottom) rows and (left, right) columns.
fn pad_rgb(img: &RgbImage, (top, bottom): (usize, usize), (left, right): (usize, usize), color: [u8; 3]) -> RgbImage {
    let (h, w) = (img.height + top + bottom, img.width + left + right);
    let mut data: Vec<u8> = std::iter::repeat_n(color, h * w).flatten().collect();
    for y in 0..img.height {
        let src = &img.data[y * img.width * 3..(y + 1) * img.width * 3];
        let dst = ((y + top) * w + left) * 3;
        data[dst..dst + img.width * 3].copy_from_slice(src);
    }
    RgbImage {
        width: w,
        height: h,
        data,
    }
}

/// `LlavaImageProcessor.pad_to_square`: the image centred on a square of `color` as wide as its
/// longer side (the extra row or column, if any, at the bottom or right).
pub fn pad_to_square(img: &RgbImage, color: [u8; 3]) -> RgbImage {
    let (h, w) = (img.height, img.width);
    if h == w {
        return img.clone();
    }
    let max_dim = h.max(w);
    if w > h {
        let start = (max_dim - h) / 2;
        pad_rgb(img, (start, max_dim - h - start), (0, 0), color)
    } else {
        let start = (max_dim - w) / 2;
        pad_rgb(img, (0, 0), (start, max_dim - w - start), color)
    }
}

/// `image_transforms.divide_to_patches`: tiles of `patch` pixels, row by row, those at the right
/// and bottom edges cut short where the image does not divide evenly.
pub fn divide_to_patches(img: &RgbImage, patch: usize) -> Vec<RgbImage> {
    let mut patches = Vec::new();
    for y0 in (0..img.height).step_by(patch) {
        for x0 in (0..img.width).step_by(patch) {
            let (ph, pw) = (patch.min(img.height - y0), patch.min(img.width - x0));
            let mut data = Vec::with_capacity(ph * pw * 3);
            for y in y0..y0 + ph {
                data.extend_from_slice(&img.data[(y * img.width + x0) * 3..(y * img.width + x0 + pw) * 3]);
            }
            patches.push(RgbImage {
                width: pw,
                height: ph,
                data,
            });
        }
    }
    patches
}

/// `image_transforms.center_crop`: crops around the centre, zero-padding first where the image is
/// smaller than the crop.
pub fn center_crop(img: &RgbImage, crop_h: usize, crop_w: usize) -> RgbImage {
    let (h, w) = (img.height as i64, img.width as i64);
    let (ch, cw) = (crop_h as i64, crop_w as i64);
    // Python's floor division, also for negative differences.
    let top = (h - ch).div_euclid(2);
    let left = (w - cw).div_euclid(2);
    if top >= 0 && left >= 0 && top + ch <= h && left + cw <= w {
        let mut data = Vec::with_capacity(crop_h * crop_w * 3);
        for y in top..top + ch {
            let row = (y * w + left) as usize * 3;
            data.extend_from_slice(&img.data[row..row + crop_w * 3]);
        }
        return RgbImage {
            width: crop_w,
            height: crop_h,
            data,
        };
    }
    // Pad to at least the crop size, centred (ceil of half the difference on the top and left).
    let (nh, nw) = (ch.max(h), cw.max(w));
    let top_pad = (nh - h + 1) / 2;
    let left_pad = (nw - w + 1) / 2;
    let mut padded = vec![0u8; (nh * nw * 3) as usize];
    for y in 0..h {
        let src = (y * w) as usize * 3;
        let dst = ((y + top_pad) * nw + left_pad) as usize * 3;
        padded[dst..dst + w as usize * 3].copy_from_slice(&img.data[src..src + w as usize * 3]);
    }
    let (top, left) = (top + top_pad, left + left_pad);
    let (y0, y1) = (top.max(0), (top + ch).min(nh));
    let (x0, x1) = (left.max(0), (left + cw).min(nw));
    let mut data = Vec::with_capacity(((y1 - y0) * (x1 - x0) * 3) as usize);
    for y in y0..y1 {
        let row = (y * nw + x0) as usize * 3;
        data.extend_from_slice(&padded[row..row + (x1 - x0) as usize * 3]);
    }
    RgbImage {
        width: (x1 - x0) as usize,
        height: (y1 - y0) as usize,
        data,
    }
}

/// `image_transforms.get_size_with_aspect_ratio`: the shorter edge to `size`, unless the longer
/// edge would then pass `max_size`. Returns (height, width).
pub fn size_with_aspect_ratio(height: usize, width: usize, size: usize, max_size: Option<usize>) -> (usize, usize) {
    let mut size = size as f64;
    let mut raw_size = None;
    if let Some(max_size) = max_size {
        let min_original = height.min(width) as f64;
        let max_original = height.max(width) as f64;
        if max_original / min_original * size > max_size as f64 {
            let raw = max_size as f64 * min_original / max_original;
            raw_size = Some(raw);
            // Python's round() rounds half to even.
            size = raw.round_ties_even();
        }
    }
    let size = size as usize;
    if (height <= width && height == size) || (width <= height && width == size) {
        return (height, width);
    }
    let (h, w) = (height as f64, width as f64);
    if width < height {
        let oh = match raw_size {
            Some(raw) => raw * h / w,
            None => size as f64 * h / w,
        };
        (oh as usize, size)
    } else {
        let ow = match raw_size {
            Some(raw) => raw * w / h,
            None => size as f64 * w / h,
        };
        (size, ow as usize)
    }
}

/// `image_transforms.get_resize_output_image_size` with `default_to_square=False` and no max_size:
/// the shorter edge to `size`, the longer one scaled and truncated. Returns (height, width).
pub fn resize_output_image_size(height: usize, width: usize, size: usize) -> (usize, usize) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    let new_long = ((size * long) as f64 / short as f64) as usize;
    if width <= height {
        (new_long, size)
    } else {
        (size, new_long)
    }
}

/// `image_utils.get_image_size_for_max_height_width`: the largest size within the box that keeps the
/// aspect ratio. Returns (height, width).
pub fn size_for_max_height_width(height: usize, width: usize, max_height: usize, max_width: usize) -> (usize, usize) {
    let scale = (max_height as f64 / height as f64).min(max_width as f64 / width as f64);
    ((height as f64 * scale) as usize, (width as f64 * scale) as usize)
}

/// Which processor class a config names, as AutoImageProcessor resolves it.
fn processor_kind(path: &Path, json: &Value, dir: &Path) -> Result<ProcessorKind> {
    for field in ["image_processor_type", "feature_extractor_type"] {
        match json.get(field) {
            None | Some(Value::Null) => continue,
            Some(Value::String(name)) => {
                let name = name.replace("FeatureExtractor", "ImageProcessor");
                return ProcessorKind::from_class_name(&name).ok_or_else(|| {
                    Error::config(
                        path,
                        field,
                        format!(
                            "hwcov has no port of {name}; it ports ViTImageProcessor, CLIPImageProcessor, DetrImageProcessor, VideoMAEImageProcessor, LlavaImageProcessor and LlavaNextImageProcessor"
                        ),
                    )
                });
            }
            Some(other) => return Err(Error::config(path, field, format!("expected a string, got {other}"))),
        }
    }
    let config = dir.join("config.json");
    if config.is_file() {
        let cfg = read_json(&config)?;
        if let Some(mt) = cfg.get("model_type").and_then(|v| v.as_str()) {
            return ProcessorKind::from_model_type(mt).ok_or_else(|| {
                Error::config(
                    path,
                    "image_processor_type",
                    format!("missing, and hwcov has no image processor for model_type `{mt}` of config.json"),
                )
            });
        }
    }
    Err(Error::config(
        path,
        "image_processor_type",
        "missing (and no config.json with a model_type to pick the processor by)",
    ))
}

/// Reads the keys of a processor config, treating null as absent (the class default).
struct Settings<'a> {
    path: &'a Path,
    json: &'a Value,
}

impl Settings<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.json.get(key).filter(|v| !v.is_null())
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(Error::config(
                self.path,
                key,
                format!("expected true or false, got {v}"),
            )),
        }
    }

    /// Three per-channel values, or one for all channels.
    fn triple(&self, key: &str) -> Result<Option<[f32; 3]>> {
        Ok(self.triple_f64(key)?.map(|t| t.map(|x| x as f32)))
    }

    /// [`Self::triple`] as the JSON holds the numbers (Python floats).
    fn triple_f64(&self, key: &str) -> Result<Option<[f64; 3]>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        if let Some(x) = v.as_f64() {
            return Ok(Some([x; 3]));
        }
        let values: Option<Vec<f64>> = v
            .as_array()
            .map(|a| a.iter().map(|x| x.as_f64()).collect::<Option<Vec<_>>>())
            .unwrap_or(None);
        match values.as_deref() {
            Some([a, b, c]) => Ok(Some([*a, *b, *c])),
            _ => Err(Error::config(
                self.path,
                key,
                format!("expected a number or three numbers (one per RGB channel), got {v}"),
            )),
        }
    }
}

/// `image_grid_pinpoints`: a list of [height, width] pairs, each positive.
fn parse_pinpoints(path: &Path, v: &Value) -> Result<Vec<(usize, usize)>> {
    let bad = || {
        Error::config(
            path,
            "image_grid_pinpoints",
            format!("expected a non-empty list of [height, width] pairs of positive sizes, got {v}"),
        )
    };
    let list = v.as_array().ok_or_else(bad)?;
    let pairs = list
        .iter()
        .map(|p| match p.as_array().map(|a| a.as_slice()) {
            Some([h, w]) => match (h.as_u64(), w.as_u64()) {
                (Some(h), Some(w)) if h > 0 && w > 0 => Ok((h as usize, w as usize)),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        })
        .collect::<Result<Vec<_>>>()?;
    if pairs.is_empty() {
        return Err(bad());
    }
    Ok(pairs)
}

fn positive(path: &Path, field: &str, v: &Value) -> Result<usize> {
    v.as_u64()
        .map(|n| n as usize)
        .ok_or_else(|| Error::config(path, field, format!("expected a non-negative integer, got {v}")))
}

/// `get_size_dict`: a dict with one of transformers' key sets, an int (a square, or the shortest
/// edge where the class does not default to square), or [height, width].
fn parse_size(path: &Path, field: &str, v: &Value, default_to_square: bool) -> Result<SizeDict> {
    match v {
        Value::Number(_) => {
            let n = positive(path, field, v)?;
            Ok(if default_to_square {
                SizeDict {
                    height: Some(n),
                    width: Some(n),
                    ..Default::default()
                }
            } else {
                SizeDict {
                    shortest_edge: Some(n),
                    ..Default::default()
                }
            })
        }
        Value::Array(a) if a.len() == 2 => Ok(SizeDict {
            height: Some(positive(path, field, &a[0])?),
            width: Some(positive(path, field, &a[1])?),
            ..Default::default()
        }),
        Value::Object(m) => {
            let mut keys: Vec<&str> = m.keys().map(|k| k.as_str()).collect();
            keys.sort_unstable();
            let valid: [&[&str]; 5] = [
                &["height", "width"],
                &["shortest_edge"],
                &["longest_edge", "shortest_edge"],
                &["longest_edge"],
                &["max_height", "max_width"],
            ];
            if !valid.contains(&keys.as_slice()) {
                return Err(Error::config(
                    path,
                    field,
                    format!(
                        "keys {keys:?} are not one of transformers' sets: height+width, shortest_edge, shortest_edge+longest_edge, longest_edge, max_height+max_width"
                    ),
                ));
            }
            let key = |k: &str| -> Result<Option<usize>> {
                m.get(k).map(|v| positive(path, &format!("{field}.{k}"), v)).transpose()
            };
            Ok(SizeDict {
                height: key("height")?,
                width: key("width")?,
                shortest_edge: key("shortest_edge")?,
                longest_edge: key("longest_edge")?,
                max_height: key("max_height")?,
                max_width: key("max_width")?,
            })
        }
        other => Err(Error::config(
            path,
            field,
            format!("expected a size (an object, an integer or [height, width]), got {other}"),
        )),
    }
}

/// DETR's size: `DetrImageProcessor.__init__` turns a legacy int `size` with `max_size` (default
/// 1333) into shortest_edge + longest_edge.
fn detr_size(cfg: &Settings, default_to_square: bool) -> Result<SizeDict> {
    let Some(size) = cfg.get("size") else {
        return Ok(SizeDict {
            shortest_edge: Some(800),
            longest_edge: Some(1333),
            ..Default::default()
        });
    };
    if size.is_number() {
        let n = positive(cfg.path, "size", size)?;
        // `max_size` absent means 1333; an explicit null means none.
        let max_size = match cfg.json.get("max_size") {
            None => Some(1333),
            Some(Value::Null) => None,
            Some(v) => Some(positive(cfg.path, "max_size", v)?),
        };
        return Ok(SizeDict {
            shortest_edge: Some(n),
            longest_edge: max_size,
            ..Default::default()
        });
    }
    parse_size(cfg.path, "size", size, default_to_square)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_rules_match_transformers() {
        // get_size_with_aspect_ratio: (480, 640) to 800 / 1333 -> (800, 1066); long images hit max_size.
        assert_eq!(size_with_aspect_ratio(480, 640, 800, Some(1333)), (800, 1066));
        assert_eq!(size_with_aspect_ratio(100, 400, 800, Some(1333)), (333, 1333));
        assert_eq!(size_with_aspect_ratio(64, 64, 64, Some(96)), (64, 64));
        // get_resize_output_image_size: the longer edge truncates.
        assert_eq!(resize_output_image_size(480, 640, 224), (224, 298));
        assert_eq!(resize_output_image_size(641, 480, 224), (299, 224));
        // get_image_size_for_max_height_width, from its docstring.
        assert_eq!(size_for_max_height_width(100, 200, 50, 50), (25, 50));
        assert_eq!(size_for_max_height_width(100, 200, 200, 500), (200, 400));
    }

    #[test]
    fn center_crop_pads_small_images() {
        let img = RgbImage::new(2, 1, vec![1, 2, 3, 4, 5, 6]).unwrap();
        let c = center_crop(&img, 3, 4);
        assert_eq!((c.height, c.width), (3, 4));
        // Padded at the top by ceil((3 - 1) / 2) = 1 row and on the left by ceil((4 - 2) / 2) = 1 column.
        assert_eq!(&c.data[(4 + 1) * 3..(4 + 3) * 3], &[1, 2, 3, 4, 5, 6]);
        assert!(c.data[..12].iter().all(|&v| v == 0));
    }
}
