//! The protobuf wire format of onnx.proto, decoded into the types of `model.rs`: ModelProto,
//! GraphProto, NodeProto, AttributeProto, TensorProto, ValueInfoProto. Tensor payloads stay where
//! they are (a byte range of the file, or a place in an external data file) until asked for.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::{Attribute, Dim, Graph, Node, Payload, TensorRef, ValueInfo};

/// A protobuf decoding error, with the byte offset where it happened.
#[derive(Debug)]
pub struct DecodeError {
    pub offset: usize,
    pub message: String,
}

type Result<T> = std::result::Result<T, DecodeError>;

/// A field of a message.
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// Reads the fields of one message in order.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf` in the whole file, for error messages and payload ranges.
    base: usize,
    /// How many messages this one is nested in (subgraphs recurse: graph, node, attribute, graph).
    depth: usize,
}

/// The deepest a message may be nested: 3 levels a subgraph (node, attribute, graph), so about 60
/// nested If / Loop bodies, far more than exports have, and shallow enough that a file nesting
/// subgraphs without end is refused instead of overflowing the stack of the recursive parse.
pub const MAX_NESTING: usize = 180;

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], base: usize) -> Self {
        Reader {
            buf,
            pos: 0,
            base,
            depth: 0,
        }
    }

    /// The same message, read again from its start.
    fn restart(&self) -> Reader<'a> {
        Reader {
            buf: self.buf,
            pos: 0,
            base: self.base,
            depth: self.depth,
        }
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

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() - self.pos < n {
            return Err(self.err(format!("field of {n} bytes runs past the end of its message")));
        }
        let start = self.pos;
        self.pos += n;
        Ok(&self.buf[start..start + n])
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// The next field, or `None` at the end of the message.
    pub fn next_field(&mut self) -> Result<Option<(u32, Value<'a>)>> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = u32::try_from(key >> 3).map_err(|_| self.err("field number overflows"))?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => Value::Fixed64(u64::from_le_bytes(self.fixed()?)),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| self.err("length overflows"))?;
                Value::Bytes(self.take(len)?)
            }
            5 => Value::Fixed32(u32::from_le_bytes(self.fixed()?)),
            w => return Err(self.err(format!("unsupported wire type {w} (field {field})"))),
        };
        Ok(Some((field, value)))
    }

    /// Offset in the whole file of a slice of this message.
    pub fn offset_of(&self, bytes: &[u8]) -> usize {
        self.base + (bytes.as_ptr() as usize - self.buf.as_ptr() as usize)
    }

    /// A reader over a nested message.
    fn sub(&self, bytes: &'a [u8]) -> Reader<'a> {
        Reader {
            depth: self.depth + 1,
            ..Reader::new(bytes, self.offset_of(bytes))
        }
    }
}

fn string(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
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

/// A repeated varint field, packed or not, appended to `out`.
fn varints(v: &Value, r: &Reader, what: &str, out: &mut Vec<u64>) -> Result<()> {
    match v {
        Value::Varint(x) => out.push(*x),
        Value::Bytes(b) => {
            let mut p = r.sub(b);
            while p.pos < p.buf.len() {
                out.push(p.varint()?);
            }
        }
        _ => return Err(r.err(format!("{what}: expected varints"))),
    }
    Ok(())
}

/// A repeated fixed32 field (floats), packed or not.
fn fixed32s(v: &Value, r: &Reader, what: &str, out: &mut Vec<u32>) -> Result<()> {
    match v {
        Value::Fixed32(x) => out.push(*x),
        Value::Bytes(b) if b.len() % 4 == 0 => {
            out.extend(b.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        }
        _ => return Err(r.err(format!("{what}: expected 32-bit values"))),
    }
    Ok(())
}

/// A repeated fixed64 field (doubles), packed or not.
fn fixed64s(v: &Value, r: &Reader, what: &str, out: &mut Vec<u64>) -> Result<()> {
    match v {
        Value::Fixed64(x) => out.push(*x),
        Value::Bytes(b) if b.len() % 8 == 0 => out.extend(b.chunks_exact(8).map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            u64::from_le_bytes(a)
        })),
        _ => return Err(r.err(format!("{what}: expected 64-bit values"))),
    }
    Ok(())
}

/// ModelProto, as far as the graph layer needs it.
pub struct ModelProto {
    pub ir_version: i64,
    pub producer: String,
    /// (domain, version); the default domain is "".
    pub opsets: Vec<(String, i64)>,
    pub graph: Graph,
}

/// Parses ModelProto.
pub fn parse_model(buf: &[u8]) -> Result<ModelProto> {
    let mut r = Reader::new(buf, 0);
    let (mut ir_version, mut producer, mut opsets, mut graph) = (0, String::new(), Vec::new(), None);
    while let Some((field, v)) = r.next_field()? {
        match field {
            1 => ir_version = varint(&v, &r, "ir_version")? as i64,
            2 => producer = string(bytes(&v, &r, "producer_name")?),
            7 => graph = Some(bytes(&v, &r, "graph")?),
            8 => {
                let mut o = r.sub(bytes(&v, &r, "opset_import")?);
                let (mut domain, mut version) = (String::new(), 0);
                while let Some((f, v)) = o.next_field()? {
                    match f {
                        1 => domain = string(bytes(&v, &o, "domain")?),
                        2 => version = varint(&v, &o, "version")? as i64,
                        _ => {}
                    }
                }
                opsets.push((domain, version));
            }
            _ => {}
        }
    }
    let Some(g) = graph else {
        return Err(r.err("the model has no graph"));
    };
    let graph = parse_graph(&r.sub(g))?;
    Ok(ModelProto {
        ir_version,
        producer,
        opsets,
        graph,
    })
}

/// Parses GraphProto (the top graph or a subgraph of If, Loop, Scan).
pub fn parse_graph(r: &Reader) -> Result<Graph> {
    let mut r = r.restart();
    if r.depth > MAX_NESTING {
        return Err(r.err(format!(
            "subgraphs are nested more than {MAX_NESTING} messages deep (graph, node, attribute, graph, ...)"
        )));
    }
    let mut g = Graph::default();
    let mut inputs = Vec::new();
    while let Some((field, v)) = r.next_field()? {
        match field {
            1 => {
                let node = parse_node(&r.sub(bytes(&v, &r, "node")?))?;
                g.nodes.push(Arc::new(node));
            }
            2 => g.name = string(bytes(&v, &r, "name")?),
            5 => {
                let t = parse_tensor(&r.sub(bytes(&v, &r, "initializer")?))?;
                g.initializers.insert(t.name.clone(), Arc::new(t));
            }
            11 => inputs.push(parse_value_info(&r.sub(bytes(&v, &r, "input")?))?),
            12 => g.outputs.push(parse_value_info(&r.sub(bytes(&v, &r, "output")?))?),
            15 => return Err(r.err("sparse initializers are not supported")),
            _ => {}
        }
    }
    // Older exporters list initializers among the inputs; they are not inputs to feed.
    g.inputs = inputs
        .into_iter()
        .filter(|i| !g.initializers.contains_key(&i.name))
        .collect();
    Ok(g)
}

fn parse_node(r: &Reader) -> Result<Node> {
    let mut r = r.restart();
    let mut n = Node::default();
    while let Some((field, v)) = r.next_field()? {
        match field {
            1 => n.inputs.push(string(bytes(&v, &r, "input")?)),
            2 => n.outputs.push(string(bytes(&v, &r, "output")?)),
            3 => n.name = string(bytes(&v, &r, "name")?),
            4 => n.op_type = string(bytes(&v, &r, "op_type")?),
            7 => n.domain = string(bytes(&v, &r, "domain")?),
            5 => {
                let (name, attr) = parse_attribute(&r.sub(bytes(&v, &r, "attribute")?))?;
                n.attributes.insert(name, attr);
            }
            _ => {}
        }
    }
    if n.domain == "ai.onnx" {
        n.domain.clear();
    }
    Ok(n)
}

fn parse_attribute(r: &Reader) -> Result<(String, Attribute)> {
    let mut r = r.restart();
    let mut name = String::new();
    let mut kind = 0u64;
    let (mut f, mut i, mut s, mut t, mut g) = (None, None, None, None, None);
    let (mut floats, mut ints, mut strings, mut tensors, mut graphs) = (vec![], vec![], vec![], vec![], vec![]);
    let mut ref_attr = None;
    while let Some((field, v)) = r.next_field()? {
        match field {
            1 => name = string(bytes(&v, &r, "attribute name")?),
            20 => kind = varint(&v, &r, "attribute type")?,
            21 => ref_attr = Some(string(bytes(&v, &r, "ref_attr_name")?)),
            2 => match v {
                Value::Fixed32(x) => f = Some(f32::from_bits(x)),
                _ => return Err(r.err("attribute f: expected a float")),
            },
            3 => i = Some(varint(&v, &r, "attribute i")? as i64),
            4 => s = Some(bytes(&v, &r, "attribute s")?.to_vec()),
            5 => t = Some(parse_tensor(&r.sub(bytes(&v, &r, "attribute t")?))?),
            6 => g = Some(parse_graph(&r.sub(bytes(&v, &r, "attribute g")?))?),
            7 => {
                let mut bits = Vec::new();
                fixed32s(&v, &r, "attribute floats", &mut bits)?;
                floats.extend(bits.into_iter().map(f32::from_bits));
            }
            8 => {
                let mut raw = Vec::new();
                varints(&v, &r, "attribute ints", &mut raw)?;
                ints.extend(raw.into_iter().map(|x| x as i64));
            }
            9 => strings.push(bytes(&v, &r, "attribute strings")?.to_vec()),
            10 => tensors.push(Arc::new(parse_tensor(&r.sub(bytes(&v, &r, "attribute tensors")?))?)),
            11 => graphs.push(Arc::new(parse_graph(&r.sub(bytes(&v, &r, "attribute graphs")?))?)),
            _ => {}
        }
    }
    if let Some(reference) = ref_attr {
        return Err(r.err(format!(
            "attribute `{name}` refers to function attribute `{reference}`, which only functions have"
        )));
    }
    // The type field decides; files from old exporters may leave it out, so fall back on what is set.
    let attr = match kind {
        1 => Attribute::Float(f.unwrap_or(0.0)),
        2 => Attribute::Int(i.unwrap_or(0)),
        3 => Attribute::String(s.unwrap_or_default()),
        4 => Attribute::Tensor(Arc::new(
            t.ok_or_else(|| r.err(format!("attribute `{name}` has no tensor")))?,
        )),
        5 => Attribute::Graph(Arc::new(
            g.ok_or_else(|| r.err(format!("attribute `{name}` has no graph")))?,
        )),
        6 => Attribute::Floats(floats),
        7 => Attribute::Ints(ints),
        8 => Attribute::Strings(strings),
        9 => Attribute::Tensors(tensors),
        10 => Attribute::Graphs(graphs),
        0 => match (f, i, s, t, g) {
            (Some(f), ..) => Attribute::Float(f),
            (_, Some(i), ..) => Attribute::Int(i),
            (_, _, Some(s), ..) => Attribute::String(s),
            (_, _, _, Some(t), _) => Attribute::Tensor(Arc::new(t)),
            (_, _, _, _, Some(g)) => Attribute::Graph(Arc::new(g)),
            _ if !floats.is_empty() => Attribute::Floats(floats),
            _ if !strings.is_empty() => Attribute::Strings(strings),
            _ => Attribute::Ints(ints),
        },
        other => {
            return Err(r.err(format!(
                "attribute `{name}` has type {other} (sparse tensors and type protos are not supported)"
            )));
        }
    };
    Ok((name, attr))
}

/// TensorProto: name, type and shape, and where its elements are.
pub fn parse_tensor(r: &Reader) -> Result<TensorRef> {
    let mut r = r.restart();
    let mut name = String::new();
    let mut elem_type = 0i32;
    let mut dims = Vec::new();
    let mut raw = None;
    let (mut u64s, mut f32s, mut f64s) = (Vec::new(), Vec::new(), Vec::new());
    let mut external: BTreeMap<String, String> = BTreeMap::new();
    let mut data_location = 0;
    let mut strings = 0usize;
    while let Some((field, v)) = r.next_field()? {
        match field {
            1 => {
                let mut raw_dims = Vec::new();
                varints(&v, &r, "dims", &mut raw_dims)?;
                dims.extend(raw_dims.into_iter().map(|d| d as i64));
            }
            2 => elem_type = varint(&v, &r, "data_type")? as i32,
            3 => return Err(r.err("segmented tensors are not supported")),
            4 => fixed32s(&v, &r, "float_data", &mut f32s)?,
            5 | 7 | 11 => varints(&v, &r, "integer data", &mut u64s)?,
            6 => strings += 1,
            8 => name = string(bytes(&v, &r, "tensor name")?),
            9 => {
                let b = bytes(&v, &r, "raw_data")?;
                raw = Some((r.offset_of(b), b.len()));
            }
            10 => fixed64s(&v, &r, "double_data", &mut f64s)?,
            13 => {
                let mut e = r.sub(bytes(&v, &r, "external_data")?);
                let (mut key, mut value) = (String::new(), String::new());
                while let Some((f, v)) = e.next_field()? {
                    match f {
                        1 => key = string(bytes(&v, &e, "key")?),
                        2 => value = string(bytes(&v, &e, "value")?),
                        _ => {}
                    }
                }
                external.insert(key, value);
            }
            14 => data_location = varint(&v, &r, "data_location")?,
            _ => {}
        }
    }
    let payload = if data_location == 1 {
        let location = external
            .get("location")
            .cloned()
            .ok_or_else(|| r.err(format!("tensor `{name}` is stored externally but names no location")))?;
        let number = |key: &str| -> Result<Option<u64>> {
            external
                .get(key)
                .map(|s| {
                    s.trim()
                        .parse::<u64>()
                        .map_err(|_| r.err(format!("tensor `{name}`: external data {key} `{s}` is not a number")))
                })
                .transpose()
        };
        Payload::External {
            location,
            offset: number("offset")?.unwrap_or(0),
            length: number("length")?,
        }
    } else if let Some((offset, len)) = raw {
        Payload::Raw { offset, len }
    } else if strings > 0 {
        Payload::Strings(strings)
    } else if !f32s.is_empty() {
        Payload::Floats(f32s.into_iter().map(f32::from_bits).collect())
    } else if !f64s.is_empty() {
        Payload::Doubles(f64s.into_iter().map(f64::from_bits).collect())
    } else {
        // int32_data holds int32, int16, int8, uint16, uint8, bool, float16 and bfloat16 (as bits);
        // int64_data int64; uint64_data uint32 and uint64. Empty for a tensor of no elements.
        Payload::Integers(u64s)
    };
    Ok(TensorRef {
        name,
        elem_type,
        dims,
        payload,
    })
}

fn parse_value_info(r: &Reader) -> Result<ValueInfo> {
    let mut r = r.restart();
    let mut vi = ValueInfo {
        name: String::new(),
        elem_type: 0,
        shape: None,
    };
    while let Some((field, v)) = r.next_field()? {
        match field {
            1 => vi.name = string(bytes(&v, &r, "name")?),
            2 => {
                // TypeProto.tensor_type = 1 -> { elem_type = 1, shape = 2 { dim = 1 { value = 1 | param = 2 } } }
                let mut tr = r.sub(bytes(&v, &r, "type")?);
                while let Some((f, v)) = tr.next_field()? {
                    if f != 1 {
                        continue;
                    }
                    let mut ttr = tr.sub(bytes(&v, &tr, "tensor_type")?);
                    while let Some((f, v)) = ttr.next_field()? {
                        match f {
                            1 => vi.elem_type = varint(&v, &ttr, "elem_type")? as i32,
                            2 => {
                                let mut shape = Vec::new();
                                let mut sr = ttr.sub(bytes(&v, &ttr, "shape")?);
                                while let Some((f, v)) = sr.next_field()? {
                                    if f != 1 {
                                        continue;
                                    }
                                    let mut dr = sr.sub(bytes(&v, &sr, "dim")?);
                                    let mut dim = Dim::Unknown;
                                    while let Some((f, v)) = dr.next_field()? {
                                        match f {
                                            1 => dim = Dim::Fixed(varint(&v, &dr, "dim_value")? as i64),
                                            2 => dim = Dim::Symbolic(string(bytes(&v, &dr, "dim_param")?)),
                                            _ => {}
                                        }
                                    }
                                    shape.push(dim);
                                }
                                vi.shape = Some(shape);
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
