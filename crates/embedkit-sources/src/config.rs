use std::path::PathBuf;

/// The public Hugging Face hub.
pub const DEFAULT_HF_ENDPOINT: &str = "https://huggingface.co";

/// Where models are stored and how they are fetched.
///
/// [`SourceConfig::from_env`] reads the same environment variables as `huggingface_hub`, so
/// the hub cache is shared with Python tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    /// embedkit's own cache (`EMBEDKIT_HOME`, default `~/.cache/embedkit`); catalog models
    /// live in `home/models/<name>`.
    pub home: PathBuf,
    /// Hub base URL (`HF_ENDPOINT`, default `https://huggingface.co`).
    pub hf_endpoint: String,
    /// `HF_HOME` (default `~/.cache/huggingface`); the hub cache is `hf_home/hub` unless
    /// [`SourceConfig::hf_hub_cache`] is set.
    pub hf_home: PathBuf,
    /// Overrides the hub cache folder (`HF_HUB_CACHE`).
    pub hf_hub_cache: Option<PathBuf>,
    /// Bearer token for the hub (`HF_TOKEN`, else the file `hf_home/token`).
    pub hf_token: Option<String>,
    /// Never touch the network for hub models; use the cache (`HF_HUB_OFFLINE=1`).
    pub hf_offline: bool,
    /// Command prefix that runs pip (`EMBEDKIT_PIP`, split on whitespace; default
    /// `python3 -m pip`).
    pub pip: Vec<String>,
    /// Extra arguments appended to `pip download` (e.g. `--index-url URL`, or
    /// `--no-index --find-links DIR`).
    pub pip_extra_args: Vec<String>,
    /// Print nothing on stderr (no progress lines or bars).
    pub quiet: bool,
}

impl SourceConfig {
    /// A configuration with explicit folders and every other setting at its default,
    /// ignoring the environment (handy for tests and embedding).
    pub fn new(home: impl Into<PathBuf>, hf_home: impl Into<PathBuf>) -> Self {
        SourceConfig {
            home: home.into(),
            hf_endpoint: DEFAULT_HF_ENDPOINT.to_string(),
            hf_home: hf_home.into(),
            hf_hub_cache: None,
            hf_token: None,
            hf_offline: false,
            pip: default_pip(),
            pip_extra_args: Vec::new(),
            quiet: false,
        }
    }

    /// Reads `EMBEDKIT_HOME`, `EMBEDKIT_PIP`, `HF_ENDPOINT`, `HF_HOME`, `HF_HUB_CACHE`,
    /// `HF_TOKEN` (or the token file), `HF_HUB_OFFLINE` and `XDG_CACHE_HOME`.
    pub fn from_env() -> Self {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// [`SourceConfig::from_env`] with a custom variable lookup, so the rules can be tested
    /// without touching the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        // Empty variables count as unset, as in huggingface_hub.
        let var = |key: &str| lookup(key).filter(|v| !v.trim().is_empty());
        let user_home = var("HOME")
            .or_else(|| var("USERPROFILE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        let cache = var("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| user_home.join(".cache"));

        let home = var("EMBEDKIT_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| cache.join("embedkit"));
        let hf_home = var("HF_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| cache.join("huggingface"));
        let hf_endpoint = var("HF_ENDPOINT")
            .map(|e| e.trim().trim_end_matches('/').to_string())
            .unwrap_or_else(|| DEFAULT_HF_ENDPOINT.to_string());
        let hf_token = var("HF_TOKEN")
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
            .map(|t| t.trim().to_string())
            .or_else(|| {
                // A token file that cannot be read is the same as no token: public models
                // still work, and gated ones report the 401 with a hint.
                std::fs::read_to_string(hf_home.join("token"))
                    .ok()
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
            });
        let hf_offline = var("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        let pip = var("EMBEDKIT_PIP")
            .map(|p| p.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(default_pip);

        SourceConfig {
            home,
            hf_endpoint,
            hf_hub_cache: var("HF_HUB_CACHE").map(PathBuf::from),
            hf_home,
            hf_token,
            hf_offline,
            pip,
            pip_extra_args: Vec::new(),
            quiet: false,
        }
    }

    /// The hub cache folder: `hf_hub_cache`, else `hf_home/hub`.
    pub fn hub_cache(&self) -> PathBuf {
        self.hf_hub_cache
            .clone()
            .unwrap_or_else(|| self.hf_home.join("hub"))
    }

    /// The folder that holds catalog models: `home/models`.
    pub fn models_dir(&self) -> PathBuf {
        self.home.join("models")
    }
}

fn default_pip() -> Vec<String> {
    vec!["python3".into(), "-m".into(), "pip".into()]
}
