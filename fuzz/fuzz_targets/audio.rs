//! An audio file as `hwcov run --audio` reads it: decoded, down-mixed and resampled to 16 kHz
//! (prepare_audio), under each extension a user may give it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = hwcov_fuzz::folder("audio");
    // The extension is only a hint; the content decides. The first byte picks the hint.
    let ext = ["wav", "flac", "mp3", "bin"][data.first().map_or(0, |b| (b & 3) as usize)];
    let path = hwcov_fuzz::put(&dir, &format!("clip.{ext}"), data);
    let _ = hwcov_preprocess::audio::prepare_audio(&path, 16_000);
});
