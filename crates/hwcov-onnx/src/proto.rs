//! Just enough of the protobuf wire format to read an ONNX model's structure (onnx.proto3): opsets,
//! graph inputs and outputs with their types and shapes, nodes by op type, and initializers' external
//! data. Tensor payloads are skipped, never copied.

use std::collections::BTreeMap;

/// A protobuf decoding error, with the byte offset where it happened.
#[derive(Debug)]
pub struct DecodeError {
    pub offset: usize,
    pub message: String,
}

type Result<T> = std::result::Result<T, DecodeError>;

/// A field of a message: its number and its value.
pub enum Value<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32,
}

/// Reads the fields of one message in order.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf` in the whole file, for error messages.
    base: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], base: usize) -> Self {
        Reader { buf, pos: 0, base }
    }

    fn err(&self, message: impl Into<String>) -> DecodeError {
        DecodeError {
            offset: self.base + self.pos,
            message: message.into(),
        }
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.err("truncated varint"));
            };
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    fn skip(&mut self, n: usize) -> Result<()> {
        if self.buf.len() - self.pos < n {
            return Err(self.err(format!("field of {n} bytes runs past the end of its message")));
        }
        self.pos += n;
        Ok(())
    }

    /// The next field, or `None` at the end of the message.
    pub fn next_field(&mut self) -> Result<Option<(u32, Value<'a>, usize)>> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = (key >> 3) as u32;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.skip(8)?;
                Value::Fixed64
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| self.err("length overflows"))?;
                let start = self.pos;
                self.skip(len)?;
                Value::Bytes(&self.buf[start..start + len])
            }
            5 => {
                self.skip(4)?;
                Value::Fixed32
            }
            w => return Err(self.err(format!("unsupported wire type {w} (field {field})"))),
        };
        let offset = self.base + self.pos;
        Ok(Some((field, value, offset)))
    }

    pub fn offset_of(&self, bytes: &[u8]) -> usize {
        self.base + (bytes.as_ptr() as usize - self.buf.as_ptr() as usize)
    }
}

fn string(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A dimension of a graph input or output.
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
    pub shape: Vec<Dim>,
}

/// The structure of an ONNX model.
#[derive(Debug, Clone, Default)]
pub struct ModelInfo {
    pub ir_version: i64,
    pub producer: String,
    /// (domain, version); the default domain is "".
    pub opsets: Vec<(String, i64)>,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
    /// Node count per op type (domain-qualified outside the default domain), subgraphs included.
    pub ops: BTreeMap<String, usize>,
    /// Files named by initializers stored outside the model file.
    pub external_data: Vec<String>,
    pub initializers: usize,
}

fn bytes<'a>(v: &Value<'a>, r: &Reader, what: &str) -> Result<&'a [u8]> {
    match v {
        Value::Bytes(b) => Ok(b),
        _ => Err(r.err(format!("{what}: expected a length-delimited field"))),
    }
}

fn varint(v: &Value, r: &Reader, what: &str) -> Result<u64> {
    match v {
        Value::Varint(x) => Ok(*x),
        _ => Err(r.err(format!("{what}: expected a varint"))),
    }
}

/// Parses ModelProto.
pub fn parse_model(buf: &[u8]) -> Result<ModelInfo> {
    let mut info = ModelInfo::default();
    let mut r = Reader::new(buf, 0);
    let mut graph = None;
    while let Some((field, v, _)) = r.next_field()? {
        match field {
            1 => info.ir_version = varint(&v, &r, "ir_version")? as i64,
            2 => info.producer = string(bytes(&v, &r, "producer_name")?),
            7 => graph = Some(bytes(&v, &r, "graph")?),
            8 => {
                let b = bytes(&v, &r, "opset_import")?;
                let mut o = Reader::new(b, r.offset_of(b));
                let (mut domain, mut version) = (String::new(), 0);
                while let Some((f, v, _)) = o.next_field()? {
                    match f {
                        1 => domain = string(bytes(&v, &o, "domain")?),
                        2 => version = varint(&v, &o, "version")? as i64,
                        _ => {}
                    }
                }
                info.opsets.push((domain, version));
            }
            _ => {}
        }
    }
    let Some(g) = graph else {
        return Err(r.err("the model has no graph"));
    };
    parse_graph(g, r.offset_of(g), &mut info, true)?;
    Ok(info)
}

fn parse_graph(buf: &[u8], base: usize, info: &mut ModelInfo, top: bool) -> Result<()> {
    let mut r = Reader::new(buf, base);
    let mut initializer_names = Vec::new();
    let mut inputs = Vec::new();
    while let Some((field, v, _)) = r.next_field()? {
        match field {
            1 => {
                let b = bytes(&v, &r, "node")?;
                parse_node(b, r.offset_of(b), info)?;
            }
            5 if top => {
                let b = bytes(&v, &r, "initializer")?;
                let (name, external) = parse_tensor(b, r.offset_of(b))?;
                initializer_names.push(name);
                if let Some(location) = external
                    && !info.external_data.contains(&location)
                {
                    info.external_data.push(location);
                }
            }
            11 if top => {
                let b = bytes(&v, &r, "input")?;
                inputs.push(parse_value_info(b, r.offset_of(b))?);
            }
            12 if top => {
                let b = bytes(&v, &r, "output")?;
                info.outputs.push(parse_value_info(b, r.offset_of(b))?);
            }
            _ => {}
        }
    }
    if top {
        // Older exporters list initializers among the inputs; they are not inputs to feed.
        info.initializers = initializer_names.len();
        info.inputs = inputs
            .into_iter()
            .filter(|i| !initializer_names.contains(&i.name))
            .collect();
    }
    Ok(())
}

fn parse_node(buf: &[u8], base: usize, info: &mut ModelInfo) -> Result<()> {
    let mut r = Reader::new(buf, base);
    let (mut op, mut domain) = (String::new(), String::new());
    while let Some((field, v, _)) = r.next_field()? {
        match field {
            4 => op = string(bytes(&v, &r, "op_type")?),
            7 => domain = string(bytes(&v, &r, "domain")?),
            5 => {
                // AttributeProto: g = 6 (a graph), graphs = 11 (If, Loop, Scan bodies).
                let b = bytes(&v, &r, "attribute")?;
                let mut a = Reader::new(b, r.offset_of(b));
                while let Some((f, v, _)) = a.next_field()? {
                    if f == 6 || f == 11 {
                        let g = bytes(&v, &a, "subgraph")?;
                        parse_graph(g, a.offset_of(g), info, false)?;
                    }
                }
            }
            _ => {}
        }
    }
    let key = if domain.is_empty() || domain == "ai.onnx" {
        op
    } else {
        format!("{domain}.{op}")
    };
    *info.ops.entry(key).or_default() += 1;
    Ok(())
}

/// TensorProto: its name, and the file holding its data when stored outside the model.
fn parse_tensor(buf: &[u8], base: usize) -> Result<(String, Option<String>)> {
    let mut r = Reader::new(buf, base);
    let (mut name, mut location, mut external) = (String::new(), None, false);
    while let Some((field, v, _)) = r.next_field()? {
        match field {
            8 => name = string(bytes(&v, &r, "name")?),
            14 => external = varint(&v, &r, "data_location")? == 1,
            13 => {
                let b = bytes(&v, &r, "external_data")?;
                let mut e = Reader::new(b, r.offset_of(b));
                let (mut key, mut value) = (String::new(), String::new());
                while let Some((f, v, _)) = e.next_field()? {
                    match f {
                        1 => key = string(bytes(&v, &e, "key")?),
                        2 => value = string(bytes(&v, &e, "value")?),
                        _ => {}
                    }
                }
                if key == "location" {
                    location = Some(value);
                }
            }
            _ => {}
        }
    }
    Ok((name, if external { location } else { None }))
}

fn parse_value_info(buf: &[u8], base: usize) -> Result<ValueInfo> {
    let mut r = Reader::new(buf, base);
    let mut vi = ValueInfo {
        name: String::new(),
        elem_type: 0,
        shape: Vec::new(),
    };
    while let Some((field, v, _)) = r.next_field()? {
        match field {
            1 => vi.name = string(bytes(&v, &r, "name")?),
            2 => {
                // TypeProto.tensor_type = 1 -> { elem_type = 1, shape = 2 { dim = 1 { value = 1 | param = 2 } } }
                let t = bytes(&v, &r, "type")?;
                let mut tr = Reader::new(t, r.offset_of(t));
                while let Some((f, v, _)) = tr.next_field()? {
                    if f != 1 {
                        continue;
                    }
                    let tt = bytes(&v, &tr, "tensor_type")?;
                    let mut ttr = Reader::new(tt, tr.offset_of(tt));
                    while let Some((f, v, _)) = ttr.next_field()? {
                        match f {
                            1 => vi.elem_type = varint(&v, &ttr, "elem_type")? as i32,
                            2 => {
                                let s = bytes(&v, &ttr, "shape")?;
                                let mut sr = Reader::new(s, ttr.offset_of(s));
                                while let Some((f, v, _)) = sr.next_field()? {
                                    if f != 1 {
                                        continue;
                                    }
                                    let d = bytes(&v, &sr, "dim")?;
                                    let mut dr = Reader::new(d, sr.offset_of(d));
                                    let mut dim = Dim::Unknown;
                                    while let Some((f, v, _)) = dr.next_field()? {
                                        match f {
                                            1 => dim = Dim::Fixed(varint(&v, &dr, "dim_value")? as i64),
                                            2 => dim = Dim::Symbolic(string(bytes(&v, &dr, "dim_param")?)),
                                            _ => {}
                                        }
                                    }
                                    vi.shape.push(dim);
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(vi)
}
