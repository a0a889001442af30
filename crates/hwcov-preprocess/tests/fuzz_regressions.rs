//! Inputs the fuzz targets (fuzz/fuzz_targets/) found to panic, kept in tests/fuzz-regressions/ as
//! the fuzzer wrote them, each now refused with an error naming the file.

use std::path::{Path, PathBuf};

use hwcov_preprocess::text::TextTokenizer;

fn regression(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-regressions")
        .join(name)
}

/// The error `TextTokenizer::from_dir` gives for a folder holding `tokenizer` as tokenizer.json.
fn refused_tokenizer(tokenizer: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), tokenizer).unwrap();
    TextTokenizer::from_dir(dir.path())
        .err()
        .expect("must be refused")
        .to_string()
}

/// A JSON syntax error inside `decoder` (`#split": true`): the tokenizers crate's streaming parse
/// panicked ("Helper") instead of returning its error.
#[test]
fn a_syntax_error_inside_the_decoder_names_the_file_and_line() {
    let bytes = std::fs::read(regression("tokenizer-decoder-syntax-error.json")).unwrap();
    let err = refused_tokenizer(&bytes);
    assert!(
        err.contains("tokenizer.json") && err.contains("invalid JSON") && err.contains("line 113"),
        "{err}"
    );
}

/// A `Precompiled` normalizer whose data does not parse: the crate `expect`s it.
#[test]
fn a_precompiled_normalizer_that_does_not_parse_is_refused() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/t5/tokenizer.json");
    let mut json: serde_json::Value = serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    json["normalizer"] = serde_json::json!({
        "type": "Sequence",
        "normalizers": [{"type": "Precompiled", "precompiled_charsmap": 5}]
    });
    let err = refused_tokenizer(json.to_string().as_bytes());
    assert!(
        err.contains("tokenizer.json") && err.contains("normalizer") && err.contains("Precompiled"),
        "{err}"
    );
}

/// `{%}`: the `%}` that closes a tag overlaps the `{%` that opens it; the rewriting of
/// `{% generation %}` blocks sliced backwards.
#[test]
fn a_tag_whose_close_overlaps_its_open_is_a_template_error() {
    let template = String::from_utf8_lossy(&std::fs::read(regression("chat-template-overlapping-tag.jinja")).unwrap())
        .into_owned();
    assert!(template.contains("{%}"));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/qwen2");
    let tokenizer = TextTokenizer::from_dir(&dir).unwrap();
    let messages = serde_json::json!([{"role": "user", "content": "Hi"}]);
    let err = tokenizer
        .render_chat_template(&template, messages.clone(), true)
        .unwrap_err();
    assert!(err.contains("syntax error"), "{err}");
    assert!(tokenizer.render_chat_template("{%}", messages, true).is_err());
}

/// A TemplateProcessing post-processor whose template names `[CLS] ` (with a space), which its
/// special_tokens do not define: the crate panicked at the first encoding.
#[test]
fn a_template_naming_an_undefined_special_token_is_refused_at_load() {
    let bytes = std::fs::read(regression("tokenizer-template-unknown-special-token.json")).unwrap();
    let err = refused_tokenizer(&bytes);
    assert!(
        err.contains("tokenizer.json") && err.contains("post_processor") && err.contains("`[CLS] `"),
        "{err}"
    );
}

/// A FLAC file of 4 KiB whose Vorbis comment declares 3.3 GB: symphonia allocated it before reading.
#[test]
fn a_flac_comment_longer_than_its_block_is_refused_before_allocating() {
    let path = regression("flac-huge-vorbis-comment.flac");
    let err = hwcov_preprocess::audio::decode::decode_file(&path)
        .expect_err("must be refused")
        .to_string();
    assert!(
        err.contains("flac-huge-vorbis-comment.flac") && err.contains("a Vorbis comment of 3323285500 bytes"),
        "{err}"
    );
}
