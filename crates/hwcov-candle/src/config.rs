//! Model configs deserialised straight from config.json, with errors that name the field.

use hwcov_core::{Error, ModelFiles, Result};
use serde::de::DeserializeOwned;

/// Deserialises the whole config.json (or the sub-config at `key`, such as `text_config`).
pub fn parse<T: DeserializeOwned>(files: &ModelFiles, key: Option<&str>) -> Result<T> {
    let value = match key {
        None => &files.config,
        Some(k) => files
            .config
            .get(k)
            .ok_or_else(|| Error::config(&files.config_path, k, "missing"))?,
    };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = match key {
            Some(k) if path == "." => k.to_string(),
            Some(k) => format!("{k}.{path}"),
            None => path,
        };
        Error::config(&files.config_path, field, e.into_inner())
    })
}

/// A sub-config (`text_config`, `vision_config`, `backbone_config`) as transformers builds it: a
/// legacy `<key>_dict` wins when present (its missing fields take the class defaults, as
/// `CLIPConfig.__post_init__` rebuilds it), else `<key>`, else an empty object (all defaults).
pub fn parse_sub<T: DeserializeOwned>(files: &ModelFiles, key: &str) -> Result<T> {
    let legacy = format!("{key}_dict");
    let (field, value) = match (files.config.get(&legacy), files.config.get(key)) {
        (Some(v), _) if !v.is_null() => (legacy, v.clone()),
        (_, Some(v)) if !v.is_null() => (key.to_string(), v.clone()),
        _ => (key.to_string(), serde_json::Value::Object(Default::default())),
    };
    serde_path_to_error::deserialize(&value).map_err(|e| {
        let path = e.path().to_string();
        let name = if path == "." {
            field.clone()
        } else {
            format!("{field}.{path}")
        };
        Error::config(&files.config_path, name, e.into_inner())
    })
}

/// Fails with a config error unless `cond` holds.
pub fn check(files: &ModelFiles, cond: bool, field: &str, message: impl ToString) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(Error::config(&files.config_path, field, message))
    }
}

/// Attention heads must split the hidden size evenly (and exist).
pub fn check_heads(files: &ModelFiles, hidden_size: usize, num_attention_heads: usize) -> Result<()> {
    check(
        files,
        num_attention_heads > 0 && hidden_size.is_multiple_of(num_attention_heads),
        "num_attention_heads",
        format!("{num_attention_heads} heads do not divide hidden_size {hidden_size}"),
    )
}

/// The number of labels of a classification head: the size of `id2label`, as transformers counts it.
pub fn num_labels(files: &ModelFiles) -> Result<usize> {
    match files.config.get("id2label") {
        Some(serde_json::Value::Object(m)) if !m.is_empty() => Ok(m.len()),
        _ => match files.config.get("num_labels").and_then(|v| v.as_u64()) {
            Some(n) => Ok(n as usize),
            None => Err(Error::config(
                &files.config_path,
                "id2label",
                "missing: a classification head needs its labels",
            )),
        },
    }
}
