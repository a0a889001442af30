//! Graph inputs as the graph declares them: a host tensor converted to the input's element type.

use half::{bf16, f16};
use hwcov_core::{DType, Error, HostTensor, Result, TensorData};

/// A host tensor converted to `dtype` (floats to floats, integers to integers), as graph inputs
/// are fed.
pub fn convert_input(name: &str, t: &HostTensor, dtype: DType) -> Result<HostTensor> {
    if t.dtype() == dtype {
        return Ok(t.clone());
    }
    let shape = t.shape().to_vec();
    let wrong = || {
        Error::tensor(
            name,
            format!("dtype {} cannot feed a graph input of type {dtype}", t.dtype()),
        )
    };
    let data = if dtype.is_float() {
        if !t.dtype().is_float() {
            return Err(wrong());
        }
        let v = t.to_f64_vec();
        match dtype {
            DType::F32 => TensorData::F32(v.iter().map(|&x| x as f32).collect()),
            DType::F16 => TensorData::F16(v.iter().map(|&x| f16::from_f64(x)).collect()),
            DType::BF16 => TensorData::BF16(v.iter().map(|&x| bf16::from_f64(x)).collect()),
            _ => TensorData::F64(v),
        }
    } else {
        let v = t.to_i64_vec().ok_or_else(wrong)?;
        match dtype {
            DType::I64 => TensorData::I64(v),
            DType::I32 => TensorData::I32(v.iter().map(|&x| x as i32).collect()),
            DType::U8 => TensorData::U8(v.iter().map(|&x| x as u8).collect()),
            _ => TensorData::Bool(v.iter().map(|&x| x != 0).collect()),
        }
    };
    HostTensor::new(shape, data).map_err(|e| Error::tensor(name, e))
}
