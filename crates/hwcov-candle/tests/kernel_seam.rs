//! The kernel seam (`hwcov_candle::kernels`): a provider installed for the CPU is asked by the layers
//! of real models (BERT, Whisper, Qwen2, CLIP, Wav2Vec2 fixtures) for each fast path, what it
//! declines runs as the plain candle ops with the fixtures' outputs unchanged, and what it answers is
//! used. The provider here also asks for keys aligned to 8, so the key padding that CUDA uses runs on
//! the CPU and must leave every output within the f32 tolerance of transformers'.
//!
//! Its own test binary: the provider it installs for the CPU stays for the life of the process.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{Device, Result, Tensor};
use candle_nn::Conv1dConfig;
use hwcov_candle::kernels::{self, AfterBias, Backend, Kernels};
use hwcov_candle::nn::Geometry;
use hwcov_core::{Handler, IoFile, ModelFiles, Precision, Tolerance};

/// Records each fast path it is asked for, and declines it (but GELU, while `answer_gelu` is set).
struct Recorder {
    asked: Mutex<BTreeSet<&'static str>>,
    answer_gelu: AtomicBool,
}

impl Recorder {
    fn ask(&self, what: &'static str) -> Result<Option<Tensor>> {
        self.asked.lock().expect("not poisoned").insert(what);
        Ok(None)
    }
}

impl Kernels for Recorder {
    fn device_name(&self) -> &'static str {
        "recorded CPU"
    }

    fn key_alignment(&self) -> usize {
        8
    }

    fn linear(&self, _: &Tensor, _: &Tensor, _: Option<&Tensor>) -> Result<Option<Tensor>> {
        self.ask("linear")
    }

    fn bias(&self, _: &Tensor, _: &Tensor, after: AfterBias) -> Result<Option<Tensor>> {
        self.ask(match after {
            AfterBias::Nothing => "bias",
            AfterBias::Gelu => "bias+gelu",
            AfterBias::Residual(_) => "bias+residual",
        })
    }

    fn gelu(&self, x: &Tensor) -> Result<Option<Tensor>> {
        self.ask("gelu")?;
        if self.answer_gelu.load(Ordering::SeqCst) {
            return Ok(Some(x.zeros_like()?));
        }
        Ok(None)
    }

    fn rsqrt(&self, _: &Tensor) -> Result<Option<Tensor>> {
        self.ask("rsqrt")
    }

    fn add(&self, _: &Tensor, _: &Tensor) -> Result<Option<Tensor>> {
        self.ask("add")
    }

    fn add_broadcast(&self, _: &Tensor, _: &Tensor) -> Result<Option<Tensor>> {
        self.ask("add_broadcast")
    }

    fn contiguous(&self, _: &Tensor) -> Result<Option<Tensor>> {
        self.ask("contiguous")
    }

    fn pad_rows(&self, _: &Tensor, _: usize) -> Result<Option<Tensor>> {
        self.ask("pad_rows")
    }

    fn attention_softmax(&self, _: &Tensor, _: f64, _: Option<&Tensor>) -> Result<Option<Tensor>> {
        self.ask("attention_softmax")
    }

    fn layer_norm(&self, _: &Tensor, _: &Tensor, _: &Tensor, _: f64) -> Result<Option<Tensor>> {
        self.ask("layer_norm")
    }

    fn rms_norm(&self, _: &Tensor, _: &Tensor, _: f64) -> Result<Option<Tensor>> {
        self.ask("rms_norm")
    }

    fn group_norm(&self, _: &Tensor, _: &Tensor, _: &Tensor, _: usize, _: f64) -> Result<Option<Tensor>> {
        self.ask("group_norm")
    }

    fn rope(&self, _: &Tensor, _: &Tensor, _: &Tensor) -> Result<Option<Tensor>> {
        self.ask("rope")
    }

    fn silu_mul(&self, _: &Tensor) -> Result<Option<Tensor>> {
        self.ask("silu_mul")
    }

    fn conv2d(&self, _: &Tensor, _: &Tensor, _: Geometry) -> Result<Option<Tensor>> {
        self.ask("conv2d")
    }

    fn conv1d(&self, _: &Tensor, _: &Tensor, _: &Conv1dConfig) -> Result<Option<Tensor>> {
        self.ask("conv1d")
    }

    fn copy_to_host(&self, _: &Tensor) -> Result<Option<Vec<f32>>> {
        self.ask("copy_to_host").map(|_| None)
    }

    fn copy_from_host(&self, _: &[f32], _: &[usize], _: &Device) -> Result<Option<Tensor>> {
        self.ask("copy_from_host")
    }
}

static RECORDER: Recorder = Recorder {
    asked: Mutex::new(BTreeSet::new()),
    answer_gelu: AtomicBool::new(false),
};

/// Runs a fixture's forward pass on the CPU and checks every float output against transformers'.
fn verify(fixture: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(fixture);
    let files = ModelFiles::open(&dir).expect("the fixture's folder");
    let io = IoFile::read(&dir.join("io.safetensors")).expect("the fixture's io file");
    let mut handler = hwcov_candle::CandleHandler::load(&files, Precision::F32, &Device::Cpu).expect("loads");
    let outputs = handler.forward(&io.inputs).expect("runs");
    let mut compared = 0;
    for (name, expected) in &io.outputs {
        let Some(actual) = outputs.get(name) else { continue };
        let c = hwcov_core::compare(name, expected, actual, Tolerance::F32);
        assert!(c.passed, "{fixture}: {c}");
        compared += 1;
    }
    assert!(compared > 0, "{fixture}: no output compared");
}

#[test]
fn layers_ask_the_installed_provider_and_run_plain_ops_where_it_declines() -> Result<()> {
    assert!(
        kernels::install(Backend::Cpu, &RECORDER),
        "the first provider for the CPU"
    );
    assert!(
        !kernels::install(Backend::Cpu, &kernels::Plain),
        "a second provider does not replace the first"
    );
    for fixture in ["bert", "whisper", "qwen2", "clip", "wav2vec2"] {
        verify(fixture);
    }
    // `add` (a residual) is asked only after a provider has answered a Linear's product.
    let asked = RECORDER.asked.lock().expect("not poisoned").clone();
    for path in [
        "linear",
        "bias",
        "bias+gelu",
        "bias+residual",
        "gelu",
        "rsqrt",
        "add_broadcast",
        "contiguous",
        "pad_rows",
        "attention_softmax",
        "layer_norm",
        "rms_norm",
        "group_norm",
        "rope",
        "silu_mul",
        "conv1d",
        "conv2d",
        "copy_to_host",
        "copy_from_host",
    ] {
        assert!(
            asked.contains(path),
            "no layer asked the provider for `{path}`; asked: {asked:?}"
        );
    }

    // An answer is taken as the layer's result.
    let x = Tensor::new(&[1f32, -2.0, 3.0], &Device::Cpu)?;
    assert_ne!(hwcov_candle::nn::gelu(&x)?.to_vec1::<f32>()?, [0.0; 3]);
    RECORDER.answer_gelu.store(true, Ordering::SeqCst);
    let answered = hwcov_candle::nn::gelu(&x)?.to_vec1::<f32>();
    RECORDER.answer_gelu.store(false, Ordering::SeqCst);
    assert_eq!(answered?, [0.0; 3]);
    Ok(())
}
