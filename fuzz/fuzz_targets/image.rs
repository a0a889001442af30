//! An image file as `hwcov run --image` reads it (load_image: PNG, GIF, and JPEG through hwcov's
//! own libjpeg-exact decoder), then through a ViT-sized resize as the processors do.
#![no_main]
use hwcov_preprocess::image::{Resample, load_image, resize};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = hwcov_fuzz::folder("image");
    let path = hwcov_fuzz::put(&dir, "image", data);
    if let Ok(img) = load_image(&path) {
        assert_eq!(img.data.len(), img.width * img.height * 3);
        let _ = resize(&img, 8, 8, Resample::Bilinear);
    }
});
