//! LLaVA-NeXT's "anyres" arithmetic, which its image processor, its processor and its model must
//! agree on to the pixel: the grid resolution picked for an image (`select_best_resolution` of
//! transformers' `image_processing_utils`), the tiles that resolution holds, and the rows or columns
//! that `unpad_image` keeps. Python's float arithmetic is followed step by step (f64 division, `int()`
//! truncation, `round(x, 7)`), so that the processor's token count and the model's feature count come
//! out as transformers computes them.

/// `select_best_resolution(original_size, possible_resolutions)`: of the (height, width) candidates,
/// the one that keeps the most of the image's pixels once it is scaled to fit, and then wastes the
/// fewest. Sizes are (height, width). `None` where there is no candidate.
pub fn select_best_resolution(original: (usize, usize), possible: &[(usize, usize)]) -> Option<(usize, usize)> {
    let (original_height, original_width) = (original.0 as f64, original.1 as f64);
    let mut best_fit = None;
    let mut max_effective_resolution = 0i64;
    let mut min_wasted_resolution = f64::INFINITY;
    for &(height, width) in possible {
        let scale = (width as f64 / original_width).min(height as f64 / original_height);
        let downscaled_width = (original_width * scale) as i64;
        let downscaled_height = (original_height * scale) as i64;
        let effective_resolution = (downscaled_width * downscaled_height).min(original.0 as i64 * original.1 as i64);
        let wasted_resolution = (width * height) as f64 - effective_resolution as f64;
        if effective_resolution > max_effective_resolution
            || (effective_resolution == max_effective_resolution && wasted_resolution < min_wasted_resolution)
        {
            max_effective_resolution = effective_resolution;
            min_wasted_resolution = wasted_resolution;
            best_fit = Some((height, width));
        }
    }
    best_fit
}

/// `get_anyres_image_grid_shape`: the tiles (rows, columns) of the best resolution for an image of
/// `image_size` (height, width), each tile `tile` pixels square.
pub fn anyres_grid_shape(
    image_size: (usize, usize),
    pinpoints: &[(usize, usize)],
    tile: usize,
) -> Option<(usize, usize)> {
    let (h, w) = select_best_resolution(image_size, pinpoints)?;
    Some((h / tile, w / tile))
}

/// `image_size_to_num_patches`: the tiles of the best resolution (a partial tile counts) plus the
/// base image.
pub fn anyres_num_patches(image_size: (usize, usize), pinpoints: &[(usize, usize)], tile: usize) -> Option<usize> {
    let (h, w) = select_best_resolution(image_size, pinpoints)?;
    Some(h.div_ceil(tile) * w.div_ceil(tile) + 1)
}

/// Python's `int(round(x, 7))`: rounded to 7 decimals (half to even, on the exact binary value, as
/// Rust's formatting also rounds), then truncated toward zero.
fn int_round7(x: f64) -> i64 {
    format!("{x:.7}")
        .parse::<f64>()
        .map(|r| r.trunc() as i64)
        .unwrap_or(x as i64)
}

/// What `unpad_image` keeps of a grid of `current` (height, width) features laid over an image of
/// `original` (height, width): the padding that the image processor added around the resized image
/// is cut off, on the axis where the image was padded. Returns the kept (start, length) of the rows
/// and of the columns.
pub fn unpad(original: (usize, usize), current: (usize, usize)) -> ((usize, usize), (usize, usize)) {
    let (original_height, original_width) = (original.0 as f64, original.1 as f64);
    let (current_height, current_width) = current;
    let original_aspect_ratio = original_width / original_height;
    let current_aspect_ratio = current_width as f64 / current_height as f64;
    if original_aspect_ratio > current_aspect_ratio {
        let scale_factor = current_width as f64 / original_width;
        let new_height = int_round7(original_height * scale_factor).max(0) as usize;
        let padding = current_height.saturating_sub(new_height) / 2;
        let kept = current_height.saturating_sub(2 * padding);
        ((padding, kept), (0, current_width))
    } else {
        let scale_factor = current_height as f64 / original_height;
        let new_width = int_round7(original_width * scale_factor).max(0) as usize;
        let padding = current_width.saturating_sub(new_width) / 2;
        let kept = current_width.saturating_sub(2 * padding);
        ((0, current_height), (padding, kept))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINPOINTS: [(usize, usize); 5] = [(336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)];

    /// Values computed with transformers' `select_best_resolution`, `image_size_to_num_patches` and
    /// `unpad_image` (llava-v1.6 pinpoints, tile 336, 24x24 features per tile).
    #[test]
    fn matches_transformers() {
        assert_eq!(select_best_resolution((480, 640), &PINPOINTS), Some((672, 672)));
        assert_eq!(select_best_resolution((300, 1000), &PINPOINTS), Some((336, 1008)));
        assert_eq!(select_best_resolution((5000, 4000), &PINPOINTS), Some((672, 672)));
        assert_eq!(
            select_best_resolution((30, 40), &[(16, 32), (32, 16), (32, 32)]),
            Some((32, 32))
        );
        assert_eq!(select_best_resolution((1, 1), &[]), None);
        assert_eq!(anyres_num_patches((480, 640), &PINPOINTS, 336), Some(5));
        assert_eq!(anyres_grid_shape((300, 1000), &PINPOINTS, 336), Some((1, 3)));
        // unpad_image(torch.zeros(1, 48, 48), (480, 640)): rows 6..42.
        assert_eq!(unpad((480, 640), (48, 48)), ((6, 36), (0, 48)));
        assert_eq!(unpad((640, 480), (48, 48)), ((0, 48), (6, 36)));
        assert_eq!(unpad((1000, 300), (72, 24)), ((0, 72), (1, 22)));
        // Products a hair below an integer, which round(x, 7) brings back: 55 * (24 / 22) is
        // 59.99999999999999, kept as 60 columns; 47 * (48 / 47) keeps all 48.
        assert_eq!(unpad((22, 55), (24, 72)), ((0, 24), (6, 60)));
        assert_eq!(unpad((47, 47), (48, 48)), ((0, 48), (0, 48)));
    }
}
