//! Comparison of an output with its transformers reference.
//!
//! The pass rule is `torch.testing.assert_close`'s: every element satisfies
//! `|actual - expected| <= atol + rtol * |expected|`, shapes are equal, and non-finite values match.
//! Integer outputs (token ids) must be equal. Reported per output: max abs error, max rel error and
//! NMSE (sum of squared error over sum of squared reference, as llama.cpp's test-backend-ops).

use std::fmt;

use crate::platform::Precision;
use crate::tensor::HostTensor;

/// Absolute and relative tolerance of a float comparison.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Tolerance {
    pub atol: f64,
    pub rtol: f64,
}

impl Tolerance {
    pub const F32: Tolerance = Tolerance { atol: 1e-4, rtol: 1e-4 };
    pub const F16: Tolerance = Tolerance { atol: 5e-3, rtol: 5e-3 };
    pub const BF16: Tolerance = Tolerance { atol: 1e-2, rtol: 1e-2 };

    /// The default tolerance of a precision (DESIGN.md).
    pub fn for_precision(p: Precision) -> Tolerance {
        match p {
            Precision::F32 => Tolerance::F32,
            Precision::F16 => Tolerance::F16,
            Precision::BF16 => Tolerance::BF16,
        }
    }
}

impl fmt::Display for Tolerance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "atol={:e} rtol={:e}", self.atol, self.rtol)
    }
}

/// JSON has no NaN (nor infinity): a number that could not be computed is written as null and read
/// back as NaN.
mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

/// The comparison of one output with its reference.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OutputComparison {
    pub name: String,
    pub expected_shape: Vec<usize>,
    /// `None` when the handler did not produce this output.
    pub actual_shape: Option<Vec<usize>>,
    #[serde(with = "nan_as_null")]
    pub max_abs_err: f64,
    /// Max of |a - e| / |e| over elements whose reference is at least `atol` in magnitude (elements
    /// near zero are judged by atol alone and would make this number meaningless).
    #[serde(with = "nan_as_null")]
    pub max_rel_err: f64,
    #[serde(with = "nan_as_null")]
    pub nmse: f64,
    /// Elements outside the tolerance (or unequal, for integer outputs).
    pub mismatched: usize,
    pub exact: bool,
    pub passed: bool,
    /// Why it failed, when it did for a reason other than numbers (missing, shape, dtype).
    pub problem: Option<String>,
}

impl OutputComparison {
    /// The record of an output that could not be compared, and why.
    pub fn failure(name: &str, expected: &HostTensor, actual_shape: Option<Vec<usize>>, problem: String) -> Self {
        OutputComparison {
            name: name.to_string(),
            expected_shape: expected.shape().to_vec(),
            actual_shape,
            max_abs_err: f64::NAN,
            max_rel_err: f64::NAN,
            nmse: f64::NAN,
            mismatched: expected.len(),
            exact: !expected.dtype().is_float(),
            passed: false,
            problem: Some(problem),
        }
    }

    /// The record of an output that the handler did not produce: a failure, never a skip.
    pub fn missing(name: &str, expected: &HostTensor) -> Self {
        Self::failure(name, expected, None, "not produced by the handler".to_string())
    }
}

impl fmt::Display for OutputComparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed { "ok  " } else { "FAIL" };
        write!(f, "{verdict} {:<28} shape {:?}", self.name, self.expected_shape)?;
        if let Some(p) = &self.problem {
            return write!(f, "  {p}");
        }
        if self.exact {
            write!(f, "  exact match required, {} mismatched", self.mismatched)
        } else {
            write!(
                f,
                "  max_abs {:.3e}  max_rel {:.3e}  nmse {:.3e}  mismatched {}",
                self.max_abs_err, self.max_rel_err, self.nmse, self.mismatched
            )
        }
    }
}

/// Compares `actual` with the reference `expected`. Float references use `tol`; integer references
/// must match exactly.
pub fn compare(name: &str, expected: &HostTensor, actual: &HostTensor, tol: Tolerance) -> OutputComparison {
    if expected.shape() != actual.shape() {
        return OutputComparison::failure(
            name,
            expected,
            Some(actual.shape().to_vec()),
            format!(
                "shape {:?} differs from the reference {:?}",
                actual.shape(),
                expected.shape()
            ),
        );
    }
    if !expected.dtype().is_float() {
        let (Some(e), Some(a)) = (expected.to_i64_vec(), actual.to_i64_vec()) else {
            return OutputComparison::failure(
                name,
                expected,
                Some(actual.shape().to_vec()),
                format!(
                    "dtype {} where the reference is the integer dtype {}",
                    actual.dtype(),
                    expected.dtype()
                ),
            );
        };
        let mismatched = e.iter().zip(&a).filter(|(x, y)| x != y).count();
        return OutputComparison {
            name: name.to_string(),
            expected_shape: expected.shape().to_vec(),
            actual_shape: Some(actual.shape().to_vec()),
            max_abs_err: e.iter().zip(&a).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max),
            max_rel_err: 0.0,
            nmse: 0.0,
            mismatched,
            exact: true,
            passed: mismatched == 0,
            problem: None,
        };
    }

    let e = expected.to_f64_vec();
    let a = actual.to_f64_vec();
    let mut max_abs: f64 = 0.0;
    let mut max_rel: f64 = 0.0;
    let mut err_sq = 0.0;
    let mut ref_sq = 0.0;
    let mut mismatched = 0usize;
    for (&x, &y) in e.iter().zip(&a) {
        if !x.is_finite() || !y.is_finite() {
            // assert_close: non-finite values must be identical (NaN == NaN, inf == inf).
            let same = (x.is_nan() && y.is_nan()) || x == y;
            if !same {
                mismatched += 1;
                max_abs = f64::INFINITY;
            }
            continue;
        }
        let d = (y - x).abs();
        max_abs = max_abs.max(d);
        if x.abs() >= tol.atol {
            max_rel = max_rel.max(d / x.abs());
        }
        err_sq += d * d;
        ref_sq += x * x;
        if d > tol.atol + tol.rtol * x.abs() {
            mismatched += 1;
        }
    }
    let nmse = if ref_sq > 0.0 {
        err_sq / ref_sq
    } else if err_sq == 0.0 {
        0.0
    } else {
        f64::INFINITY
    };
    OutputComparison {
        name: name.to_string(),
        expected_shape: expected.shape().to_vec(),
        actual_shape: Some(actual.shape().to_vec()),
        max_abs_err: max_abs,
        max_rel_err: max_rel,
        nmse,
        mismatched,
        exact: false,
        passed: mismatched == 0,
        problem: None,
    }
}

/// Generated token ids at reduced precision (f16, bf16): once logits differ in their last bits,
/// greedy decoding may take another branch, so the tokens after the first divergence are not
/// compared. The first `prompt_len` tokens of each row (the prompt, which generation echoes) must
/// match; the report says where each row diverges. The logits of the prompt are compared separately,
/// at the precision's tolerance.
pub fn compare_prefix_ids(
    name: &str,
    expected: &HostTensor,
    actual: &HostTensor,
    prompt_len: usize,
) -> OutputComparison {
    let mut c = compare(name, expected, actual, Tolerance::F32);
    if c.passed || c.problem.is_some() {
        return c;
    }
    let (Some(e), Some(a)) = (expected.to_i64_vec(), actual.to_i64_vec()) else {
        return c;
    };
    let width = expected.shape().last().copied().unwrap_or(0).max(1);
    let divergence: Vec<Option<usize>> = e
        .chunks(width)
        .zip(a.chunks(width))
        .map(|(er, ar)| er.iter().zip(ar).position(|(x, y)| x != y))
        .collect();
    let in_prompt = divergence.iter().flatten().any(|&d| d < prompt_len);
    let shown: Vec<String> = divergence
        .iter()
        .map(|d| d.map(|d| format!("token {d}")).unwrap_or_else(|| "none".to_string()))
        .collect();
    c.passed = !in_prompt;
    c.problem = Some(if in_prompt {
        format!("the echoed prompt differs (rows diverge at {})", shown.join(", "))
    } else {
        format!(
            "rows diverge at {} (after the prompt of {prompt_len}; allowed at reduced precision, {} ids differ)",
            shown.join(", "),
            c.mismatched
        )
    });
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32]) -> HostTensor {
        HostTensor::f32(vec![v.len()], v.to_vec()).unwrap()
    }

    #[test]
    fn within_tolerance_passes_and_reports_errors() {
        let c = compare("x", &t(&[1.0, 2.0, 0.0]), &t(&[1.00005, 2.0, 0.00005]), Tolerance::F32);
        assert!(c.passed, "{c}");
        assert!((c.max_abs_err - 5e-5).abs() < 1e-7, "{}", c.max_abs_err);
        // The element with a zero reference is left out of the relative error.
        assert!((c.max_rel_err - 5e-5).abs() < 1e-7, "{}", c.max_rel_err);
        assert!(c.nmse > 0.0 && c.nmse < 1e-8);
    }

    #[test]
    fn outside_tolerance_fails_with_count() {
        let c = compare("x", &t(&[1.0, 2.0, 3.0]), &t(&[1.0, 2.01, 3.0]), Tolerance::F32);
        assert!(!c.passed);
        assert_eq!(c.mismatched, 1);
    }

    #[test]
    fn rtol_scales_with_reference() {
        // 1000 * 1e-4 + 1e-4 = 0.1001 allowed.
        assert!(compare("x", &t(&[1000.0]), &t(&[1000.1]), Tolerance::F32).passed);
        assert!(!compare("x", &t(&[1000.0]), &t(&[1000.2]), Tolerance::F32).passed);
    }

    #[test]
    fn shape_mismatch_fails() {
        let c = compare("x", &t(&[1.0, 2.0]), &t(&[1.0, 2.0, 3.0]), Tolerance::F32);
        assert!(!c.passed);
        assert!(c.problem.unwrap().contains("shape"));
    }

    #[test]
    fn nan_where_reference_is_finite_fails() {
        let c = compare("x", &t(&[1.0]), &t(&[f32::NAN]), Tolerance::F32);
        assert!(!c.passed);
    }

    #[test]
    fn json_round_trip_keeps_missing_numbers() {
        let c = OutputComparison::missing("x", &t(&[1.0]));
        let back: OutputComparison = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert!(back.max_abs_err.is_nan() && !back.passed);
    }

    #[test]
    fn reduced_precision_ids_may_diverge_after_the_prompt() {
        let e = HostTensor::i64(vec![2, 4], vec![1, 2, 3, 4, 1, 2, 3, 4]).unwrap();
        let late = HostTensor::i64(vec![2, 4], vec![1, 2, 3, 9, 1, 2, 3, 4]).unwrap();
        let c = compare_prefix_ids("g", &e, &late, 2);
        assert!(c.passed && c.problem.as_ref().unwrap().contains("token 3"), "{c}");
        let early = HostTensor::i64(vec![2, 4], vec![1, 7, 3, 4, 1, 2, 3, 4]).unwrap();
        assert!(!compare_prefix_ids("g", &e, &early, 2).passed);
        assert!(compare_prefix_ids("g", &e, &e, 2).passed);
    }

    #[test]
    fn integers_must_match_exactly() {
        let e = HostTensor::i64(vec![3], vec![1, 2, 3]).unwrap();
        assert!(
            compare(
                "g",
                &e,
                &HostTensor::i64(vec![3], vec![1, 2, 3]).unwrap(),
                Tolerance::F32
            )
            .passed
        );
        let c = compare(
            "g",
            &e,
            &HostTensor::i64(vec![3], vec![1, 2, 4]).unwrap(),
            Tolerance::F32,
        );
        assert!(!c.passed && c.mismatched == 1);
        let c = compare("g", &e, &t(&[1.0, 2.0, 3.0]), Tolerance::F32);
        assert!(!c.passed && c.problem.unwrap().contains("dtype"));
    }
}
