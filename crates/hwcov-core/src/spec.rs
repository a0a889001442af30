//! The schema of `models.toml`: one entry per model of the matrix, with its expectation on each
//! platform. A typo is an error that names the line and the field (toml's spans do that).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::class::ModelClass;
use crate::compare::Tolerance;
use crate::error::{Error, Result, read_file};
use crate::platform::PlatformId;
use crate::report::Status;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Text,
    Vision,
    Audio,
    Multimodal,
}

/// What models.toml expects of one model on one platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    /// Must verify wherever the platform is present.
    Expected,
    /// Known to fail (or not written yet); verifying would contradict models.toml.
    Xfail(String),
    /// The platform will never run this model, with the reason.
    Unsupported(String),
}

impl Expectation {
    /// Checks a measured status against this expectation. `Err` says how they contradict.
    /// "Not verified here" contradicts nothing: the hardware was absent.
    pub fn judge(&self, status: Status) -> std::result::Result<(), String> {
        match (self, status) {
            (_, Status::NotVerifiedHere) => Ok(()),
            (Expectation::Expected, Status::Verified) => Ok(()),
            (Expectation::Expected, s) => Err(format!("expected to verify, but measured {s}")),
            (Expectation::Xfail(reason), Status::Verified) => Err(format!(
                "marked xfail (\"{reason}\") but it verifies: change it to \"expected\" in models.toml"
            )),
            (Expectation::Xfail(_), _) => Ok(()),
            (Expectation::Unsupported(_), Status::Unsupported) => Ok(()),
            (Expectation::Unsupported(reason), s) => Err(format!(
                "marked unsupported (\"{reason}\") but the platform reports {s}"
            )),
        }
    }
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expectation::Expected => f.write_str("expected"),
            Expectation::Xfail(r) => write!(f, "xfail: {r}"),
            Expectation::Unsupported(r) => write!(f, "unsupported: {r}"),
        }
    }
}

impl<'de> Deserialize<'de> for Expectation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        const WANT: &str = "\"expected\", { xfail = \"reason\" } or { unsupported = \"reason\" }";
        impl<'de> Visitor<'de> for V {
            type Value = Expectation;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(WANT)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<Expectation, E> {
                match s {
                    "expected" => Ok(Expectation::Expected),
                    other => Err(E::custom(format!("unknown expectation `{other}`; use {WANT}"))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Expectation, A::Error> {
                let Some((key, reason)) = map.next_entry::<String, String>()? else {
                    return Err(de::Error::custom(format!("empty table; use {WANT}")));
                };
                if map.next_key::<String>()?.is_some() {
                    return Err(de::Error::custom(format!(
                        "give one of xfail or unsupported, not both; use {WANT}"
                    )));
                }
                if reason.trim().is_empty() {
                    return Err(de::Error::custom(format!("`{key}` needs a reason")));
                }
                match key.as_str() {
                    "xfail" => Ok(Expectation::Xfail(reason)),
                    "unsupported" => Ok(Expectation::Unsupported(reason)),
                    other => Err(de::Error::unknown_field(other, &["xfail", "unsupported"])),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Tolerance of a model's float outputs: a precision's default or explicit numbers.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum ToleranceSpec {
    Named(NamedTolerance),
    Explicit { atol: f64, rtol: f64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NamedTolerance {
    F32,
    F16,
    Bf16,
}

impl ToleranceSpec {
    pub fn tolerance(self) -> Tolerance {
        match self {
            ToleranceSpec::Named(NamedTolerance::F32) => Tolerance::F32,
            ToleranceSpec::Named(NamedTolerance::F16) => Tolerance::F16,
            ToleranceSpec::Named(NamedTolerance::Bf16) => Tolerance::BF16,
            ToleranceSpec::Explicit { atol, rtol } => Tolerance { atol, rtol },
        }
    }
}

/// The expectation of a model on each of the seven platforms; every platform must be named.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformExpectations {
    pub cpu: Expectation,
    pub cuda: Expectation,
    pub openvino: Expectation,
    pub mps: Expectation,
    pub rocm: Expectation,
    pub webnn: Expectation,
    pub webgpu: Expectation,
}

impl PlatformExpectations {
    pub fn get(&self, p: PlatformId) -> &Expectation {
        match p {
            PlatformId::Cpu => &self.cpu,
            PlatformId::Cuda => &self.cuda,
            PlatformId::Openvino => &self.openvino,
            PlatformId::Mps => &self.mps,
            PlatformId::Rocm => &self.rocm,
            PlatformId::Webnn => &self.webnn,
            PlatformId::Webgpu => &self.webgpu,
        }
    }
}

/// One model of the matrix.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Short unique name, used in test names and tables (`bert`, `llava-next`).
    pub name: String,
    /// The class of the matrix this model stands for (`BERT`, `Decoder LLM`, ...).
    pub class: String,
    /// `model_type` of its config.json.
    pub model_type: ModelClass,
    /// The representative checkpoint on the Hub.
    pub hub_id: String,
    pub category: Category,
    /// The pipeline task, as the Hub names it.
    pub task: String,
    /// `architectures[0]` of the fixture's config.json.
    pub architecture: String,
    /// Fixture folder, relative to the workspace root.
    pub fixture: PathBuf,
    pub tolerance: ToleranceSpec,
    pub platforms: PlatformExpectations,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelsFile {
    model: Vec<ModelSpec>,
}

/// Parses models.toml text; `path` only names the file in errors.
pub fn parse_models(path: &Path, text: &str) -> Result<Vec<ModelSpec>> {
    let file: ModelsFile = toml::from_str(text).map_err(|e| Error::format(path, e.to_string().trim_end()))?;
    let mut seen = std::collections::BTreeSet::new();
    for m in &file.model {
        if !seen.insert(m.name.as_str()) {
            return Err(Error::config(
                path,
                "name",
                format!("model `{}` is listed twice", m.name),
            ));
        }
        if ModelClass::from_architecture(&m.architecture) != Some(m.model_type) {
            return Err(Error::config(
                path,
                "architecture",
                format!(
                    "model `{}`: architecture `{}` is not a {} architecture",
                    m.name,
                    m.architecture,
                    m.model_type.name()
                ),
            ));
        }
    }
    Ok(file.model)
}

/// Reads and parses models.toml.
pub fn load_models(path: &Path) -> Result<Vec<ModelSpec>> {
    let bytes = read_file(path)?;
    let text = String::from_utf8(bytes).map_err(|e| Error::format(path, e))?;
    parse_models(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[model]]
name = "bert"
class = "BERT"
model_type = "bert"
hub_id = "bert-base-uncased"
category = "text"
task = "feature-extraction"
architecture = "BertModel"
fixture = "fixtures/bert"
tolerance = "f32"
[model.platforms]
cpu = "expected"
cuda = { xfail = "no code yet" }
openvino = { xfail = "no code yet" }
mps = { unsupported = "no Apple GPU" }
rocm = { xfail = "no code yet" }
webnn = { xfail = "no code yet" }
webgpu = { xfail = "no code yet" }
"#;

    fn parse(text: &str) -> Result<Vec<ModelSpec>> {
        parse_models(Path::new("models.toml"), text)
    }

    #[test]
    fn parses_a_good_entry() {
        let m = parse(GOOD).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].model_type, ModelClass::Bert);
        assert_eq!(m[0].platforms.cpu, Expectation::Expected);
        assert_eq!(m[0].platforms.mps, Expectation::Unsupported("no Apple GPU".into()));
        assert_eq!(m[0].tolerance.tolerance(), Tolerance::F32);
    }

    #[test]
    fn misspelt_field_names_line_and_field() {
        let err = parse(&GOOD.replace("hub_id", "hub_idd")).unwrap_err().to_string();
        assert!(
            err.contains("models.toml") && err.contains("line 6") && err.contains("hub_idd"),
            "{err}"
        );
    }

    #[test]
    fn bad_expectation_names_line_and_value() {
        let err = parse(&GOOD.replace("cpu = \"expected\"", "cpu = \"expectd\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 13") && err.contains("expectd"), "{err}");
        let err = parse(&GOOD.replace("xfail = \"no code yet\" }\nopenvino", "xfial = \"x\" }\nopenvino"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 14") && err.contains("xfial"), "{err}");
    }

    #[test]
    fn missing_platform_is_an_error() {
        let err = parse(&GOOD.replace("webgpu = { xfail = \"no code yet\" }\n", ""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("webgpu"), "{err}");
    }

    #[test]
    fn unknown_model_type_and_wrong_architecture_are_errors() {
        let err = parse(&GOOD.replace("model_type = \"bert\"", "model_type = \"gpt2\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 5") && err.contains("gpt2"), "{err}");
        let err = parse(&GOOD.replace("BertModel", "ViTModel")).unwrap_err().to_string();
        assert!(err.contains("architecture") && err.contains("ViTModel"), "{err}");
    }

    #[test]
    fn judge_contradictions() {
        assert!(Expectation::Expected.judge(Status::Verified).is_ok());
        assert!(Expectation::Expected.judge(Status::Failed).is_err());
        assert!(Expectation::Expected.judge(Status::NotVerifiedHere).is_ok());
        assert!(Expectation::Xfail("x".into()).judge(Status::Verified).is_err());
        assert!(Expectation::Xfail("x".into()).judge(Status::NotImplemented).is_ok());
        assert!(Expectation::Unsupported("x".into()).judge(Status::Verified).is_err());
        assert!(Expectation::Unsupported("x".into()).judge(Status::Unsupported).is_ok());
    }
}
