//! The parts of a `GraphSession` that are the same for every runtime whose tensors live in host
//! memory (OpenVINO, ONNX Runtime): the KV cache kept as host tensors between runs.

use std::collections::BTreeMap;

use hwcov_core::{Error, HostTensor, NamedTensors, Result};

use crate::handler::{Fate, last_positions};

/// `GraphSession::run_resident` over a session's `run`: the kept tensors fed back as inputs, each
/// output sent where `fate` says (kept as it is, to the host, or as its rows' last positions).
pub fn run_resident(
    run: impl FnOnce(&NamedTensors) -> Result<NamedTensors>,
    inputs: &NamedTensors,
    resident: &BTreeMap<String, HostTensor>,
    fate: &dyn Fn(&str) -> Fate,
) -> Result<(NamedTensors, BTreeMap<String, HostTensor>)> {
    let mut all = inputs.clone();
    all.extend(resident.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut host = NamedTensors::new();
    let mut kept = BTreeMap::new();
    for (name, t) in run(&all)? {
        match fate(&name) {
            Fate::Host => {
                host.insert(name, t);
            }
            Fate::Keep => {
                kept.insert(name, t);
            }
            Fate::LastPositions => {
                let last = last_positions(&name, &t)?;
                host.insert(name, last);
            }
        }
    }
    Ok((host, kept))
}

/// `GraphSession::shift_caches` on host tensors: each (batch, heads, length, head_dim) tensor with
/// `front` zero rows added before the first along the length axis, or its first `-front` rows dropped.
pub fn shift_caches(caches: Vec<HostTensor>, front: isize) -> Result<Vec<HostTensor>> {
    caches.iter().map(|t| shift_rows(t, front)).collect()
}

fn shift_rows(t: &HostTensor, front: isize) -> Result<HostTensor> {
    let [b, h, l, e] = t.shape()[..] else {
        return Err(Error::runtime(
            "shifting the cache",
            format!("a cache tensor of shape {:?}", t.shape()),
        ));
    };
    let v = t.to_f64_vec();
    let new_l = (l as isize + front).max(0) as usize;
    let mut out = Vec::with_capacity(b * h * new_l * e);
    for p in 0..b * h {
        let plane = &v[p * l * e..(p + 1) * l * e];
        if front >= 0 {
            out.extend(std::iter::repeat_n(0f32, front as usize * e));
            out.extend(plane.iter().map(|&x| x as f32));
        } else {
            out.extend(plane[(-front) as usize * e..].iter().map(|&x| x as f32));
        }
    }
    HostTensor::f32(vec![b, h, new_l, e], out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifting_adds_zero_rows_in_front_or_drops_the_first() -> Result<()> {
        // (1, 2, 2, 1): two heads of two rows.
        let t = HostTensor::f32(vec![1, 2, 2, 1], vec![1.0, 2.0, 3.0, 4.0])?;
        let grown = shift_caches(vec![t.clone()], 1)?;
        assert_eq!(grown[0].shape(), [1, 2, 3, 1]);
        assert_eq!(grown[0].to_f64_vec(), [0.0, 1.0, 2.0, 0.0, 3.0, 4.0]);
        let cut = shift_caches(vec![t], -1)?;
        assert_eq!(cut[0].to_f64_vec(), [2.0, 4.0]);
        Ok(())
    }

    #[test]
    fn kept_outputs_stay_and_the_rest_come_home() -> Result<()> {
        let x = HostTensor::f32(vec![1, 2, 2], vec![1.0, 2.0, 3.0, 4.0])?;
        let run = |given: &NamedTensors| {
            assert!(given.contains_key("past"), "the kept tensor is fed back");
            let mut out = NamedTensors::new();
            out.insert("logits".to_string(), x.clone());
            out.insert("present".to_string(), x.clone());
            out.insert("hidden".to_string(), x.clone());
            Ok(out)
        };
        let mut resident = BTreeMap::new();
        resident.insert("past".to_string(), x.clone());
        let fate = |name: &str| match name {
            "present" => Fate::Keep,
            "logits" => Fate::LastPositions,
            _ => Fate::Host,
        };
        let (host, kept) = run_resident(run, &NamedTensors::new(), &resident, &fate)?;
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["present"]);
        assert_eq!(host["logits"].shape(), [1, 2]);
        assert_eq!(host["logits"].to_f64_vec(), [3.0, 4.0]);
        assert_eq!(host["hidden"].shape(), [1, 2, 2]);
        Ok(())
    }
}
