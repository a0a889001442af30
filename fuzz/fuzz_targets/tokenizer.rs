//! tokenizer.json as a model folder's tokenizer loads it, then a text through it and back.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = hwcov_fuzz::folder("tokenizer");
    hwcov_fuzz::put(&dir, "tokenizer.json", data);
    if let Ok(t) = hwcov_preprocess::text::TextTokenizer::from_dir(&dir)
        && let Ok(ids) = t.encode_ids("Hello world, <s> ünïcode 12", true)
    {
        let _ = t.decode(&ids, true);
    }
});
