//! The files of a repository at a revision, with the commit the revision names: the Hub's
//! model-info API (`/api/models/{repo}/revision/{revision}?blobs=true`), requested through hf-hub.

use hf_hub::api::sync::ApiRepo;
use hwcov_core::Result;

use crate::{ModelId, Settings, http, hub_error};

/// One file of a repository.
#[derive(Debug, Clone)]
pub struct RepoFile {
    /// Its path in the repository, `/` between folders.
    pub name: String,
    /// Its size in bytes, where the Hub gives it.
    pub size: Option<u64>,
}

/// A repository's files at one commit.
#[derive(Debug, Clone)]
pub struct Listing {
    pub commit: String,
    pub files: Vec<RepoFile>,
}

impl Listing {
    pub fn size(&self, name: &str) -> Option<u64> {
        self.files.iter().find(|f| f.name == name).and_then(|f| f.size)
    }
}

/// The listing of `repo` (hf-hub's model-info request, which carries the token).
pub fn get(repo: &ApiRepo, id: &ModelId, settings: &Settings) -> Result<Listing> {
    let what = "the repository's file list";
    let response = repo
        .info_request()
        .query("blobs", "true")
        .call()
        .map_err(|e| http::refused(id, settings, what, e))?;
    let json: serde_json::Value = response
        .into_json()
        .map_err(|e| hub_error(id, format!("{what}: not valid JSON ({e})")))?;
    parse(&json).map_err(|m| hub_error(id, format!("{what}: {m}")))
}

fn parse(json: &serde_json::Value) -> std::result::Result<Listing, String> {
    let commit = json
        .get("sha")
        .and_then(|s| s.as_str())
        .filter(|s| crate::transfer::is_commit(s))
        .ok_or("field `sha` (the commit) is missing or not a commit hash")?
        .to_string();
    let siblings = json
        .get("siblings")
        .and_then(|s| s.as_array())
        .ok_or("field `siblings` is missing or not a list")?;
    let files = siblings
        .iter()
        .map(|s| {
            let name = s
                .get("rfilename")
                .and_then(|n| n.as_str())
                .ok_or_else(|| format!("a sibling has no `rfilename`: {s}"))?;
            Ok(RepoFile {
                name: name.to_string(),
                size: s.get("size").and_then(|v| v.as_u64()),
            })
        })
        .collect::<std::result::Result<_, String>>()?;
    Ok(Listing { commit, files })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_hub_answer() {
        let json = serde_json::json!({
            "id": "org/name",
            "sha": "0123456789abcdef0123456789abcdef01234567",
            "siblings": [
                {"rfilename": "config.json", "blobId": "x", "size": 20},
                {"rfilename": "model.safetensors", "size": 100, "lfs": {"sha256": "y", "size": 100}}
            ]
        });
        let l = parse(&json).unwrap();
        assert_eq!(l.commit, "0123456789abcdef0123456789abcdef01234567");
        assert_eq!(l.size("model.safetensors"), Some(100));
        assert!(
            parse(&serde_json::json!({"sha": "main", "siblings": []}))
                .unwrap_err()
                .contains("sha")
        );
        assert!(
            parse(&serde_json::json!({"sha": "0123456789abcdef0123456789abcdef01234567"}))
                .unwrap_err()
                .contains("siblings")
        );
    }
}
