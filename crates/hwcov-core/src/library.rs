//! Finding a runtime library that a platform loads at run time (OpenVINO, ONNX Runtime): named by an
//! environment variable, or in a project-local pip install under `.hwcov/`.

use std::path::{Path, PathBuf};

/// The first file in `dir` whose name starts with `prefix` (pip wheels ship only versioned names,
/// such as `libopenvino_c.so.2641` or `libonnxruntime.so.1.31.1`).
pub fn file_in(dir: &Path, prefix: &str) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    found.sort();
    found.into_iter().next()
}

/// The library the environment variable `var` names (the file, or a folder holding it); `None`
/// when the variable is unset, an error naming the variable when it names neither.
pub fn from_env(var: &str, prefix: &str) -> Option<Result<PathBuf, String>> {
    let value = std::env::var(var).ok()?;
    let path = PathBuf::from(&value);
    if path.is_file() {
        return Some(Ok(path));
    }
    Some(file_in(&path, prefix).ok_or_else(|| format!("{var}={value} is neither {prefix} nor a folder holding it")))
}

/// The library in the first of `installs` (folders relative to a project root, such as
/// `.hwcov/openvino/openvino/libs`) found under the working directory, the executable, or one of
/// their ancestors.
pub fn local(installs: &[&str], prefix: &str) -> Option<PathBuf> {
    let starts = [std::env::current_dir().ok(), std::env::current_exe().ok()];
    starts.into_iter().flatten().find_map(|start| {
        start
            .ancestors()
            .find_map(|dir| installs.iter().find_map(|i| file_in(&dir.join(i), prefix)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_versioned_file_is_found_by_its_prefix() {
        let dir = std::env::temp_dir().join(format!("hwcov-library-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("libonnxruntime.so.1.31.1"), b"").unwrap();
        std::fs::write(dir.join("libonnxruntime_providers_shared.so"), b"").unwrap();
        // Sorted, the versioned library comes before the providers' library.
        assert_eq!(
            file_in(&dir, "libonnxruntime.so"),
            Some(dir.join("libonnxruntime.so.1.31.1"))
        );
        assert_eq!(file_in(&dir, "libopenvino_c.so"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
