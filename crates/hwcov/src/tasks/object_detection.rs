//! Object detection (DetrForObjectDetection): boxes in the image's pixel coordinates with their
//! scores and labels, as `DetrImageProcessor.post_process_object_detection` makes them: softmax over
//! the classes, the best class other than "no object", kept where its score is above the threshold,
//! centre boxes to corners scaled by the image's width and height.

use hwcov_core::{Error, LoadOptions, ModelFiles, PlatformId, Result};

use crate::tasks::vision::{labels, output, reject, softmax_rows};
use crate::tasks::{RunOutput, RunRequest};
use crate::{features, platforms};

/// post_process_object_detection's default threshold.
pub const DEFAULT_THRESHOLD: f64 = 0.5;

/// One detection: score, label index, (xmin, ymin, xmax, ymax) in pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub score: f64,
    pub label: usize,
    pub bbox: [f64; 4],
}

/// `post_process_object_detection` for one image: `logits` (queries, classes + 1), `pred_boxes`
/// (queries, 4) as (cx, cy, w, h) in [0, 1], the image's (height, width).
pub fn post_process(
    logits: &[f64],
    classes: usize,
    boxes: &[f64],
    threshold: f64,
    size: (usize, usize),
) -> Vec<Detection> {
    let (h, w) = (size.0 as f64, size.1 as f64);
    softmax_rows(logits, classes)
        .into_iter()
        .zip(boxes.chunks(4))
        .filter_map(|(probs, b)| {
            // The last class is "no object"; torch.max returns the first of equal maxima.
            let (label, score) =
                probs[..classes - 1]
                    .iter()
                    .copied()
                    .enumerate()
                    .fold(
                        (0, f64::NEG_INFINITY),
                        |best, (i, p)| if p > best.1 { (i, p) } else { best },
                    );
            (score > threshold).then(|| Detection {
                score,
                label,
                bbox: [
                    (b[0] - 0.5 * b[2]) * w,
                    (b[1] - 0.5 * b[3]) * h,
                    (b[0] + 0.5 * b[2]) * w,
                    (b[1] + 0.5 * b[3]) * h,
                ],
            })
        })
        .collect()
}

pub fn run(files: &ModelFiles, request: &RunRequest, platform: PlatformId, opts: &LoadOptions) -> Result<RunOutput> {
    reject(files, request, false, true, false)?;
    let image = request
        .image
        .as_deref()
        .ok_or_else(|| Error::Usage("give the image to search with --image".to_string()))?;
    let threshold = request.threshold.unwrap_or(DEFAULT_THRESHOLD);
    let decoded = hwcov_preprocess::image::load_image(image)?;
    let inputs = features::image(&files.dir, &[image], request.image_backend)?;
    let mut handler = platforms::get(platform)?.load(files, opts)?;
    let outputs = handler.forward(&inputs)?;
    let (shape, logits) = output(&outputs, "logits").map_err(|_| {
        Error::Usage(format!(
            "{} has no detection head; object detection needs DetrForObjectDetection",
            files.dir.display()
        ))
    })?;
    let classes = *shape.last().unwrap_or(&0);
    let (_, boxes) = output(&outputs, "pred_boxes")?;
    let names = labels(files, classes.saturating_sub(1));
    let found = post_process(&logits, classes, &boxes, threshold, (decoded.height, decoded.width));
    let mut text = String::new();
    for d in &found {
        let [x0, y0, x1, y1] = d.bbox;
        text.push_str(&format!(
            "{:.4}  {:<16} [{x0:.2}, {y0:.2}, {x1:.2}, {y1:.2}]\n",
            d.score, names[d.label]
        ));
    }
    if found.is_empty() {
        text.push_str(&format!("no object scores above {threshold}\n"));
    }
    let json = serde_json::json!({
        "task": "object-detection",
        "image": image,
        "threshold": threshold,
        "detections": found.iter().map(|d| serde_json::json!({
            "score": d.score,
            "label": names[d.label],
            "box": {"xmin": d.bbox[0], "ymin": d.bbox[1], "xmax": d.bbox[2], "ymax": d.bbox[3]},
        })).collect::<Vec<_>>(),
    });
    Ok(RunOutput { text, json })
}
