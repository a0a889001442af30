//! Text generation end to end, and its bad input: prompts through the folder's tokenizer, the
//! generation loop over each decoder, against the greedy `generate()` tokens that transformers
//! wrote into the fixtures; and what a user sees when a prompt is empty or too long, when the
//! tokenizer does not belong to the weights, or when generation hits its limits.

use std::path::{Path, PathBuf};
use std::process::Command;

use hwcov::generate::StopReason;
use hwcov::tasks::text_generation::{TextGenerationSettings, generate_text};
use hwcov::tensor::{read_safetensors, write_safetensors};
use hwcov::{HostTensor, IoFile, LoadOptions, ModelFiles, PlatformId};

mod common;
use common::{copy_fixture, fixture};

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn hwcov(args: &[&str]) -> Outcome {
    let out = Command::new(env!("CARGO_BIN_EXE_hwcov")).args(args).output().unwrap();
    let o = Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!o.stderr.contains("panicked"), "hwcov panicked:\n{}", o.stderr);
    o
}

fn run(dir: &Path, extra: &[&str]) -> Outcome {
    let mut args = vec!["run", "--model-dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    hwcov(&args)
}

fn assert_error(o: &Outcome, needles: &[&str]) {
    assert_eq!(o.code, 2, "expected exit 2\nstdout: {}\nstderr: {}", o.stdout, o.stderr);
    for n in needles {
        assert!(o.stderr.contains(n), "error message lacks `{n}`:\n{}", o.stderr);
    }
}

fn meta_texts(name: &str) -> Vec<String> {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(name).join("meta.json")).unwrap()).unwrap();
    serde_json::from_value(meta["texts"].clone()).unwrap()
}

/// The texts of each fixture's meta.json, through tokenizer, left padding and the generation loop,
/// give the new tokens of transformers' `generate()` (the fixtures' `out_generated`).
#[test]
fn text_generation_matches_transformers() {
    for name in ["llama", "opt", "qwen2", "qwen3", "t5", "llama-gqa", "t5-v1_1"] {
        let files = ModelFiles::open(&fixture(name)).unwrap();
        let io = IoFile::read(&fixture(name).join("io.safetensors")).unwrap();
        let expected = &io.outputs["generated"];
        let (b, total) = (expected.shape()[0], expected.shape()[1]);
        let prompt = if name.starts_with("t5") {
            1
        } else {
            io.inputs["input_ids"].shape()[1]
        };
        let want = expected.to_i64_vec().unwrap();
        let settings = TextGenerationSettings {
            max_new_tokens: Some(total - prompt),
            chat: hwcov::tasks::text_generation::ChatMode::Off,
            ..Default::default()
        };
        let texts = meta_texts(name);
        let out = generate_text(&files, &texts, &settings, PlatformId::Cpu, &LoadOptions::default()).unwrap();
        assert_eq!(out.generations.len(), b);
        for (i, g) in out.generations.iter().enumerate() {
            let row: Vec<i64> = want[i * total + prompt..(i + 1) * total].to_vec();
            let got: Vec<i64> = g.token_ids.iter().map(|&t| t as i64).collect();
            assert_eq!(got, row[..got.len()], "{name} row {i}");
            if g.stopped != StopReason::Eos {
                assert_eq!(got.len(), total - prompt, "{name} row {i}");
            }
        }
    }
}

/// The variant fixtures (not models.toml entries, so not in the matrix): LLaMA with GQA 4:1, llama3
/// RoPE scaling, tied embeddings and biases; T5 v1.1 with gated GELU and its own unscaled lm_head.
#[test]
fn variant_fixtures_verify() {
    for name in ["llama-gqa", "t5-v1_1"] {
        let o = verify(&fixture(name), &fixture(name).join("io.safetensors"));
        assert_eq!(o.code, 0, "{name}: {}{}", o.stdout, o.stderr);
        assert!(o.stdout.contains("ok   generated"), "{}", o.stdout);
    }
}

#[test]
fn run_prints_text_and_says_when_it_hit_max_new_tokens() {
    let o = run(
        &fixture("opt"),
        &["--text", "A photo of a cat", "--max-new-tokens", "3"],
    );
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("stopped after 3 new tokens (--max-new-tokens 3)"),
        "{}",
        o.stdout
    );
    let o = run(&fixture("t5"), &["--text", "summarize: the meeting was long", "--json"]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["task"], "text2text-generation");
    assert_eq!(v["generations"][0]["prompt"], "summarize: the meeting was long");
}

/// A limit near u64::MAX is no limit: generation runs to EOS or the model's positions (it once
/// wrapped around and stopped after one token).
#[test]
fn a_huge_max_new_tokens_does_not_wrap() {
    let o = run(
        &fixture("opt"),
        &[
            "--text",
            "A photo of a cat",
            "--max-new-tokens",
            "18446744073709551615",
            "--json",
        ],
    );
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let g = &v["generations"][0];
    assert!(g["token_ids"].as_array().unwrap().len() > 1, "{g}");
    assert_ne!(g["stopped"], "max_new_tokens", "{g}");
}

#[test]
fn sampling_with_a_seed_is_reproducible() {
    let args = [
        "--text",
        "The engineer",
        "--max-new-tokens",
        "6",
        "--temperature",
        "1.5",
        "--seed",
        "11",
        "--json",
    ];
    let a = run(&fixture("llama"), &args);
    let b = run(&fixture("llama"), &args);
    assert_eq!(a.code, 0, "{}", a.stderr);
    let (a, b): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&a.stdout).unwrap(),
        serde_json::from_str(&b.stdout).unwrap(),
    );
    assert_eq!(a["generations"][0]["token_ids"], b["generations"][0]["token_ids"]);
    assert_eq!(a["sampling"], true);
    assert_error(
        &run(&fixture("llama"), &["--text", "x", "--temperature", "0"]),
        &["--temperature", "positive"],
    );
}

#[test]
fn chat_template_is_used_where_the_folder_has_one() {
    let o = run(&fixture("qwen2"), &["--text", "Hi", "--max-new-tokens", "2", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["chat_template"], true);
    // "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n" is longer than "Hi" alone.
    assert!(v["generations"][0]["prompt_tokens"].as_u64().unwrap() > 5, "{v}");
    let o = run(
        &fixture("qwen2"),
        &["--text", "Hi", "--max-new-tokens", "2", "--json", "--no-chat"],
    );
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["chat_template"], false);
    assert_error(
        &run(&fixture("llama"), &["--text", "Hi", "--chat"]),
        &["chat_template", "no chat template"],
    );
}

#[test]
fn empty_prompt() {
    for name in ["llama", "t5"] {
        assert_error(&run(&fixture(name), &["--text", ""]), &["--text", "empty"]);
        assert_error(
            &run(&fixture(name), &["--text", "fine", "--text", "  "]),
            &["--text number 2", "empty"],
        );
    }
    assert_error(&run(&fixture("opt"), &[]), &["--text"]);
}

#[test]
fn prompt_longer_than_the_model_takes() {
    // The OPT fixture has 64 learned positions.
    let long = "the quick brown fox jumps over the lazy dog ".repeat(20);
    assert_error(
        &run(&fixture("opt"), &["--text", &long]),
        &["config.json", "max_position_embeddings", "64", "--truncate"],
    );
    let o = run(
        &fixture("opt"),
        &["--text", &long, "--truncate", "--max-new-tokens", "4", "--json"],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let g = &v["generations"][0];
    assert_eq!(g["truncated"], true);
    assert_eq!(g["prompt_tokens"], 60, "{g}");
    assert_eq!(g["token_ids"].as_array().unwrap().len(), 4);
    // T5's limit is the tokenizer's model_max_length (512).
    let longer = "the house is wonderful ".repeat(200);
    assert_error(
        &run(&fixture("t5"), &["--text", &longer]),
        &["tokenizer_config.json", "model_max_length", "512"],
    );
}

#[test]
fn generation_stops_at_the_models_last_position() {
    // 60 prompt tokens leave 4 of OPT's 64 positions: asking for more stops there, and says so.
    let words = "the quick brown fox jumps over the lazy dog ".repeat(20);
    let tok = hwcov_preprocess_ids(&words, 60);
    let o = run(&fixture("opt"), &["--text", &tok, "--max-new-tokens", "30", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let g = &v["generations"][0];
    let prompt = g["prompt_tokens"].as_u64().unwrap();
    assert!(prompt <= 64, "{g}");
    assert_eq!(g["stopped"], "max_positions", "{g}");
    assert_eq!(prompt + g["token_ids"].as_array().unwrap().len() as u64, 64, "{g}");
    let o = run(&fixture("opt"), &["--text", &tok, "--max-new-tokens", "30"]);
    assert!(o.stdout.contains("fill the model's 64 positions"), "{}", o.stdout);
}

/// A prefix of `text` that the OPT fixture's tokenizer turns into at most `n` tokens.
fn hwcov_preprocess_ids(text: &str, n: usize) -> String {
    let tok = hwcov_preprocess::text::TextTokenizer::from_dir(&fixture("opt")).unwrap();
    let words: Vec<&str> = text.split(' ').collect();
    let mut best = String::new();
    for k in 1..words.len() {
        let candidate = words[..k].join(" ");
        if tok.encode_ids(&candidate, true).unwrap().len() > n {
            break;
        }
        best = candidate;
    }
    best
}

#[test]
fn tokenizer_that_does_not_belong_to_the_weights() {
    // The LLaMA fixture's tokenizer has 320 tokens; T5's weights 99.
    let d = copy_fixture("t5");
    std::fs::copy(fixture("llama").join("tokenizer.json"), d.path().join("tokenizer.json")).unwrap();
    std::fs::copy(
        fixture("llama").join("tokenizer_config.json"),
        d.path().join("tokenizer_config.json"),
    )
    .unwrap();
    assert_error(
        &run(d.path(), &["--text", "hello"]),
        &["tokenizer.json", "320 tokens", "vocab_size is 99", "config.json"],
    );
}

fn verify(dir: &Path, io: &Path) -> Outcome {
    hwcov(&[
        "verify",
        "--model-dir",
        dir.to_str().unwrap(),
        "--io",
        io.to_str().unwrap(),
    ])
}

fn edit_io(dir: &Path, f: impl FnOnce(&mut hwcov::NamedTensors)) -> PathBuf {
    let mut t = read_safetensors(&dir.join("io.safetensors")).unwrap();
    f(&mut t);
    let out = dir.join("edited-io.safetensors");
    write_safetensors(&out, &t).unwrap();
    out
}

#[test]
fn verify_compares_generated_tokens_exactly() {
    let d = copy_fixture("qwen3");
    let io = edit_io(d.path(), |t| {
        let g = t["out_generated"].clone();
        let mut v = g.to_i64_vec().unwrap();
        let last = v.len() - 1;
        v[last] = (v[last] + 1) % 320;
        t.insert("out_generated".into(), HostTensor::i64(g.shape().to_vec(), v).unwrap());
    });
    let o = verify(d.path(), &io);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("FAIL generated") && o.stdout.contains("1 mismatched"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("ok   logits"), "{}", o.stdout);

    // A reference shorter than the prompt cannot come from generate().
    let io = edit_io(d.path(), |t| {
        t.insert("out_generated".into(), HostTensor::i64(vec![2, 3], vec![1; 6]).unwrap());
    });
    let o = verify(d.path(), &io);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("FAIL generated") && o.stdout.contains("fewer than the prompt"),
        "{}",
        o.stdout
    );
}

#[test]
fn verify_generation_that_cannot_run_is_a_failure() {
    // An encoder-decoder without a decoder start token.
    let d = copy_fixture("t5");
    for f in ["config.json", "generation_config.json"] {
        let p = d.path().join(f);
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("decoder_start_token_id");
        v.as_object_mut().unwrap().remove("bos_token_id");
        std::fs::write(&p, v.to_string()).unwrap();
    }
    let o = verify(d.path(), &d.path().join("io.safetensors"));
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("FAIL generated") && o.stdout.contains("decoder_start_token_id"),
        "{}",
        o.stdout
    );
    // Beam search in the generation config: not what this loop does, so not a pass.
    let d = copy_fixture("llama");
    let p = d.path().join("generation_config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v["num_beams"] = 4.into();
    std::fs::write(&p, v.to_string()).unwrap();
    let o = verify(d.path(), &d.path().join("io.safetensors"));
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("num_beams"), "{}", o.stdout);
    // A model without a decoder (BERT) cannot produce `generated`.
    let d = copy_fixture("bert");
    let io = edit_io(d.path(), |t| {
        t.insert("out_generated".into(), HostTensor::i64(vec![2, 3], vec![1; 6]).unwrap());
    });
    let o = verify(d.path(), &io);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("FAIL generated") && o.stdout.contains("not produced"),
        "{}",
        o.stdout
    );
}

#[test]
fn decoder_inputs_that_are_wrong() {
    let d = copy_fixture("llama");
    let io = edit_io(d.path(), |t| {
        t.insert(
            "in_attention_mask".into(),
            HostTensor::i64(vec![2, 3], vec![1; 6]).unwrap(),
        );
    });
    let o = verify(d.path(), &io);
    assert_error(&o, &["in_attention_mask", "shape"]);
    let io = edit_io(d.path(), |t| {
        t.insert("in_input_ids".into(), HostTensor::i64(vec![2, 0], vec![]).unwrap());
        t.insert("in_attention_mask".into(), HostTensor::i64(vec![2, 0], vec![]).unwrap());
    });
    assert_error(&verify(d.path(), &io), &["in_input_ids", "empty"]);
    let d = copy_fixture("t5");
    let io = edit_io(d.path(), |t| {
        t.remove("in_decoder_input_ids");
    });
    assert_error(&verify(d.path(), &io), &["in_decoder_input_ids", "missing"]);
    // OPT's learned positions end at max_position_embeddings.
    let d = copy_fixture("opt");
    let io = edit_io(d.path(), |t| {
        t.insert(
            "in_input_ids".into(),
            HostTensor::i64(vec![1, 65], vec![5; 65]).unwrap(),
        );
        t.insert(
            "in_attention_mask".into(),
            HostTensor::i64(vec![1, 65], vec![1; 65]).unwrap(),
        );
    });
    assert_error(
        &verify(d.path(), &io),
        &["in_input_ids", "max_position_embeddings = 64"],
    );
}

#[test]
fn config_errors_name_the_field() {
    let edit = |name: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let d = copy_fixture(name);
        let p = d.path().join("config.json");
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(&p, v.to_string()).unwrap();
        let o = verify(d.path(), &d.path().join("io.safetensors"));
        (d, o)
    };
    let (_d, o) = edit("llama", &|c| c["rope_parameters"]["rope_type"] = "longrope".into());
    assert_error(&o, &["config.json", "rope_parameters.rope_type", "longrope"]);
    let (_d, o) = edit("llama", &|c| {
        c["rope_parameters"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0})
    });
    assert_error(&o, &["config.json", "rope_parameters.low_freq_factor"]);
    let (_d, o) = edit("qwen2", &|c| c["num_key_value_heads"] = 3.into());
    assert_error(&o, &["config.json", "num_key_value_heads"]);
    let (_d, o) = edit("t5", &|c| {
        c["feed_forward_proj"] = "gated-gelu-x".into();
        c.as_object_mut().unwrap().remove("dense_act_fn");
    });
    assert_error(&o, &["config.json", "feed_forward_proj"]);
    let (_d, o) = edit("opt", &|c| c["word_embed_proj_dim"] = 16.into());
    assert_error(&o, &["model.safetensors", "config.json"]);
    let (_d, o) = edit("qwen3", &|c| c["tie_word_embeddings"] = true.into());
    // Qwen3's fixture has its own lm_head.weight: tied or not, the checkpoint's head is used.
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let d = copy_fixture("llama");
    let w = d.path().join("model.safetensors");
    let mut t = read_safetensors(&w).unwrap();
    t.remove("lm_head.weight");
    write_safetensors(&w, &t).unwrap();
    assert_error(&verify(d.path(), &d.path().join("io.safetensors")), &["lm_head.weight"]);
}
