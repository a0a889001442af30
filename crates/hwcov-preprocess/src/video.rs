//! Videos as lists of RGB frames: an animated GIF, or a folder of image files (one frame each, in
//! file-name order; names starting with `.` are skipped). Frames are read as `image::load_image` reads
//! an image and sampled to a model's frame count as transformers' `load_video` samples them
//! (`video_utils.default_sample_indices_fn`).

use std::path::{Path, PathBuf};

use hwcov_core::{Error, Result};

use crate::image::{RgbImage, check_pixels, load_image};

/// The most bytes a video's decoded frames may take together (8-bit RGB): every frame is kept until
/// sampling, so a long video, or a GIF of many frames on a large screen, is refused at the frame that
/// passes this instead of exhausting memory. 1 GiB holds 30 s of 640x480 at 25 frames a second.
pub const MAX_VIDEO_BYTES: usize = 1 << 30;

/// Refuses a video once `frames` frames of `width` x `height` pass [`MAX_VIDEO_BYTES`].
fn check_video_bytes(path: &Path, frames: usize, width: usize, height: usize) -> Result<()> {
    let bytes = frames.saturating_mul(width).saturating_mul(height).saturating_mul(3);
    if bytes > MAX_VIDEO_BYTES {
        return Err(Error::format(
            path,
            format!(
                "{frames} frames of {width}x{height} take {bytes} bytes decoded, more than the {MAX_VIDEO_BYTES} \
                 hwcov holds of one video"
            ),
        ));
    }
    Ok(())
}

/// Every frame of a video: a folder of images or an animated GIF.
pub fn load_frames(path: &Path) -> Result<Vec<RgbImage>> {
    if path.is_dir() {
        let mut frames: Vec<RgbImage> = Vec::new();
        let mut bytes = 0usize;
        for f in frame_files(path)? {
            let img = load_image(&f)?;
            bytes = bytes.saturating_add(img.data.len());
            if bytes > MAX_VIDEO_BYTES {
                return Err(Error::format(
                    path,
                    format!(
                        "its first {} frames take {bytes} bytes decoded, more than the {MAX_VIDEO_BYTES} hwcov \
                         holds of one video",
                        frames.len() + 1
                    ),
                ));
            }
            frames.push(img);
        }
        return Ok(frames);
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

/// The frames of an animated GIF as PIL shows them (`GifImagePlugin` with its default
/// RGB_AFTER_FIRST loading), each then converted to RGB: the first frame is the palette image itself
/// (transparent pixels keep their palette colour), later frames are painted over the canvas except
/// where transparent, after the previous frame's disposal (2: fill with the transparency or
/// background colour, 3: restore what was under it). Grayscale GIFs without a palette are read as
/// with an identity palette.
fn read_gif(path: &Path, bytes: &[u8]) -> Result<Vec<RgbImage>> {
    let err = |m: String| Error::format(path, m);
    let mut opts = gif::DecodeOptions::new();
    opts.set_color_output(gif::ColorOutput::Indexed);
    let mut dec = opts
        .read_info(std::io::Cursor::new(bytes))
        .map_err(|e| err(format!("cannot decode the GIF: {e}")))?;
    let (w, h) = (dec.width() as usize, dec.height() as usize);
    if w == 0 || h == 0 {
        return Err(err(format!("the GIF is empty ({w}x{h} pixels)")));
    }
    // The screen's size, before a canvas of it is made.
    check_pixels(path, w as u64, h as u64)?;
    check_video_bytes(path, 1, w, h)?;
    let global = dec.global_palette().map(|p| p.to_vec());
    // PIL reads the background index only where the screen has a global palette.
    let background = if bytes.get(10).is_some_and(|f| f & 0x80 != 0) {
        bytes[11]
    } else {
        0
    };
    // The colour of a palette index: palettes shorter than the index fall back to PIL's grey ramp.
    let rgb = |pal: &Option<Vec<u8>>, i: u8| -> [u8; 3] {
        match pal {
            Some(p) if (i as usize) * 3 + 3 <= p.len() => {
                [p[i as usize * 3], p[i as usize * 3 + 1], p[i as usize * 3 + 2]]
            }
            _ => [i, i, i],
        }
    };
    // `_rgb` of GifImagePlugin: an index past the palette means index 0.
    let dispose_rgb = |pal: &Option<Vec<u8>>, i: u8| -> [u8; 3] {
        match pal {
            Some(p) if (i as usize) * 3 + 3 > p.len() => rgb(pal, 0),
            _ => rgb(pal, i),
        }
    };
    let mut canvas = vec![0u8; w * h * 3];
    let mut frames = Vec::new();
    let mut disposal_method = 0u8;
    // What the previous frame's disposal pastes over its extent before the next frame.
    let mut pending: Option<(Extent, Vec<u8>)> = None;
    loop {
        let frame = match dec.read_next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                return Err(err(format!(
                    "cannot decode the GIF's frames (truncated or corrupt?): {e}"
                )));
            }
        };
        let (x0, y0) = (frame.left as usize, frame.top as usize);
        let (fw, fh) = (frame.width as usize, frame.height as usize);
        if x0 + fw > w || y0 + fh > h {
            return Err(err(format!(
                "frame {} ({fw}x{fh} at {x0},{y0}) reaches past the {w}x{h} screen",
                frames.len()
            )));
        }
        check_video_bytes(path, frames.len() + 1, w, h)?;
        let t = frame.transparent;
        let d = frame.dispose as u8;
        if d != 0 {
            // PIL keeps the last specified disposal for frames that leave it unspecified.
            disposal_method = d;
        }
        let pal = frame.palette.clone().or_else(|| global.clone());
        let extent = (x0, y0, x0 + fw, y0 + fh);
        let fill = |c: [u8; 3]| c.repeat(fw * fh);
        if frames.is_empty() {
            // The palette image, transparent pixels included; outside the frame, index t (or 0).
            let outside = rgb(&pal, t.unwrap_or(0));
            for px in canvas.chunks_exact_mut(3) {
                px.copy_from_slice(&outside);
            }
            paint(&mut canvas, w, extent, &frame.buffer, |i| Some(rgb(&pal, i)));
            pending = match disposal_method {
                2 => Some((extent, fill(rgb(&pal, t.unwrap_or(background))))),
                3 | 4.. => t.map(|t| (extent, fill(rgb(&pal, t)))),
                _ => None,
            };
        } else {
            if let Some((e, patch)) = pending.take() {
                put(&mut canvas, w, e, &patch);
            }
            pending = match disposal_method {
                2 => Some((extent, fill(dispose_rgb(&pal, t.unwrap_or(background))))),
                3 | 4.. => Some((extent, crop(&canvas, w, extent))),
                _ => None,
            };
            paint(&mut canvas, w, extent, &frame.buffer, |i| {
                (Some(i) != t).then(|| rgb(&pal, i))
            });
        }
        frames.push(RgbImage::new(w, h, canvas.clone())?);
    }
    if frames.is_empty() {
        return Err(err("the GIF holds no frames".to_string()));
    }
    Ok(frames)
}

/// A frame's rectangle on the screen: (x0, y0, x1, y1).
type Extent = (usize, usize, usize, usize);

/// Paints a frame's indices into its extent of the canvas; `color` gives None where transparent.
fn paint(canvas: &mut [u8], w: usize, e: Extent, idx: &[u8], color: impl Fn(u8) -> Option<[u8; 3]>) {
    let fw = e.2 - e.0;
    for (k, &i) in idx.iter().enumerate().take(fw * (e.3 - e.1)) {
        if let Some(c) = color(i) {
            let (x, y) = (e.0 + k % fw, e.1 + k / fw);
            canvas[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&c);
        }
    }
}

fn crop(canvas: &[u8], w: usize, e: Extent) -> Vec<u8> {
    (e.1..e.3)
        .flat_map(|y| canvas[(y * w + e.0) * 3..(y * w + e.2) * 3].iter().copied())
        .collect()
}

fn put(canvas: &mut [u8], w: usize, e: Extent, patch: &[u8]) {
    let rw = (e.2 - e.0) * 3;
    for (r, y) in (e.1..e.3).enumerate() {
        canvas[(y * w + e.0) * 3..(y * w + e.2) * 3].copy_from_slice(&patch[r * rw..(r + 1) * rw]);
    }
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

    /// Frames are counted against the limit as they are decoded: the first frame that passes it is
    /// refused, naming the video, the count and the size.
    #[test]
    fn frames_past_the_video_limit_are_refused() {
        let p = Path::new("long.gif");
        assert!(check_video_bytes(p, 1, 640, 480).is_ok());
        // 3 frames of 8192 x 8192 RGB: 576 MiB; 6 of them: 1152 MiB, over 1 GiB.
        assert!(check_video_bytes(p, 3, 8192, 8192).is_ok());
        let err = check_video_bytes(p, 6, 8192, 8192).unwrap_err().to_string();
        assert!(
            err.contains("long.gif") && err.contains("6 frames of 8192x8192"),
            "{err}"
        );
        // Counts near usize::MAX saturate instead of wrapping around to a small size.
        assert!(check_video_bytes(p, usize::MAX, usize::MAX, 2).is_err());
    }

    /// `--num-frames 18446744073709551615`: more frames than any video has, refused by name.
    #[test]
    fn a_frame_count_near_usize_max_is_refused() {
        let err = sample_indices(Path::new("v.gif"), 10, usize::MAX)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("fewer than the 18446744073709551615") && err.contains("num_frames"),
            "{err}"
        );
    }

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
