use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;

use embedkit_sources::{ModelSpec, SourceConfig, SourceError, catalog, parse_spec, resolve};

#[test]
fn hub_specs() {
    assert_eq!(
        parse_spec("hf:org/name").unwrap(),
        ModelSpec::Hub {
            repo: "org/name".into(),
            revision: "main".into()
        }
    );
    assert_eq!(
        parse_spec("hf:BAAI/bge-small-en-v1.5@abc123").unwrap(),
        ModelSpec::Hub {
            repo: "BAAI/bge-small-en-v1.5".into(),
            revision: "abc123".into()
        }
    );
    assert_eq!(
        parse_spec("hf:org/name@refs/pr/1").unwrap(),
        ModelSpec::Hub {
            repo: "org/name".into(),
            revision: "refs/pr/1".into()
        }
    );
    for bad in [
        "hf:",
        "hf:org/name@",
        "hf:a/b/c",
        "hf:../x",
        "hf:org/na me",
        "hf:org/x@../y",
    ] {
        let err = parse_spec(bad).unwrap_err();
        assert!(
            matches!(err, SourceError::InvalidSpec { .. }),
            "{bad}: {err:?}"
        );
        assert!(err.to_string().contains(bad), "{err}");
    }
}

#[test]
fn catalog_specs_match_short_name_or_hub_id_in_any_case() {
    for spec in [
        "all-MiniLM-L6-v2",
        "ALL-minilm-l6-V2",
        "sentence-transformers/all-MiniLM-L6-v2",
        "Sentence-Transformers/All-MiniLM-L6-v2",
    ] {
        match parse_spec(spec).unwrap() {
            ModelSpec::Catalog(entry) => assert_eq!(entry.name, "all-MiniLM-L6-v2", "{spec}"),
            other => panic!("{spec}: {other:?}"),
        }
    }
    match parse_spec("all-mpnet-base-v2").unwrap() {
        ModelSpec::Catalog(entry) => {
            assert_eq!(entry.hub_id, "sentence-transformers/all-mpnet-base-v2");
            assert_eq!(entry.packages.len(), 5);
        }
        other => panic!("{other:?}"),
    }
    let names: Vec<&str> = catalog().iter().map(|e| &*e.name).collect();
    assert_eq!(names, ["all-MiniLM-L6-v2", "all-mpnet-base-v2"]);
}

#[test]
fn path_specs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("my-model");
    fs::create_dir(&dir).unwrap();
    let spec = dir.to_str().unwrap();
    assert_eq!(parse_spec(spec).unwrap(), ModelSpec::Path(dir.clone()));
    let cfg = SourceConfig::new(tmp.path().join("home"), tmp.path().join("hf"));
    assert_eq!(resolve(spec, &cfg).unwrap(), dir);

    let missing = tmp.path().join("nope");
    let err = parse_spec(missing.to_str().unwrap()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("model path '{}' does not exist", missing.display())
    );
    let err = parse_spec("./surely-not-here-embedkit").unwrap_err();
    assert_eq!(
        err.to_string(),
        "model path './surely-not-here-embedkit' does not exist"
    );

    let file = tmp.path().join("model.safetensors");
    fs::write(&file, b"x").unwrap();
    let err = parse_spec(file.to_str().unwrap()).unwrap_err();
    assert!(matches!(err, SourceError::PathNotDir(_)), "{err:?}");
    assert!(err.to_string().contains(file.to_str().unwrap()));
}

#[test]
fn tilde_paths_expand_to_home() {
    let Some(home) = std::env::var_os("HOME").map(PathBuf::from) else {
        return;
    };
    if home.is_dir() {
        assert_eq!(parse_spec("~").unwrap(), ModelSpec::Path(home.clone()));
    }
    let err = parse_spec("~/surely-not-here-embedkit").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "model path '{}' does not exist",
            home.join("surely-not-here-embedkit").display()
        )
    );
}

#[test]
fn unknown_names_list_the_catalog() {
    let err = parse_spec("bert-base-uncased").unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown model 'bert-base-uncased': known catalog models are all-MiniLM-L6-v2, \
         all-mpnet-base-v2; use a folder path or hf:org/name for others"
    );
    assert!(matches!(
        parse_spec("").unwrap_err(),
        SourceError::InvalidSpec { .. }
    ));
}

#[test]
fn config_from_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let hf_home = tmp.path().join("hf");
    fs::create_dir(&hf_home).unwrap();
    fs::write(hf_home.join("token"), "hf_from_file\n").unwrap();

    let env = |vars: &[(&str, &str)]| {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SourceConfig::from_lookup(move |k| map.get(k).cloned())
    };

    let cfg = env(&[("HOME", "/home/u")]);
    assert_eq!(cfg.home, PathBuf::from("/home/u/.cache/embedkit"));
    assert_eq!(cfg.hf_home, PathBuf::from("/home/u/.cache/huggingface"));
    assert_eq!(
        cfg.hub_cache(),
        PathBuf::from("/home/u/.cache/huggingface/hub")
    );
    assert_eq!(cfg.hf_endpoint, "https://huggingface.co");
    assert_eq!(cfg.pip, ["python3", "-m", "pip"]);
    assert!(!cfg.hf_offline && !cfg.quiet);
    assert!(cfg.pip_extra_args.is_empty());

    let hf = hf_home.to_str().unwrap();
    let cfg = env(&[
        ("HOME", "/home/u"),
        ("EMBEDKIT_HOME", "/data/ek"),
        ("HF_HOME", hf),
        ("HF_ENDPOINT", "http://mirror.local/"),
        ("HF_HUB_OFFLINE", "1"),
        ("EMBEDKIT_PIP", "  uv  pip "),
    ]);
    assert_eq!(cfg.home, PathBuf::from("/data/ek"));
    assert_eq!(cfg.models_dir(), PathBuf::from("/data/ek/models"));
    assert_eq!(cfg.hub_cache(), hf_home.join("hub"));
    assert_eq!(cfg.hf_endpoint, "http://mirror.local");
    assert_eq!(cfg.hf_token.as_deref(), Some("hf_from_file"));
    assert!(cfg.hf_offline);
    assert_eq!(cfg.pip, ["uv", "pip"]);

    let cfg = env(&[
        ("HF_HOME", hf),
        ("HF_TOKEN", "hf_env"),
        ("HF_HUB_CACHE", "/cache/hub"),
        ("HF_HUB_OFFLINE", "0"),
        ("XDG_CACHE_HOME", "/xdg"),
        ("EMBEDKIT_PIP", ""),
    ]);
    assert_eq!(cfg.hf_token.as_deref(), Some("hf_env"));
    assert_eq!(cfg.hub_cache(), PathBuf::from("/cache/hub"));
    assert_eq!(cfg.home, PathBuf::from("/xdg/embedkit"));
    assert!(!cfg.hf_offline);
    assert_eq!(cfg.pip, ["python3", "-m", "pip"]);
}
