//! An ONNX file as the graph platforms read it: decoded (Model::from_bytes), then specialized for
//! input shapes (Program::plan), where the graph's dynamic dimensions take small sizes.
#![no_main]
use hwcov_onnx::ir::ValueType;
use hwcov_onnx::{Dim, Model, Program};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = hwcov_fuzz::folder("onnx");
    let path = dir.join("model.onnx");
    let Ok(model) = Model::from_bytes(&path, data.to_vec()) else {
        return;
    };
    let inputs: Vec<(String, ValueType)> = model
        .graph
        .inputs
        .iter()
        .filter_map(|i| {
            let dtype = hwcov_onnx::dtype_of(i.elem_type)?;
            let shape = match &i.shape {
                Some(dims) => dims
                    .iter()
                    .map(|d| match d {
                        // A declared size is what a user feeds; the user's own input is no bomb.
                        Dim::Fixed(n) => usize::try_from(*n).ok().filter(|&n| n <= 64),
                        Dim::Symbolic(_) | Dim::Unknown => Some(2),
                    })
                    .collect::<Option<Vec<usize>>>()?,
                None => vec![2],
            };
            Some((i.name.clone(), ValueType::new(dtype, shape)))
        })
        .collect();
    let Ok(program) = Program::new(model) else { return };
    let _ = program.plan(&inputs);
});
