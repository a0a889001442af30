//! Adapters: one per model family, between named host tensors and a model's forward().
//!
//! An adapter parses the config, checks it, builds the model from the weights, and in `forward`
//! checks each named input (rank, dtype, sizes), runs the model and names its outputs as
//! transformers names its output fields. The model files under `models/` stay pure ports.

pub mod bert;
pub mod causal_lm;
pub mod clap;
pub mod clip;
pub mod detr;
pub mod llama;
pub mod llava;
pub mod opt;
pub mod t5;
pub mod vit;
pub mod wav2vec2;
pub mod whisper;
pub mod x_clip;

use candle_core::{DType, Device};
use hwcov_core::{Decoder, ModelFiles, NamedTensors, Result};

use crate::io::Inputs;

/// A loaded candle model behind the Handler.
pub trait CandleModel: Send {
    fn forward(&mut self, inputs: &Inputs) -> Result<NamedTensors>;
    fn input_names(&self) -> Vec<&'static str>;
    fn output_names(&self) -> Vec<&'static str>;

    /// Token-by-token decoding, for generative models.
    fn decoder(&mut self) -> Option<&mut dyn Decoder> {
        None
    }
}

/// An adapter's constructor.
pub type Loader = fn(&LoadContext) -> Result<Box<dyn CandleModel>>;

/// What every adapter's `load` receives.
pub struct LoadContext<'a> {
    pub files: &'a ModelFiles,
    pub dtype: DType,
    pub device: &'a Device,
}
