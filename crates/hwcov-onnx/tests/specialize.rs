//! Every export in fixtures/ specializes for the shapes of its io file: the shape arithmetic folds
//! away and what is left is tensor work, with no Range left for the device.

use std::path::{Path, PathBuf};

use hwcov_core::IoFile;
use hwcov_onnx::ir::{Op, ValueType};
use hwcov_onnx::{Dim, Program, Progress};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// The input types of a graph for an io file: its tensors where it has them, empty past key values
/// and counted positions where the graph takes them (the first step of a forward pass).
fn input_types(program: &Program, io: &IoFile) -> Option<Vec<(String, ValueType)>> {
    let batch = io.inputs.values().next()?.shape()[0];
    let seq = io.inputs.get("input_ids").map(|t| t.shape()[1]);
    program
        .model
        .graph
        .inputs
        .iter()
        .map(|i| {
            let dtype = hwcov_onnx::dtype_of(i.elem_type)?;
            let shape = if let Some(t) = io.inputs.get(&i.name) {
                t.shape().to_vec()
            } else if i.name.starts_with("past_key_values.") {
                let dims = i.shape.as_ref()?;
                let fixed = |k: usize| match dims.get(k) {
                    Some(Dim::Fixed(d)) => Some(*d as usize),
                    _ => None,
                };
                vec![batch, fixed(1)?, 0, fixed(3)?]
            } else if i.name == "position_ids" {
                vec![batch, seq?]
            } else {
                return None;
            };
            Some((i.name.clone(), hwcov_onnx::ir::ValueType::new(dtype, shape)))
        })
        .collect()
}

#[test]
fn every_fixture_export_specializes() {
    let mut seen = 0;
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let dir = entry.unwrap().path();
        let Some(g) = hwcov_onnx::locate(&dir).ok().and_then(|l| l.model) else {
            continue;
        };
        let io = IoFile::read(&dir.join("io.safetensors")).unwrap();
        let program = Program::load(&g.path).unwrap();
        let inputs = input_types(&program, &io).unwrap_or_else(|| panic!("{}: inputs", dir.display()));
        let mut s = program.specializer(&inputs).unwrap();
        loop {
            match s.advance().unwrap() {
                Progress::Done => break,
                // Stands in for the device's count of image tokens; the rest of the plan only
                // needs some count to be shaped.
                Progress::NeedsCount { .. } => s.resolve(1),
            }
        }
        let plan = s.finish();
        for step in &plan.steps {
            assert!(
                !matches!(step.op, Op::Range),
                "{}: {} left on the device",
                dir.display(),
                step.node
            );
        }
        assert!(plan.op_counts().contains_key("MatMul") || plan.op_counts().contains_key("Gemm"));
        seen += 1;
    }
    assert!(seen >= 13, "{seen}");
}
