//! docs/cli.md stays true: every `hwcov run ... --json` command on the page runs, and its output has
//! exactly the fields of the example under it (the same keys at every level; lists compared by
//! their first item, since the page cuts them).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Each ```sh command and the ```json example after it.
fn examples(page: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut rest = page;
    while let Some(at) = rest.find("```sh\n") {
        let after = &rest[at + 6..];
        let end = after.find("```").expect("an unclosed sh block");
        let command = after[..end].trim().to_string();
        let tail = &after[end + 3..];
        let json_at = tail.find("```json\n").expect("a json example after each command");
        let json = &tail[json_at + 8..];
        let json_end = json.find("```").expect("an unclosed json block");
        let value: Value = serde_json::from_str(&json[..json_end]).unwrap_or_else(|e| panic!("{command}: {e}"));
        out.push((command, value));
        rest = &json[json_end..];
    }
    out
}

/// The fields of `v` and, recursively, of its first list items and nested objects.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(o.iter().map(|(k, x)| (k.clone(), shape(x))).collect()),
        Value::Array(a) => Value::Array(a.iter().take(1).map(shape).collect()),
        _ => Value::Null,
    }
}

#[test]
fn every_example_of_the_page_has_the_fields_of_the_real_output() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let page = std::fs::read_to_string(root.join("docs/cli.md")).unwrap();
    let examples = examples(&page);
    assert_eq!(examples.len(), 11, "one example per task");
    for (command, example) in examples {
        let args: Vec<&str> = command.split_whitespace().collect();
        assert_eq!(args[..2], ["hwcov", "run"], "{command}");
        let out = Command::new(env!("CARGO_BIN_EXE_hwcov"))
            .args(&args[1..])
            .current_dir(&root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let real: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(shape(&real), shape(&example), "{command}");
        assert_eq!(real["task"], example["task"], "{command}");
    }
}
