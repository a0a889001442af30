//! preprocessor_config.json (and the same bytes as processor_config.json) as each processor that
//! reads it loads it: the image processors, the audio feature extractors, LLaVA's processors.
#![no_main]
use std::sync::OnceLock;

use hwcov_preprocess::image::ImageProcessor;
use hwcov_preprocess::llava::{LlavaKind, LlavaProcessor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static FIXED: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    let (config, tokenizer) = FIXED.get_or_init(|| {
        (
            hwcov_fuzz::fixture("llava/config.json"),
            hwcov_fuzz::fixture("llava/tokenizer.json"),
        )
    });
    let dir = hwcov_fuzz::folder("processor");
    hwcov_fuzz::put(&dir, "config.json", config);
    hwcov_fuzz::put(&dir, "tokenizer.json", tokenizer);
    hwcov_fuzz::put(&dir, "preprocessor_config.json", data);
    if let Ok(p) = ImageProcessor::from_dir(&dir) {
        // The sizes it computes from the file's numbers, for a small and a wide image.
        let _ = p.output_size(5, 7);
        let _ = p.output_size(3, 4000);
    }
    let _ = hwcov_preprocess::audio::AudioFeatureExtractor::from_dir(&dir);
    let _ = LlavaProcessor::from_dir(&dir, LlavaKind::Llava, None);
    hwcov_fuzz::put(&dir, "processor_config.json", data);
    let _ = LlavaProcessor::from_dir(&dir, LlavaKind::LlavaNext, None);
});
