//! The two traits every platform crate implements: `Platform` (probe, claim, load) and `Handler`
//! (named tensors in, named tensors out).

use std::fmt;
use std::str::FromStr;

use crate::class::{ModelClass, ModelFiles};
use crate::error::{Error, Result};
use crate::tensor::{HostTensor, NamedTensors};

/// The seven hardware platforms of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlatformId {
    Cpu,
    Cuda,
    Openvino,
    Mps,
    Rocm,
    Webnn,
    Webgpu,
}

impl PlatformId {
    pub const ALL: [PlatformId; 7] = [
        PlatformId::Cpu,
        PlatformId::Cuda,
        PlatformId::Openvino,
        PlatformId::Mps,
        PlatformId::Rocm,
        PlatformId::Webnn,
        PlatformId::Webgpu,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PlatformId::Cpu => "cpu",
            PlatformId::Cuda => "cuda",
            PlatformId::Openvino => "openvino",
            PlatformId::Mps => "mps",
            PlatformId::Rocm => "rocm",
            PlatformId::Webnn => "webnn",
            PlatformId::Webgpu => "webgpu",
        }
    }
}

impl fmt::Display for PlatformId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PlatformId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        PlatformId::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| {
            let all: Vec<_> = PlatformId::ALL.iter().map(|p| p.as_str()).collect();
            Error::Usage(format!("unknown platform `{s}`; the platforms are {}", all.join(", ")))
        })
    }
}

/// Whether the hardware and runtime of a platform are present on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// Usable; `device` names what runs the model ("Intel Xeon ... (2 threads)").
    Available { device: String },
    /// Not usable here, and why ("no CUDA device here").
    Unavailable { reason: String },
}

impl Availability {
    /// A probe's outcome: the device it found, or why not (an `Unavailable` error's own reason,
    /// any other error's message).
    pub fn from_probe(found: crate::Result<String>) -> Self {
        match found {
            Ok(device) => Availability::Available { device },
            Err(crate::Error::Unavailable { reason, .. }) => Availability::Unavailable { reason },
            Err(e) => Availability::Unavailable { reason: e.to_string() },
        }
    }
}

/// What a platform claims for a model class. `cargo xtask validate` checks the claims against
/// measured results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    /// The platform has code for this class.
    Implemented,
    /// No code yet; the reason says what is missing.
    NotImplemented { reason: String },
    /// The platform will not run this class, and why.
    Unsupported { reason: String },
}

/// Numeric precision the weights and activations run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    F16,
    BF16,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::BF16 => "bf16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" | "float32" => Ok(Precision::F32),
            "f16" | "float16" => Ok(Precision::F16),
            "bf16" | "bfloat16" => Ok(Precision::BF16),
            _ => Err(Error::Usage(format!("unknown precision `{s}`; use f32, f16 or bf16"))),
        }
    }
}

/// How to load a model on a platform.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub precision: Precision,
    /// Which device of the platform (cuda:N); 0 where there is one.
    pub device_index: usize,
    /// Hold the runtime to `precision` (verification). When false, a runtime that picks its own
    /// inference precision for speed (OpenVINO's bf16 on CPUs with AMX) may do so: for benchmarks.
    pub pin_precision: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            precision: Precision::F32,
            device_index: 0,
            pin_precision: true,
        }
    }
}

pub trait Platform: Send + Sync {
    fn id(&self) -> PlatformId;

    /// Is the hardware and its runtime here? Never panics; says why not.
    fn probe(&self) -> Availability;

    /// What this platform claims for a model class.
    fn support(&self, class: ModelClass) -> Support;

    /// Loads a model folder for this platform's device.
    fn load(&self, model: &ModelFiles, opts: &LoadOptions) -> Result<Box<dyn Handler>>;

    /// Bytes of device memory in use (the whole device), where the platform can tell.
    fn memory_in_use(&self, _device_index: usize) -> Option<u64> {
        None
    }

    /// The most device memory this process's tensors have held at once since it opened the device
    /// (weights included), where the platform can tell: the analogue of torch's
    /// `torch.cuda.max_memory_allocated`.
    fn peak_memory(&self, _device_index: usize) -> Option<u64> {
        None
    }
}

/// A loaded model. `Send`, so a handler moves to another thread; not `Sync`: `forward` takes
/// `&mut self` (caches, pooled buffers), so threads that share one hold it behind a `Mutex`, and
/// sharing it any other way is refused at compile time:
///
/// ```compile_fail
/// fn share(h: &dyn hwcov_core::Handler) {
///     std::thread::scope(|s| {
///         s.spawn(|| h.input_names());
///     });
/// }
/// ```
pub trait Handler: Send {
    /// Named tensors in (transformers `forward()` argument names), named tensors out (transformers
    /// output field names).
    fn forward(&mut self, inputs: &NamedTensors) -> Result<NamedTensors>;

    /// The `forward()` arguments this handler reads, required ones first.
    fn input_names(&self) -> Vec<String>;

    /// The output fields this handler can produce.
    fn output_names(&self) -> Vec<String>;

    /// Token-by-token decoding, for generative models; `None` for the rest.
    fn decoder(&mut self) -> Option<&mut dyn Decoder> {
        None
    }

    /// Device kernels dispatched since the model was loaded, where the platform counts them (the
    /// benchmark reports them per pass and per decoded token).
    fn dispatches(&self) -> Option<u64> {
        None
    }
}

/// Token-by-token decoding of a generative model (decoder-only, encoder-decoder, vision-language).
/// The state between calls (KV cache, encoder output, image features) lives in the implementation;
/// the generation loop (greedy or sampling, stopping, padding) lives once above it, so that every
/// platform decodes the same way. A platform without a KV cache may re-run the whole sequence.
pub trait Decoder {
    /// Starts a batch from the model's forward() arguments (`input_ids`, `attention_mask`,
    /// `decoder_input_ids`, `pixel_values`, `input_features`, ...), dropping any earlier state.
    /// Returns the logits of the next token of each row: shape (batch, vocab).
    fn start(&mut self, inputs: &NamedTensors) -> Result<HostTensor>;

    /// Appends one token to each row and returns the logits of the next: shape (batch, vocab).
    fn step(&mut self, tokens: &[u32]) -> Result<HostTensor>;

    /// The most tokens a row can hold (prompt and new tokens), where the model has a hard limit
    /// (a learned position table); `None` where it has none.
    fn max_positions(&self) -> Option<usize> {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A handler that counts its passes and echoes its input.
    struct Counting(usize);

    impl Handler for Counting {
        fn forward(&mut self, inputs: &NamedTensors) -> Result<NamedTensors> {
            self.0 += 1;
            let mut out = inputs.clone();
            out.insert("passes".into(), HostTensor::i64(vec![1], vec![self.0 as i64])?);
            Ok(out)
        }
        fn input_names(&self) -> Vec<String> {
            vec!["x".into()]
        }
        fn output_names(&self) -> Vec<String> {
            vec!["x".into(), "passes".into()]
        }
    }

    /// One handler used from several threads behind a Mutex: every pass runs once, whole.
    #[test]
    fn a_handler_behind_a_mutex_serves_several_threads() {
        let handler: Arc<Mutex<Box<dyn Handler>>> = Arc::new(Mutex::new(Box::new(Counting(0))));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let handler = Arc::clone(&handler);
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let mut inputs = NamedTensors::new();
                        inputs.insert("x".into(), HostTensor::i64(vec![2], vec![t, i]).unwrap());
                        let out = handler.lock().unwrap().forward(&inputs).unwrap();
                        assert_eq!(out["x"], inputs["x"]);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let last = handler.lock().unwrap().forward(&NamedTensors::new()).unwrap();
        assert_eq!(last["passes"].to_i64_vec(), Some(vec![101]));
    }
}
