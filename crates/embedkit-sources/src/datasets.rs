//! Evaluation data shipped inside PyPI wheels: gensim's test data (Lee-50 document similarity, WordSim-353,
//! SimLex-999, the word2vec analogy questions), the only human-judged data a package index carries.
//!
//! Like catalog models, a dataset is fetched with `pip download --no-deps`, its files are checked against
//! pinned sha256 sums, and the folder appears under `home/data/NAME` only when whole (staging folder + rename).

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use crate::catalog::{PipPackage, copy_checked, find_wheel, open_zip, pip_download};
use crate::config::SourceConfig;
use crate::error::SourceError;
use crate::util::HashingWriter;

/// Written last into a fetched dataset folder.
const COMPLETE_MARKER: &str = ".embedkit-complete";

/// One file a dataset takes from its wheel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatasetFile {
    /// Path inside the wheel.
    pub path_in_wheel: &'static str,
    /// File name in the dataset folder.
    pub name: &'static str,
    /// sha256 of the file's bytes.
    pub sha256: &'static str,
}

/// A dataset that can be fetched from a package index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetEntry {
    /// Short name, also the folder name under `home/data`.
    pub name: &'static str,
    /// What it holds, for `embedkit data list`.
    pub description: &'static str,
    /// The pinned package.
    pub package: PipPackage,
    /// pip options that pin one wheel of a package built per platform; the data files are the same in every
    /// wheel, but pinning makes the download the same on every machine whatever its Python.
    pub pip_platform_args: &'static [&'static str],
    /// The files taken from the wheel.
    pub files: &'static [DatasetFile],
}

static DATASETS: std::sync::LazyLock<Vec<DatasetEntry>> = std::sync::LazyLock::new(|| {
    vec![DatasetEntry {
        name: "gensim",
        description: "gensim 4.4.0 test data: Lee-50 documents with human similarities, WordSim-353, \
                      SimLex-999, word2vec analogy questions",
        package: PipPackage::new("gensim", "4.4.0"),
        pip_platform_args: &[
            "--platform",
            "manylinux_2_28_x86_64",
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            "--abi",
            "cp311",
        ],
        files: &[
            DatasetFile {
                path_in_wheel: "gensim/test/test_data/lee.cor",
                name: "lee.cor",
                sha256: "a878f9a58f6743c32985c56c2f2f75988386216b38a4023a01fd3bcf7884d93e",
            },
            DatasetFile {
                path_in_wheel: "gensim/test/test_data/lee_background.cor",
                name: "lee_background.cor",
                sha256: "5d78d6dafd953bbf65797bef09a9ffb9ec430583381be705f8fd460000f370fb",
            },
            DatasetFile {
                path_in_wheel: "gensim/test/test_data/similarities0-1.txt",
                name: "similarities0-1.txt",
                sha256: "23762bc6b728897144dda3d324a2c032dc1e059e1009806226d64b6dd123ed79",
            },
            DatasetFile {
                path_in_wheel: "gensim/test/test_data/wordsim353.tsv",
                name: "wordsim353.tsv",
                sha256: "f92a022fc2537793a15bc3a8c162ebcd74990e033a228bb6388cb71e4c0b1e1d",
            },
            DatasetFile {
                path_in_wheel: "gensim/test/test_data/simlex999.txt",
                name: "simlex999.txt",
                sha256: "d5e0501971478a511430ee880bd0121e94ac701ba86d90544d83e6d2ba3db05d",
            },
            DatasetFile {
                path_in_wheel: "gensim/test/test_data/questions-words.txt",
                name: "questions-words.txt",
                sha256: "8c29b3332afc46f3fb8be04cb5297bf96f39aa7131272dff57869b4485b22a36",
            },
        ],
    }]
});

/// Every dataset `embedkit data fetch` knows.
pub fn datasets() -> &'static [DatasetEntry] {
    &DATASETS
}

/// The dataset called `name`, or an error listing the known ones.
pub fn find_dataset(name: &str) -> Result<&'static DatasetEntry, SourceError> {
    datasets()
        .iter()
        .find(|d| d.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| SourceError::UnknownDataset {
            name: name.to_string(),
            known: datasets()
                .iter()
                .map(|d| d.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Where `entry` lives once fetched: `home/data/NAME`.
pub fn dataset_dir(entry: &DatasetEntry, cfg: &SourceConfig) -> PathBuf {
    cfg.home.join("data").join(entry.name)
}

/// The folder of `entry` if it was fetched whole, else `None`.
pub fn fetched_dataset(entry: &DatasetEntry, cfg: &SourceConfig) -> Option<PathBuf> {
    let dir = dataset_dir(entry, cfg);
    dir.join(COMPLETE_MARKER).is_file().then_some(dir)
}

/// Fetches `entry` (or finds it fetched) and returns its folder.
///
/// The wheel is downloaded into a staging folder next to the destination, each file is extracted and checked
/// against its sha256, and the folder is renamed into place, so a killed fetch never leaves a folder that looks
/// whole. Concurrent fetches of one dataset serialize on a lock file.
pub fn fetch_dataset(entry: &DatasetEntry, cfg: &SourceConfig) -> Result<PathBuf, SourceError> {
    if let Some(dir) = fetched_dataset(entry, cfg) {
        return Ok(dir);
    }
    let data = cfg.home.join("data");
    fs::create_dir_all(&data).map_err(|e| SourceError::io("create folder", &data, e))?;
    let lock_path = data.join(format!(".{}.lock", entry.name));
    let lock = File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)
        .map_err(|e| SourceError::io("open lock file", &lock_path, e))?;
    fs4::FileExt::lock(&lock).map_err(|e| SourceError::io("lock", &lock_path, e))?;
    if let Some(dir) = fetched_dataset(entry, cfg) {
        return Ok(dir);
    }
    if !cfg.quiet {
        eprintln!(
            "fetching dataset {} from PyPI ({})…",
            entry.name,
            entry.package.requirement()
        );
    }
    let staging = tempfile::Builder::new()
        .prefix(&format!(".tmp-{}~", entry.name))
        .tempdir_in(&data)
        .map_err(|e| SourceError::io("create staging folder in", &data, e))?;
    let wheels_dir = staging.path().join("wheels");
    let out_dir = staging.path().join("data");
    for dir in [&wheels_dir, &out_dir] {
        fs::create_dir(dir).map_err(|e| SourceError::io("create folder", dir, e))?;
    }
    let mut pip_cfg = cfg.clone();
    pip_cfg
        .pip_extra_args
        .extend(entry.pip_platform_args.iter().map(|s| s.to_string()));
    pip_download(&pip_cfg, &[entry.package.requirement()], &wheels_dir)?;
    let wheel = find_wheel(&wheels_dir, &entry.package)?;
    extract_files(&wheel, entry.files, &out_dir)?;
    let marker = out_dir.join(COMPLETE_MARKER);
    fs::write(&marker, format!("{}\n", entry.package.requirement()))
        .map_err(|e| SourceError::io("write", &marker, e))?;
    let dest = dataset_dir(entry, cfg);
    if dest.exists() {
        fs::remove_dir_all(&dest)
            .map_err(|e| SourceError::io("remove incomplete folder", &dest, e))?;
    }
    fs::rename(&out_dir, &dest).map_err(|e| SourceError::io("move dataset folder to", &dest, e))?;
    if !cfg.quiet {
        eprintln!("fetched dataset {} into {}", entry.name, dest.display());
    }
    Ok(dest)
}

/// Extracts `files` from the zip at `archive` into `out`, checking each one's sha256.
pub(crate) fn extract_files(
    archive: &Path,
    files: &[DatasetFile],
    out: &Path,
) -> Result<(), SourceError> {
    let mut zip = open_zip(archive)?;
    for file in files {
        let mut entry =
            zip.by_name(file.path_in_wheel)
                .map_err(|_| SourceError::ArchiveContent {
                    archive: archive.to_path_buf(),
                    expected: file.path_in_wheel.to_string(),
                })?;
        let dest = out.join(file.name);
        let f = File::create(&dest).map_err(|e| SourceError::io("create", &dest, e))?;
        let mut writer = HashingWriter::new(BufWriter::new(f));
        copy_checked(&mut entry, &mut writer, archive, &dest)?;
        let (actual, _, mut inner) = writer.finish();
        std::io::Write::flush(&mut inner).map_err(|e| SourceError::io("write", &dest, e))?;
        if actual != file.sha256 {
            return Err(SourceError::HashMismatch {
                file: format!("{} in {}", file.path_in_wheel, archive.display()),
                expected: file.sha256.to_string(),
                actual,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn wheel_with(files: &[(&str, &[u8])], path: &Path) {
        let mut zip = zip::ZipWriter::new(File::create(path).unwrap());
        for (name, bytes) in files {
            zip.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap();
    }

    #[test]
    fn unknown_dataset_lists_known_ones() {
        let err = find_dataset("mteb").unwrap_err().to_string();
        assert!(err.contains("unknown dataset 'mteb'"), "{err}");
        assert!(err.contains("gensim"), "{err}");
    }

    #[test]
    fn extraction_checks_every_hash() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("w.whl");
        // sha256 of b"abc"
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        wheel_with(
            &[
                ("gensim/test/test_data/a.txt", b"abc"),
                ("gensim/test/test_data/b.txt", b"abd"),
            ],
            &wheel,
        );
        let ok = [DatasetFile {
            path_in_wheel: "gensim/test/test_data/a.txt",
            name: "a.txt",
            sha256: abc,
        }];
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        extract_files(&wheel, &ok, &out).unwrap();
        assert_eq!(fs::read(out.join("a.txt")).unwrap(), b"abc");

        let bad = [DatasetFile {
            path_in_wheel: "gensim/test/test_data/b.txt",
            name: "b.txt",
            sha256: abc,
        }];
        let err = extract_files(&wheel, &bad, &out).unwrap_err().to_string();
        assert!(err.contains("b.txt"), "{err}");

        let missing = [DatasetFile {
            path_in_wheel: "gensim/test/test_data/c.txt",
            name: "c.txt",
            sha256: abc,
        }];
        let err = extract_files(&wheel, &missing, &out)
            .unwrap_err()
            .to_string();
        assert!(err.contains("c.txt"), "{err}");
    }
}
