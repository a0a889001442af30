//! Named host tensors: what goes into a Handler and what comes out, independent of any runtime.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result, read_file};

/// Element type of a host tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    U8,
    Bool,
}

impl DType {
    pub fn is_float(self) -> bool {
        matches!(self, DType::F64 | DType::F32 | DType::F16 | DType::BF16)
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F64 => "f64",
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::U8 => "u8",
            DType::Bool => "bool",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Elements of a host tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F64(Vec<f64>),
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    U8(Vec<u8>),
    Bool(Vec<bool>),
}

/// A dense tensor in host memory.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    shape: Vec<usize>,
    data: TensorData,
}

impl HostTensor {
    /// Builds a tensor, checking that the element count matches the shape.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Self> {
        let t = HostTensor { shape, data };
        let want: usize = t.shape.iter().product();
        if t.len() != want {
            return Err(Error::tensor(
                "<new>",
                format!("shape {:?} needs {want} elements, got {}", t.shape, t.len()),
            ));
        }
        Ok(t)
    }

    pub fn f32(shape: Vec<usize>, values: Vec<f32>) -> Result<Self> {
        Self::new(shape, TensorData::F32(values))
    }

    pub fn i64(shape: Vec<usize>, values: Vec<i64>) -> Result<Self> {
        Self::new(shape, TensorData::I64(values))
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &TensorData {
        &self.data
    }

    pub fn len(&self) -> usize {
        match &self.data {
            TensorData::F64(v) => v.len(),
            TensorData::F32(v) => v.len(),
            TensorData::F16(v) => v.len(),
            TensorData::BF16(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::U8(v) => v.len(),
            TensorData::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> DType {
        match &self.data {
            TensorData::F64(_) => DType::F64,
            TensorData::F32(_) => DType::F32,
            TensorData::F16(_) => DType::F16,
            TensorData::BF16(_) => DType::BF16,
            TensorData::I64(_) => DType::I64,
            TensorData::I32(_) => DType::I32,
            TensorData::U8(_) => DType::U8,
            TensorData::Bool(_) => DType::Bool,
        }
    }

    /// Every element widened to f64 (exact for all our dtypes but i64 beyond 2^53).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match &self.data {
            TensorData::F64(v) => v.clone(),
            TensorData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
            TensorData::BF16(v) => v.iter().map(|x| x.to_f64()).collect(),
            TensorData::I64(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::I32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::U8(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| if x { 1.0 } else { 0.0 }).collect(),
        }
    }

    /// Integer elements as i64; `None` for float tensors.
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        match &self.data {
            TensorData::I64(v) => Some(v.clone()),
            TensorData::I32(v) => Some(v.iter().map(|&x| x as i64).collect()),
            TensorData::U8(v) => Some(v.iter().map(|&x| x as i64).collect()),
            TensorData::Bool(v) => Some(v.iter().map(|&x| x as i64).collect()),
            _ => None,
        }
    }

    fn from_view(name: &str, origin: &Path, view: &safetensors::tensor::TensorView<'_>) -> Result<Self> {
        let shape = view.shape().to_vec();
        let bytes = view.data();
        let data = match view.dtype() {
            Dtype::F64 => TensorData::F64(le_chunks(bytes, f64::from_le_bytes)),
            Dtype::F32 => TensorData::F32(le_chunks(bytes, f32::from_le_bytes)),
            Dtype::F16 => TensorData::F16(le_chunks(bytes, |b| f16::from_bits(u16::from_le_bytes(b)))),
            Dtype::BF16 => TensorData::BF16(le_chunks(bytes, |b| bf16::from_bits(u16::from_le_bytes(b)))),
            Dtype::I64 => TensorData::I64(le_chunks(bytes, i64::from_le_bytes)),
            Dtype::I32 => TensorData::I32(le_chunks(bytes, i32::from_le_bytes)),
            Dtype::U8 => TensorData::U8(bytes.to_vec()),
            Dtype::BOOL => TensorData::Bool(bytes.iter().map(|&b| b != 0).collect()),
            other => {
                return Err(Error::tensor_in(name, origin, format!("unsupported dtype {other:?}")));
            }
        };
        HostTensor::new(shape, data).map_err(|e| Error::tensor_in(name, origin, e))
    }

    fn to_le_bytes(&self) -> (Dtype, Vec<u8>) {
        fn cat<T, const N: usize>(v: &[T], f: impl Fn(&T) -> [u8; N]) -> Vec<u8> {
            v.iter().flat_map(f).collect()
        }
        match &self.data {
            TensorData::F64(v) => (Dtype::F64, cat(v, |x| x.to_le_bytes())),
            TensorData::F32(v) => (Dtype::F32, cat(v, |x| x.to_le_bytes())),
            TensorData::F16(v) => (Dtype::F16, cat(v, |x| x.to_bits().to_le_bytes())),
            TensorData::BF16(v) => (Dtype::BF16, cat(v, |x| x.to_bits().to_le_bytes())),
            TensorData::I64(v) => (Dtype::I64, cat(v, |x| x.to_le_bytes())),
            TensorData::I32(v) => (Dtype::I32, cat(v, |x| x.to_le_bytes())),
            TensorData::U8(v) => (Dtype::U8, v.clone()),
            TensorData::Bool(v) => (Dtype::BOOL, v.iter().map(|&b| b as u8).collect()),
        }
    }
}

fn le_chunks<T, const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            f(a)
        })
        .collect()
}

/// Tensors by name, in a stable order.
pub type NamedTensors = BTreeMap<String, HostTensor>;

/// The shard files a sharded checkpoint's index (`model.safetensors.index.json`) names in its
/// `weight_map`, each once, in the order they first appear; as written, not checked to exist.
pub fn shard_names(index: &Path) -> Result<Vec<String>> {
    let json = crate::error::read_json(index)?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::config(index, "weight_map", "missing or not an object"))?;
    let mut names: Vec<String> = Vec::new();
    for v in map.values() {
        let name = v
            .as_str()
            .ok_or_else(|| Error::config(index, "weight_map", format!("expected file names, got {v}")))?;
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

/// Reads every tensor of a safetensors file.
pub fn read_safetensors(path: &Path) -> Result<NamedTensors> {
    let bytes = read_file(path)?;
    // The safetensors crate refuses headers over the format's 100 MB, offsets that leave gaps,
    // overlap or run past the end, and shapes whose element count overflows.
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        let culprit = overflowing_tensor(&bytes)
            .filter(|_| matches!(e, safetensors::SafeTensorError::ValidationOverflow))
            .map(|(name, shape)| format!(" (tensor `{name}`: shape {shape} has more elements than can be counted)"))
            .unwrap_or_default();
        Error::format(path, format!("not a valid safetensors file: {e}{culprit}"))
    })?;
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let t = HostTensor::from_view(&name, path, &view)?;
            Ok((name, t))
        })
        .collect()
}

/// The first tensor of a safetensors header whose element count overflows, to name it: the crate's
/// own error does not. (name, shape as written).
fn overflowing_tensor(bytes: &[u8]) -> Option<(String, String)> {
    let n = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let header: serde_json::Value = serde_json::from_slice(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
    header.as_object()?.iter().find_map(|(name, info)| {
        let shape = info.get("shape")?.as_array()?;
        let overflows = shape
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .try_fold(1usize, |a, d| a.checked_mul(d?))
            .is_none();
        overflows.then(|| (name.clone(), serde_json::Value::Array(shape.clone()).to_string()))
    })
}

/// Writes tensors to a safetensors file (whole or not at all, see [`crate::file`]).
pub fn write_safetensors(path: &Path, tensors: &NamedTensors) -> Result<()> {
    let encoded: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| {
            let (dtype, bytes) = t.to_le_bytes();
            (name.clone(), dtype, t.shape.clone(), bytes)
        })
        .collect();
    let views = encoded
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::tensor(name.clone(), e))
        })
        .collect::<Result<Vec<_>>>()?;
    let out = safetensors::serialize(views, None).map_err(|e| Error::format(path, e))?;
    crate::file::write_atomic(path, &out)
}

/// An io file of a fixture: `in_<arg>` inputs and `out_<field>` reference outputs, with the prefixes
/// stripped. Entries with neither prefix are ignored.
#[derive(Debug, Clone, Default)]
pub struct IoFile {
    pub inputs: NamedTensors,
    pub outputs: NamedTensors,
}

impl IoFile {
    pub fn read(path: &Path) -> Result<Self> {
        let mut io = IoFile::default();
        for (name, t) in read_safetensors(path)? {
            if let Some(arg) = name.strip_prefix("in_") {
                io.inputs.insert(arg.to_string(), t);
            } else if let Some(field) = name.strip_prefix("out_") {
                io.outputs.insert(field.to_string(), t);
            }
        }
        if io.inputs.is_empty() {
            return Err(Error::format(path, "holds no `in_*` tensors"));
        }
        if io.outputs.is_empty() {
            return Err(Error::format(path, "holds no `out_*` tensors"));
        }
        Ok(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_rejects_wrong_element_count() {
        let err = HostTensor::f32(vec![2, 3], vec![0.0; 5]).unwrap_err();
        assert!(err.to_string().contains("needs 6 elements, got 5"), "{err}");
    }

    #[test]
    fn safetensors_round_trip_keeps_every_dtype() {
        let dir = std::env::temp_dir().join(format!("hwcov-core-rt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.safetensors");
        let mut m = NamedTensors::new();
        m.insert("a".into(), HostTensor::f32(vec![2], vec![1.5, -2.0]).unwrap());
        m.insert("b".into(), HostTensor::i64(vec![1, 2], vec![7, -9]).unwrap());
        m.insert(
            "c".into(),
            HostTensor::new(
                vec![2],
                TensorData::BF16(vec![bf16::from_f32(0.5), bf16::from_f32(3.0)]),
            )
            .unwrap(),
        );
        m.insert(
            "d".into(),
            HostTensor::new(vec![3], TensorData::Bool(vec![true, false, true])).unwrap(),
        );
        write_safetensors(&path, &m).unwrap();
        let back = read_safetensors(&path).unwrap();
        assert_eq!(back, m);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_file_error_names_the_file() {
        let dir = std::env::temp_dir().join(format!("hwcov-core-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("broken.safetensors");
        std::fs::write(&path, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}").unwrap();
        let err = read_safetensors(&path).unwrap_err().to_string();
        assert!(
            err.contains("broken.safetensors") && err.contains("not a valid safetensors"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A file of a header (the 8-byte length, then the JSON) and `data` bytes.
    fn safetensors_file(name: &str, header: &str, data: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("hwcov-core-limits-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn refusal(path: &Path) -> String {
        let err = read_safetensors(path).unwrap_err().to_string();
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(err.contains(name), "the error names no file: {err}");
        err
    }

    #[test]
    fn a_header_over_the_formats_100_mb_is_refused_unread() {
        let path = safetensors_file("huge-header.safetensors", "", b"");
        // Only the length says 100 MB and one byte; nothing that large is read or allocated.
        std::fs::write(&path, 100_000_001u64.to_le_bytes()).unwrap();
        let err = refusal(&path);
        assert!(err.contains("header too large"), "{err}");
    }

    #[test]
    fn offsets_past_the_end_are_refused() {
        let header = r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
        let err = refusal(&safetensors_file("short.safetensors", header, &[0; 8]));
        assert!(err.contains("incomplete metadata"), "{err}");
    }

    #[test]
    fn overlapping_offsets_are_refused_naming_the_tensor() {
        let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
        let err = refusal(&safetensors_file("overlap.safetensors", header, &[0; 12]));
        assert!(err.contains("invalid offset for tensor `b`"), "{err}");
    }

    #[test]
    fn an_element_count_that_overflows_is_refused_naming_the_tensor() {
        let header = r#"{"big":{"dtype":"F32","shape":[4294967296,4294967296,2],"data_offsets":[0,0]}}"#;
        let err = refusal(&safetensors_file("overflow.safetensors", header, b""));
        assert!(err.contains("overflow") && err.contains("tensor `big`"), "{err}");
    }
}
