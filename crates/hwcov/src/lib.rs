//! hwcov: run Hugging Face model classes on every hardware platform compiled in, and prove each
//! claim against transformers' own outputs.
//!
//! ```no_run
//! use std::path::Path;
//! use hwcov::{PlatformId, verify::{verify, VerifyOptions}};
//! let report = verify(Path::new("fixtures/bert"), Path::new("fixtures/bert/io.safetensors"),
//!                     PlatformId::Cpu, &VerifyOptions::default())?;
//! assert!(report.passed, "{}", report.summary());
//! # Ok::<(), hwcov::Error>(())
//! ```

pub mod bench;
pub mod coverage;
pub mod features;
pub mod generate;
pub mod hub;
pub mod platforms;
pub mod run;
pub mod tasks;
pub mod verify;

pub use hwcov_core::*;
