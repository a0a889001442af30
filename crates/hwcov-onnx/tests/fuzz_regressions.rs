//! Inputs the fuzzer (fuzz/fuzz_targets/onnx.rs) found to panic, each now refused with an error
//! naming the node. The graphs are rebuilt here, smallest form, from the protobuf fields.

use std::path::Path;

use hwcov_core::DType;
use hwcov_onnx::ir::ValueType;
use hwcov_onnx::{Model, Program};

/// A protobuf field: key, then the value (length-delimited bytes or a varint).
enum F<'a> {
    Bytes(u64, &'a [u8]),
    Int(u64, u64),
}

fn varint(mut x: u64, out: &mut Vec<u8>) {
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

fn message(fields: &[F]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields {
        match f {
            F::Bytes(n, b) => {
                varint((n << 3) | 2, &mut out);
                varint(b.len() as u64, &mut out);
                out.extend_from_slice(b);
            }
            F::Int(n, v) => {
                varint(n << 3, &mut out);
                varint(*v, &mut out);
            }
        }
    }
    out
}

/// An ints attribute (AttributeProto: name 1, ints 8, type 20 = INTS).
fn ints_attribute(name: &str, values: &[i64]) -> Vec<u8> {
    let mut fields = vec![F::Bytes(1, name.as_bytes()), F::Int(20, 7)];
    fields.extend(values.iter().map(|&v| F::Int(8, v as u64)));
    message(&fields)
}

/// A float tensor value (ValueInfoProto: name 1, type 2 > tensor_type 1 > elem_type 1, shape 2).
fn float_value(name: &str, dims: &[u64]) -> Vec<u8> {
    let dims: Vec<Vec<u8>> = dims.iter().map(|&d| message(&[F::Int(1, d)])).collect();
    let shape = message(&dims.iter().map(|d| F::Bytes(1, d)).collect::<Vec<_>>());
    let tensor = message(&[F::Int(1, 1), F::Bytes(2, &shape)]);
    let ty = message(&[F::Bytes(1, &tensor)]);
    message(&[F::Bytes(1, name.as_bytes()), F::Bytes(2, &ty)])
}

/// A model of one node `op` on input x (float, `dims`) to output y, at `opset`.
fn one_node_model(op: &str, attributes: &[Vec<u8>], dims: &[u64], opset: u64) -> Vec<u8> {
    let mut node = vec![
        F::Bytes(1, b"x"),
        F::Bytes(2, b"y"),
        F::Bytes(3, b"the_node"),
        F::Bytes(4, op.as_bytes()),
    ];
    node.extend(attributes.iter().map(|a| F::Bytes(5, a)));
    let node = message(&node);
    let (x, y) = (float_value("x", dims), float_value("y", &[]));
    let graph = message(&[F::Bytes(1, &node), F::Bytes(11, &x), F::Bytes(12, &y)]);
    let opset = message(&[F::Int(2, opset)]);
    message(&[F::Int(1, 8), F::Bytes(7, &graph), F::Bytes(8, &opset)])
}

fn plan_error(bytes: Vec<u8>, x: &[usize]) -> String {
    let model = Model::from_bytes(Path::new("fuzzed/model.onnx"), bytes).expect("the file itself reads");
    let program = Program::new(model).expect("the graph loads");
    let inputs = vec![("x".to_string(), ValueType::new(DType::F32, x.to_vec()))];
    program.plan(&inputs).expect_err("must be refused").to_string()
}

/// Slice (opset 9) with more `starts` than the input has axes, and no `axes`: the starts run over
/// the leading axes and once indexed past the shape.
#[test]
fn slice_with_more_starts_than_axes_names_the_node() {
    let attributes = [ints_attribute("starts", &[0, 0]), ints_attribute("ends", &[1, 1])];
    let msg = plan_error(one_node_model("Slice", &attributes, &[4], 9), &[4]);
    assert!(
        msg.contains("the_node") && msg.contains("slices axis 1 of an input of rank 1"),
        "{msg}"
    );
}

/// Add of x (2^32 x 1) and y (1 x 2^32): the broadcast output's element count, 2^64, overflowed
/// where the planner sums the outputs' sizes for its folding limit.
#[test]
fn an_output_whose_element_count_overflows_names_the_node() {
    let node = message(&[
        F::Bytes(1, b"x"),
        F::Bytes(1, b"w"),
        F::Bytes(2, b"y"),
        F::Bytes(3, b"the_add"),
        F::Bytes(4, b"Add"),
    ]);
    let big = 1u64 << 32;
    let (x, w, y) = (
        float_value("x", &[big, 1]),
        float_value("w", &[1, big]),
        float_value("y", &[]),
    );
    let graph = message(&[F::Bytes(1, &node), F::Bytes(11, &x), F::Bytes(11, &w), F::Bytes(12, &y)]);
    let opset = message(&[F::Int(2, 17)]);
    let bytes = message(&[F::Int(1, 8), F::Bytes(7, &graph), F::Bytes(8, &opset)]);
    let model = Model::from_bytes(Path::new("fuzzed/model.onnx"), bytes).expect("the file itself reads");
    let program = Program::new(model).expect("the graph loads");
    let n = 1usize << 32;
    let inputs = vec![
        ("x".to_string(), ValueType::new(DType::F32, vec![n, 1])),
        ("w".to_string(), ValueType::new(DType::F32, vec![1, n])),
    ];
    let msg = program.plan(&inputs).expect_err("must be refused").to_string();
    assert!(
        msg.contains("the_add") && msg.contains("more elements than can be counted"),
        "{msg}"
    );
}

/// An int attribute (AttributeProto: name 1, i 3, type 20 = INT).
fn int_attribute(name: &str, value: i64) -> Vec<u8> {
    message(&[F::Bytes(1, name.as_bytes()), F::Int(20, 2), F::Int(3, value as u64)])
}

/// Concat (axis 0) of a scalar: axis 0 of rank 0 passed the axis check and indexed an empty shape.
#[test]
fn concat_of_scalars_names_the_node() {
    let msg = plan_error(one_node_model("Concat", &[int_attribute("axis", 0)], &[], 13), &[]);
    assert!(msg.contains("the_node") && msg.contains("cannot join scalars"), "{msg}");
}

/// Split of a scalar, for the same reason.
#[test]
fn split_of_a_scalar_names_the_node() {
    let msg = plan_error(one_node_model("Split", &[], &[], 13), &[]);
    assert!(
        msg.contains("the_node") && msg.contains("cannot split a scalar"),
        "{msg}"
    );
}
