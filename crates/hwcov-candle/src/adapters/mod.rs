//! Adapters: one per model family, between named host tensors and a model's forward().
//!
//! An adapter parses the config, checks it, builds the model from the weights, and in `forward`
//! checks each named input (rank, dtype, sizes), runs the model and names its outputs as
//! transformers names its output fields. The model files under `models/` stay pure ports.

pub mod bert;
pub mod clip;
pub mod detr;
pub mod vit;
pub mod x_clip;

use candle_core::{DType, Device};
use hwcov_core::{ModelFiles, NamedTensors, Result};

use crate::io::Inputs;

/// A loaded candle model behind the Handler.
pub trait CandleModel: Send {
    fn forward(&mut self, inputs: &Inputs) -> Result<NamedTensors>;
    fn input_names(&self) -> Vec<&'static str>;
    fn output_names(&self) -> Vec<&'static str>;
}

/// An adapter's constructor.
pub type Loader = fn(&LoadContext) -> Result<Box<dyn CandleModel>>;

/// What every adapter's `load` receives.
pub struct LoadContext<'a> {
    pub files: &'a ModelFiles,
    pub dtype: DType,
    pub device: &'a Device,
}
