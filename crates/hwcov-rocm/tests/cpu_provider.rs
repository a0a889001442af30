//! The rocm platform's session code on ONNX Runtime's CPU provider, the part of the platform that
//! runs without an AMD GPU: fixtures' graphs give transformers' outputs, the KV-cache decoding gives
//! transformers' tokens, ONNX Runtime's own profile says every node ran on the provider the session
//! reports, and the platform itself claims nothing here (no MIGraphX in this build, no AMD GPU).
//!
//! They need ONNX Runtime (`cargo xtask setup --platform rocm` installs the CPU build); when `cargo
//! xtask test` runs them (HWCOV_REQUIRE_PLATFORMS is set) its absence fails, elsewhere it skips.

use std::path::{Path, PathBuf};

use hwcov_core::{Availability, Handler, IoFile, LoadOptions, ModelFiles, Platform, Precision, Tolerance};
use hwcov_onnx::handler::{GraphHandler, GraphSession};
use hwcov_rocm::{Graph, Provider, RocmPlatform, runtime};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(name)
}

/// Whether ONNX Runtime is here; under `cargo xtask test` its absence fails.
fn runtime_here() -> bool {
    match runtime::environment() {
        Ok(_) => true,
        Err(e) => {
            assert!(
                std::env::var_os("HWCOV_REQUIRE_PLATFORMS").is_none(),
                "ONNX Runtime is required here: {e}"
            );
            eprintln!("ONNX Runtime absent: skipped ({e})");
            false
        }
    }
}

fn cpu_handler(dir: &Path) -> GraphHandler<Graph> {
    let files = ModelFiles::open(dir).expect("the fixture's folder");
    GraphHandler::load(&files, |g| Graph::open(g, Provider::Cpu, Precision::F32, None)).expect("loads")
}

/// Every float output the handler gives, against transformers' within the f32 tolerance.
fn check_forward(name: &str) {
    let dir = fixture(name);
    let io = IoFile::read(&dir.join("io.safetensors")).expect("the io file");
    let outputs = cpu_handler(&dir).forward(&io.inputs).expect("runs");
    let mut compared = 0;
    for (field, expected) in &io.outputs {
        let Some(actual) = outputs.get(field) else { continue };
        let c = hwcov_core::compare(field, expected, actual, Tolerance::F32);
        assert!(c.passed, "{name}: {c}");
        compared += 1;
    }
    assert!(compared > 0, "{name}: no output compared");
}

#[test]
fn fixtures_run_on_the_cpu_provider_as_transformers() {
    if !runtime_here() {
        return;
    }
    for name in ["bert", "vit", "whisper", "qwen2", "clip"] {
        check_forward(name);
    }
}

/// Greedy decoding through the KV cache (the host-resident cache of `host_session`) gives the tokens
/// transformers' generate() gave (qwen2: 8 new tokens, two rows of a padded batch).
#[test]
fn decoding_through_the_cache_gives_transformers_tokens() {
    if !runtime_here() {
        return;
    }
    let dir = fixture("qwen2");
    let io = IoFile::read(&dir.join("io.safetensors")).expect("the io file");
    let generated = io.outputs["generated"].to_i64_vec().expect("integer tokens");
    let [rows, total] = io.outputs["generated"].shape()[..] else {
        panic!("generated is (batch, length)")
    };
    let prompt = io.inputs["input_ids"].shape()[1];
    let (eos, pad) = (2u32, 0u32);
    let mut handler = cpu_handler(&dir);
    let decoder = handler.decoder().expect("the export carries a cache");
    let mut logits = decoder.start(&io.inputs).expect("the prompt runs");
    let mut done = vec![false; rows];
    for position in prompt..total {
        let vocab = logits.shape()[1];
        let values = logits.to_f64_vec();
        let tokens: Vec<u32> = (0..rows)
            .map(|r| {
                if done[r] {
                    return pad;
                }
                let row = &values[r * vocab..(r + 1) * vocab];
                let best = (0..vocab).fold(0, |b, i| if row[i] > row[b] { i } else { b });
                best as u32
            })
            .collect();
        for r in 0..rows {
            assert_eq!(
                tokens[r] as i64,
                generated[r * total + position],
                "row {r}, position {position}"
            );
            done[r] |= tokens[r] == eos;
        }
        if position + 1 < total {
            logits = decoder.step(&tokens).expect("a step runs");
        }
    }
}

/// ONNX Runtime's profile of a session names only the provider the session reports.
#[test]
fn every_node_ran_on_the_provider_the_session_reports() {
    if !runtime_here() {
        return;
    }
    let dir = fixture("bert");
    let io = IoFile::read(&dir.join("io.safetensors")).expect("the io file");
    let prefix = std::env::temp_dir().join(format!("hwcov-ort-profile-{}", std::process::id()));
    let graph = hwcov_onnx::locate(&dir).expect("a layout").model.expect("model.onnx");
    let mut session = Graph::open(&graph, Provider::Cpu, Precision::F32, Some(&prefix)).expect("a session");
    let outputs = session.run(&io.inputs).expect("runs");
    assert!(outputs.contains_key("last_hidden_state"));
    let providers = session.providers_that_ran().expect("the profile");
    assert_eq!(providers, [session.provider().name()]);
}

/// With the CPU build of ONNX Runtime and no AMD GPU, the platform is unavailable and says why; a
/// MIGraphX session is refused, never run on the CPU instead.
#[test]
fn the_platform_claims_no_run_without_migraphx() {
    if !runtime_here() {
        return;
    }
    if runtime::providers()
        .expect("the providers")
        .contains(&"MIGraphXExecutionProvider")
    {
        eprintln!("this ONNX Runtime has MIGraphX: the refusal is not tested here");
        return;
    }
    let Availability::Unavailable { reason } = RocmPlatform.probe() else {
        panic!("rocm claims a device without MIGraphX")
    };
    assert!(reason.contains("no MIGraphX execution provider"), "{reason}");
    let files = ModelFiles::open(&fixture("bert")).expect("the fixture");
    let err = RocmPlatform
        .load(&files, &LoadOptions::default())
        .err()
        .expect("no MIGraphX here");
    assert!(err.to_string().contains("MIGraphX"), "{err}");
    let graph = hwcov_onnx::locate(&fixture("bert"))
        .expect("a layout")
        .model
        .expect("model.onnx");
    let refused = Graph::open(&graph, Provider::MiGraphX { device_id: 0 }, Precision::F32, None);
    assert!(refused.is_err(), "a MIGraphX session was made without MIGraphX");
}
