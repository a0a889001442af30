//! Fusion of elementwise chains. A run of elementwise steps (Unary, Binary, Where, Cast, Expand)
//! whose intermediate values each feed one step of the run, and no graph output, becomes one
//! dispatch: the last step's kernel computes the others in registers for each of its elements. This
//! saves a pass over memory and a dispatch per step folded in (a GELU is five ONNX nodes, an RMSNorm's
//! tail four). An intermediate smaller than the last step's output (a row's variance) is recomputed
//! for each element it broadcasts to, which costs less than storing and reading it.

use std::collections::{HashMap, HashSet};

use hwcov_onnx::ir::Op;
use hwcov_onnx::{Operand, Plan, broadcast};

/// Which steps run folded into another.
#[derive(Debug, Default, PartialEq)]
pub struct Groups {
    /// For each step, the step whose kernel computes it (`None`: it runs as itself).
    pub absorbed_into: Vec<Option<usize>>,
    /// For each step that runs a group: the group's steps in plan order, itself last.
    pub members: HashMap<usize, Vec<usize>>,
}

impl Groups {
    /// No fusion: every step runs as itself.
    pub fn none(steps: usize) -> Self {
        Groups {
            absorbed_into: vec![None; steps],
            members: HashMap::new(),
        }
    }

    /// The step that runs step `i`.
    pub fn runner(&self, i: usize) -> usize {
        self.absorbed_into.get(i).copied().flatten().unwrap_or(i)
    }
}

fn fusable(op: &Op) -> bool {
    matches!(op, Op::Unary(_) | Op::Binary(_) | Op::Where | Op::Cast | Op::Expand)
}

/// The groups of `plan`, each reading at most `max_inputs` distinct operands.
pub fn groups(plan: &Plan, max_inputs: usize) -> Groups {
    let n = plan.steps.len();
    let mut producer = vec![None; plan.values.len()];
    let mut readers: Vec<HashSet<usize>> = vec![HashSet::new(); plan.values.len()];
    for (i, s) in plan.steps.iter().enumerate() {
        for &o in &s.outputs {
            producer[o] = Some(i);
        }
        for inp in &s.inputs {
            if let Operand::Value(v) = inp {
                readers[*v].insert(i);
            }
        }
    }
    let outputs = plan.output_values();
    let mut g = Groups::none(n);
    for root in (0..n).rev() {
        let step = &plan.steps[root];
        if g.absorbed_into[root].is_some() || !fusable(&step.op) || step.outputs.len() != 1 {
            continue;
        }
        let space = &plan.values[step.outputs[0]].shape;
        let mut group = vec![root];
        loop {
            let in_group: HashSet<usize> = group.iter().copied().collect();
            let externals = |members: &[usize]| -> HashSet<Operand> {
                let produced: HashSet<usize> = members.iter().map(|&m| plan.steps[m].outputs[0]).collect();
                members
                    .iter()
                    .flat_map(|&m| plan.steps[m].inputs.iter().copied())
                    .filter(|o| !matches!(o, Operand::Value(v) if produced.contains(v)))
                    .collect()
            };
            let candidate = group
                .iter()
                .flat_map(|&m| plan.steps[m].inputs.iter())
                .filter_map(|o| match o {
                    Operand::Value(v) => Some(*v),
                    Operand::Const(_) => None,
                })
                .find(|&v| {
                    let Some(p) = producer[v] else { return false };
                    let ps = &plan.steps[p];
                    !in_group.contains(&p)
                        && g.absorbed_into[p].is_none()
                        && fusable(&ps.op)
                        && ps.outputs.len() == 1
                        && !outputs.contains(&v)
                        && readers[v].len() == 1
                        && readers[v].iter().all(|r| in_group.contains(r))
                        && broadcast(&[&plan.values[v].shape, space]).as_deref() == Some(space.as_slice())
                        && {
                            let mut with: Vec<usize> = group.clone();
                            with.push(p);
                            externals(&with).len() <= max_inputs
                        }
                });
            match candidate.and_then(|v| producer[v]) {
                Some(p) => group.push(p),
                None => break,
            }
        }
        if group.len() > 1 {
            group.sort_unstable();
            for &m in &group[..group.len() - 1] {
                g.absorbed_into[m] = Some(root);
            }
            g.members.insert(root, group);
        }
    }
    g
}
