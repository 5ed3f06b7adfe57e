//! Hugging Face hub downloads, stored in huggingface_hub's cache layout so that embedkit
//! and the Python tools share one cache:
//!
//! ```text
//! {hub_cache}/models--{org}--{name}/
//!     blobs/{etag}                       file contents, named by ETag (sha256 for LFS files)
//!     snapshots/{commit}/{path}          relative symlinks into ../../blobs
//!     refs/{revision}                    the commit a branch or tag pointed to
//! ```

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use embedkit_core::{AtomicFile, write_atomic};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Deserialize;
use ureq::http::Response;

use crate::config::SourceConfig;
use crate::error::SourceError;
use crate::spec::{validate_repo, validate_revision};
use crate::util::{HashingWriter, is_hex, is_safe_component};

/// Top-level files a sentence-transformers model may need besides its weights.
const ROOT_FILES: [&str; 10] = [
    "config.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "sentencepiece.bpe.model",
    "added_tokens.json",
];

/// Weight formats embedkit cannot read; never downloaded from module folders.
const FOREIGN_WEIGHT_EXTENSIONS: [&str; 10] = [
    "bin", "h5", "msgpack", "onnx", "ot", "pt", "pth", "ckpt", "pb", "tflite",
];

/// Files at least this large get a progress bar.
const PROGRESS_MIN_BYTES: u64 = 1 << 20;
const MAX_REDIRECTS: usize = 10;

#[derive(Deserialize)]
struct ModelInfo {
    sha: Option<String>,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
}

#[derive(Deserialize)]
struct SafetensorsIndex {
    weight_map: std::collections::BTreeMap<String, String>,
}

/// Downloads what a sentence-transformers model needs from `repo` at `revision` into the
/// hub cache and returns the snapshot folder.
///
/// Files already in the snapshot are not downloaded again. With `cfg.hf_offline`, or when
/// the endpoint cannot be reached, a snapshot already cached for `revision` is returned.
pub fn fetch_hub(repo: &str, revision: &str, cfg: &SourceConfig) -> Result<PathBuf, SourceError> {
    let spec = || format!("hf:{repo}@{revision}");
    validate_repo(repo).map_err(|reason| SourceError::InvalidSpec {
        spec: spec(),
        reason,
    })?;
    validate_revision(revision).map_err(|reason| SourceError::InvalidSpec {
        spec: spec(),
        reason,
    })?;
    let cache = cfg.hub_cache();
    let repo_dir = cache.join(format!("models--{}", repo.replace('/', "--")));

    if cfg.hf_offline {
        return cached_snapshot(&repo_dir, revision).ok_or_else(|| SourceError::HubOffline {
            repo: repo.to_string(),
            revision: revision.to_string(),
            cache: cache.clone(),
        });
    }

    let hub = Hub::new(cfg, repo);
    let info = match hub.model_info(revision) {
        Ok(info) => info,
        // A hub that cannot be reached or is down (5xx) is no reason to fail when the
        // revision is cached.
        Err(e @ (SourceError::Network { .. } | SourceError::HubStatus { status: 500.., .. })) => {
            return match cached_snapshot(&repo_dir, revision) {
                Some(snapshot) => {
                    if !cfg.quiet {
                        eprintln!(
                            "warning: {e}; using the cached snapshot of hf:{repo}@{revision}"
                        );
                    }
                    Ok(snapshot)
                }
                None => Err(e),
            };
        }
        Err(e) => return Err(e),
    };
    let commit = match info.sha {
        Some(sha) if is_safe_component(&sha) && sha.chars().all(|c| c.is_ascii_alphanumeric()) => {
            sha
        }
        other => {
            return Err(SourceError::HubResponse {
                repo: repo.to_string(),
                url: hub.info_url(revision),
                reason: format!("missing or invalid commit sha {other:?}"),
            });
        }
    };
    let siblings: BTreeSet<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();

    let snapshot = repo_dir.join("snapshots").join(&commit);
    let mut dl = Downloader {
        hub: &hub,
        repo_dir: &repo_dir,
        snapshot: &snapshot,
        commit: &commit,
        revision,
        announced: false,
    };

    // Decide on the weights before downloading anything, so a repo embedkit cannot use
    // fails fast.
    let mut wanted: BTreeSet<String> = ROOT_FILES
        .iter()
        .filter(|f| siblings.contains(**f))
        .map(|f| f.to_string())
        .collect();
    if siblings.contains("model.safetensors") {
        wanted.insert("model.safetensors".to_string());
    } else if siblings.contains("model.safetensors.index.json") {
        let index_path = dl.ensure("model.safetensors.index.json")?;
        let index: SafetensorsIndex = read_json(&index_path, repo, &hub)?;
        wanted.insert("model.safetensors.index.json".to_string());
        wanted.extend(index.weight_map.into_values());
    } else if siblings.contains("pytorch_model.bin")
        || siblings.contains("pytorch_model.bin.index.json")
    {
        return Err(SourceError::PytorchOnly {
            repo: repo.to_string(),
        });
    } else {
        return Err(SourceError::NoWeights {
            repo: repo.to_string(),
        });
    }

    if siblings.contains("modules.json") {
        let modules_path = dl.ensure("modules.json")?;
        let modules: Vec<ModuleEntry> = read_json(&modules_path, repo, &hub)?;
        for module in modules {
            let dir = module.path.trim_start_matches("./").trim_matches('/');
            if dir.is_empty() {
                continue;
            }
            let prefix = format!("{dir}/");
            let files: Vec<&String> = siblings.iter().filter(|s| s.starts_with(&prefix)).collect();
            let has_safetensors = files.iter().any(|f| f.ends_with(".safetensors"));
            let has_pickle = files.iter().any(|f| f.ends_with("pytorch_model.bin"));
            if has_pickle && !has_safetensors {
                return Err(SourceError::PytorchOnly {
                    repo: repo.to_string(),
                });
            }
            wanted.extend(
                files
                    .into_iter()
                    .filter(|f| {
                        let ext = f.rsplit_once('.').map(|(_, ext)| ext).unwrap_or("");
                        !FOREIGN_WEIGHT_EXTENSIONS.contains(&ext)
                    })
                    .cloned(),
            );
        }
    }

    for file in &wanted {
        dl.ensure(file)?;
    }

    if revision != commit {
        write_ref(&repo_dir, revision, &commit)?;
    }
    Ok(snapshot)
}

/// The snapshot cached for `revision` (a branch or tag through `refs/`, or a commit).
fn cached_snapshot(repo_dir: &Path, revision: &str) -> Option<PathBuf> {
    let snapshots = repo_dir.join("snapshots");
    if is_hex(revision, 40) && snapshots.join(revision).is_dir() {
        return Some(snapshots.join(revision));
    }
    let refs = revision
        .split('/')
        .fold(repo_dir.join("refs"), |p, c| p.join(c));
    let commit = fs::read_to_string(refs).ok()?;
    let commit = commit.trim();
    if !is_safe_component(commit) {
        return None;
    }
    let snapshot = snapshots.join(commit);
    snapshot.is_dir().then_some(snapshot)
}

fn write_ref(repo_dir: &Path, revision: &str, commit: &str) -> Result<(), SourceError> {
    let path = revision
        .split('/')
        .fold(repo_dir.join("refs"), |p, c| p.join(c));
    if fs::read_to_string(&path).is_ok_and(|c| c.trim() == commit) {
        return Ok(());
    }
    let parent = path.parent().unwrap_or(repo_dir);
    fs::create_dir_all(parent).map_err(|e| SourceError::io("create folder", parent, e))?;
    // huggingface_hub writes the bare commit, no newline.
    write_atomic(&path, commit.as_bytes()).map_err(|e| SourceError::io("write", &path, e))
}

fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    repo: &str,
    hub: &Hub,
) -> Result<T, SourceError> {
    let text = fs::read_to_string(path).map_err(|e| SourceError::io("read", path, e))?;
    serde_json::from_str(&text).map_err(|e| SourceError::HubResponse {
        repo: repo.to_string(),
        url: format!("{}/{repo}", hub.endpoint),
        reason: format!("{}: {e}", path.display()),
    })
}

/// An HTTP client bound to one endpoint, repo and token.
struct Hub<'a> {
    agent: ureq::Agent,
    endpoint: String,
    repo: &'a str,
    token: Option<&'a str>,
    quiet: bool,
}

/// A response at the end of a redirect chain, with what the hub said about the file.
struct Fetched {
    response: Response<ureq::Body>,
    url: String,
    etag: Option<String>,
}

impl<'a> Hub<'a> {
    fn new(cfg: &'a SourceConfig, repo: &'a str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Redirects are followed by hand: the hub's own response carries the ETag that
            // names the blob, and the CDN's does not.
            .max_redirects(0)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent(concat!("embedkit/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Hub {
            agent,
            endpoint: cfg.hf_endpoint.trim_end_matches('/').to_string(),
            repo,
            token: cfg.hf_token.as_deref().filter(|t| !t.is_empty()),
            quiet: cfg.quiet,
        }
    }

    fn info_url(&self, revision: &str) -> String {
        format!(
            "{}/api/models/{}/revision/{}",
            self.endpoint,
            self.repo,
            encode_component(revision)
        )
    }

    fn model_info(&self, revision: &str) -> Result<ModelInfo, SourceError> {
        let url = self.info_url(revision);
        let fetched = self.get(&url, false)?;
        let mut response = fetched.response;
        let status = response.status().as_u16();
        if status != 200 {
            let code = header(&response, "x-error-code").unwrap_or_default();
            let what = match code.as_str() {
                "RevisionNotFound" => format!("revision '{revision}'"),
                "RepoNotFound" => "repository".to_string(),
                _ => format!("repository or revision '{revision}'"),
            };
            return Err(self.status_error(status, &fetched.url, what));
        }
        let text = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|e| self.network_error(&url, &e))?;
        serde_json::from_str(&text).map_err(|e| SourceError::HubResponse {
            repo: self.repo.to_string(),
            url,
            reason: format!("invalid model info JSON: {e}"),
        })
    }

    /// GET `url`, following up to [`MAX_REDIRECTS`] redirects. The blob name is the first
    /// `X-Linked-Etag` in the chain (set by the hub on LFS redirects), else the first `ETag`.
    fn get(&self, url: &str, identity: bool) -> Result<Fetched, SourceError> {
        let mut url = url.to_string();
        let mut linked = None;
        let mut plain = None;
        for _ in 0..=MAX_REDIRECTS {
            let mut request = self.agent.get(&url);
            if let Some(token) = self.token {
                // Like `requests`, never hand the token to another host (the CDN).
                if same_origin(&url, &self.endpoint) {
                    request = request.header("Authorization", format!("Bearer {token}"));
                }
            }
            if identity {
                // Hash and size the bytes as stored, not a re-encoding of them.
                request = request.header("Accept-Encoding", "identity");
            }
            let response = request.call().map_err(|e| self.network_error(&url, &e))?;
            linked = linked.or_else(|| header(&response, "x-linked-etag").and_then(clean_etag));
            plain = plain.or_else(|| header(&response, "etag").and_then(clean_etag));
            let status = response.status().as_u16();
            if matches!(status, 301 | 302 | 303 | 307 | 308) {
                let Some(location) = header(&response, "location") else {
                    return Err(SourceError::HubResponse {
                        repo: self.repo.to_string(),
                        url,
                        reason: format!("HTTP {status} without a Location header"),
                    });
                };
                url = join_url(&url, &location);
                continue;
            }
            return Ok(Fetched {
                response,
                url,
                etag: linked.or(plain),
            });
        }
        Err(SourceError::HubResponse {
            repo: self.repo.to_string(),
            url,
            reason: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    fn status_error(&self, status: u16, url: &str, what: String) -> SourceError {
        let repo = self.repo.to_string();
        let url = url.to_string();
        match status {
            401 | 403 => SourceError::HubAuth { repo, status, url },
            404 => SourceError::HubNotFound { repo, what, url },
            _ => SourceError::HubStatus { repo, status, url },
        }
    }

    fn network_error(&self, url: &str, e: &dyn std::fmt::Display) -> SourceError {
        SourceError::Network {
            endpoint: self.endpoint.clone(),
            url: url.to_string(),
            reason: e.to_string().replace('\n', " "),
        }
    }
}

/// Downloads files of one commit into the snapshot folder.
struct Downloader<'a> {
    hub: &'a Hub<'a>,
    repo_dir: &'a Path,
    snapshot: &'a Path,
    commit: &'a str,
    revision: &'a str,
    announced: bool,
}

impl Downloader<'_> {
    /// Makes sure `file` (a repo path) is in the snapshot, downloading it if needed, and
    /// returns its snapshot path.
    fn ensure(&mut self, file: &str) -> Result<PathBuf, SourceError> {
        let hub = self.hub;
        let components: Vec<&str> = file.split('/').collect();
        if !components.iter().all(|c| is_safe_component(c)) {
            return Err(SourceError::HubResponse {
                repo: hub.repo.to_string(),
                url: hub.info_url(self.revision),
                reason: format!("unsafe file name '{file}'"),
            });
        }
        let target = components
            .iter()
            .fold(self.snapshot.to_path_buf(), |p, c| p.join(c));
        // exists() follows the symlink, so a link to a missing blob is fetched again.
        if target.exists() {
            return Ok(target);
        }
        if !self.announced && !hub.quiet {
            eprintln!(
                "fetching hf:{}@{} ({}) from {}…",
                hub.repo,
                self.revision,
                &self.commit[..self.commit.len().min(12)],
                hub.endpoint
            );
            self.announced = true;
        }

        let encoded: Vec<String> = components.iter().map(|c| encode_component(c)).collect();
        let url = format!(
            "{}/{}/resolve/{}/{}",
            hub.endpoint,
            hub.repo,
            self.commit,
            encoded.join("/")
        );
        let fetched = hub.get(&url, true)?;
        let status = fetched.response.status().as_u16();
        if status != 200 {
            return Err(hub.status_error(
                status,
                &fetched.url,
                format!("file '{file}' at commit {}", self.commit),
            ));
        }

        let blobs = self.repo_dir.join("blobs");
        fs::create_dir_all(&blobs).map_err(|e| SourceError::io("create folder", &blobs, e))?;
        let blob_name = match &fetched.etag {
            Some(etag) if blobs.join(etag).is_file() => etag.clone(),
            _ => self.download_blob(file, fetched, &blobs)?,
        };
        let blob = blobs.join(&blob_name);

        let parent = target.parent().unwrap_or(self.snapshot);
        fs::create_dir_all(parent).map_err(|e| SourceError::io("create folder", parent, e))?;
        // From snapshots/{commit}/{dirs…}/file up to the repo folder.
        let mut relative = PathBuf::new();
        for _ in 0..components.len() + 1 {
            relative.push("..");
        }
        relative.push("blobs");
        relative.push(&blob_name);
        link_or_copy(&blob, &relative, &target)?;
        Ok(target)
    }

    /// Streams the response into a temp file in `blobs` and renames it to its final name.
    fn download_blob(
        &self,
        file: &str,
        fetched: Fetched,
        blobs: &Path,
    ) -> Result<String, SourceError> {
        let hub = self.hub;
        let Fetched {
            response,
            url,
            etag,
        } = fetched;
        let length = header(&response, "content-length").and_then(|l| l.parse::<u64>().ok());
        let bar = if hub.quiet || length.is_some_and(|l| l < PROGRESS_MIN_BYTES) {
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::with_draw_target(length, ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(file.to_string());
            bar
        };

        // The blob's name is its hash, known once the bytes are in: the temp file is committed under it.
        let mut tmp = AtomicFile::create(&blobs.join("download"))
            .map_err(|e| SourceError::io("create temp file in", blobs, e))?;
        let mut reader = bar.wrap_read(response.into_body().into_reader());
        let mut writer = HashingWriter::new(BufWriter::new(tmp.as_file_mut()));
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    bar.abandon();
                    return Err(hub.network_error(&url, &e));
                }
            };
            writer
                .write_all(&buf[..n])
                .map_err(|e| SourceError::io("write a download into", blobs, e))?;
        }
        bar.finish_and_clear();
        let (sha256, _, mut out) = writer.finish();
        out.flush()
            .map_err(|e| SourceError::io("write a download into", blobs, e))?;
        drop(out);

        let name = match etag {
            Some(etag) => {
                // LFS files are named by their sha256: check the bytes against it.
                if is_hex(&etag, 64) && !etag.eq_ignore_ascii_case(&sha256) {
                    return Err(SourceError::HashMismatch {
                        file: format!("hf:{}/{file} (from {url})", hub.repo),
                        expected: etag.to_ascii_lowercase(),
                        actual: sha256,
                    });
                }
                etag
            }
            None => sha256,
        };
        let blob = blobs.join(&name);
        tmp.commit_as(&blob)
            .map_err(|e| SourceError::io("write", &blob, e))?;
        Ok(name)
    }
}

/// Points `target` at the blob with a relative symlink, as huggingface_hub does; copies the
/// blob where symlinks are not allowed (Windows without developer mode, some filesystems).
fn link_or_copy(blob: &Path, relative: &Path, target: &Path) -> Result<(), SourceError> {
    if let Ok(meta) = fs::symlink_metadata(target) {
        if meta.is_dir() {
            return Err(SourceError::io(
                "replace",
                target,
                std::io::Error::other("a folder is in the way"),
            ));
        }
        fs::remove_file(target).map_err(|e| SourceError::io("remove", target, e))?;
    }
    if symlink(relative, target).is_ok() {
        return Ok(());
    }
    if target.exists() {
        // Another process linked it meanwhile.
        return Ok(());
    }
    let parent = target.parent().unwrap_or(Path::new("."));
    let mut dst = AtomicFile::create(target)
        .map_err(|e| SourceError::io("create temp file in", parent, e))?;
    let mut src = File::open(blob).map_err(|e| SourceError::io("open", blob, e))?;
    std::io::copy(&mut src, &mut dst).map_err(|e| SourceError::io("copy to", target, e))?;
    dst.commit()
        .map_err(|e| SourceError::io("write", target, e))
}

#[cfg(unix)]
fn symlink(original: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(original, link)
}

#[cfg(windows)]
fn symlink(original: &Path, link: &Path) -> std::io::Result<()> {
    std::os::windows::fs::symlink_file(original, link)
}

#[cfg(not(any(unix, windows)))]
fn symlink(_original: &Path, _link: &Path) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

fn header(response: &Response<ureq::Body>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `W/"abc"` → `abc`; `None` when what is left is not usable as a file name.
fn clean_etag(raw: String) -> Option<String> {
    let etag = raw.trim();
    let etag = etag.strip_prefix("W/").unwrap_or(etag).trim_matches('"');
    let ok = !etag.is_empty()
        && etag.len() <= 128
        && etag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !etag.starts_with('.');
    ok.then(|| etag.to_string())
}

/// Percent-encodes one URL path component (everything but RFC 3986 unreserved characters).
fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `scheme://host[:port]` of a URL, lowercased.
fn origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    format!("{scheme}://{host}").to_ascii_lowercase()
}

fn same_origin(a: &str, b: &str) -> bool {
    origin(a) == origin(b)
}

/// Resolves a `Location` header against the URL that answered with it.
fn join_url(base: &str, location: &str) -> String {
    let location = location.trim();
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else if let Some(rest) = location.strip_prefix("//") {
        let scheme = base.split_once("://").map(|(s, _)| s).unwrap_or("https");
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{}{location}", origin(base))
    } else {
        let path = base.split(['?', '#']).next().unwrap_or(base);
        match path.rsplit_once('/') {
            Some((dir, _)) if dir.len() > origin(base).len() || dir.ends_with('/') => {
                format!("{dir}/{location}")
            }
            _ => format!("{}/{location}", origin(base)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_cleaned() {
        assert_eq!(clean_etag("W/\"abc123\"".into()).as_deref(), Some("abc123"));
        assert_eq!(
            clean_etag("\"deadbeef\"".into()).as_deref(),
            Some("deadbeef")
        );
        assert_eq!(clean_etag("\"../evil\"".into()), None);
        assert_eq!(clean_etag("\"\"".into()), None);
    }

    #[test]
    fn urls_join_like_a_browser() {
        let base = "http://127.0.0.1:8080/org/m/resolve/abc/model.safetensors";
        assert_eq!(
            join_url(base, "https://cdn.example/x"),
            "https://cdn.example/x"
        );
        assert_eq!(join_url(base, "/cdn/x"), "http://127.0.0.1:8080/cdn/x");
        assert_eq!(
            join_url(base, "other"),
            "http://127.0.0.1:8080/org/m/resolve/abc/other"
        );
        assert_eq!(join_url(base, "//h:1/y"), "http://h:1/y");
        assert!(same_origin(base, "HTTP://127.0.0.1:8080"));
        assert!(!same_origin(base, "http://127.0.0.1:8081/"));
    }

    #[test]
    fn components_are_percent_encoded() {
        assert_eq!(encode_component("refs/pr/1"), "refs%2Fpr%2F1");
        assert_eq!(encode_component("a b+c.json"), "a%20b%2Bc.json");
    }

    #[test]
    fn cached_snapshot_follows_refs() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        assert_eq!(cached_snapshot(repo, "main"), None);
        let commit = "0123456789abcdef0123456789abcdef01234567";
        fs::create_dir_all(repo.join("snapshots").join(commit)).unwrap();
        write_ref(repo, "refs/pr/1", commit).unwrap();
        assert_eq!(
            fs::read_to_string(repo.join("refs/refs/pr/1")).unwrap(),
            commit
        );
        assert_eq!(
            cached_snapshot(repo, "refs/pr/1"),
            Some(repo.join("snapshots").join(commit))
        );
        assert_eq!(
            cached_snapshot(repo, commit),
            Some(repo.join("snapshots").join(commit))
        );
        assert_eq!(cached_snapshot(repo, "main"), None);
    }
}
