//! Runs the graph layer's plans on the device.
//!
//! A plan is compiled once per set of input shapes: every step lowered to its dispatches, every
//! value given a buffer (values whose lifetimes do not overlap share one; a Reshape shares its
//! input's), the parameters of all dispatches written into one uniform buffer, the bind groups
//! made. A run then writes the inputs, records the dispatches into one compute pass, and reads the
//! outputs and the status word back. Weights are uploaded once per graph.
//!
//! A plan that pauses on NonZero (its output's shape depends on the data) is run step by step
//! instead: the steps before it, then NonZero's count read back, then the rest.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use half::f16;
use hwcov_core::{DType, Error, HostTensor, NamedTensors, Result, TensorData};
use hwcov_onnx::feed::convert_input;
use hwcov_onnx::handler::Fate;
use hwcov_onnx::ir::{Op, ValueType};
use hwcov_onnx::{Operand, Plan, Program, Progress};

use crate::fuse::{self, Groups};
use crate::gpu::Gpu;
use crate::kernels::map::{self, Member, Source};
use crate::kernels::{self, Arg, Kernels, PARAM_WORDS, Scalar, StepIo, WG};
use crate::profile::{DispatchName, KernelTimes, Timed};

mod reuse;

const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_DST)
    .union(wgpu::BufferUsages::COPY_SRC);

/// Plans kept compiled per graph (the most recent input shapes).
const CACHED_PLANS: usize = 4;

/// Dispatches recorded before a run's first part is submitted (`HWCOV_WEBGPU_SUBMIT_EVERY` sets
/// another count, for tuning): enough that a submission's fixed cost stays small beside the work.
const DISPATCHES_PER_SUBMISSION: usize = 256;

fn dispatches_per_submission() -> usize {
    static EVERY: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *EVERY.get_or_init(|| {
        let Ok(v) = std::env::var("HWCOV_WEBGPU_SUBMIT_EVERY") else {
            return DISPATCHES_PER_SUBMISSION;
        };
        match v.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!(
                    "webgpu: HWCOV_WEBGPU_SUBMIT_EVERY={v} is not a positive count; \
                     {DISPATCHES_PER_SUBMISSION} dispatches a submission"
                );
                DISPATCHES_PER_SUBMISSION
            }
        }
    })
}

/// Buffers of kept outputs before released ones that fit no output are let go.
const KEPT_BUFFERS: usize = 256;

/// A dispatch ready to record.
struct Prepared {
    pipeline: Arc<wgpu::ComputePipeline>,
    bind: wgpu::BindGroup,
    /// Its op, node and workgroups.
    name: DispatchName,
}

/// A step's kernels and the buffers its dispatches bind besides the plan's values.
struct StepDevice {
    kernels: Arc<Kernels>,
    scratch: Vec<Arc<wgpu::Buffer>>,
    tables: Vec<Arc<wgpu::Buffer>>,
}

/// A plan's buffers and dispatches.
struct Compiled {
    plan: Plan,
    values: Vec<Option<Arc<wgpu::Buffer>>>,
    consts: Vec<Option<Arc<wgpu::Buffer>>>,
    prepared: Vec<Prepared>,
    /// Each step's kernels and buffers (`None` for steps not lowered yet).
    steps: Vec<Option<StepDevice>>,
    /// The fused groups the plan was compiled with.
    groups: Groups,
    /// The parameters of every dispatch, `prepared[i]`'s in block i, where the plan was compiled
    /// whole (not step by step): a plan with this buffer can be patched for other sizes.
    params: Option<Arc<wgpu::Buffer>>,
    /// Each step's node and op, for the status word's errors.
    nodes: Arc<Vec<(String, String)>>,
    /// Keeps the parameter blocks the bind groups point at.
    _held: Vec<Arc<wgpu::Buffer>>,
    status: Arc<wgpu::Buffer>,
}

/// A run's outputs: those read back to the host, and those kept on the device.
type Outputs = (NamedTensors, BTreeMap<String, DeviceTensor>);

/// A run recorded and not yet submitted (`Session::record`): its encoder, the error scopes
/// around it, and its timestamps where kernels are timed.
struct Recording {
    enc: wgpu::CommandEncoder,
    oom: wgpu::ErrorScopeGuard,
    invalid: wgpu::ErrorScopeGuard,
    timed: Option<crate::profile::Pending>,
    dispatches: usize,
}

/// A run's outputs on their way back (`Session::collect_start`).
struct Collecting {
    read: crate::gpu::PendingRead,
    /// Outputs already on the host (constants), and those kept on the device.
    host: NamedTensors,
    kept: BTreeMap<String, DeviceTensor>,
    /// The outputs being read back after the status word: name, type, and how many of the read's
    /// parts make it.
    pending: Vec<(String, ValueType, usize)>,
    nodes: Arc<Vec<(String, String)>>,
}

/// A run's read back recorded and not yet submitted: `submitted` once it is.
struct CollectRecorded(Collecting);

impl CollectRecorded {
    /// The read back's mapping requested, after the submission that holds its copies.
    fn submitted(self) -> Collecting {
        let mut c = self.0;
        c.read = c.read.submitted();
        c
    }
}

/// Each step's node and op.
fn nodes_of(plan: &Plan) -> Arc<Vec<(String, String)>> {
    Arc::new(plan.steps.iter().map(|s| (s.node.clone(), s.onnx_op.clone())).collect())
}

/// `types` with each (input, axis) of `growth` one longer.
fn grown(types: &[(String, ValueType)], growth: &[(String, usize)]) -> Vec<(String, ValueType)> {
    types
        .iter()
        .map(|(n, t)| {
            let mut t = t.clone();
            for (_, axis) in growth.iter().filter(|(g, _)| g == n) {
                if let Some(d) = t.shape.get_mut(*axis) {
                    *d += 1;
                }
            }
            (n.clone(), t)
        })
        .collect()
}

/// A compiled plan and what it holds for: the input types, and the values of the inputs that
/// decided shapes.
struct CachedPlan {
    types: Vec<ValueType>,
    values: Vec<(String, HostTensor)>,
    compiled: Arc<Compiled>,
}

/// One graph on the device.
pub struct Session {
    gpu: Arc<Gpu>,
    pub program: Arc<Program>,
    weights: HashMap<String, Arc<wgpu::Buffer>>,
    /// Keep weights in f16 (`kernels::Weights`): set before the first run, where the adapter has
    /// shader-f16.
    pub weights_f16: bool,
    /// The f16 copies of the weights, by initializer.
    weights16: HashMap<String, Arc<wgpu::Buffer>>,
    /// Compiled plans, the most recent first.
    cache: Vec<CachedPlan>,
    /// The kernels of steps seen before, by op and operand types: a decoding step's plan repeats
    /// most steps of the last one, only the attention over the grown cache changes shape.
    kernel_memo: HashMap<String, Arc<Kernels>>,
    /// The buffers of the plans' intermediate values, shared by every plan of the session: plans
    /// run one after another, and an intermediate lives within one run, so a buffer can serve a
    /// value of each (a decoding loop, which makes a plan per step, allocates nothing after the
    /// first steps).
    pool: Vec<Arc<wgpu::Buffer>>,
    /// The buffers of outputs kept on the device (`Fate::Keep`): one the caller no longer holds
    /// takes the next run's output, so that a decoding step's caches allocate nothing.
    kept: Vec<Arc<wgpu::Buffer>>,
    /// Dispatches of the last run.
    pub last_dispatches: usize,
    /// A run of more dispatches is submitted in parts of this many (`record`).
    pub dispatches_per_submission: usize,
    /// Dispatches since the session opened.
    pub total_dispatches: u64,
    /// What the caller expects of the next run (`expect_growth`).
    growth: Option<Vec<(String, usize)>>,
    /// Plans compiled, and plans made by patching a cached one (`reuse`), since the session opened.
    pub plans_compiled: u64,
    pub plans_patched: u64,
    /// Device time per dispatch, where `HWCOV_WEBGPU_PROFILE=kernels` asks for it.
    kernel_times: Option<KernelTimes>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(k) = &self.kernel_times {
            eprint!("{}", k.report());
        }
    }
}

/// A tensor left on the device between runs (a KV cache), with its type.
#[derive(Clone)]
pub struct DeviceTensor {
    pub buffer: Arc<wgpu::Buffer>,
    pub ty: ValueType,
}

/// An input of a run: from the host, or already on the device.
enum Feed {
    Host(HostTensor),
    Device(DeviceTensor),
}

impl Feed {
    fn ty(&self) -> ValueType {
        match self {
            Feed::Host(t) => ValueType::new(t.dtype(), t.shape().to_vec()),
            Feed::Device(d) => d.ty.clone(),
        }
    }
}

/// The device bytes of a host tensor (f32, or i32 for the integer and bool dtypes).
pub fn device_bytes(name: &str, t: &HostTensor) -> Result<Vec<u8>> {
    let ints = |v: &mut dyn Iterator<Item = i64>| -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for x in v {
            let y = i32::try_from(x).map_err(|_| {
                Error::tensor(
                    name,
                    format!("holds {x}, outside the int32 range the WebGPU kernels index with"),
                )
            })?;
            out.extend_from_slice(&y.to_le_bytes());
        }
        Ok(out)
    };
    match t.data() {
        TensorData::F32(v) => Ok(bytemuck::cast_slice(v).to_vec()),
        TensorData::I64(v) => ints(&mut v.iter().copied()),
        TensorData::I32(v) => Ok(bytemuck::cast_slice(v).to_vec()),
        TensorData::U8(v) => ints(&mut v.iter().map(|&x| x as i64)),
        TensorData::Bool(v) => ints(&mut v.iter().map(|&x| x as i64)),
        TensorData::F16(_) | TensorData::BF16(_) | TensorData::F64(_) => Err(Error::Unsupported {
            platform: "webgpu".into(),
            what: format!("tensor `{name}` of {}", t.dtype()),
            reason: "the WebGPU kernels compute in f32 and i32".into(),
        }),
    }
}

/// A host tensor of `ty` from device bytes.
fn from_device(name: &str, ty: &ValueType, bytes: &[u8]) -> Result<HostTensor> {
    let n = ty.numel();
    let words = &bytes[..(n * 4).min(bytes.len())];
    let i32s = || {
        words
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
    };
    let data = match ty.dtype {
        DType::F32 => TensorData::F32(
            words
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        DType::I64 => TensorData::I64(i32s().map(i64::from).collect()),
        DType::I32 => TensorData::I32(i32s().collect()),
        DType::U8 => TensorData::U8(i32s().map(|x| x as u8).collect()),
        DType::Bool => TensorData::Bool(i32s().map(|x| x != 0).collect()),
        other => return Err(Error::tensor(name, format!("no {other} outputs on WebGPU"))),
    };
    HostTensor::new(ty.shape.clone(), data).map_err(|e| Error::tensor(name, e))
}

/// The graph layer names unsupported ops for any platform; here they are WebGPU's.
fn as_webgpu(e: Error) -> Error {
    match e {
        Error::Unsupported { platform, what, reason } if platform == "graph" => Error::Unsupported {
            platform: "webgpu".into(),
            what,
            reason,
        },
        other => other,
    }
}

impl Session {
    pub fn open(gpu: Arc<Gpu>, path: &Path) -> Result<Self> {
        Ok(Session {
            kernel_times: KernelTimes::requested(&gpu, path.display().to_string()),
            gpu,
            program: Arc::new(Program::load(path)?),
            weights: HashMap::new(),
            weights_f16: false,
            weights16: HashMap::new(),
            cache: Vec::new(),
            kernel_memo: HashMap::new(),
            pool: Vec::new(),
            kept: Vec::new(),
            dispatches_per_submission: dispatches_per_submission(),
            last_dispatches: 0,
            total_dispatches: 0,
            growth: None,
            plans_compiled: 0,
            plans_patched: 0,
        })
    }

    pub fn path(&self) -> &Path {
        self.program.path()
    }

    /// Runs the graph on its declared inputs (taken from `given` by name, converted to the
    /// declared element type).
    pub fn run(&mut self, given: &NamedTensors) -> Result<NamedTensors> {
        Ok(self.run_resident(given, &BTreeMap::new(), &|_| Fate::Host)?.0)
    }

    /// Runs the graph on inputs from the host (`given`) and inputs left on the device by earlier
    /// runs (`resident`, by name); each output stays on the device or comes back to the host (whole,
    /// or each row's last position) as `fate` says.
    pub fn run_resident(
        &mut self,
        given: &NamedTensors,
        resident: &BTreeMap<String, DeviceTensor>,
        fate: &dyn Fn(&str) -> Fate,
    ) -> Result<Outputs> {
        let mut feeds = Vec::new();
        for (name, dtype) in self.program.input_types()? {
            if let Some(d) = resident.get(&name) {
                if d.ty.dtype != dtype {
                    return Err(Error::tensor(
                        name.clone(),
                        format!("is {} on the device; the graph takes {dtype}", d.ty.dtype),
                    ));
                }
                feeds.push((name, Feed::Device(d.clone())));
                continue;
            }
            let host = given.get(&name).ok_or_else(|| {
                Error::tensor(
                    name.clone(),
                    format!("missing input: the graph {} needs it", self.path().display()),
                )
            })?;
            let t = convert_input(&name, host, dtype)?;
            feeds.push((name, Feed::Host(t)));
        }
        let types: Vec<(String, ValueType)> = feeds.iter().map(|(n, f)| (n.clone(), f.ty())).collect();
        let values: NamedTensors = feeds
            .iter()
            .filter_map(|(n, f)| match f {
                Feed::Host(t) => Some((n.clone(), t.clone())),
                Feed::Device(_) => None,
            })
            .collect();
        let profile = std::env::var_os("HWCOV_WEBGPU_PROFILE").is_some();
        let mut timings = String::new();
        let compiled = match self.cached(&types, &values) {
            Some(c) => c,
            None => {
                let t0 = std::time::Instant::now();
                let program = self.program.clone();
                let mut spec = program.specializer_with_values(&types, &values).map_err(as_webgpu)?;
                match spec.advance().map_err(as_webgpu)? {
                    Progress::Done => self.cache_plan(spec.finish(), &types, &values, t0, &mut timings)?,
                    // The plan pauses on NonZero: run it part by part, not cached.
                    Progress::NeedsCount { step } => return self.run_stepwise(spec, step, &feeds, fate),
                }
            }
        };
        let t2 = std::time::Instant::now();
        let dispatches = compiled.prepared.len();
        // The dispatches and the read back's copies in one submission.
        let mut run = self.record(&compiled, &feeds, 0..dispatches)?;
        let recorded = self.collect_start(&compiled, fate, &mut run.enc)?;
        let t3 = std::time::Instant::now();
        self.submit(run)?;
        let collecting = recorded.submitted();
        let t4 = std::time::Instant::now();
        drop(compiled);
        // While the device runs: the plan of the run the caller expects next (`expect_growth`),
        // so that it finds it ready. A plan that fails here fails again, with its error, when
        // that run comes.
        let mut ahead = String::new();
        if let Some(growth) = self.growth.take() {
            let t = std::time::Instant::now();
            let next = grown(&types, &growth);
            let mut how = String::new();
            if self.cached(&next, &values).is_none() {
                let program = self.program.clone();
                if let Ok(mut spec) = program.specializer_with_values(&next, &values)
                    && let Ok(Progress::Done) = spec.advance()
                {
                    let _ = self.cache_plan(spec.finish(), &next, &values, t, &mut how);
                }
            }
            ahead = format!(
                ", next plan {:.2} ms of that ({})",
                t.elapsed().as_secs_f64() * 1e3,
                how.trim_end_matches(", ")
            );
        }
        let (out, read) = self.collect_finish(collecting)?;
        if profile {
            // What a run spends where, for tuning: on the host (specializing and compiling a
            // plan not seen before, recording the dispatches and the read back's copies), then
            // submitting, readying the next plan and waiting for the device; the latter split
            // into the submission, polling the device, the mapping, the copy out and the
            // conversion.
            let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
            eprintln!(
                "webgpu {}: {timings}record {:.2} ms, submit+wait+read {:.2} ms{ahead} (submitted {:.2}, \
                 device {:.2}, mapped {:.2}, copied {:.2}, converted {:.2}), {dispatches} dispatches",
                self.path().display(),
                ms(t3 - t2),
                ms(t3.elapsed()),
                ms(t4 - t3),
                read.wait,
                read.map,
                read.copy,
                read.convert,
            );
        }
        Ok(out)
    }

    /// Says that the next run takes the inputs of the coming one with the given (input, axis)
    /// one longer (a decoding step's self-attention cache and mask): the coming run readies that
    /// plan while the device works.
    pub fn expect_growth(&mut self, growth: &[(String, usize)]) {
        self.growth = Some(growth.to_vec());
    }

    /// The compiled plan for these input types and values, where one is cached (made the most
    /// recent).
    fn cached(&mut self, types: &[(String, ValueType)], values: &NamedTensors) -> Option<Arc<Compiled>> {
        let i = self.cache.iter().position(|c| {
            c.types.len() == types.len()
                && c.types.iter().zip(types).all(|(a, (_, b))| a == b)
                && c.values.iter().all(|(n, v)| values.get(n) == Some(v))
        })?;
        let entry = self.cache.remove(i);
        self.cache.insert(0, entry);
        Some(self.cache[0].compiled.clone())
    }

    /// Compiles `plan`, specialized for these inputs since `t0` (or patches a cached plan for it),
    /// into the cache. `timings` gets what it took.
    fn cache_plan(
        &mut self,
        plan: Plan,
        types: &[(String, ValueType)],
        values: &NamedTensors,
        t0: std::time::Instant,
        timings: &mut String,
    ) -> Result<Arc<Compiled>> {
        let t1 = std::time::Instant::now();
        let used: Vec<(String, HostTensor)> = plan
            .shape_inputs
            .iter()
            .filter_map(|n| values.get(n).map(|v| (n.clone(), v.clone())))
            .collect();
        let (c, how) = match self.patched(&plan)? {
            Some(c) => {
                self.plans_patched += 1;
                (c, "patch")
            }
            None => {
                self.plans_compiled += 1;
                let previous = self
                    .cache
                    .first()
                    .filter(|e| reuse::same_structure(&e.compiled.plan, &plan))
                    .map(|e| e.compiled.plan.values.clone());
                (self.compile(plan, previous.as_deref())?, "compile")
            }
        };
        let c = Arc::new(c);
        *timings = format!(
            "specialize {:.2} ms, {how} {:.2} ms, ",
            (t1 - t0).as_secs_f64() * 1e3,
            t1.elapsed().as_secs_f64() * 1e3
        );
        self.cache.insert(
            0,
            CachedPlan {
                types: types.iter().map(|(_, t)| t.clone()).collect(),
                values: used,
                compiled: c.clone(),
            },
        );
        self.cache.truncate(CACHED_PLANS);
        Ok(c)
    }

    /// Runs a plan that pauses on NonZero: each part as soon as it is known.
    fn run_stepwise(
        &mut self,
        mut spec: hwcov_onnx::Specializer<'_>,
        first_pause: usize,
        feeds: &[(String, Feed)],
        fate: &dyn Fn(&str) -> Fate,
    ) -> Result<Outputs> {
        // The plan grows; values get buffers as they appear, none shared.
        let mut c = Compiled {
            plan: Plan::default(),
            values: Vec::new(),
            consts: Vec::new(),
            prepared: Vec::new(),
            steps: Vec::new(),
            groups: Groups::default(),
            params: None,
            nodes: Arc::new(Vec::new()),
            _held: Vec::new(),
            status: Arc::new(self.gpu.buffer("status", 4, STORAGE)?),
        };
        let mut done = 0;
        let mut pause = Some(first_pause);
        let mut fed = false;
        loop {
            c.plan = spec.plan().clone();
            let end = pause.unwrap_or(c.plan.steps.len());
            let before = c.prepared.len();
            let unfused = Groups::none(c.plan.steps.len());
            self.append(&mut c, done..end, None, &unfused, None)?;
            let first: &[(String, Feed)] = if fed { &[] } else { feeds };
            fed = true;
            self.execute(&c, first, before..c.prepared.len())?;
            let Some(step) = pause else { break };
            let count = self.nonzero(&mut c, step)?;
            spec.resolve(count);
            c.plan = spec.plan().clone();
            let before = c.prepared.len();
            self.nonzero_fill(&mut c, step, count)?;
            self.execute(&c, &[], before..c.prepared.len())?;
            done = step + 1;
            pause = match spec.advance().map_err(as_webgpu)? {
                Progress::Done => None,
                Progress::NeedsCount { step } => Some(step),
            };
            if pause.is_none() {
                c.plan = spec.plan().clone();
                let end = c.plan.steps.len();
                let before = c.prepared.len();
                let unfused = Groups::none(c.plan.steps.len());
                self.append(&mut c, done..end, None, &unfused, None)?;
                self.execute(&c, &[], before..c.prepared.len())?;
                break;
            }
        }
        let missing = spec.missing_outputs();
        let plan = spec.finish();
        if let Some(m) = missing.first() {
            return Err(Error::tensor(
                m.clone(),
                format!("no node of {} produces it", self.path().display()),
            ));
        }
        c.plan = plan;
        c.nodes = nodes_of(&c.plan);
        self.collect(&c, fate)
    }

    /// Compiles a whole plan: elementwise chains fused, values whose lifetimes do not overlap
    /// sharing buffers. `previous`: the value types of the last plan, where it had the same
    /// structure (values that grew since get room to grow further: `reuse::capacity`).
    fn compile(&mut self, plan: Plan, previous: Option<&[ValueType]>) -> Result<Compiled> {
        let n = plan.steps.len();
        let groups = fuse::groups(&plan, self.max_fused_inputs());
        let bytes: Vec<u64> = (0..plan.values.len())
            .map(|v| reuse::capacity(&plan.values, previous, v))
            .collect();
        let mut c = Compiled {
            values: Vec::new(),
            consts: Vec::new(),
            prepared: Vec::new(),
            steps: Vec::new(),
            groups: Groups::default(),
            params: None,
            nodes: Arc::new(Vec::new()),
            _held: Vec::new(),
            status: Arc::new(self.gpu.buffer("status", 4, STORAGE)?),
            plan,
        };
        let lifetimes = lifetimes(&c.plan, &groups);
        let params = self.append(&mut c, 0..n, Some(&lifetimes), &groups, Some(&bytes))?;
        c.params = Some(params);
        c.groups = groups;
        c.nodes = nodes_of(&c.plan);
        Ok(c)
    }

    /// Fused groups read at most as many operands as a kernel may bind besides its output.
    fn max_fused_inputs(&self) -> usize {
        (self.gpu.limits.max_storage_buffers_per_shader_stage as usize)
            .saturating_sub(1)
            .min(8)
    }

    /// The buffer of a constant (weights once per graph, folded values once per plan).
    fn constant(&mut self, c: &mut Compiled, i: usize) -> Result<Arc<wgpu::Buffer>> {
        if c.consts.len() <= i {
            c.consts.resize(i + 1, None);
        }
        if let Some(b) = &c.consts[i] {
            return Ok(b.clone());
        }
        let k = &c.plan.constants[i];
        let name = k.initializer.clone().unwrap_or_else(|| format!("constant {i}"));
        if let Some(b) = k.initializer.as_ref().and_then(|n| self.weights.get(n)) {
            c.consts[i] = Some(b.clone());
            return Ok(b.clone());
        }
        let bytes = device_bytes(&name, &k.tensor)?;
        self.check_size(&name, bytes.len() as u64)?;
        // A folded constant may follow a size that grows step by step (a decoding step's positions):
        // room for more, so that a patched plan keeps its buffer.
        let room = match k.initializer {
            Some(_) => bytes.len() as u64,
            None => (bytes.len() as u64).next_multiple_of(256) * 2,
        };
        let b = Arc::new(self.gpu.buffer(&name, room, STORAGE)?);
        self.gpu.queue.write_buffer(&b, 0, &bytes);
        if let Some(n) = &k.initializer {
            self.weights.insert(n.clone(), b.clone());
        }
        c.consts[i] = Some(b.clone());
        Ok(b)
    }

    /// The f16 buffer of a weight (an initializer, `stored_f16`), made once per graph.
    fn weight16(&mut self, c: &Compiled, i: usize) -> Result<Arc<wgpu::Buffer>> {
        let k = &c.plan.constants[i];
        let name = k.initializer.clone().unwrap_or_else(|| format!("constant {i}"));
        if let Some(b) = self.weights16.get(&name) {
            return Ok(b.clone());
        }
        let TensorData::F32(v) = k.tensor.data() else {
            return Err(Error::tensor(name, "only f32 weights are kept in f16"));
        };
        let mut bytes = Vec::with_capacity(v.len() * 2);
        for &x in v.iter() {
            let h = f16::from_f32(x);
            if h.is_infinite() && x.is_finite() {
                return Err(Error::tensor(
                    name,
                    format!("holds {x}, outside the f16 range (|x| <= 65504): run it at f32"),
                ));
            }
            bytes.extend_from_slice(&h.to_bits().to_le_bytes());
        }
        // Queue writes go in whole words.
        bytes.resize(bytes.len().next_multiple_of(4), 0);
        self.check_size(&name, bytes.len() as u64)?;
        let b = Arc::new(self.gpu.buffer(&name, bytes.len() as u64, STORAGE)?);
        self.gpu.queue.write_buffer(&b, 0, &bytes);
        self.weights16.insert(name, b.clone());
        Ok(b)
    }

    fn check_size(&self, what: &str, bytes: u64) -> Result<()> {
        let limit = self.gpu.max_binding();
        if bytes > limit {
            return Err(Error::Unsupported {
                platform: "webgpu".into(),
                what: format!("tensor `{what}` ({bytes} bytes)"),
                reason: format!(
                    "larger than the {limit} bytes {} lets a kernel bind",
                    self.gpu.info.name
                ),
            });
        }
        Ok(())
    }

    /// The bytes of a value's buffer.
    fn value_bytes(ty: &ValueType) -> u64 {
        (ty.numel() as u64 * 4).max(4)
    }

    /// Lowers steps `range` of `c.plan`, gives their values buffers (of `bytes[v]` where given, else
    /// the value's size), and prepares their dispatches; returns the buffer of their parameters.
    fn append(
        &mut self,
        c: &mut Compiled,
        range: Range<usize>,
        lifetimes: Option<&Lifetimes>,
        groups: &Groups,
        bytes: Option<&[u64]>,
    ) -> Result<Arc<wgpu::Buffer>> {
        let nvalues = c.plan.values.len();
        c.values.resize(nvalues, None);
        c.steps.resize_with(c.plan.steps.len(), || None);
        let size_of = |plan: &Plan, v: usize| bytes.map_or_else(|| Self::value_bytes(&plan.values[v]), |b| b[v]);
        // Graph inputs: buffers of their own.
        for (name, v) in c.plan.inputs.clone() {
            if c.values[v].is_none() {
                let bytes = size_of(&c.plan, v);
                self.check_size(&name, bytes)?;
                c.values[v] = Some(Arc::new(self.gpu.buffer(&name, bytes, STORAGE)?));
            }
        }
        // Free buffers: the session's, then those this plan's values free as it goes.
        let shared = lifetimes.is_some();
        let mut pool: Vec<Arc<wgpu::Buffer>> = if shared {
            std::mem::take(&mut self.pool)
        } else {
            Vec::new()
        };
        let mut taken: Vec<Arc<wgpu::Buffer>> = Vec::new();
        let mut kernels_of = Vec::new();
        for s in range.clone() {
            let step = c.plan.steps[s].clone();
            if groups.absorbed_into.get(s).copied().flatten().is_some() {
                // Computed inside the kernel of its group: no dispatch, no buffer.
                kernels_of.push((s, Arc::new(Kernels::default())));
                continue;
            }
            let io = step_io(&c.plan, s, &step, self.weights_f16);
            let k = match groups.members.get(&s) {
                Some(members) => Arc::new(fused_kernels(&c.plan, members, &io)?),
                None => self.memo_kernels(&io)?,
            };
            // Buffers of the outputs.
            for (j, &v) in step.outputs.iter().enumerate() {
                if c.values[v].is_some() {
                    continue;
                }
                let buffer = if k.alias {
                    match step.inputs[0] {
                        Operand::Value(src) => c.values[src].clone(),
                        Operand::Const(i) => Some(self.constant(c, i)?),
                    }
                } else {
                    None
                };
                let buffer = match buffer {
                    Some(b) => b,
                    None => {
                        let bytes = size_of(&c.plan, v);
                        self.check_size(&format!("{} output {j}", step.node), bytes)?;
                        let b = take_or_make(&self.gpu, &mut pool, bytes, &step.node)?;
                        let output = c.plan.outputs.iter().any(|(_, o)| *o == Operand::Value(v));
                        if !output {
                            taken.push(b.clone());
                        }
                        b
                    }
                };
                c.values[v] = Some(buffer);
            }
            // Values whose last reader is this step go back to the pool.
            if let Some(l) = lifetimes {
                for &v in &l.freed_after[s] {
                    if let Some(b) = &c.values[v] {
                        pool.push(b.clone());
                    }
                }
            }
            kernels_of.push((s, k));
        }
        if shared {
            // Every buffer this plan's intermediates use goes back to the session for the next
            // plan (each once).
            let mut seen = std::collections::HashSet::new();
            self.pool = pool
                .into_iter()
                .chain(taken)
                .filter(|b| seen.insert(Arc::as_ptr(b)))
                .collect();
        }
        // Parameters of every dispatch in one uniform buffer.
        let total: usize = kernels_of.iter().map(|(_, k)| k.dispatches.len()).sum();
        let block = (PARAM_WORDS * 4) as u64;
        let params = self.gpu.buffer(
            "parameters",
            block * total.max(1) as u64,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        )?;
        let mut words = Vec::with_capacity(total * PARAM_WORDS);
        let mut slot = 0u64;
        let scope = self.gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        for (s, k) in kernels_of {
            let op = match groups.members.get(&s) {
                Some(members) => {
                    let ops: Vec<&str> = members.iter().map(|&m| c.plan.steps[m].onnx_op.as_str()).collect();
                    format!("fused {}", ops.join("+"))
                }
                None => c.plan.steps[s].onnx_op.clone(),
            };
            let first = c.prepared.len();
            self.prepare(c, s, &k, &params, &mut slot, &mut words)?;
            for d in &mut c.prepared[first..] {
                d.name.op.clone_from(&op);
            }
        }
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::runtime(format!("preparing {}", self.path().display()), e));
        }
        self.gpu.queue.write_buffer(&params, 0, bytemuck::cast_slice(&words));
        let params = Arc::new(params);
        c._held.push(params.clone());
        Ok(params)
    }

    /// Each cache tensor (batch, heads, length, head_dim) with `front` zero rows added before the
    /// first along the length axis, or its first `-front` rows dropped: copies of whole rows on
    /// the device (new buffers start zeroed), all in one submission.
    pub fn shift_caches(&mut self, caches: Vec<DeviceTensor>, front: isize) -> Result<Vec<DeviceTensor>> {
        let mut enc = self.gpu.device.create_command_encoder(&Default::default());
        let mut out = Vec::with_capacity(caches.len());
        for d in caches {
            let [b, h, l, e] = d.ty.shape[..] else {
                return Err(Error::runtime(
                    "shifting the cache",
                    format!("a cache tensor of shape {:?}", d.ty.shape),
                ));
            };
            let new_l = (l as isize + front).max(0) as usize;
            let ty = ValueType::new(d.ty.dtype, vec![b, h, new_l, e]);
            let buffer = self.gpu.buffer("KV cache", (ty.numel() * 4) as u64, STORAGE)?;
            let (skip, keep) = if front >= 0 { (0, l) } else { ((-front) as usize, new_l) };
            let pad = if front >= 0 { front as usize } else { 0 };
            for plane in 0..b * h {
                let src = ((plane * l + skip) * e * 4) as u64;
                let dst = ((plane * new_l + pad) * e * 4) as u64;
                let n = (keep * e * 4) as u64;
                if n > 0 {
                    enc.copy_buffer_to_buffer(&d.buffer, src, &buffer, dst, n);
                }
            }
            out.push(DeviceTensor {
                buffer: Arc::new(buffer),
                ty,
            });
        }
        self.gpu.queue.submit([enc.finish()]);
        Ok(out)
    }

    /// The kernels of a step, from the memo where the same op met the same types before.
    fn memo_kernels(&mut self, io: &StepIo) -> Result<Arc<Kernels>> {
        // Constants change a kernel only through a scalar (Pow's exponent): larger ones are left
        // out of the key.
        let consts: Vec<Option<Vec<f64>>> = io
            .consts
            .iter()
            .map(|c| c.filter(|t| t.len() <= 4).map(|t| t.to_f64_vec()))
            .collect();
        let key = format!("{:?}|{:?}|{:?}|{:?}|{}", io.step.op, io.ins, io.outs, consts, io.index);
        if let Some(k) = self.kernel_memo.get(&key) {
            return Ok(k.clone());
        }
        let k = Arc::new(kernels::kernels(io)?);
        if self.kernel_memo.len() > 20_000 {
            self.kernel_memo.clear();
        }
        self.kernel_memo.insert(key, k.clone());
        Ok(k)
    }

    /// Makes the bind groups of one step's dispatches.
    fn prepare(
        &mut self,
        c: &mut Compiled,
        s: usize,
        k: &Arc<Kernels>,
        params: &wgpu::Buffer,
        slot: &mut u64,
        words: &mut Vec<u32>,
    ) -> Result<()> {
        let step = c.plan.steps[s].clone();
        let mut scratch = Vec::new();
        for (j, &bytes) in k.scratch.iter().enumerate() {
            scratch.push(Arc::new(self.gpu.buffer(
                &format!("{} scratch {j}", step.node),
                reuse::spare(bytes),
                STORAGE,
            )?));
        }
        let mut tables = Vec::new();
        for (j, t) in k.tables.iter().enumerate() {
            let b = Arc::new(self.gpu.buffer(
                &format!("{} table {j}", step.node),
                reuse::spare((t.len() * 4) as u64),
                STORAGE,
            )?);
            self.gpu.queue.write_buffer(&b, 0, bytemuck::cast_slice(t));
            tables.push(b);
        }
        for d in &k.dispatches {
            if d.groups.contains(&0) {
                continue;
            }
            let pipeline = self.gpu.pipeline(&d.source)?;
            let mut buffers: Vec<Arc<wgpu::Buffer>> = Vec::new();
            for a in &d.args {
                buffers.push(match *a {
                    Arg::In(i) => match step.inputs[i] {
                        Operand::Value(v) => c.values[v]
                            .clone()
                            .ok_or_else(|| Error::runtime(&step.node, "an input has no buffer"))?,
                        Operand::Const(ci) if stored_f16(self.weights_f16, &c.plan, &step, i) => {
                            self.weight16(c, ci)?
                        }
                        Operand::Const(ci) => self.constant(c, ci)?,
                    },
                    Arg::Out(i) => c.values[step.outputs[i]]
                        .clone()
                        .ok_or_else(|| Error::runtime(&step.node, "an output has no buffer"))?,
                    Arg::Scratch(i) => scratch[i].clone(),
                    Arg::Table(i) => tables[i].clone(),
                    Arg::Status => c.status.clone(),
                    Arg::Plan(Operand::Value(v)) => c.values[v]
                        .clone()
                        .ok_or_else(|| Error::runtime(&step.node, "an operand of a fused group has no buffer"))?,
                    Arg::Plan(Operand::Const(ci)) => self.constant(c, ci)?,
                });
            }
            let mut block = d.params.clone();
            if block.len() > PARAM_WORDS {
                return Err(Error::runtime(
                    &step.node,
                    format!("{} parameter words (at most {PARAM_WORDS})", block.len()),
                ));
            }
            block.resize(PARAM_WORDS, 0);
            words.extend_from_slice(&block);
            let offset = *slot * (PARAM_WORDS * 4) as u64;
            *slot += 1;
            let block = wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: params,
                offset,
                size: std::num::NonZeroU64::new((PARAM_WORDS * 4) as u64),
            });
            let bind = self.gpu.bind_group(&pipeline, block, &buffers);
            c.prepared.push(Prepared {
                pipeline,
                bind,
                name: DispatchName {
                    op: step.onnx_op.clone(),
                    node: step.node.clone(),
                    groups: d.groups,
                },
            });
        }
        c.steps[s] = Some(StepDevice {
            kernels: k.clone(),
            scratch,
            tables,
        });
        Ok(())
    }

    /// Feeds the inputs (host ones written, device ones copied), records dispatches `range` into
    /// one pass and submits them. The first part of a run feeds its inputs; later parts feed none.
    fn execute(&mut self, c: &Compiled, feeds: &[(String, Feed)], range: Range<usize>) -> Result<()> {
        let run = self.record(c, feeds, range)?;
        self.submit(run)
    }

    /// `execute`'s first half: the feeds and dispatches recorded into a command encoder (under
    /// error scopes), nothing submitted: a run's read back joins the same submission.
    fn record(&mut self, c: &Compiled, feeds: &[(String, Feed)], range: Range<usize>) -> Result<Recording> {
        let oom = self.gpu.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let invalid = self.gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut enc = self.gpu.device.create_command_encoder(&Default::default());
        if !feeds.is_empty() {
            self.gpu.queue.write_buffer(&c.status, 0, &[0u8; 4]);
        }
        for (name, v) in &c.plan.inputs {
            let (Some((_, feed)), Some(b)) = (feeds.iter().find(|(n, _)| n == name), &c.values[*v]) else {
                continue;
            };
            match feed {
                Feed::Host(t) => {
                    let bytes = device_bytes(name, t)?;
                    if !bytes.is_empty() {
                        self.gpu.queue.write_buffer(b, 0, &bytes);
                    }
                }
                Feed::Device(d) => {
                    let bytes = d.ty.numel() as u64 * 4;
                    if bytes > 0 {
                        enc.copy_buffer_to_buffer(&d.buffer, 0, b, 0, bytes);
                    }
                }
            }
        }
        let timed = match &self.kernel_times {
            Some(k) => {
                let dispatches: Vec<Timed> = c.prepared[range.clone()]
                    .iter()
                    .map(|d| Timed {
                        name: &d.name,
                        pipeline: &d.pipeline,
                        bind: &d.bind,
                    })
                    .collect();
                Some(k.record(&self.gpu, &mut enc, &dispatches)?)
            }
            None => {
                // A long run goes to the device in parts, each submitted as soon as it is recorded,
                // so that the device starts on the first while the host encodes the rest; the last
                // part stays in `enc` for the read back's copies.
                let every = self.dispatches_per_submission.max(1);
                let parts: Vec<&[Prepared]> = c.prepared[range.clone()].chunks(every).collect();
                for (i, part) in parts.iter().enumerate() {
                    {
                        let mut pass = enc.begin_compute_pass(&Default::default());
                        for d in part.iter() {
                            let [x, y, z] = d.name.groups;
                            pass.set_pipeline(&d.pipeline);
                            pass.set_bind_group(0, &d.bind, &[]);
                            pass.dispatch_workgroups(x, y, z);
                        }
                    }
                    if i + 1 < parts.len() {
                        let done =
                            std::mem::replace(&mut enc, self.gpu.device.create_command_encoder(&Default::default()));
                        self.gpu.queue.submit([done.finish()]);
                    }
                }
                None
            }
        };
        Ok(Recording {
            enc,
            oom,
            invalid,
            timed,
            dispatches: range.len(),
        })
    }

    /// `execute`'s second half: submits what `record` (and any read back after it) recorded, and
    /// turns the device's errors into errors naming the graph.
    fn submit(&mut self, run: Recording) -> Result<()> {
        let Recording {
            enc,
            oom,
            invalid,
            timed,
            dispatches,
        } = run;
        self.gpu.queue.submit([enc.finish()]);
        if let Some(e) = pollster::block_on(invalid.pop()) {
            return Err(Error::runtime(format!("running {}", self.path().display()), e));
        }
        if let Some(e) = pollster::block_on(oom.pop()) {
            return Err(Error::Runtime {
                context: format!("running {} on {}", self.path().display(), self.gpu.info.name),
                message: format!("the device ran out of memory: {e}"),
            });
        }
        if let (Some(pending), Some(k)) = (timed, &mut self.kernel_times) {
            k.collect(&self.gpu, pending)?;
        }
        self.last_dispatches = dispatches;
        self.total_dispatches += dispatches as u64;
        Ok(())
    }

    /// The run's outputs: those `keep` names copied into buffers of their own that stay on the
    /// device, the others (and the status word) read back in one copy.
    fn collect(&mut self, c: &Compiled, fate: &dyn Fn(&str) -> Fate) -> Result<Outputs> {
        let mut enc = self.gpu.device.create_command_encoder(&Default::default());
        let recorded = self.collect_start(c, fate, &mut enc)?;
        self.gpu.queue.submit([enc.finish()]);
        Ok(self.collect_finish(recorded.submitted())?.0)
    }

    /// `collect`'s first half: the copies recorded into `enc` (the caller submits it, then maps
    /// the read back: `CollectRecorded::submitted`), nothing waited for.
    fn collect_start(
        &mut self,
        c: &Compiled,
        fate: &dyn Fn(&str) -> Fate,
        enc: &mut wgpu::CommandEncoder,
    ) -> Result<CollectRecorded> {
        let mut kept = BTreeMap::new();
        let mut reads: Vec<(Arc<wgpu::Buffer>, u64, u64)> = vec![(c.status.clone(), 0, 4)];
        let mut host = NamedTensors::new();
        let mut pending = Vec::new();
        for (name, o) in &c.plan.outputs {
            match (*o, fate(name)) {
                (Operand::Const(i), Fate::Keep) => {
                    let t = &c.plan.constants[i].tensor;
                    let bytes = device_bytes(name, t)?;
                    let b = self.gpu.buffer(name, bytes.len() as u64, STORAGE)?;
                    self.gpu.queue.write_buffer(&b, 0, &bytes);
                    let ty = ValueType::new(t.dtype(), t.shape().to_vec());
                    kept.insert(
                        name.clone(),
                        DeviceTensor {
                            buffer: Arc::new(b),
                            ty,
                        },
                    );
                }
                (Operand::Const(i), Fate::Host) => {
                    host.insert(name.clone(), (*c.plan.constants[i].tensor).clone());
                }
                (Operand::Const(i), Fate::LastPositions) => {
                    let last = hwcov_onnx::handler::last_positions(name, &c.plan.constants[i].tensor)?;
                    host.insert(name.clone(), last);
                }
                (Operand::Value(v), fate) => {
                    let ty = c.plan.values[v].clone();
                    let b = c.values[v]
                        .clone()
                        .ok_or_else(|| Error::tensor(name.clone(), "no buffer holds this output"))?;
                    match fate {
                        Fate::Keep => {
                            let bytes = ty.numel() as u64 * 4;
                            let own = self.kept_buffer(name, bytes)?;
                            if bytes > 0 {
                                enc.copy_buffer_to_buffer(&b, 0, &own, 0, bytes);
                            }
                            kept.insert(name.clone(), DeviceTensor { buffer: own, ty });
                        }
                        Fate::Host => {
                            reads.push((b, 0, Self::value_bytes(&ty)));
                            pending.push((name.clone(), ty, 1));
                        }
                        Fate::LastPositions => {
                            // One copy a row, of its last position only.
                            let (rows, shape) = hwcov_onnx::handler::last_position_ranges(name, &ty.shape)?;
                            if ty.dtype != DType::F32 {
                                return Err(Error::tensor(name.clone(), format!("is {}; f32 is needed", ty.dtype)));
                            }
                            let parts = rows.len();
                            for r in rows {
                                reads.push((b.clone(), r.start as u64 * 4, r.len() as u64 * 4));
                            }
                            pending.push((name.clone(), ValueType::new(DType::F32, shape), parts));
                        }
                    }
                }
            }
        }
        Ok(CollectRecorded(Collecting {
            read: self.gpu.record_read(enc, &reads)?,
            host,
            kept,
            pending,
            nodes: c.nodes.clone(),
        }))
    }

    /// A buffer of at least `bytes` for an output kept on the device: a kept buffer that nothing
    /// outside the session holds any more, else a new one with room to grow (a decoding step's
    /// cache is one position longer than the last).
    fn kept_buffer(&mut self, name: &str, bytes: u64) -> Result<Arc<wgpu::Buffer>> {
        // Work already submitted that reads a released buffer runs before the copy into it.
        let free = |b: &Arc<wgpu::Buffer>| Arc::strong_count(b) == 1;
        if let Some(b) = self
            .kept
            .iter()
            .filter(|b| free(b) && b.size() >= bytes && b.size() <= reuse::spare(bytes).max(bytes * 2))
            .min_by_key(|b| b.size())
        {
            return Ok(b.clone());
        }
        // Released buffers that fit nothing here go (their sizes are of an earlier shape).
        if self.kept.len() >= KEPT_BUFFERS {
            self.kept.retain(|b| !free(b));
        }
        let b = Arc::new(self.gpu.buffer(name, reuse::spare(bytes), STORAGE)?);
        self.kept.push(b.clone());
        Ok(b)
    }

    /// `collect`'s second half: waits for the device, checks the status word, and converts.
    fn collect_finish(&self, c: Collecting) -> Result<(Outputs, crate::gpu::ReadTimes)> {
        let Collecting {
            read,
            mut host,
            kept,
            pending,
            nodes,
        } = c;
        let (bytes, mut times) = read.finish(&self.gpu)?;
        let mut bytes = bytes.into_iter();
        let status = bytes.next().unwrap_or_default();
        let code = u32::from_le_bytes([status[0], status[1], status[2], status[3]]);
        if code != 0 {
            let (node, op) = nodes
                .get((code - 1) as usize)
                .cloned()
                .unwrap_or_else(|| (format!("step {code}"), "?".into()));
            return Err(Error::tensor(
                node.clone(),
                format!(
                    "an index of {node} ({op}) is out of range for the tensor it indexes, in {}",
                    self.path().display()
                ),
            ));
        }
        let t = std::time::Instant::now();
        for (name, ty, parts) in pending {
            // An output read in one part is that part; one read a row at a time (its rows' last
            // positions) is the parts end to end. Never byte by byte: a 12 MB output took tens
            // of ms that way.
            let b: Vec<u8> = if parts == 1 {
                bytes.next().unwrap_or_default()
            } else {
                let mut joined = Vec::new();
                for part in bytes.by_ref().take(parts) {
                    joined.extend_from_slice(&part);
                }
                joined
            };
            let t = from_device(&name, &ty, &b)?;
            host.insert(name, t);
        }
        times.convert = t.elapsed().as_secs_f64() * 1e3;
        Ok(((host, kept), times))
    }

    /// NonZero, first half: counts the non-zero elements of the step's input.
    fn nonzero(&mut self, c: &mut Compiled, s: usize) -> Result<usize> {
        let step = c.plan.steps[s].clone();
        let ty = c.plan.ty(step.inputs[0]);
        let Operand::Value(v) = step.inputs[0] else {
            return Err(Error::runtime(&step.node, "NonZero of a constant was not folded"));
        };
        let sc = kernels::scalar(ty.dtype).ok_or_else(|| Error::Unsupported {
            platform: "webgpu".into(),
            what: format!("op NonZero (node {})", step.node),
            reason: format!("no WGSL kernel for {} tensors", ty.dtype),
        })?;
        let counts = Arc::new(self.gpu.buffer("NonZero counts", 4 * (WG as u64 + 1), STORAGE)?);
        let zero = if sc == Scalar::F32 { "0.0" } else { "0" };
        let src = format!(
            "{}{}{}\n@compute @workgroup_size(256)\nfn main(@builtin(local_invocation_index) lid: u32) {{\n    let n = p(0u);\n    let chunk = (n + 255u) / 256u;\n    var k = 0u;\n    for (var j = lid * chunk; j < min(n, (lid + 1u) * chunk); j = j + 1u) {{ if (x[j] != {zero}) {{ k = k + 1u; }} }}\n    counts[lid] = i32(k);\n    workgroupBarrier();\n    if (lid == 0u) {{\n        var total = 0;\n        for (var t = 0u; t < 256u; t = t + 1u) {{ let here = counts[t]; counts[t] = total; total = total + here; }}\n        counts[256u] = total;\n    }}\n}}\n",
            kernels::prelude(),
            kernels::binding(1, "x", sc, false),
            kernels::binding(2, "counts", Scalar::I32, true),
        );
        let input = c.values[v]
            .clone()
            .ok_or_else(|| Error::runtime(&step.node, "no input buffer"))?;
        self.one_off(&src, &[ty.numel() as u32], &[input, counts.clone()], [1, 1, 1])?;
        self.total_dispatches += 1;
        let bytes = self.gpu.read_many(&[(counts.clone(), 4 * (WG as u64 + 1))])?.remove(0);
        let at = WG as usize * 4;
        let total = i32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        c._held.push(counts);
        Ok(total.max(0) as usize)
    }

    /// NonZero, second half: writes the (rank, count) indices now that the count is known.
    fn nonzero_fill(&mut self, c: &mut Compiled, s: usize, count: usize) -> Result<()> {
        let step = c.plan.steps[s].clone();
        let ty = c.plan.ty(step.inputs[0]);
        let Operand::Value(v) = step.inputs[0] else {
            return Err(Error::runtime(&step.node, "NonZero of a constant was not folded"));
        };
        let sc = kernels::scalar(ty.dtype).unwrap_or(Scalar::F32);
        let out_v = step.outputs[0];
        c.values.resize(c.plan.values.len(), None);
        let out = Arc::new(
            self.gpu
                .buffer(&step.node, (ty.rank() * count * 4).max(4) as u64, STORAGE)?,
        );
        c.values[out_v] = Some(out.clone());
        let rank = ty.rank();
        let st = kernels::strides(&ty.shape);
        let mut params = vec![ty.numel() as u32, count as u32, rank as u32];
        params.extend((0..kernels::MAX_RANK).map(|a| *st.get(a).unwrap_or(&0) as u32));
        let zero = if sc == Scalar::F32 { "0.0" } else { "0" };
        let src = format!(
            "{}{}{}\n@compute @workgroup_size(256)\nfn main(@builtin(local_invocation_index) lid: u32) {{\n    let n = p(0u);\n    let chunk = (n + 255u) / 256u;\n    var pos = 0u;\n    var k = 0u;\n    for (var j = 0u; j < lid * chunk && j < n; j = j + 1u) {{ if (x[j] != {zero}) {{ pos = pos + 1u; }} }}\n    for (var j = lid * chunk; j < min(n, (lid + 1u) * chunk); j = j + 1u) {{\n        if (x[j] != {zero}) {{\n            var rem = j;\n            for (var a = 0u; a < p(2u); a = a + 1u) {{ let st = p(3u + a); out0[a * p(1u) + pos] = i32(rem / st); rem = rem % st; }}\n            pos = pos + 1u;\n        }}\n    }}\n}}\n",
            kernels::prelude(),
            kernels::binding(1, "x", sc, false),
            kernels::binding(2, "out0", Scalar::I32, true),
        );
        let input = c.values[v]
            .clone()
            .ok_or_else(|| Error::runtime(&step.node, "no input buffer"))?;
        self.one_off(&src, &params, &[input, out], [1, 1, 1])?;
        self.total_dispatches += 1;
        Ok(())
    }

    /// Runs one dispatch at once (NonZero's two halves).
    fn one_off(&self, src: &str, params: &[u32], buffers: &[Arc<wgpu::Buffer>], groups: [u32; 3]) -> Result<()> {
        let pipeline = self.gpu.pipeline(src)?;
        let p = self.gpu.buffer(
            "parameters",
            (PARAM_WORDS * 4) as u64,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        )?;
        let mut words = params.to_vec();
        words.resize(PARAM_WORDS, 0);
        self.gpu.queue.write_buffer(&p, 0, bytemuck::cast_slice(&words));
        let bind = self.gpu.bind_group(&pipeline, p.as_entire_binding(), buffers);
        let mut enc = self.gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        }
        self.gpu.queue.submit([enc.finish()]);
        Ok(())
    }
}

/// A step of `plan` as the kernels see it; the weights it reads in f16 (`stored_f16`) typed so.
fn step_io<'a>(plan: &'a Plan, s: usize, step: &'a hwcov_onnx::Step, weights_f16: bool) -> StepIo<'a> {
    StepIo {
        step,
        index: s as u32,
        ins: step
            .inputs
            .iter()
            .enumerate()
            .map(|(i, &o)| {
                let ty = plan.ty(o);
                if stored_f16(weights_f16, plan, step, i) {
                    ValueType::new(DType::F16, ty.shape)
                } else {
                    ty
                }
            })
            .collect(),
        outs: step.outputs.iter().map(|&v| plan.values[v].clone()).collect(),
        consts: step
            .inputs
            .iter()
            .map(|o| match o {
                Operand::Const(i) => Some(plan.constants[*i].tensor.as_ref()),
                Operand::Value(_) => None,
            })
            .collect(),
    }
}

/// Whether input `i` of `step` is a weight kept in f16 where the session keeps weights so: an f32
/// initializer read as a product's B, a convolution's W or a Gather's table.
fn stored_f16(weights_f16: bool, plan: &Plan, step: &hwcov_onnx::Step, i: usize) -> bool {
    let Operand::Const(c) = step.inputs[i] else {
        return false;
    };
    let k = &plan.constants[c];
    weights_f16
        && k.initializer.is_some()
        && k.tensor.dtype() == DType::F32
        && match step.op {
            Op::MatMul | Op::Gemm { .. } | Op::Conv { .. } => i == 1,
            Op::Gather { .. } => i == 0,
            _ => false,
        }
}

/// The one kernel of a fused group (`members` in plan order, the group's root last, `io`).
fn fused_kernels(plan: &Plan, members: &[usize], io: &StepIo) -> Result<Kernels> {
    let mut externals: Vec<Operand> = Vec::new();
    let mut parts = Vec::new();
    for &m in members {
        let step = &plan.steps[m];
        let mio = step_io(plan, m, step, false);
        let expr = map::fusable_expr(&mio)?.ok_or_else(|| mio.refuse("fusing this op"))?;
        let sources = step
            .inputs
            .iter()
            .map(|&o| {
                let member = match o {
                    Operand::Value(v) => members.iter().position(|&q| plan.steps[q].outputs[0] == v),
                    Operand::Const(_) => None,
                };
                match member {
                    Some(q) => Source::Member(q),
                    None => Source::External(match externals.iter().position(|&e| e == o) {
                        Some(j) => j,
                        None => {
                            externals.push(o);
                            externals.len() - 1
                        }
                    }),
                }
            })
            .collect();
        parts.push(Member { expr, sources });
    }
    let ext = externals
        .iter()
        .map(|&o| {
            let ty = plan.ty(o);
            let scalar = kernels::scalar(ty.dtype).ok_or_else(|| io.refuse(format!("{} tensors", ty.dtype)))?;
            Ok((scalar, ty.shape, Arg::Plan(o)))
        })
        .collect::<Result<Vec<_>>>()?;
    map::fused(io, ext, &parts)
}

/// A free buffer of at least `bytes` (and at most twice that), or a new one.
fn take_or_make(gpu: &Gpu, pool: &mut Vec<Arc<wgpu::Buffer>>, bytes: u64, what: &str) -> Result<Arc<wgpu::Buffer>> {
    let best = pool
        .iter()
        .enumerate()
        .filter(|(_, b)| b.size() >= bytes && b.size() <= bytes.saturating_mul(2).max(1 << 16))
        .min_by_key(|(_, b)| b.size())
        .map(|(i, _)| i);
    match best {
        Some(i) => Ok(pool.swap_remove(i)),
        None => Ok(Arc::new(gpu.buffer(what, bytes, STORAGE)?)),
    }
}

/// When each value's buffer can be reused: after the last step that reads it (or any value
/// viewing it), never for graph inputs and outputs.
struct Lifetimes {
    freed_after: Vec<Vec<usize>>,
}

fn lifetimes(plan: &Plan, groups: &Groups) -> Lifetimes {
    let n = plan.values.len();
    // Reshape outputs view their input: one root per buffer.
    let mut root: Vec<usize> = (0..n).collect();
    let mut is_view = vec![false; n];
    for s in &plan.steps {
        if matches!(s.op, Op::Reshape)
            && let Operand::Value(src) = s.inputs[0]
        {
            root[s.outputs[0]] = root[src];
            is_view[s.outputs[0]] = true;
        }
    }
    let mut last = vec![None::<usize>; n];
    let mut keep = vec![false; n];
    for (_, v) in &plan.inputs {
        keep[root[*v]] = true;
    }
    for (_, o) in &plan.outputs {
        if let Operand::Value(v) = o {
            keep[root[*v]] = true;
        }
    }
    for (i, s) in plan.steps.iter().enumerate() {
        // A step folded into a group is read when the group's kernel runs.
        let at = groups.runner(i);
        for inp in &s.inputs {
            if let Operand::Value(v) = inp {
                last[root[*v]] = Some(last[root[*v]].map_or(at, |l: usize| l.max(at)));
            }
        }
        // A value nothing reads is free once written.
        for &o in &s.outputs {
            if last[root[o]].is_none() {
                last[root[o]] = Some(i);
            }
        }
    }
    let mut freed_after = vec![Vec::new(); plan.steps.len()];
    for v in 0..n {
        if root[v] == v
            && !keep[v]
            && !is_view[v]
            && let Some(i) = last[v]
        {
            freed_after[i].push(v);
        }
    }
    Lifetimes { freed_after }
}
