//! Videos as lists of RGB frames: an animated GIF, or a folder of image files (one frame each, in
//! file-name order; names starting with `.` are skipped). Frames are read as `image::load_image` reads
//! an image and sampled to a model's frame count as transformers' `load_video` samples them
//! (`video_utils.default_sample_indices_fn`).

use std::path::{Path, PathBuf};

use hwcov_core::{Error, Result};

use crate::image::{RgbImage, load_image, to_rgb_as_pil};

/// Every frame of a video: a folder of images or an animated GIF.
pub fn load_frames(path: &Path) -> Result<Vec<RgbImage>> {
    if path.is_dir() {
        return frame_files(path)?.iter().map(|f| load_image(f)).collect();
    }
    let bytes = hwcov_core::error::read_file(path)?;
    if !bytes.starts_with(b"GIF8") {
        return Err(Error::format(
            path,
            "not a video hwcov reads: give an animated GIF or a folder of frame images",
        ));
    }
    read_gif(path, &bytes)
}

/// The image files of a frame folder, in name order.
pub fn frame_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let p = entry.path();
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if p.is_file() && !hidden {
            files.push(p);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(Error::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "the frame folder holds no image files"),
        ));
    }
    Ok(files)
}

/// The frames of a GIF, each composited onto the canvas as GIF players (and PIL) show it.
fn read_gif(path: &Path, bytes: &[u8]) -> Result<Vec<RgbImage>> {
    use ::image::AnimationDecoder;
    let decoder = ::image::codecs::gif::GifDecoder::new(std::io::Cursor::new(bytes))
        .map_err(|e| Error::format(path, format!("cannot decode the GIF: {e}")))?;
    let frames = decoder.into_frames().collect_frames().map_err(|e| {
        Error::format(
            path,
            format!("cannot decode the GIF's frames (truncated or corrupt?): {e}"),
        )
    })?;
    if frames.is_empty() {
        return Err(Error::format(path, "the GIF holds no frames"));
    }
    frames
        .into_iter()
        .map(|f| {
            let rgba = ::image::DynamicImage::ImageRgba8(f.into_buffer());
            if rgba.width() == 0 || rgba.height() == 0 {
                return Err(Error::format(path, "the GIF is empty (0 pixels)"));
            }
            let rgb = to_rgb_as_pil(path, rgba)?;
            let (width, height) = (rgb.width() as usize, rgb.height() as usize);
            RgbImage::new(width, height, rgb.into_raw())
        })
        .collect()
}

/// The frame indices transformers' `default_sample_indices_fn` picks from `total` frames:
/// `np.arange(0, total, total / num_frames, dtype=int)`. NumPy builds an integer arange from its
/// first step truncated, so the frames are `i * int(total / num_frames)`; where the float length
/// rounds up to one more index than asked, the extra one is dropped (transformers would hand the
/// model a wrong frame count).
pub fn sample_indices(path: &Path, total: usize, num_frames: usize) -> Result<Vec<usize>> {
    if num_frames == 0 {
        return Err(Error::Usage("num_frames must be positive".to_string()));
    }
    if num_frames > total {
        return Err(Error::format(
            path,
            format!("the video has {total} frames, fewer than the {num_frames} it must be sampled to (num_frames)"),
        ));
    }
    let step = total as f64 / num_frames as f64;
    let len = (total as f64 / step).ceil() as usize;
    let delta = step as usize;
    Ok((0..len.min(num_frames)).map(|i| i * delta).collect())
}

/// A video's frames sampled to `num_frames` (all frames where `num_frames` is None).
pub fn load_video(path: &Path, num_frames: Option<usize>) -> Result<Vec<RgbImage>> {
    let frames = load_frames(path)?;
    let Some(n) = num_frames else { return Ok(frames) };
    let idx = sample_indices(path, frames.len(), n)?;
    Ok(idx.into_iter().map(|i| frames[i].clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_follows_numpy_integer_arange() {
        let p = Path::new("v.gif");
        // np.arange(0, 10, 2.5, dtype=int) == [0, 2, 4, 6]
        assert_eq!(sample_indices(p, 10, 4).unwrap(), vec![0, 2, 4, 6]);
        assert_eq!(sample_indices(p, 9, 9).unwrap(), (0..9).collect::<Vec<_>>());
        assert_eq!(sample_indices(p, 10, 3).unwrap(), vec![0, 3, 6]);
        // 15 frames to 13: numpy gives 14 indices of step 1; the model takes 13.
        assert_eq!(sample_indices(p, 15, 13).unwrap(), (0..13).collect::<Vec<_>>());
        let err = sample_indices(p, 2, 3).unwrap_err().to_string();
        assert!(err.contains("v.gif") && err.contains("fewer than"), "{err}");
    }
}
