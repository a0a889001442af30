//! Runs one ONNX graph on the WebGPU platform with the `in_*` tensors of an io file and writes every
//! graph output to a safetensors file: for comparing a graph's values, node by node, with
//! onnxruntime (add the intermediate values as graph outputs first).
//!
//! cargo run -p hwcov-webgpu --example run_graph -- model.onnx io.safetensors out.safetensors

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, io, out] = args.as_slice() else {
        eprintln!("usage: run_graph MODEL.onnx IO.safetensors OUT.safetensors");
        std::process::exit(2);
    };
    let io = hwcov_core::IoFile::read(Path::new(io))?;
    let gpu = hwcov_webgpu::gpu::gpu()?;
    let mut session = hwcov_webgpu::Session::open(gpu, Path::new(model))?;
    let outputs = session.run(&io.inputs)?;
    hwcov_core::tensor::write_safetensors(Path::new(out), &outputs)?;
    eprintln!("{} outputs, {} dispatches", outputs.len(), session.last_dispatches);
    Ok(())
}
