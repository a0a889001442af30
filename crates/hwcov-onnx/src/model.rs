//! An ONNX model as the graph layer holds it: nodes with their attributes, initializers whose
//! elements are read when asked for (from the file, or from external data confined to the model's
//! folder), graph inputs and outputs.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use half::{bf16, f16};
use hwcov_core::{DType, Error, HostTensor, Result, TensorData};

use crate::proto;

/// A dimension of a graph input or output as declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(i64),
    Symbolic(String),
    Unknown,
}

/// A graph input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueInfo {
    pub name: String,
    /// ONNX TensorProto.DataType (1 float, 6 int32, 7 int64, 9 bool, 10 float16, 16 bfloat16, ...).
    pub elem_type: i32,
    /// `None` where the file declares no shape.
    pub shape: Option<Vec<Dim>>,
}

/// Where the elements of a TensorProto are.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// `raw_data`: a byte range of the model file, little-endian.
    Raw {
        offset: usize,
        len: usize,
    },
    /// An external data file, relative to the model file's folder.
    External {
        location: String,
        offset: u64,
        length: Option<u64>,
    },
    Floats(Vec<f32>),
    Doubles(Vec<f64>),
    /// int32_data, int64_data or uint64_data, as read off the wire.
    Integers(Vec<u64>),
    /// A string tensor (the graph layer does not compute on strings).
    Strings(usize),
}

/// A TensorProto: an initializer or a tensor attribute.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    pub name: String,
    pub elem_type: i32,
    pub dims: Vec<i64>,
    pub payload: Payload,
}

/// A node attribute.
#[derive(Debug, Clone)]
pub enum Attribute {
    Float(f32),
    Int(i64),
    String(Vec<u8>),
    Tensor(Arc<TensorRef>),
    Graph(Arc<Graph>),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
    Strings(Vec<Vec<u8>>),
    Tensors(Vec<Arc<TensorRef>>),
    Graphs(Vec<Arc<Graph>>),
}

/// A node: an op applied to named values. An empty input name is an omitted optional input.
#[derive(Debug, Clone, Default)]
pub struct Node {
    pub name: String,
    pub op_type: String,
    /// "" for the default ONNX domain.
    pub domain: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attributes: BTreeMap<String, Attribute>,
}

impl Node {
    /// How errors name the node: its name, else its op and first output.
    pub fn label(&self) -> String {
        if self.name.is_empty() {
            format!(
                "{} -> {}",
                self.op_type,
                self.outputs.first().map(String::as_str).unwrap_or("?")
            )
        } else {
            self.name.clone()
        }
    }

    pub fn attr(&self, name: &str) -> Option<&Attribute> {
        self.attributes.get(name)
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        match self.attr(name) {
            Some(Attribute::Int(i)) => Some(*i),
            _ => None,
        }
    }

    pub fn float(&self, name: &str) -> Option<f32> {
        match self.attr(name) {
            Some(Attribute::Float(f)) => Some(*f),
            Some(Attribute::Int(i)) => Some(*i as f32),
            _ => None,
        }
    }

    pub fn ints(&self, name: &str) -> Option<&[i64]> {
        match self.attr(name) {
            Some(Attribute::Ints(v)) => Some(v),
            _ => None,
        }
    }

    pub fn floats(&self, name: &str) -> Option<&[f32]> {
        match self.attr(name) {
            Some(Attribute::Floats(v)) => Some(v),
            _ => None,
        }
    }

    pub fn string(&self, name: &str) -> Option<String> {
        match self.attr(name) {
            Some(Attribute::String(s)) => Some(String::from_utf8_lossy(s).into_owned()),
            _ => None,
        }
    }

    /// The input at `i`, `None` where it is absent or omitted (empty name).
    pub fn input(&self, i: usize) -> Option<&str> {
        self.inputs.get(i).map(String::as_str).filter(|s| !s.is_empty())
    }
}

/// A graph: the top graph of a model, or a subgraph of If, Loop or Scan.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    pub name: String,
    pub nodes: Vec<Arc<Node>>,
    pub initializers: BTreeMap<String, Arc<TensorRef>>,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
}

impl Graph {
    /// Node count per op type (domain-qualified outside the default domain), subgraphs included.
    pub fn op_counts(&self, counts: &mut BTreeMap<String, usize>) {
        for n in &self.nodes {
            *counts.entry(op_key(&n.domain, &n.op_type)).or_default() += 1;
            for a in n.attributes.values() {
                match a {
                    Attribute::Graph(g) => g.op_counts(counts),
                    Attribute::Graphs(gs) => gs.iter().for_each(|g| g.op_counts(counts)),
                    _ => {}
                }
            }
        }
    }

    /// Every tensor of the graph and its subgraphs: initializers and tensor attributes.
    fn tensors<'a>(&'a self, out: &mut Vec<&'a TensorRef>) {
        out.extend(self.initializers.values().map(|t| t.as_ref()));
        for n in &self.nodes {
            for a in n.attributes.values() {
                match a {
                    Attribute::Tensor(t) => out.push(t),
                    Attribute::Tensors(ts) => out.extend(ts.iter().map(|t| t.as_ref())),
                    Attribute::Graph(g) => g.tensors(out),
                    Attribute::Graphs(gs) => gs.iter().for_each(|g| g.tensors(out)),
                    _ => {}
                }
            }
        }
    }
}

/// "Op" in the default domain, "domain.Op" elsewhere.
pub fn op_key(domain: &str, op: &str) -> String {
    if domain.is_empty() || domain == "ai.onnx" {
        op.to_string()
    } else {
        format!("{domain}.{op}")
    }
}

/// An ONNX model file, read whole; initializers' elements are converted when asked for.
pub struct Model {
    pub path: PathBuf,
    pub ir_version: i64,
    pub producer: String,
    /// (domain, version); the default domain is "".
    pub opsets: Vec<(String, i64)>,
    pub graph: Graph,
    bytes: Vec<u8>,
    /// The external data files of the model, each checked to lie inside its folder.
    external: BTreeMap<String, PathBuf>,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("path", &self.path)
            .field("nodes", &self.graph.nodes.len())
            .finish()
    }
}

impl Model {
    /// Reads an ONNX file. Every external data file it names must resolve inside the file's folder
    /// (no absolute path, no `..`, no symlink leading out) and exist.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(path, bytes)
    }

    /// A model from the bytes of an ONNX file; `path` is where it came from (external data is
    /// looked for beside it, and errors name it).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let parsed = parse(path, &bytes)?;
        let mut model = Model {
            path: path.to_path_buf(),
            ir_version: parsed.ir_version,
            producer: parsed.producer,
            opsets: parsed.opsets,
            graph: parsed.graph,
            bytes,
            external: BTreeMap::new(),
        };
        let mut external = BTreeMap::new();
        for (tensor, location) in external_data(&model.graph) {
            if !external.contains_key(location) {
                external.insert(location.to_string(), confined(path, tensor, location)?);
            }
        }
        model.external = external;
        Ok(model)
    }

    /// The external data locations an ONNX file names, as written (relative to its folder), not
    /// yet resolved: the files a download must fetch beside it.
    pub fn external_locations(path: &Path) -> Result<Vec<String>> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let parsed = parse(path, &bytes)?;
        let mut locations: Vec<String> = external_data(&parsed.graph).map(|(_, l)| l.to_string()).collect();
        locations.sort();
        locations.dedup();
        Ok(locations)
    }

    /// The opset of a domain ("" is the default domain).
    pub fn opset(&self, domain: &str) -> Option<i64> {
        self.opsets
            .iter()
            .find(|(d, _)| d == domain || (domain.is_empty() && d == "ai.onnx"))
            .map(|(_, v)| *v)
    }

    /// The external data files, resolved.
    pub fn external_files(&self) -> Vec<PathBuf> {
        self.external.values().cloned().collect()
    }

    /// The elements of a tensor of this model (an initializer or a tensor attribute).
    pub fn tensor(&self, t: &TensorRef) -> Result<HostTensor> {
        host_tensor(t, &self.bytes, &self.external, &self.path)
    }
}

/// Reads a serialized TensorProto file (the inputs and outputs of the ONNX backend tests).
pub fn read_tensor_file(path: &Path) -> Result<HostTensor> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let t = proto::parse_tensor(&proto::Reader::new(&bytes, 0)).map_err(|e| {
        Error::format(
            path,
            format!("not a valid TensorProto (at byte {}): {}", e.offset, e.message),
        )
    })?;
    host_tensor(&t, &bytes, &BTreeMap::new(), path)
}

/// The elements of a TensorProto whose raw data lies in `file_bytes` (the file it was read from).
fn host_tensor(
    t: &TensorRef,
    file_bytes: &[u8],
    external: &BTreeMap<String, PathBuf>,
    origin: &Path,
) -> Result<HostTensor> {
    let bad = |message: String| Error::format(origin, format!("tensor `{}`: {message}", t.name));
    let dtype = dtype_of(t.elem_type).ok_or_else(|| Error::Unsupported {
        platform: "graph".into(),
        what: format!("tensor `{}` of {}", t.name, origin.display()),
        reason: format!(
            "its element type {} ({}) is not one the graph layer reads (float, float16, bfloat16, double, int64, int32, uint8, bool)",
            t.elem_type,
            elem_type_name(t.elem_type)
        ),
    })?;
    let shape = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad(format!("has a negative dimension {d}"))))
        .collect::<Result<Vec<usize>>>()?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(format!("dimensions {:?} overflow", t.dims)))?;
    let data = match &t.payload {
        Payload::Raw { offset, len } => {
            let b = file_bytes
                .get(*offset..offset + len)
                .ok_or_else(|| bad("raw data runs past the end of the file".into()))?;
            from_le_bytes(dtype, b, count).map_err(bad)?
        }
        Payload::External {
            location,
            offset,
            length,
        } => {
            let file = external
                .get(location)
                .ok_or_else(|| bad(format!("external data `{location}` was not resolved")))?;
            let want = (count as u64).checked_mul(dtype_size(dtype) as u64);
            let length = length.or(want).ok_or_else(|| bad("size overflows".into()))?;
            let b = read_range(file, *offset, length)?;
            from_le_bytes(dtype, &b, count).map_err(bad)?
        }
        Payload::Floats(v) => match dtype {
            DType::F32 => TensorData::F32(v.clone()),
            _ => return Err(bad("float_data for a tensor that is not float".into())),
        },
        Payload::Doubles(v) => match dtype {
            DType::F64 => TensorData::F64(v.clone()),
            _ => return Err(bad("double_data for a tensor that is not double".into())),
        },
        Payload::Integers(v) => match dtype {
            DType::I64 => TensorData::I64(v.iter().map(|&x| x as i64).collect()),
            DType::I32 => TensorData::I32(v.iter().map(|&x| x as i64 as i32).collect()),
            DType::U8 => TensorData::U8(v.iter().map(|&x| x as u8).collect()),
            DType::Bool => TensorData::Bool(v.iter().map(|&x| x != 0).collect()),
            DType::F16 => TensorData::F16(v.iter().map(|&x| f16::from_bits(x as u16)).collect()),
            DType::BF16 => TensorData::BF16(v.iter().map(|&x| bf16::from_bits(x as u16)).collect()),
            // An empty tensor has no data field at all.
            DType::F32 if v.is_empty() => TensorData::F32(Vec::new()),
            DType::F64 if v.is_empty() => TensorData::F64(Vec::new()),
            _ => return Err(bad("integer data for a float tensor".into())),
        },
        Payload::Strings(_) => return Err(bad("is a string tensor".into())),
    };
    HostTensor::new(shape, data).map_err(|e| bad(format!("element count does not match its dimensions: {e}")))
}

fn parse(path: &Path, bytes: &[u8]) -> Result<proto::ModelProto> {
    proto::parse_model(bytes).map_err(|e| {
        Error::format(
            path,
            format!("not a valid ONNX model (at byte {}): {}", e.offset, e.message),
        )
    })
}

/// (tensor name, location) of every tensor of `graph` whose data is external.
fn external_data(graph: &Graph) -> impl Iterator<Item = (&str, &str)> {
    let mut tensors = Vec::new();
    graph.tensors(&mut tensors);
    tensors.into_iter().filter_map(|t| match &t.payload {
        Payload::External { location, .. } => Some((t.name.as_str(), location.as_str())),
        _ => None,
    })
}

/// The `blobs/` folder of the Hugging Face cache repository whose snapshot holds `dir`, if it is
/// one: a snapshot's files are links into it (`models--org--name/snapshots/<commit>/...` ->
/// `models--org--name/blobs/<hash>`), the cache layout that hwcov and huggingface_hub share.
fn hub_cache_blobs(dir: &Path) -> Option<PathBuf> {
    let snapshot = dir
        .ancestors()
        .find(|a| a.parent().and_then(|p| p.file_name()) == Some("snapshots".as_ref()))?;
    let repo = snapshot.parent()?.parent()?;
    Some(repo.join("blobs"))
}

/// The file an external data location names, refused when it leaves the folder of `model`.
fn confined(model: &Path, tensor: &str, location: &str) -> Result<PathBuf> {
    let refuse = |why: &str| {
        Error::format(
            model,
            format!(
                "tensor `{tensor}`: external data location `{location}` {why}; it must lie inside the model's folder"
            ),
        )
    };
    let rel = Path::new(location);
    if location.is_empty() {
        return Err(refuse("is empty"));
    }
    for c in rel.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err(refuse("goes up with `..`")),
            Component::RootDir | Component::Prefix(_) => return Err(refuse("is an absolute path")),
        }
    }
    let dir = model
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file = dir.join(rel);
    let real_dir = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
    let real = file.canonicalize().map_err(|e| {
        Error::io(
            &file,
            std::io::Error::new(
                e.kind(),
                format!("external data of {} is missing: {e}", model.display()),
            ),
        )
    })?;
    let in_hub_blobs = hub_cache_blobs(&real_dir).is_some_and(|blobs| real.parent() == Some(blobs.as_path()));
    if !real.starts_with(&real_dir) && !in_hub_blobs {
        return Err(refuse(&format!("leads to {} through a symbolic link", real.display())));
    }
    if !real.is_file() {
        return Err(refuse("is not a file"));
    }
    Ok(file)
}

fn read_range(file: &Path, offset: u64, length: u64) -> Result<Vec<u8>> {
    let mut f = std::fs::File::open(file).map_err(|e| Error::io(file, e))?;
    let size = f.metadata().map_err(|e| Error::io(file, e))?.len();
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(Error::format(
            file,
            format!(
                "external data range {offset}..{} runs past the end of the file ({size} bytes)",
                offset.saturating_add(length)
            ),
        ));
    }
    f.seek(SeekFrom::Start(offset)).map_err(|e| Error::io(file, e))?;
    let len = usize::try_from(length).map_err(|_| Error::format(file, "external data range too large"))?;
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf).map_err(|e| Error::io(file, e))?;
    Ok(buf)
}

/// Little-endian bytes as elements of `dtype`, checking there are `count` of them.
pub fn from_le_bytes(dtype: DType, b: &[u8], count: usize) -> std::result::Result<TensorData, String> {
    let size = dtype_size(dtype);
    if b.len() != count.saturating_mul(size) {
        return Err(format!(
            "holds {} bytes; {count} elements of {dtype} take {}",
            b.len(),
            count.saturating_mul(size)
        ));
    }
    fn chunks<T, const N: usize>(b: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        b.chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                f(a)
            })
            .collect()
    }
    Ok(match dtype {
        DType::F64 => TensorData::F64(chunks(b, f64::from_le_bytes)),
        DType::F32 => TensorData::F32(chunks(b, f32::from_le_bytes)),
        DType::F16 => TensorData::F16(chunks(b, |c| f16::from_bits(u16::from_le_bytes(c)))),
        DType::BF16 => TensorData::BF16(chunks(b, |c| bf16::from_bits(u16::from_le_bytes(c)))),
        DType::I64 => TensorData::I64(chunks(b, i64::from_le_bytes)),
        DType::I32 => TensorData::I32(chunks(b, i32::from_le_bytes)),
        DType::U8 => TensorData::U8(b.to_vec()),
        DType::Bool => TensorData::Bool(b.iter().map(|&x| x != 0).collect()),
    })
}

/// Bytes per element.
pub fn dtype_size(dtype: DType) -> usize {
    match dtype {
        DType::F64 | DType::I64 => 8,
        DType::F32 | DType::I32 => 4,
        DType::F16 | DType::BF16 => 2,
        DType::U8 | DType::Bool => 1,
    }
}

/// The hwcov dtype of an ONNX element type, where there is one.
pub fn dtype_of(elem_type: i32) -> Option<DType> {
    match elem_type {
        1 => Some(DType::F32),
        2 => Some(DType::U8),
        6 => Some(DType::I32),
        7 => Some(DType::I64),
        9 => Some(DType::Bool),
        10 => Some(DType::F16),
        11 => Some(DType::F64),
        16 => Some(DType::BF16),
        _ => None,
    }
}

/// The ONNX element type of an hwcov dtype.
pub fn elem_type_of(dtype: DType) -> i32 {
    match dtype {
        DType::F32 => 1,
        DType::U8 => 2,
        DType::I32 => 6,
        DType::I64 => 7,
        DType::Bool => 9,
        DType::F16 => 10,
        DType::F64 => 11,
        DType::BF16 => 16,
    }
}

/// The ONNX name of an element type.
pub fn elem_type_name(elem_type: i32) -> &'static str {
    match elem_type {
        1 => "float",
        2 => "uint8",
        3 => "int8",
        4 => "uint16",
        5 => "int16",
        6 => "int32",
        7 => "int64",
        8 => "string",
        9 => "bool",
        10 => "float16",
        11 => "double",
        12 => "uint32",
        13 => "uint64",
        14 => "complex64",
        15 => "complex128",
        16 => "bfloat16",
        17..=20 => "float8",
        21 => "uint4",
        22 => "int4",
        _ => "unknown",
    }
}
