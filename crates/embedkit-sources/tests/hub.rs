//! The hub client against a small fake hub on 127.0.0.1 that answers the way
//! huggingface.co does: the model-info API, `/resolve/` with ETag headers, LFS files
//! redirected to a "CDN" path, 401 without the right token, 404 with X-Error-Code.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use embedkit_sources::{SourceConfig, SourceError, fetch_hub, resolve};
use sha2::{Digest, Sha256};

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const COMMIT_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const COMMIT_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// One commit's files. Paths ending in `.safetensors` or `.bin` are LFS files (redirected).
type Files = BTreeMap<String, Vec<u8>>;

#[derive(Default)]
struct Repo {
    /// revision (branch, tag or commit) → commit
    revisions: HashMap<String, String>,
    commits: HashMap<String, Files>,
    /// Bearer token the repo requires, if gated.
    token: Option<String>,
    /// Serve wrong bytes for LFS files (a corrupt CDN).
    corrupt_lfs: bool,
    /// Answer every API call with 503 (the hub is down).
    down: bool,
}

#[derive(Debug, Clone)]
struct Logged {
    path: String,
    auth: Option<String>,
}

struct FakeHub {
    url: String,
    log: Arc<Mutex<Vec<Logged>>>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl FakeHub {
    fn start(repos: HashMap<String, Repo>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (log, stop) = (log.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    // One request per connection keeps the fake simple; a client that
                    // hangs must not hang the test.
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    let _ = handle(stream, &repos, &log);
                }
            })
        };
        FakeHub {
            url: format!("http://{addr}"),
            log,
            stop,
            addr,
            thread: Some(thread),
        }
    }

    fn requests(&self) -> Vec<Logged> {
        self.log.lock().unwrap().clone()
    }

    fn file_requests(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .map(|r| r.path)
            .filter(|p| !p.starts_with("/api/"))
            .collect()
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let _ = stream.flush();
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn handle(
    mut stream: TcpStream,
    repos: &HashMap<String, Repo>,
    log: &Mutex<Vec<Logged>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut auth = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("authorization")
        {
            auth = Some(v.trim().to_string());
        }
    }
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Ok(());
    };
    if method != "GET" {
        respond(&mut stream, "405 Method Not Allowed", &[], b"");
        return Ok(());
    }
    log.lock().unwrap().push(Logged {
        path: path.to_string(),
        auth: auth.clone(),
    });
    let not_found = |stream: &mut TcpStream, code: &str| {
        respond(
            stream,
            "404 Not Found",
            &[("X-Error-Code", code.to_string())],
            b"{\"error\":\"not found\"}",
        )
    };
    let authorized = |repo: &Repo| match &repo.token {
        None => true,
        Some(t) => auth.as_deref() == Some(&format!("Bearer {t}")),
    };

    if let Some(rest) = path.strip_prefix("/api/models/") {
        // {org}/{name}/revision/{rev}
        let segs: Vec<&str> = rest.splitn(4, '/').collect();
        let [org, name, "revision", rev] = segs.as_slice() else {
            not_found(&mut stream, "RepoNotFound");
            return Ok(());
        };
        let Some(repo) = repos.get(&format!("{org}/{name}")) else {
            not_found(&mut stream, "RepoNotFound");
            return Ok(());
        };
        if repo.down {
            respond(&mut stream, "503 Service Unavailable", &[], b"down");
            return Ok(());
        }
        if !authorized(repo) {
            respond(
                &mut stream,
                "401 Unauthorized",
                &[],
                b"{\"error\":\"gated\"}",
            );
            return Ok(());
        }
        let rev = percent_decode(rev);
        let Some(commit) = repo.revisions.get(&rev) else {
            not_found(&mut stream, "RevisionNotFound");
            return Ok(());
        };
        let siblings: Vec<String> = repo.commits[commit]
            .keys()
            .map(|f| format!("{{\"rfilename\":\"{f}\"}}"))
            .collect();
        let body = format!(
            "{{\"id\":\"{org}/{name}\",\"sha\":\"{commit}\",\"siblings\":[{}]}}",
            siblings.join(",")
        );
        respond(&mut stream, "200 OK", &[], body.as_bytes());
        return Ok(());
    }

    if let Some(sha) = path.strip_prefix("/cdn/") {
        for repo in repos.values() {
            for files in repo.commits.values() {
                if let Some(data) = files.values().find(|d| sha256_hex(d) == sha) {
                    let body = if repo.corrupt_lfs {
                        b"corrupted".to_vec()
                    } else {
                        data.clone()
                    };
                    // A CDN's own ETag, which must not name the blob.
                    respond(
                        &mut stream,
                        "200 OK",
                        &[("ETag", "\"cdn-etag-1\"".into())],
                        &body,
                    );
                    return Ok(());
                }
            }
        }
        not_found(&mut stream, "EntryNotFound");
        return Ok(());
    }

    // /{org}/{name}/resolve/{commit}/{path…}
    let segs: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    let [org, name, "resolve", rev, file] = segs.as_slice() else {
        not_found(&mut stream, "RepoNotFound");
        return Ok(());
    };
    let Some(repo) = repos.get(&format!("{org}/{name}")) else {
        not_found(&mut stream, "RepoNotFound");
        return Ok(());
    };
    if !authorized(repo) {
        respond(&mut stream, "401 Unauthorized", &[], b"");
        return Ok(());
    }
    let Some(commit) = repo.revisions.get(&percent_decode(rev)) else {
        not_found(&mut stream, "RevisionNotFound");
        return Ok(());
    };
    let file = percent_decode(file);
    let Some(data) = repo.commits[commit].get(&file) else {
        not_found(&mut stream, "EntryNotFound");
        return Ok(());
    };
    let sha = sha256_hex(data);
    if file.ends_with(".safetensors") || file.ends_with(".bin") {
        respond(
            &mut stream,
            "302 Found",
            &[
                ("Location", format!("/cdn/{sha}")),
                ("X-Linked-Etag", format!("\"{sha}\"")),
                ("ETag", "W/\"hub-lfs-pointer\"".into()),
                ("X-Repo-Commit", commit.clone()),
            ],
            b"",
        );
    } else {
        // Git blob ids are sha1 (40 hex); any stable 40-hex name will do here.
        respond(
            &mut stream,
            "200 OK",
            &[
                ("ETag", format!("\"{}\"", &sha[..40])),
                ("X-Repo-Commit", commit.clone()),
            ],
            data,
        );
    }
    Ok(())
}

fn fake_safetensors(seed: u8) -> Vec<u8> {
    let header = br#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend((0..16).map(|i| seed.wrapping_add(i)));
    out
}

fn st_model_files(seed: u8) -> Files {
    let mut f = Files::new();
    f.insert(
        "config.json".into(),
        format!("{{\"seed\":{seed}}}").into_bytes(),
    );
    f.insert(
        "modules.json".into(),
        br#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
            {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
            {"idx":2,"name":"2","path":"2_Dense","type":"sentence_transformers.models.Dense"}]"#
            .to_vec(),
    );
    f.insert(
        "1_Pooling/config.json".into(),
        b"{\"pooling_mode_mean_tokens\":true}".to_vec(),
    );
    f.insert(
        "2_Dense/config.json".into(),
        b"{\"out_features\":2}".to_vec(),
    );
    f.insert(
        "2_Dense/model.safetensors".into(),
        fake_safetensors(seed + 100),
    );
    f.insert("2_Dense/pytorch_model.bin".into(), b"pickle".to_vec());
    f.insert("tokenizer.json".into(), b"{\"model\":{}}".to_vec());
    f.insert("vocab.txt".into(), b"[PAD]\nhello\n".to_vec());
    f.insert("model.safetensors".into(), fake_safetensors(seed));
    // Present on the hub but not needed by embedkit.
    f.insert("README.md".into(), b"# model".to_vec());
    f.insert("pytorch_model.bin".into(), b"pickle".to_vec());
    f.insert("onnx/model.onnx".into(), b"onnx".to_vec());
    f
}

const NEEDED: [&str; 8] = [
    "config.json",
    "modules.json",
    "1_Pooling/config.json",
    "2_Dense/config.json",
    "2_Dense/model.safetensors",
    "tokenizer.json",
    "vocab.txt",
    "model.safetensors",
];

fn repo_with(commits: Vec<(&str, Files)>, revisions: &[(&str, &str)]) -> Repo {
    let mut repo = Repo::default();
    for (commit, files) in commits {
        repo.revisions
            .insert(commit.to_string(), commit.to_string());
        repo.commits.insert(commit.to_string(), files);
    }
    for (rev, commit) in revisions {
        repo.revisions.insert(rev.to_string(), commit.to_string());
    }
    repo
}

fn standard_hub() -> FakeHub {
    let mut repos = HashMap::new();
    repos.insert(
        "org/tiny".to_string(),
        repo_with(
            vec![(COMMIT_A, st_model_files(1)), (COMMIT_B, st_model_files(2))],
            &[
                ("main", COMMIT_A),
                ("abc123", COMMIT_B),
                ("refs/pr/1", COMMIT_B),
            ],
        ),
    );
    FakeHub::start(repos)
}

fn config(tmp: &Path, endpoint: &str) -> SourceConfig {
    let mut cfg = SourceConfig::new(tmp.join("embedkit"), tmp.join("hf"));
    cfg.hf_endpoint = endpoint.to_string();
    cfg.quiet = true;
    cfg
}

/// An endpoint where nothing listens.
fn dead_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

fn assert_snapshot(snapshot: &Path, files: &Files) {
    let repo_dir = snapshot.parent().unwrap().parent().unwrap();
    for name in NEEDED {
        let path = snapshot.join(name);
        let meta = fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(meta.file_type().is_symlink(), "{name} is a symlink");
        let link = fs::read_link(&path).unwrap();
        let depth = name.matches('/').count();
        let blob = link.file_name().unwrap().to_str().unwrap().to_string();
        let expected_link = PathBuf::from(format!("{}../../blobs/{blob}", "../".repeat(depth)));
        assert_eq!(link, expected_link, "{name} link");
        assert!(repo_dir.join("blobs").join(&blob).is_file());
        assert_eq!(&fs::read(&path).unwrap(), &files[name], "content of {name}");
        if name.ends_with(".safetensors") {
            // LFS blobs are named by sha256 (X-Linked-Etag), not the CDN's ETag.
            assert_eq!(blob, sha256_hex(&files[name]));
        } else {
            assert_eq!(blob, sha256_hex(&files[name])[..40]);
        }
    }
    for skipped in [
        "README.md",
        "pytorch_model.bin",
        "onnx",
        "2_Dense/pytorch_model.bin",
    ] {
        assert!(
            !snapshot.join(skipped).exists(),
            "{skipped} is not downloaded"
        );
    }
}

#[test]
fn downloads_into_the_huggingface_cache_layout() {
    let hub = standard_hub();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), &hub.url);

    let snapshot = fetch_hub("org/tiny", "main", &cfg).unwrap();
    let repo_dir = tmp.path().join("hf/hub/models--org--tiny");
    assert_eq!(snapshot, repo_dir.join("snapshots").join(COMMIT_A));
    assert_snapshot(&snapshot, &st_model_files(1));
    assert_eq!(
        fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        COMMIT_A
    );
    // No temp files left behind.
    for entry in fs::read_dir(repo_dir.join("blobs")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(!name.starts_with('.'), "leftover {name}");
    }

    let files = hub.file_requests();
    let resolves = files.iter().filter(|p| p.contains("/resolve/")).count();
    let cdn = files.iter().filter(|p| p.starts_with("/cdn/")).count();
    assert_eq!(resolves, NEEDED.len());
    assert_eq!(cdn, 2, "both safetensors went through the redirect");
    assert!(
        files
            .iter()
            .all(|p| !p.contains("README") && !p.contains(".bin"))
    );
    assert!(
        files
            .iter()
            .any(|p| p == &format!("/org/tiny/resolve/{COMMIT_A}/1_Pooling/config.json"))
    );
}

#[test]
fn second_fetch_makes_no_file_requests() {
    let hub = standard_hub();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), &hub.url);
    let first = fetch_hub("org/tiny", "main", &cfg).unwrap();
    let before = hub.requests().len();
    let files_before = hub.file_requests().len();

    let second = resolve("hf:org/tiny", &cfg).unwrap();
    assert_eq!(first, second);
    assert_eq!(hub.file_requests().len(), files_before);
    assert_eq!(hub.requests().len(), before + 1, "only the model-info call");

    // A snapshot file whose blob went missing is fetched again.
    let blob = fs::read_link(first.join("vocab.txt")).unwrap();
    fs::remove_file(first.join(&blob)).unwrap();
    fetch_hub("org/tiny", "main", &cfg).unwrap();
    assert_eq!(hub.file_requests().len(), files_before + 1);
    assert_eq!(
        fs::read(first.join("vocab.txt")).unwrap(),
        b"[PAD]\nhello\n"
    );
}

#[test]
fn offline_uses_the_cache() {
    let hub = standard_hub();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), &hub.url);
    let snapshot = fetch_hub("org/tiny", "main", &cfg).unwrap();
    let count = hub.requests().len();

    let mut offline = cfg.clone();
    offline.hf_offline = true;
    assert_eq!(fetch_hub("org/tiny", "main", &offline).unwrap(), snapshot);
    assert_eq!(
        fetch_hub("org/tiny", COMMIT_A, &offline).unwrap(),
        snapshot,
        "a commit revision finds its snapshot without refs"
    );
    assert_eq!(hub.requests().len(), count, "offline makes no requests");

    let err = fetch_hub("org/tiny", "abc123", &offline).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SourceError::HubOffline { .. }), "{err:?}");
    assert!(
        msg.contains("hf:org/tiny@abc123") && msg.contains("HF_HUB_OFFLINE"),
        "{msg}"
    );

    // An unreachable endpoint falls back to the cache too…
    let mut unreachable = cfg.clone();
    unreachable.hf_endpoint = dead_endpoint();
    assert_eq!(
        fetch_hub("org/tiny", "main", &unreachable).unwrap(),
        snapshot
    );
    // …and without a cached snapshot it is an error naming the endpoint.
    let err = fetch_hub("org/tiny", "abc123", &unreachable).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SourceError::Network { .. }), "{err:?}");
    assert!(msg.contains(&unreachable.hf_endpoint), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
}

#[test]
fn hub_down_falls_back_to_the_cache() {
    let hub = standard_hub();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), &hub.url);
    let snapshot = fetch_hub("org/tiny", "main", &cfg).unwrap();

    let mut repo = repo_with(vec![(COMMIT_A, st_model_files(1))], &[("main", COMMIT_A)]);
    repo.down = true;
    let down = FakeHub::start(HashMap::from([("org/tiny".to_string(), repo)]));
    let cfg = config(tmp.path(), &down.url);
    assert_eq!(fetch_hub("org/tiny", "main", &cfg).unwrap(), snapshot);
    let err = fetch_hub("org/tiny", "abc123", &cfg).unwrap_err();
    assert!(
        matches!(err, SourceError::HubStatus { status: 503, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("503"), "{err}");
}

#[test]
fn gated_repo_needs_the_token() {
    let mut repo = repo_with(vec![(COMMIT_A, st_model_files(3))], &[("main", COMMIT_A)]);
    repo.token = Some("hf_secret".into());
    let hub = FakeHub::start(HashMap::from([("org/gated".to_string(), repo)]));
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path(), &hub.url);

    let err = fetch_hub("org/gated", "main", &cfg).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, SourceError::HubAuth { status: 401, .. }),
        "{err:?}"
    );
    assert!(
        msg.contains("hf:org/gated") && msg.contains("HF_TOKEN") && msg.contains("401"),
        "{msg}"
    );

    cfg.hf_token = Some("hf_wrong".into());
    let err = fetch_hub("org/gated", "main", &cfg).unwrap_err();
    assert!(
        matches!(err, SourceError::HubAuth { status: 401, .. }),
        "{err:?}"
    );

    cfg.hf_token = Some("hf_secret".into());
    let snapshot = fetch_hub("org/gated", "main", &cfg).unwrap();
    assert_eq!(
        fs::read(snapshot.join("config.json")).unwrap(),
        b"{\"seed\":3}"
    );
    let requests = hub.requests();
    let authed: Vec<&Logged> = requests
        .iter()
        .filter(|r| r.auth.as_deref() == Some("Bearer hf_secret"))
        .collect();
    assert!(
        authed
            .iter()
            .any(|r| r.path.starts_with("/api/models/org/gated/"))
    );
    assert!(authed.iter().any(|r| r.path.contains("/resolve/")));
    assert!(!snapshot.join("README.md").exists());
}

#[test]
fn unknown_repo_and_revision_are_named() {
    let hub = standard_hub();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), &hub.url);

    let err = fetch_hub("org/missing", "main", &cfg).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SourceError::HubNotFound { .. }), "{err:?}");
    assert!(
        msg.contains("hf:org/missing") && msg.contains("repository"),
        "{msg}"
    );
    assert!(msg.contains("404"), "{msg}");

    let err = resolve("hf:org/tiny@nope", &cfg).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("revision 'nope'") && msg.contains("hf:org/tiny"),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
    assert!(
        !tmp.path()
            .join("hf/hub/models--org--tiny/refs/nope")
            .exists()
    );
}

#[test]
fn pytorch_only_repo_is_a_clear_error() {
    let mut files = Files::new();
    files.insert("config.json".into(), b"{}".to_vec());
    files.insert("pytorch_model.bin".into(), b"pickle".to_vec());
    files.insert("vocab.txt".into(), b"a\n".to_vec());
    let hub = FakeHub::start(HashMap::from([(
        "org/old".to_string(),
        repo_with(vec![(COMMIT_A, files)], &[("main", COMMIT_A)]),
    )]));
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), &hub.url);

    let err = fetch_hub("org/old", "main", &cfg).unwrap_err();
    assert_eq!(
        err.to_string(),
        "hf:org/old has only pytorch_model.bin; embedkit reads safetensors only — convert it \
         (e.g. with transformers' save_pretrained(safe_serialization=True))"
    );
    assert!(hub.file_requests().is_empty(), "nothing downloaded");
}

#[test]
fn revisions_are_pinned() {
    let hub = standard_hub();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), &hub.url);
    let repo_dir = tmp.path().join("hf/hub/models--org--tiny");

    let pinned = resolve("hf:org/tiny@abc123", &cfg).unwrap();
    assert_eq!(pinned, repo_dir.join("snapshots").join(COMMIT_B));
    assert_snapshot(&pinned, &st_model_files(2));
    assert_eq!(
        fs::read_to_string(repo_dir.join("refs/abc123")).unwrap(),
        COMMIT_B
    );
    assert!(
        hub.file_requests()
            .iter()
            .filter(|p| p.contains("/resolve/"))
            .all(|p| p.contains(COMMIT_B))
    );

    let main = fetch_hub("org/tiny", "main", &cfg).unwrap();
    assert_eq!(main, repo_dir.join("snapshots").join(COMMIT_A));
    assert_eq!(fs::read(main.join("config.json")).unwrap(), b"{\"seed\":1}");
    assert_eq!(
        fs::read(pinned.join("config.json")).unwrap(),
        b"{\"seed\":2}"
    );

    // A full commit needs no ref; a branch with a slash is URL-encoded and nests in refs/.
    let by_commit = fetch_hub("org/tiny", COMMIT_B, &cfg).unwrap();
    assert_eq!(by_commit, pinned);
    assert!(!repo_dir.join("refs").join(COMMIT_B).exists());
    let pr = fetch_hub("org/tiny", "refs/pr/1", &cfg).unwrap();
    assert_eq!(pr, pinned);
    assert_eq!(
        fs::read_to_string(repo_dir.join("refs/refs/pr/1")).unwrap(),
        COMMIT_B
    );
    assert!(
        hub.requests()
            .iter()
            .any(|r| r.path.ends_with("/revision/refs%2Fpr%2F1"))
    );
}

#[test]
fn sharded_safetensors_are_downloaded_with_their_index() {
    let mut files = Files::new();
    files.insert("config.json".into(), b"{}".to_vec());
    files.insert(
        "model.safetensors.index.json".into(),
        br#"{"metadata":{},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors","c":"model-00001-of-00002.safetensors"}}"#.to_vec(),
    );
    files.insert(
        "model-00001-of-00002.safetensors".into(),
        fake_safetensors(7),
    );
    files.insert(
        "model-00002-of-00002.safetensors".into(),
        fake_safetensors(8),
    );
    files.insert("model-00003-unused.safetensors".into(), fake_safetensors(9));
    let hub = FakeHub::start(HashMap::from([(
        "org/sharded".to_string(),
        repo_with(vec![(COMMIT_A, files.clone())], &[("main", COMMIT_A)]),
    )]));
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), &hub.url);

    let snapshot = fetch_hub("org/sharded", "main", &cfg).unwrap();
    for name in [
        "config.json",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        assert_eq!(
            fs::read(snapshot.join(name)).unwrap(),
            files[name],
            "{name}"
        );
    }
    assert!(!snapshot.join("model-00003-unused.safetensors").exists());
    assert_eq!(
        hub.file_requests()
            .iter()
            .filter(|p| p.starts_with("/cdn/"))
            .count(),
        2
    );
}

#[test]
fn corrupt_lfs_download_is_rejected() {
    let mut files = st_model_files(4);
    files.retain(|name, _| !name.starts_with("2_Dense/"));
    let mut repo = repo_with(vec![(COMMIT_A, files)], &[("main", COMMIT_A)]);
    repo.corrupt_lfs = true;
    let hub = FakeHub::start(HashMap::from([("org/bad".to_string(), repo)]));
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), &hub.url);

    let err = fetch_hub("org/bad", "main", &cfg).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SourceError::HashMismatch { .. }), "{err:?}");
    assert!(msg.contains(&sha256_hex(&fake_safetensors(4))), "{msg}");
    assert!(msg.contains("hf:org/bad/model.safetensors"), "{msg}");
    assert!(msg.contains(&sha256_hex(b"corrupted")), "{msg}");
    let repo_dir = tmp.path().join("hf/hub/models--org--bad");
    assert!(
        !repo_dir.join("refs/main").exists(),
        "no ref for an incomplete snapshot"
    );
    for entry in fs::read_dir(repo_dir.join("blobs")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert_ne!(
            name,
            sha256_hex(&fake_safetensors(4)),
            "no blob under the expected name"
        );
        assert!(!name.starts_with('.'), "leftover temp file {name}");
    }
}
