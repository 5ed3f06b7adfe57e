use std::path::{Path, PathBuf};

use crate::catalog::{CatalogEntry, catalog, fetch_catalog, find_catalog_entry};
use crate::config::SourceConfig;
use crate::error::SourceError;
use crate::hub::fetch_hub;

/// What a model spec names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// An existing local model folder (with `~` expanded).
    Path(PathBuf),
    /// A model from the embedkit catalog.
    Catalog(&'static CatalogEntry),
    /// A Hugging Face hub repo at a revision (branch, tag or commit).
    Hub {
        /// `org/name`.
        repo: String,
        /// Defaults to `main`.
        revision: String,
    },
}

/// Parses a model spec.
///
/// * `hf:org/name` or `hf:org/name@revision` → [`ModelSpec::Hub`] (revision `main` if
///   omitted);
/// * a catalog short name or hub id, case-insensitive → [`ModelSpec::Catalog`];
/// * something that looks like a path (exists, contains `/` or `\`, or starts with `.` or
///   `~`) → [`ModelSpec::Path`], which must be an existing folder;
/// * anything else is an error listing the catalog.
pub fn parse_spec(spec: &str) -> Result<ModelSpec, SourceError> {
    let trimmed = spec.trim();
    if let Some(rest) = trimmed.strip_prefix("hf:") {
        let (repo, revision) = match rest.split_once('@') {
            Some((repo, revision)) => (repo, revision),
            None => (rest, "main"),
        };
        validate_repo(repo).map_err(|reason| invalid(spec, reason))?;
        validate_revision(revision).map_err(|reason| invalid(spec, reason))?;
        return Ok(ModelSpec::Hub {
            repo: repo.to_string(),
            revision: revision.to_string(),
        });
    }
    if trimmed.is_empty() {
        return Err(invalid(spec, "empty spec".to_string()));
    }
    if let Some(entry) = find_catalog_entry(trimmed) {
        return Ok(ModelSpec::Catalog(entry));
    }
    let looks_like_path = Path::new(spec).exists()
        || spec.contains(['/', '\\'])
        || spec.starts_with('.')
        || spec.starts_with('~');
    if !looks_like_path {
        let known: Vec<&str> = catalog().iter().map(|e| &*e.name).collect();
        return Err(SourceError::UnknownModel {
            spec: spec.to_string(),
            known: known.join(", "),
        });
    }
    let path = expand_tilde(spec);
    match std::fs::metadata(&path) {
        Ok(m) if m.is_dir() => Ok(ModelSpec::Path(path)),
        Ok(_) => Err(SourceError::PathNotDir(path)),
        Err(_) => Err(SourceError::PathNotFound(path)),
    }
}

/// Turns a spec into a local model folder, fetching it first if needed.
pub fn resolve(spec: &str, cfg: &SourceConfig) -> Result<PathBuf, SourceError> {
    match parse_spec(spec)? {
        ModelSpec::Path(path) => Ok(path),
        ModelSpec::Catalog(entry) => fetch_catalog(entry, cfg),
        ModelSpec::Hub { repo, revision } => fetch_hub(&repo, &revision, cfg),
    }
}

fn invalid(spec: &str, reason: String) -> SourceError {
    SourceError::InvalidSpec {
        spec: spec.to_string(),
        reason,
    }
}

/// Checks a hub repo id: `org/name` (or a legacy top-level `name`) made of letters, digits,
/// `-`, `_` and `.`.
pub(crate) fn validate_repo(repo: &str) -> Result<(), String> {
    if repo.is_empty() {
        return Err("missing repo id after 'hf:' (expected hf:org/name)".to_string());
    }
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.len() > 2 {
        return Err(format!("repo id '{repo}' has more than one '/'"));
    }
    for part in parts {
        let ok = !part.is_empty()
            && part != "."
            && part != ".."
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(format!(
                "repo id '{repo}' must be org/name using letters, digits, '-', '_' and '.'"
            ));
        }
    }
    Ok(())
}

/// Checks a revision: non-empty, no whitespace or control characters, no `.`/`..` path
/// components (it becomes a path under `refs/`).
pub(crate) fn validate_revision(revision: &str) -> Result<(), String> {
    let ok = !revision.is_empty()
        && !revision.starts_with('/')
        && !revision.ends_with('/')
        && !revision
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
        && revision
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(())
    } else {
        Err(format!("invalid revision '{revision}'"))
    }
}

fn expand_tilde(spec: &str) -> PathBuf {
    let home = || {
        std::env::var_os("HOME")
            .or_else(|| std::env::var_os("USERPROFILE"))
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
    };
    if spec == "~" {
        if let Some(h) = home() {
            return h;
        }
    } else if let Some(rest) = spec.strip_prefix("~/").or_else(|| spec.strip_prefix("~\\"))
        && let Some(h) = home()
    {
        return h.join(rest);
    }
    PathBuf::from(spec)
}
