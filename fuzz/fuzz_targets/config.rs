//! config.json as a model folder is opened (ModelFiles::open picks the class from it), and the same
//! bytes as a sharded checkpoint's index (shard_names reads its weight_map).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = hwcov_fuzz::folder("config");
    hwcov_fuzz::put(&dir, "config.json", data);
    let index = hwcov_fuzz::put(&dir, "model.safetensors.index.json", data);
    if let Ok(files) = hwcov_core::ModelFiles::open(&dir) {
        // What the generation loop reads of config.json (special tokens, its text_config).
        let _ = hwcov::generate::GenerationConfig::from_model(&files);
    }
    let _ = hwcov_core::tensor::shard_names(&index);
});
