//! hwcov-hub: models by Hub id, `org/name[@revision]`.
//!
//! The files of a Hub repository that a platform needs are fetched into the Hugging Face cache, in
//! the layout Python's huggingface_hub uses (`hub/models--org--name/{blobs,snapshots,refs}`, so
//! each reuses the other's downloads), each checked against the hash the Hub gives for it before it
//! enters the cache. The model is then read from the cache's snapshot folder like any other folder.
//!
//! - `settings`: where from and where to (HF_ENDPOINT, HF_HOME / HF_HUB_CACHE, HF_TOKEN,
//!   HF_HUB_OFFLINE).
//! - `select`: which files of a repository a platform family needs.
//! - `listing`: the repository's files at a revision (the Hub's model-info API).
//! - `transfer`: one file into `blobs/`, resumable and checked; its `snapshots/` link; the ref.
//! - `progress`: one bar for the set.

mod http;
mod listing;
mod progress;
mod select;
mod settings;
mod transfer;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};
use hwcov_core::{Error, Result};

pub use select::Need;
pub use settings::Settings;

/// A Hub model repository and a revision (branch, tag or commit; default `main`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelId {
    pub repo: String,
    pub revision: String,
}

impl FromStr for ModelId {
    type Err = Error;

    /// `org/name`, `org/name@revision` or a legacy id without an organisation (`gpt2`).
    fn from_str(s: &str) -> Result<Self> {
        let (repo, revision) = match s.split_once('@') {
            Some((repo, revision)) => (repo, revision),
            None => (s, "main"),
        };
        let bad = |why: &str| Error::Usage(format!("--model {s}: {why} (expected org/name or org/name@revision)"));
        let parts: Vec<&str> = repo.split('/').collect();
        if parts.len() > 2 {
            return Err(bad("a repository id has at most one `/`"));
        }
        for part in &parts {
            let ok_chars = part.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if part.is_empty() || !ok_chars || part.starts_with('.') || part.contains("..") {
                return Err(bad("names hold letters, digits, `-`, `_` and `.`"));
            }
        }
        if revision.is_empty()
            || revision.starts_with('/')
            || revision.split('/').any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(bad(
                "the revision after `@` is empty or not a branch, tag or commit name",
            ));
        }
        Ok(ModelId {
            repo: repo.to_string(),
            revision: revision.to_string(),
        })
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.repo, self.revision)
    }
}

/// The error of `id`, in the words `message` gives.
fn hub_error(id: &ModelId, message: impl ToString) -> Error {
    Error::runtime(format!("Hub model {id}"), message)
}

/// The model folder of `id` for a platform that needs `need`: the cache's snapshot folder of the
/// revision, with every file `need` asks for fetched and checked (only the cache where
/// `settings.offline`).
pub fn model_folder(id: &ModelId, need: Need, settings: &Settings) -> Result<PathBuf> {
    let repo = Repo::with_revision(id.repo.clone(), RepoType::Model, id.revision.clone());
    let repo_dir = settings.cache.join(repo.folder_name());
    if settings.offline {
        return from_cache(id, &repo, &repo_dir, need, settings);
    }
    let api = ApiBuilder::from_cache(Cache::new(settings.cache.clone()))
        .with_endpoint(settings.endpoint.clone())
        .with_token(settings.token.clone())
        .with_progress(false)
        .build()
        .map_err(|e| hub_error(id, format!("cannot set up the Hub client: {e}")))?;
    let listing = listing::get(&api.repo(repo), id, settings)?;
    let names: Vec<&str> = listing.files.iter().map(|f| f.name.as_str()).collect();
    // Every file is fetched at the listing's commit, so the set is of one commit even if the
    // branch moves meanwhile.
    let pinned = api.repo(Repo::with_revision(
        id.repo.clone(),
        RepoType::Model,
        listing.commit.clone(),
    ));
    let snapshot = repo_dir.join("snapshots").join(&listing.commit);
    let transfer = transfer::Transfer::new(id, settings, &repo_dir, &snapshot);
    let fetch = |set: &[String]| -> Result<()> {
        let todo: Vec<&String> = set.iter().filter(|n| !snapshot.join(n.as_str()).is_file()).collect();
        let bytes = todo.iter().map(|n| listing.size(n).unwrap_or(0)).sum();
        let progress = progress::SetProgress::new(&id.to_string(), bytes, todo.len());
        for name in todo {
            transfer.fetch(&pinned.url(name), name, &progress)?;
        }
        progress.finish();
        Ok(())
    };
    let mut wanted = select::files(&names, need).map_err(|m| hub_error(id, m))?;
    // A sharded checkpoint's index says which shards to fetch: it comes first, on its own.
    if let Some(index) = wanted.iter().find(|n| n.as_str() == select::SHARD_INDEX).cloned() {
        fetch(std::slice::from_ref(&index))?;
        let shards = select::shards(&snapshot.join(&index)).map_err(|m| hub_error(id, m))?;
        for shard in shards {
            if !names.contains(&shard.as_str()) {
                return Err(hub_error(
                    id,
                    format!("{index} names {shard}, which the repository does not have"),
                ));
            }
            wanted.push(shard);
        }
    }
    fetch(&wanted)?;
    // A graph's external data beyond what `select` expected by its name.
    let named = external_data(&snapshot, &wanted).map_err(|m| hub_error(id, m))?;
    let done: BTreeSet<&String> = wanted.iter().collect();
    let extra: Vec<String> = named.into_iter().filter(|n| !done.contains(n)).collect();
    if let Some(missing) = extra.iter().find(|n| !names.contains(&n.as_str())) {
        return Err(hub_error(
            id,
            format!("a graph names the external data {missing}, which the repository does not have"),
        ));
    }
    fetch(&extra)?;
    transfer::write_ref(&repo_dir, &id.revision, &listing.commit)?;
    Ok(snapshot)
}

/// The snapshot folder of `id` from the cache alone, every file `need` asks for present.
fn from_cache(id: &ModelId, repo: &Repo, repo_dir: &Path, need: Need, settings: &Settings) -> Result<PathBuf> {
    let offline = |what: String| {
        hub_error(
            id,
            format!("HF_HUB_OFFLINE is set and {what}; run once with the network (HF_HUB_OFFLINE unset) to fetch it"),
        )
    };
    let snapshot = if transfer::is_commit(&id.revision) {
        repo_dir.join("snapshots").join(&id.revision)
    } else {
        // hf-hub reads refs/<revision> and finds the file in that commit's snapshot.
        let config = Cache::new(settings.cache.clone())
            .repo(repo.clone())
            .get("config.json")
            .ok_or_else(|| {
                offline(format!(
                    "the cache has no config.json of this revision (looked in {})",
                    repo_dir.display()
                ))
            })?;
        config.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    if !snapshot.join("config.json").is_file() {
        return Err(offline(format!(
            "the cache has no config.json of this revision (looked in {})",
            snapshot.display()
        )));
    }
    let files = transfer::snapshot_files(&snapshot)?;
    let names: Vec<&str> = files.iter().map(String::as_str).collect();
    let mut wanted = select::files(&names, need).map_err(|m| offline(format!("the cache {m}")))?;
    if wanted.iter().any(|n| n == select::SHARD_INDEX) {
        wanted.extend(select::shards(&snapshot.join(select::SHARD_INDEX)).map_err(|m| hub_error(id, m))?);
    }
    wanted.extend(external_data(&snapshot, &wanted).map_err(|m| hub_error(id, m))?);
    for name in &wanted {
        if !snapshot.join(name).is_file() {
            return Err(offline(format!(
                "the cache lacks {name} ({})",
                snapshot.join(name).display()
            )));
        }
    }
    Ok(snapshot)
}

/// The external data files the ONNX graphs among `files` name, as paths relative to `snapshot`.
fn external_data(snapshot: &Path, files: &[String]) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    for graph in files.iter().filter(|n| n.ends_with(".onnx")) {
        let path = snapshot.join(graph);
        if !path.is_file() {
            continue;
        }
        let folder = Path::new(graph).parent().unwrap_or(Path::new(""));
        for location in hwcov_onnx::Model::external_locations(&path).map_err(|e| e.to_string())? {
            let name = folder.join(&location);
            let name = select::repo_path(&name)
                .ok_or_else(|| format!("{graph} names external data `{location}`, which leaves the repository"))?;
            out.push(name);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids() {
        let id: ModelId = "Qwen/Qwen2-0.5B-Instruct".parse().unwrap();
        assert_eq!(
            (id.repo.as_str(), id.revision.as_str()),
            ("Qwen/Qwen2-0.5B-Instruct", "main")
        );
        let id: ModelId = "org/name@refs/pr/3".parse().unwrap();
        assert_eq!((id.repo.as_str(), id.revision.as_str()), ("org/name", "refs/pr/3"));
        assert_eq!("gpt2".parse::<ModelId>().unwrap().repo, "gpt2");
        for bad in [
            "",
            "a/b/c",
            "org/",
            "../x",
            "org/na me",
            "org/name@",
            "org/name@../main",
            "org/..",
        ] {
            let e = bad.parse::<ModelId>().unwrap_err().to_string();
            assert!(e.contains("--model"), "{bad}: {e}");
        }
    }
}
