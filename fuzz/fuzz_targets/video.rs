//! A video as `hwcov run --video` reads it: a GIF's frames, or a folder of frame files, sampled to
//! a model's frame count (load_video).
#![no_main]
use hwcov_preprocess::video::load_video;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = hwcov_fuzz::folder("video");
    let gif = hwcov_fuzz::put(&dir, "clip.gif", data);
    let _ = load_video(&gif, Some(3));
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).expect("the scratch folder can be made");
    hwcov_fuzz::put(&frames, "frame_000.png", data);
    hwcov_fuzz::put(&frames, "frame_001.png", data);
    let _ = load_video(&frames, Some(2));
});
