//! The limits on what a user's file can make hwcov do, each refused with an error naming the file:
//! images whose header declares more pixels than PIL decodes (decompression bombs), audio longer than
//! hwcov decodes, chat templates that never end.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hwcov_preprocess::audio::decode::{MAX_AUDIO_SECONDS, decode_file};
use hwcov_preprocess::image::{MAX_PIXELS, load_image};
use hwcov_preprocess::text::TextTokenizer;
use hwcov_preprocess::video::load_video;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// CRC-32 (IEEE), for PNG chunks.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
    out
}

/// A PNG whose header declares `width` x `height` 8-bit RGB pixels, with an empty image stream.
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(png_chunk(b"IHDR", &ihdr));
    // An empty zlib stream: the decoder reaches the pixel data, which holds none.
    png.extend(png_chunk(b"IDAT", &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]));
    png.extend(png_chunk(b"IEND", &[]));
    png
}

/// A GIF whose logical screen is `width` x `height`, holding one 1x1 frame.
fn gif_declaring(width: u16, height: u16) -> Vec<u8> {
    let mut gif = b"GIF89a".to_vec();
    gif.extend_from_slice(&width.to_le_bytes());
    gif.extend_from_slice(&height.to_le_bytes());
    gif.extend_from_slice(&[0, 0, 0]);
    // Image descriptor (1x1 at 0,0, no local palette), LZW minimum code size 2, one data block.
    gif.extend_from_slice(&[0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3B]);
    gif
}

fn assert_bomb(err: String, file: &str) {
    assert!(
        err.contains(file) && err.contains("decompression bomb") && err.contains(&MAX_PIXELS.to_string()),
        "{err}"
    );
}

#[test]
fn a_png_declaring_more_pixels_than_pil_reads_is_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    // 20000 x 20000 = 4e8 pixels, over PIL's 2 x 89,478,485; nothing that large is allocated.
    let path = write(dir.path(), "bomb.png", &png_declaring(20_000, 20_000));
    let start = Instant::now();
    assert_bomb(load_image(&path).unwrap_err().to_string(), "bomb.png");
    assert!(start.elapsed() < Duration::from_secs(5));
    // Just under the limit is not refused for its size (it fails later, for its missing pixels).
    let path = write(dir.path(), "ok.png", &png_declaring(100, 100));
    let err = load_image(&path).unwrap_err().to_string();
    assert!(!err.contains("decompression bomb"), "{err}");
}

#[test]
fn a_gif_screen_over_the_limit_is_refused_as_image_and_as_video() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "bomb.gif", &gif_declaring(65_535, 65_535));
    assert_bomb(load_image(&path).unwrap_err().to_string(), "bomb.gif");
    assert_bomb(load_video(&path, Some(1)).unwrap_err().to_string(), "bomb.gif");
}

/// A 16-bit mono PCM WAV at 16 kHz whose data chunk declares `data_bytes`, holding 64 bytes.
fn wav_declaring(data_bytes: u32) -> Vec<u8> {
    let mut w = b"RIFF".to_vec();
    w.extend_from_slice(&(36 + data_bytes).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes()); // PCM
    w.extend_from_slice(&1u16.to_le_bytes()); // mono
    w.extend_from_slice(&16_000u32.to_le_bytes());
    w.extend_from_slice(&32_000u32.to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&data_bytes.to_le_bytes());
    w.extend_from_slice(&[0u8; 64]);
    w
}

#[test]
fn audio_declaring_more_than_the_limit_is_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    // 2^31 bytes of 16-bit samples at 16 kHz: 67,108 s, over the 600 s limit; the file holds 64 bytes.
    let path = write(dir.path(), "long.wav", &wav_declaring(1 << 31));
    let err = decode_file(&path).unwrap_err().to_string();
    assert!(
        err.contains("long.wav")
            && err.contains("the header declares")
            && err.contains(&format!("{MAX_AUDIO_SECONDS} s")),
        "{err}"
    );
    // The same file declaring its true 64 bytes decodes.
    let path = write(dir.path(), "short.wav", &wav_declaring(64));
    assert_eq!(decode_file(&path).unwrap().frames(), 32);
}

#[test]
fn a_chat_template_that_never_ends_runs_out_of_fuel() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/qwen2");
    let tokenizer = TextTokenizer::from_dir(&dir).unwrap();
    let messages = serde_json::json!([{"role": "user", "content": "Hi"}]);
    let endless = "{% for i in range(100000) %}{% for j in range(100000) %}{{ j }}{% endfor %}{% endfor %}";
    let start = Instant::now();
    let err = tokenizer
        .render_chat_template(endless, messages.clone(), true)
        .unwrap_err();
    assert!(err.contains("fuel"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(30), "{:?}", start.elapsed());
    // A real template still renders.
    let ok = tokenizer
        .render_chat_template(
            "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}",
            messages,
            false,
        )
        .unwrap();
    assert_eq!(ok, "user: Hi\n");
}
