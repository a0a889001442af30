//! The Handler over candle models: picks the adapter of the model's class and hands it the inputs.

use candle_core::{DType, Device};
use hwcov_core::{Decoder, Error, Handler, ModelClass, ModelFiles, NamedTensors, Precision, Result};

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

/// The adapter that loads each class; `None` where there is no candle port yet.
fn loader(class: ModelClass) -> Option<Loader> {
    match class {
        ModelClass::Bert => Some(adapters::bert::load),
        ModelClass::Vit => Some(adapters::vit::load),
        ModelClass::Clap => Some(adapters::clap::load),
        ModelClass::Wav2Vec2 => Some(adapters::wav2vec2::load),
        ModelClass::T5 => Some(adapters::t5::load),
        ModelClass::Opt => Some(adapters::opt::load),
        ModelClass::Llama | ModelClass::Qwen2 | ModelClass::Qwen3 => Some(adapters::llama::load),
        ModelClass::Clip => Some(adapters::clip::load),
        ModelClass::Detr => Some(adapters::detr::load),
        ModelClass::XClip => Some(adapters::x_clip::load),
        ModelClass::Llava | ModelClass::LlavaNext => Some(adapters::llava::load),
        _ => None,
    }
}

/// Whether hwcov-candle has a port of the class.
pub fn has_port(class: ModelClass) -> bool {
    loader(class).is_some()
}

impl CandleHandler {
    pub fn load(files: &ModelFiles, precision: Precision, device: &Device) -> Result<Self> {
        let load = loader(files.class).ok_or_else(|| Error::NotImplemented {
            platform: device_name(device).to_string(),
            reason: format!("no candle port of {} yet", files.class.name()),
        })?;
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

fn device_name(d: &Device) -> &'static str {
    match d {
        Device::Cpu => "cpu",
        Device::Cuda(_) => "cuda",
        Device::Metal(_) => "mps",
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
