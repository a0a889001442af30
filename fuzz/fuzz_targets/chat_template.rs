//! A chat template (the `chat_template` of tokenizer_config.json or chat_template.json) rendered
//! over a conversation, as `hwcov run --text` renders it.
#![no_main]
use std::sync::OnceLock;

use hwcov_preprocess::text::TextTokenizer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static TOKENIZER: OnceLock<TextTokenizer> = OnceLock::new();
    let tokenizer = TOKENIZER.get_or_init(|| {
        let dir = hwcov_fuzz::folder("chat_template");
        hwcov_fuzz::put(&dir, "tokenizer.json", &hwcov_fuzz::fixture("qwen2/tokenizer.json"));
        hwcov_fuzz::put(
            &dir,
            "tokenizer_config.json",
            &hwcov_fuzz::fixture("qwen2/tokenizer_config.json"),
        );
        TextTokenizer::from_dir(&dir).expect("the fixture's tokenizer loads")
    });
    let Ok(template) = std::str::from_utf8(data) else {
        return;
    };
    let messages = serde_json::json!([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}
    ]);
    let _ = tokenizer.render_chat_template(template, messages, true);
});
