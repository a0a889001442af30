//! Reusing a compiled plan for new sizes. A decoding step's plan is the step before's with the
//! self-attention cache one position longer: the same steps on the same operands, the same kernels,
//! other sizes. Compiling it again (new buffers, bind groups, parameters) costs the host more than
//! the device spends on the step. Where every value still fits the buffer it had and every step
//! lowers to the same shaders with the same bindings, the compiled plan is patched instead: its
//! parameter words and workgroup counts are rewritten (with any folded constant and host table
//! that changed) and nothing is created. A plan compiled after one of the same structure gives the
//! values that grew by a small step room for more such steps, so that the next plans fit.

use std::sync::Arc;

use hwcov_core::Result;
use hwcov_onnx::ir::ValueType;
use hwcov_onnx::{Operand, Plan};

use super::{Compiled, Session, device_bytes, fused_kernels, step_io};
use crate::fuse;
use crate::kernels::{Kernels, PARAM_WORDS, padded};

/// Steps of growth a growing value gets room for (at most doubling its buffer).
const ROOM_STEPS: u64 = 64;

/// The smallest scratch or table buffer: these follow the product's size, which grows with the
/// cache in a decoding step's attention.
const MIN_SPARE: u64 = 1 << 16;

/// Whether two plans run the same steps on the same operands, sizes aside.
pub(super) fn same_structure(a: &Plan, b: &Plan) -> bool {
    a.steps.len() == b.steps.len()
        && a.values.len() == b.values.len()
        && a.constants.len() == b.constants.len()
        && a.inputs == b.inputs
        && a.outputs == b.outputs
        && a.steps.iter().zip(&b.steps).all(|(x, y)| {
            std::mem::discriminant(&x.op) == std::mem::discriminant(&y.op)
                && x.inputs == y.inputs
                && x.outputs == y.outputs
                && x.node == y.node
        })
        && a.constants
            .iter()
            .zip(&b.constants)
            .all(|(x, y)| x.initializer == y.initializer)
}

/// Whether step `s` has the same op (attributes included) on operands of the same types and the
/// same constants in plans `a` and `b` of one structure: then it lowers to the same kernels.
fn same_step(a: &Plan, b: &Plan, s: usize) -> bool {
    let (x, y) = (&a.steps[s], &b.steps[s]);
    x.op == y.op
        && x.inputs.iter().zip(&y.inputs).all(|(&i, &j)| {
            a.ty(i) == b.ty(j)
                && match (i, j) {
                    (Operand::Const(i), Operand::Const(j)) => {
                        let (p, q) = (&a.constants[i].tensor, &b.constants[j].tensor);
                        Arc::ptr_eq(p, q) || p == q
                    }
                    _ => true,
                }
        })
        && x.outputs
            .iter()
            .zip(&y.outputs)
            .all(|(&v, &w)| a.values[v] == b.values[w])
}

/// The bytes to give value `v`: its size, and where `previous` (the value types of the last plan of
/// the same structure) shows it grown by less than an eighth, room for `ROOM_STEPS` more such steps.
pub(super) fn capacity(values: &[ValueType], previous: Option<&[ValueType]>, v: usize) -> u64 {
    let bytes = Session::value_bytes(&values[v]);
    let Some(before) = previous.and_then(|p| p.get(v)) else {
        return bytes;
    };
    let growth = bytes.saturating_sub(Session::value_bytes(before));
    if growth == 0 || growth * 8 > bytes {
        return bytes;
    }
    bytes + (growth * ROOM_STEPS).min(bytes)
}

/// The bytes to give a scratch buffer or table of `bytes`: a quarter more, and at least `MIN_SPARE`.
pub(super) fn spare(bytes: u64) -> u64 {
    (bytes + bytes / 4).max(MIN_SPARE)
}

/// Whether two lowerings of a step run the same shaders on the same bindings (parameters and
/// workgroup counts aside).
fn same_shaders(a: &Kernels, b: &Kernels) -> bool {
    a.alias == b.alias
        && a.scratch.len() == b.scratch.len()
        && a.tables.len() == b.tables.len()
        && a.dispatches.len() == b.dispatches.len()
        && a.dispatches
            .iter()
            .zip(&b.dispatches)
            .all(|(x, y)| x.source == y.source && x.args == y.args && x.groups.contains(&0) == y.groups.contains(&0))
}

/// What patching a compiled plan for a new plan writes.
struct Patch {
    /// Every dispatch's parameter block, in order.
    words: Vec<u32>,
    /// Every dispatch's workgroup counts, in order.
    counts: Vec<[u32; 3]>,
    /// Folded constants and host tables that changed, with their buffers.
    writes: Vec<(Arc<wgpu::Buffer>, Vec<u8>)>,
}

/// How `old` would run `plan` (whose steps lower to `lowered`, `None` where folded into a group),
/// or `None` where it cannot.
fn fit(old: &Compiled, plan: &Plan, groups: &fuse::Groups, lowered: &[Option<Arc<Kernels>>]) -> Result<Option<Patch>> {
    if old.params.is_none() || &old.groups != groups {
        return Ok(None);
    }
    for (v, b) in old.values.iter().enumerate() {
        if let Some(b) = b
            && Session::value_bytes(&plan.values[v]) > b.size()
        {
            return Ok(None);
        }
    }
    let mut writes: Vec<(Arc<wgpu::Buffer>, Vec<u8>)> = Vec::new();
    for (i, (was, now)) in old.plan.constants.iter().zip(&plan.constants).enumerate() {
        let Some(Some(b)) = old.consts.get(i) else { continue };
        if was.initializer.is_some() || was.tensor == now.tensor {
            continue;
        }
        let bytes = device_bytes(&format!("constant {i}"), &now.tensor)?;
        if bytes.len() as u64 > b.size() {
            return Ok(None);
        }
        writes.push((b.clone(), bytes));
    }
    let mut words = Vec::with_capacity(old.prepared.len() * PARAM_WORDS);
    let mut counts = Vec::with_capacity(old.prepared.len());
    for (dev, k) in old.steps.iter().zip(lowered) {
        let (Some(dev), Some(k)) = (dev, k) else { continue };
        if !Arc::ptr_eq(k, &dev.kernels) {
            if !same_shaders(k, &dev.kernels)
                || k.scratch.iter().zip(&dev.scratch).any(|(&n, b)| n > b.size())
                || k.tables
                    .iter()
                    .zip(&dev.tables)
                    .any(|(t, b)| (t.len() * 4) as u64 > b.size())
            {
                return Ok(None);
            }
            for ((t, was), b) in k.tables.iter().zip(&dev.kernels.tables).zip(&dev.tables) {
                if t != was {
                    writes.push((b.clone(), bytemuck::cast_slice(t).to_vec()));
                }
            }
        }
        for d in k.dispatches.iter().filter(|d| !d.groups.contains(&0)) {
            words.extend(padded(d.params.clone(), PARAM_WORDS));
            counts.push(d.groups);
        }
    }
    if counts.len() != old.prepared.len() || words.len() != counts.len() * PARAM_WORDS {
        return Ok(None);
    }
    Ok(Some(Patch { words, counts, writes }))
}

impl Session {
    /// A cached plan patched to run `plan`, where one differs from it only in sizes that fit (the
    /// module's comment); `None` otherwise. The cache holds the last few plans: a decoding step's
    /// products alternate between kernels as the cache's length is or is not a whole number of
    /// vec4s, so the plan that fits may be a few steps old.
    pub(super) fn patched(&mut self, plan: &Plan) -> Result<Option<Compiled>> {
        if !self
            .cache
            .iter()
            .any(|e| e.compiled.params.is_some() && same_structure(&e.compiled.plan, plan))
        {
            return Ok(None);
        }
        let groups = fuse::groups(plan, self.max_fused_inputs());
        // Steps that read and make what they did in the latest plan of this structure keep its
        // kernels: in a decoding step only the attention over the grown cache changes shape, and
        // lowering every step again took most of the patch.
        let unchanged: Vec<Option<Arc<Kernels>>> = match self
            .cache
            .iter()
            .find(|e| e.compiled.params.is_some() && same_structure(&e.compiled.plan, plan))
        {
            Some(e) if e.compiled.groups == groups => (0..plan.steps.len())
                .map(|s| {
                    let same = match groups.members.get(&s) {
                        Some(members) => members.iter().all(|&m| same_step(&e.compiled.plan, plan, m)),
                        None => same_step(&e.compiled.plan, plan, s),
                    };
                    e.compiled.steps[s].as_ref().filter(|_| same).map(|d| d.kernels.clone())
                })
                .collect(),
            _ => vec![None; plan.steps.len()],
        };
        let mut lowered = Vec::with_capacity(plan.steps.len());
        for (s, step) in plan.steps.iter().enumerate() {
            if groups.absorbed_into[s].is_some() {
                lowered.push(None);
                continue;
            }
            if let Some(k) = &unchanged[s] {
                lowered.push(Some(k.clone()));
                continue;
            }
            let io = step_io(plan, s, step, self.weights_f16);
            lowered.push(Some(match groups.members.get(&s) {
                Some(members) => Arc::new(fused_kernels(plan, members, &io)?),
                None => self.memo_kernels(&io)?,
            }));
        }
        drop(unchanged);
        for i in 0..self.cache.len() {
            let old = &self.cache[i].compiled;
            if !same_structure(&old.plan, plan) {
                continue;
            }
            let Some(patch) = fit(old, plan, &groups, &lowered)? else {
                continue;
            };
            let entry = self.cache.remove(i);
            let mut c = match Arc::try_unwrap(entry.compiled) {
                Ok(c) => c,
                Err(shared) => {
                    self.cache.insert(
                        i,
                        super::CachedPlan {
                            compiled: shared,
                            ..entry
                        },
                    );
                    continue;
                }
            };
            if let Some(params) = &c.params {
                self.gpu
                    .queue
                    .write_buffer(params, 0, bytemuck::cast_slice(&patch.words));
            }
            for (b, bytes) in patch.writes {
                self.gpu.queue.write_buffer(&b, 0, &bytes);
            }
            for (d, groups) in c.prepared.iter_mut().zip(patch.counts) {
                d.name.groups = groups;
            }
            for (dev, k) in c.steps.iter_mut().zip(lowered) {
                if let (Some(dev), Some(k)) = (dev, k) {
                    dev.kernels = k;
                }
            }
            c.plan = plan.clone();
            return Ok(Some(c));
        }
        Ok(None)
    }
}
