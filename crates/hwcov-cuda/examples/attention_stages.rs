//! Takes each step of an encoder self-attention again with hwcov's CUDA paths, from torch's input to
//! that step, and says how far each lands from torch's result: the file is written on the GPU host by
//! `tools/gpu/detr_attention_stages.py` (DETR's first encoder layer, as transformers runs it).
//! A step at 0 elements apart is bit-identical to torch.
//!
//! Usage: attention_stages STEPS.safetensors
use std::collections::HashMap;

use candle_core::{DType, Device, Module, Result, Tensor};
use hwcov_candle::nn;

struct Steps {
    tensors: HashMap<String, Tensor>,
    meta: HashMap<String, String>,
}

impl Steps {
    fn load(path: &str, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| candle_core::Error::Msg(format!("{path}: {e}")))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| candle_core::Error::Msg(format!("{path}: {e}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let tensors = candle_core::safetensors::load_buffer(&bytes, device)?;
        Ok(Steps { tensors, meta })
    }

    fn get(&self, name: &str) -> Result<Tensor> {
        self.tensors
            .get(name)
            .cloned()
            .ok_or_else(|| candle_core::Error::Msg(format!("the steps file has no tensor `{name}`")))
    }

    fn number(&self, key: &str) -> Result<f64> {
        self.meta
            .get(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| candle_core::Error::Msg(format!("the steps file's metadata has no number `{key}`")))
    }

    fn linear(&self, name: &str) -> Result<nn::Linear> {
        Ok(nn::Linear::new(
            self.get(&format!("{name}.weight"))?,
            Some(self.get(&format!("{name}.bias"))?),
        ))
    }
}

/// Prints how many elements of `ours` differ from torch's `name`, and by how much at most.
fn report(steps: &Steps, name: &str, ours: &Tensor) -> Result<()> {
    let theirs = steps.get(name)?;
    let ours = ours
        .reshape(theirs.shape())?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let theirs = theirs.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let apart = ours
        .iter()
        .zip(&theirs)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    let largest = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    println!(
        "{name:10} {apart:5} of {:5} elements apart, largest {largest:.3e}",
        ours.len()
    );
    Ok(())
}

fn main() -> Result<()> {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: attention_stages STEPS.safetensors");
        std::process::exit(2);
    };
    let (device, _) = hwcov_cuda::open(0).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let steps = Steps::load(&path, &device)?;
    println!("{path}: {:?}", steps.meta);
    let heads = steps.number("heads")? as usize;
    let scaling = steps.number("scaling")?;
    let h = steps.get("h")?;
    let (b, l, hidden) = h.dims3()?;
    let split = |x: &Tensor| x.reshape((b, l, heads, hidden / heads))?.transpose(1, 2)?.contiguous();

    report(&steps, "qk_in", &(&h + &steps.get("pos")?)?)?;
    let qk_in = steps.get("qk_in")?;
    // The first layer's input is a transposed view in torch: its projections are taken both ways.
    for (name, proj, x) in [("q", "q_proj", &qk_in), ("k", "k_proj", &qk_in), ("v", "v_proj", &h)] {
        let linear = steps.linear(proj)?;
        print!("bias in the product's epilogue: ");
        report(&steps, name, &linear.forward(x)?)?;
        print!("bias added after the product:   ");
        report(&steps, name, &linear.forward_strided(x)?)?;
    }
    let (q, k, v) = (
        split(&steps.get("q")?)?,
        split(&steps.get("k")?)?,
        split(&steps.get("v")?)?,
    );
    report(&steps, "scores", &q.matmul(&k.t()?)?)?;
    let zeros = Tensor::zeros((b, 1, 1, l), h.dtype(), &device)?;
    let scores = steps.get("scores")?;
    report(&steps, "probs", &nn::attention_softmax(&scores, scaling, None)?)?;
    println!("(probs with a mask of zeros, as DETR's encoder passes one)");
    report(&steps, "probs", &nn::attention_softmax(&scores, scaling, Some(&zeros))?)?;
    let ctx = steps.get("probs")?.matmul(&v)?;
    report(&steps, "ctx", &ctx)?;
    let ctx_rows = steps.get("ctx")?.transpose(1, 2)?.reshape((b, l, ()))?;
    report(&steps, "ctx_rows", &ctx_rows)?;
    report(
        &steps,
        "out",
        &steps.linear("o_proj")?.forward(&steps.get("ctx_rows")?)?,
    )?;
    report(&steps, "residual", &(&h + &steps.get("out")?)?)?;
    let norm = nn::LayerNorm::from_parts(
        steps.get("layer_norm.weight")?,
        steps.get("layer_norm.bias")?,
        steps.number("eps")?,
    );
    report(&steps, "normed", &norm.forward(&steps.get("residual")?)?)?;
    Ok(())
}
