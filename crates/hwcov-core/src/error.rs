//! One error type for every crate. Each variant names the file, field or tensor at fault,
//! because the user has to find and fix it.

use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    /// A file exists but its content is malformed (JSON, TOML, safetensors header, ...).
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },

    /// A field of a configuration file is missing or has a value we cannot use.
    #[error("{}: field `{field}`: {message}", path.display())]
    Config {
        path: PathBuf,
        field: String,
        message: String,
    },

    /// A named tensor is missing, or has the wrong shape or dtype.
    #[error("tensor `{name}`{}: {message}", origin.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    Tensor {
        name: String,
        origin: Option<PathBuf>,
        message: String,
    },

    /// The platform cannot be used on this machine (no device, no runtime library).
    #[error("platform {platform} is not available: {reason}")]
    Unavailable { platform: String, reason: String },

    /// The platform has no code for this (yet); `reason` says what is missing.
    #[error("not implemented on platform {platform}: {reason}")]
    NotImplemented { platform: String, reason: String },

    /// The platform will never run this model class, with the reason.
    #[error("{what} is unsupported on platform {platform}: {reason}")]
    Unsupported {
        platform: String,
        what: String,
        reason: String,
    },

    /// The runtime failed while loading or running a model (out of memory, kernel error, ...).
    #[error("{context}: {message}")]
    Runtime { context: String, message: String },

    /// Bad use of the command line or the library API.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub fn format(path: impl AsRef<Path>, message: impl ToString) -> Self {
        Error::Format {
            path: path.as_ref().to_path_buf(),
            message: message.to_string(),
        }
    }

    pub fn config(path: impl AsRef<Path>, field: impl Into<String>, message: impl ToString) -> Self {
        Error::Config {
            path: path.as_ref().to_path_buf(),
            field: field.into(),
            message: message.to_string(),
        }
    }

    pub fn tensor(name: impl Into<String>, message: impl ToString) -> Self {
        Error::Tensor {
            name: name.into(),
            origin: None,
            message: message.to_string(),
        }
    }

    pub fn tensor_in(name: impl Into<String>, origin: impl AsRef<Path>, message: impl ToString) -> Self {
        Error::Tensor {
            name: name.into(),
            origin: Some(origin.as_ref().to_path_buf()),
            message: message.to_string(),
        }
    }

    pub fn runtime(context: impl Into<String>, message: impl ToString) -> Self {
        Error::Runtime {
            context: context.into(),
            message: message.to_string(),
        }
    }
}

/// Reads a whole file, naming it in the error.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Reads and parses a JSON file, naming it in the error.
pub fn read_json(path: &Path) -> Result<serde_json::Value> {
    let bytes = read_file(path)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::format(path, format!("invalid JSON: {e}")))
}
