//! hwcov-core: the traits and plain data every hwcov crate shares. It depends on no runtime.
//!
//! - [`anyres`]: LLaVA-NeXT's tiling arithmetic, shared by its processor and its model.
//! - [`platform`]: the `Platform` and `Handler` traits, platform ids, precisions.
//! - [`class`]: the model classes and a model folder (`config.json` decides the class).
//! - [`tensor`]: named host tensors and the io files of fixtures.
//! - [`compare`]: tolerances and the comparison of an output with its reference.
//! - [`spec`]: the schema of `models.toml`.
//! - [`report`]: statuses and results.
//! - [`error`]: one error type that names the file, field or tensor at fault.
//! - [`file`]: output files written whole (a temporary beside the target, then a rename).
//! - [`library`]: finding a runtime library loaded at run time.

pub mod anyres;
pub mod class;
pub mod compare;
pub mod error;
pub mod file;
pub mod library;
pub mod platform;
pub mod report;
pub mod spec;
pub mod tensor;

pub use class::{ModelClass, ModelFiles};
pub use compare::{OutputComparison, Tolerance, compare};
pub use error::{Error, Result};
pub use platform::{Availability, Decoder, Handler, LoadOptions, Platform, PlatformId, Precision, Support};
pub use report::{CellResult, CoverageRun, Status, VerifyReport};
pub use spec::{Expectation, ModelSpec};
pub use tensor::{DType, HostTensor, IoFile, NamedTensors, TensorData};
