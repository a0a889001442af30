//! The Handler over candle models: picks the adapter of the model's class and hands it the inputs.

use candle_core::{DType, Device};
use hwcov_core::{Decoder, Handler, ModelClass, ModelFiles, NamedTensors, Precision, Result};

use crate::adapters::{self, CandleModel, LoadContext, Loader};
use crate::io::Inputs;

pub struct CandleHandler {
    model: Box<dyn CandleModel>,
    device: Device,
}

pub fn candle_dtype(p: Precision) -> DType {
    match p {
        Precision::F32 => DType::F32,
        Precision::F16 => DType::F16,
        Precision::BF16 => DType::BF16,
    }
}

/// The adapter that loads each class. Every class of the matrix has a candle port; a class added to
/// `ModelClass` must be given one here (or this match made partial again, with a reason).
fn loader(class: ModelClass) -> Loader {
    match class {
        ModelClass::Bert => adapters::bert::load,
        ModelClass::Vit => adapters::vit::load,
        ModelClass::Clap => adapters::clap::load,
        ModelClass::Wav2Vec2 => adapters::wav2vec2::load,
        ModelClass::Whisper => adapters::whisper::load,
        ModelClass::T5 => adapters::t5::load,
        ModelClass::Opt => adapters::opt::load,
        ModelClass::Llama | ModelClass::Qwen2 | ModelClass::Qwen3 => adapters::llama::load,
        ModelClass::Clip => adapters::clip::load,
        ModelClass::Detr => adapters::detr::load,
        ModelClass::XClip => adapters::x_clip::load,
        ModelClass::Llava | ModelClass::LlavaNext => adapters::llava::load,
    }
}

impl CandleHandler {
    pub fn load(files: &ModelFiles, precision: Precision, device: &Device) -> Result<Self> {
        let load = loader(files.class);
        let cx = LoadContext {
            files,
            dtype: candle_dtype(precision),
            device,
        };
        Ok(CandleHandler {
            model: load(&cx)?,
            device: device.clone(),
        })
    }
}

impl Handler for CandleHandler {
    fn forward(&mut self, tensors: &NamedTensors) -> Result<NamedTensors> {
        self.model.forward(&Inputs::new(tensors, &self.device))
    }

    fn input_names(&self) -> Vec<String> {
        self.model.input_names().into_iter().map(String::from).collect()
    }

    fn output_names(&self) -> Vec<String> {
        self.model.output_names().into_iter().map(String::from).collect()
    }

    fn decoder(&mut self) -> Option<&mut dyn Decoder> {
        self.model.decoder()
    }
}
