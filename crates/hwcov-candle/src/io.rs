//! Moving named host tensors in and out of candle, with the checks that name the tensor at fault.

use candle_core::{DType, Device, Tensor};
use hwcov_core::{Error, HostTensor, NamedTensors, Result, TensorData};

use crate::kernels;

/// Wraps a candle error raised while running a model.
pub fn run_error(context: &str) -> impl Fn(candle_core::Error) -> Error + '_ {
    move |e| out_of_memory(context, &e).unwrap_or_else(|| Error::runtime(context, first_line(&e)))
}

fn first_line(e: &candle_core::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

/// A device allocation that failed, said as such (the driver's words are `CUDA_ERROR_OUT_OF_MEMORY`).
pub fn out_of_memory(context: &str, e: &candle_core::Error) -> Option<Error> {
    let msg = e.to_string();
    (msg.contains("OUT_OF_MEMORY") || msg.contains("out of memory")).then(|| {
        Error::runtime(
            context,
            format!(
                "the device ran out of memory ({}); use a smaller batch or sequence, bf16/f16, or a device with more memory",
                msg.lines().next().unwrap_or_default()
            ),
        )
    })
}

/// The inputs of one forward call, read by name.
pub struct Inputs<'a> {
    tensors: &'a NamedTensors,
    device: &'a Device,
}

impl<'a> Inputs<'a> {
    pub fn new(tensors: &'a NamedTensors, device: &'a Device) -> Self {
        Inputs { tensors, device }
    }

    fn host(&self, name: &str) -> Result<&'a HostTensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| Error::tensor(name, "missing input"))
    }

    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The rank of an input, where it is given.
    pub fn rank(&self, name: &str) -> Option<usize> {
        self.tensors.get(name).map(|t| t.shape().len())
    }

    /// Fails on an input the model does not take, rather than running without it.
    pub fn reject_unknown(&self, known: &[&str]) -> Result<()> {
        match self.tensors.keys().find(|k| !known.contains(&k.as_str())) {
            Some(name) => Err(Error::tensor(
                name.clone(),
                format!("is not an input of this model (it takes {})", known.join(", ")),
            )),
            None => Ok(()),
        }
    }

    /// An integer input (token ids, masks), as u32 on the device, with the given rank.
    pub fn ids(&self, name: &str, rank: usize) -> Result<Tensor> {
        let t = self.host(name)?;
        check_rank(name, t, rank)?;
        let values = t
            .to_i64_vec()
            .ok_or_else(|| Error::tensor(name, format!("dtype {} where an integer tensor is needed", t.dtype())))?;
        let values = values
            .into_iter()
            .map(|v| u32::try_from(v).map_err(|_| Error::tensor(name, format!("value {v} is not a valid index"))))
            .collect::<Result<Vec<u32>>>()?;
        Tensor::from_vec(values, t.shape(), self.device).map_err(|e| Error::tensor(name, e))
    }

    /// An optional integer input.
    pub fn opt_ids(&self, name: &str, rank: usize) -> Result<Option<Tensor>> {
        if self.has(name) {
            self.ids(name, rank).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A float input, as `dtype` on the device, with the given rank.
    pub fn float(&self, name: &str, rank: usize, dtype: DType) -> Result<Tensor> {
        let t = self.host(name)?;
        check_rank(name, t, rank)?;
        if !t.dtype().is_float() {
            return Err(Error::tensor(
                name,
                format!("dtype {} where a float tensor is needed", t.dtype()),
            ));
        }
        let tensor = match t.data() {
            // The common case, without a detour through f64; the device's provider may copy faster.
            hwcov_core::TensorData::F32(v) => {
                match kernels::of(self.device).copy_from_host(v, t.shape(), self.device) {
                    Ok(Some(x)) => Ok(x),
                    Ok(None) => Tensor::from_slice(v, t.shape(), self.device),
                    Err(e) => Err(e),
                }
            }
            _ => {
                let values: Vec<f32> = t.to_f64_vec().into_iter().map(|v| v as f32).collect();
                Tensor::from_vec(values, t.shape(), self.device)
            }
        };
        tensor
            .and_then(|x| x.to_dtype(dtype))
            .map_err(|e| Error::tensor(name, e))
    }
}

fn check_rank(name: &str, t: &HostTensor, rank: usize) -> Result<()> {
    if t.shape().len() != rank {
        return Err(Error::tensor(
            name,
            format!("has shape {:?}; a rank-{rank} tensor is needed", t.shape()),
        ));
    }
    Ok(())
}

/// Checks that a dimension of an input has the size the model needs.
pub fn check_dim(name: &str, t: &Tensor, dim: usize, want: usize, what: &str) -> Result<()> {
    let got = t.dims()[dim];
    if got != want {
        return Err(Error::tensor(
            name,
            format!("has shape {:?}: dimension {dim} must be {want} ({what})", t.dims()),
        ));
    }
    Ok(())
}

/// Checks that two inputs have the same shape (input_ids and attention_mask, ...).
pub fn check_same_shape(a: (&str, &Tensor), b: (&str, &Tensor)) -> Result<()> {
    if a.1.dims() != b.1.dims() {
        return Err(Error::tensor(
            b.0,
            format!("has shape {:?} but `{}` has shape {:?}", b.1.dims(), a.0, a.1.dims()),
        ));
    }
    Ok(())
}

/// Copies a model output back to the host as f32 (or i64 for integer tensors).
pub fn to_host(name: &str, t: &Tensor) -> Result<HostTensor> {
    let shape = t.dims().to_vec();
    let flat = t.flatten_all().map_err(run_error(name))?;
    if let Some(values) = kernels::of(flat.device())
        .copy_to_host(&flat)
        .map_err(run_error(name))?
    {
        return HostTensor::new(shape, TensorData::F32(values)).map_err(|e| Error::tensor(name, e));
    }
    let data = match t.dtype() {
        DType::U8 | DType::U32 | DType::I64 => TensorData::I64(
            flat.to_dtype(DType::I64)
                .and_then(|x| x.to_vec1::<i64>())
                .map_err(run_error(name))?,
        ),
        _ => TensorData::F32(
            flat.to_dtype(DType::F32)
                .and_then(|x| x.to_vec1::<f32>())
                .map_err(run_error(name))?,
        ),
    };
    HostTensor::new(shape, data).map_err(|e| Error::tensor(name, e))
}

/// Checks that every id of `ids` is below `limit` (an embedding table's size), naming the input.
pub fn check_ids_below(name: &str, ids: &Tensor, limit: usize, what: &str) -> Result<()> {
    let max = ids
        .flatten_all()
        .and_then(|t| t.max(0))
        .and_then(|t| t.to_scalar::<u32>())
        .map_err(run_error(name))?;
    if max as usize >= limit {
        return Err(Error::tensor(name, format!("holds id {max}, but {what} is {limit}")));
    }
    Ok(())
}

/// The logits of the last position, (batch, vocab), to the host: what a decoding step returns.
pub fn last_position_logits(logits: &Tensor) -> Result<HostTensor> {
    let l = logits.dim(1).map_err(run_error("logits"))?;
    let last = logits
        .narrow(1, l - 1, 1)
        .and_then(|t| t.squeeze(1))
        .map_err(run_error("logits"))?;
    to_host("logits", &last)
}

/// Checks the tokens of one decoding step: one per row of the batch, each below the vocabulary
/// size (`vocab_field` names the config field it comes from); errors name the input `name`.
pub fn check_step_tokens(name: &str, tokens: &[u32], rows: usize, vocab: usize, vocab_field: &str) -> Result<()> {
    if tokens.len() != rows {
        return Err(Error::tensor(
            name,
            format!("{} tokens for a batch of {rows} rows", tokens.len()),
        ));
    }
    if let Some(&t) = tokens.iter().find(|&&t| t as usize >= vocab) {
        return Err(Error::tensor(
            name,
            format!("holds id {t}, but {vocab_field} is {vocab}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_memory_is_said_as_such() {
        let e = candle_core::Error::Msg("DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into());
        let err = run_error("BertModel.forward")(e).to_string();
        assert!(
            err.contains("BertModel.forward") && err.contains("ran out of memory"),
            "{err}"
        );
        let other = run_error("x")(candle_core::Error::Msg("shape mismatch".into())).to_string();
        assert!(!other.contains("memory"), "{other}");
    }
}
