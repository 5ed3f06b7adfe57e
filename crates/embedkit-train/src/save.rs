//! Writing the trained model as a sentence-transformers folder, and checkpoints; both atomically (everything
//! goes into a temporary folder beside the target, which is renamed into place only when complete).

use crate::TrainError;
use crate::model::{Params, to_vec};
use embedkit_model::{PoolingMode, PostPoolingStep, SentenceTransformerLayout};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Tokenizer files copied unchanged from the source model (whichever it has).
const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "sentencepiece.bpe.model",
    "spiece.model",
];

/// A tensor ready to serialize.
pub(crate) struct RawTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl RawTensor {
    pub(crate) fn f32(shape: Vec<usize>, values: &[f32]) -> Self {
        Self {
            dtype: Dtype::F32,
            shape,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
}

pub(crate) fn write_safetensors(
    path: &Path,
    tensors: &BTreeMap<String, RawTensor>,
) -> Result<(), TrainError> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, t)| {
            TensorView::new(t.dtype, t.shape.clone(), &t.data)
                .map(|v| (n.clone(), v))
                .map_err(|e| TrainError::Config(format!("tensor {n}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let bytes = safetensors::serialize(views, Some(meta))
        .map_err(|e| TrainError::Config(format!("cannot serialize {}: {e}", path.display())))?;
    std::fs::write(path, bytes).map_err(|e| TrainError::io(path, e))
}

/// Reads every tensor of a safetensors file as raw bytes.
pub(crate) fn read_safetensors_raw(path: &Path) -> Result<BTreeMap<String, RawTensor>, TrainError> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| TrainError::Checkpoint {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            (
                n,
                RawTensor {
                    dtype: v.dtype(),
                    shape: v.shape().to_vec(),
                    data: v.data().to_vec(),
                },
            )
        })
        .collect())
}

/// The safetensors files of a transformer folder (single or sharded).
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, TrainError> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    let text = std::fs::read(&index).map_err(|e| TrainError::io(&index, e))?;
    let v: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| TrainError::Checkpoint {
            path: index.clone(),
            message: e.to_string(),
        })?;
    let mut files: Vec<String> = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.values()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files.dedup();
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}

/// A fresh temporary folder beside `target`.
pub(crate) fn temp_dir_for(target: &Path) -> Result<PathBuf, TrainError> {
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| TrainError::io(&parent, e))?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    }
    std::fs::create_dir(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    Ok(tmp)
}

/// Moves a completed temporary folder to `target`, replacing what was there.
pub(crate) fn commit_dir(tmp: &Path, target: &Path) -> Result<(), TrainError> {
    if target.exists() {
        // rename() cannot replace a non-empty folder: move the old one aside first, then delete it.
        let old = tmp.with_extension("old");
        std::fs::rename(target, &old).map_err(|e| TrainError::io(target, e))?;
        std::fs::rename(tmp, target).map_err(|e| TrainError::io(target, e))?;
        std::fs::remove_dir_all(&old).map_err(|e| TrainError::io(&old, e))?;
    } else {
        std::fs::rename(tmp, target).map_err(|e| TrainError::io(target, e))?;
    }
    Ok(())
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), TrainError> {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    std::fs::write(path, text).map_err(|e| TrainError::io(path, e))
}

/// Writes the trained model to `out` in the sentence-transformers layout: the source's config.json and
/// tokenizer files, model.safetensors with every source tensor under its original name (trained ones
/// replaced, buffers like `position_ids` and the unused pooler copied), modules.json, 1_Pooling,
/// 2_Normalize when the source normalizes, sentence_bert_config.json and config_sentence_transformers.json.
pub fn write_model(
    layout: &SentenceTransformerLayout,
    max_seq_length: usize,
    hidden_size: usize,
    params: &Params,
    out: &Path,
) -> Result<(), TrainError> {
    let src = &layout.transformer_dir;
    let tmp = temp_dir_for(out)?;
    let result = (|| {
        let mut tensors = BTreeMap::new();
        for file in weight_files(src)? {
            for (name, raw) in read_safetensors_raw(&file)? {
                let t = match params.get(&name) {
                    Some(var) => RawTensor::f32(var.dims().to_vec(), &to_vec(var.as_tensor())?),
                    None => raw,
                };
                tensors.insert(name, t);
            }
        }
        write_safetensors(&tmp.join("model.safetensors"), &tensors)?;
        let copy = |name: &str| -> Result<(), TrainError> {
            let from = src.join(name);
            if from.is_file() {
                std::fs::copy(&from, tmp.join(name)).map_err(|e| TrainError::io(&from, e))?;
            }
            Ok(())
        };
        copy("config.json")?;
        for f in TOKENIZER_FILES {
            copy(f)?;
        }
        let mut modules = vec![
            json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
            json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}),
        ];
        if layout.normalizes() {
            std::fs::create_dir(tmp.join("2_Normalize"))
                .map_err(|e| TrainError::io(tmp.join("2_Normalize"), e))?;
            modules.push(json!({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}));
        }
        write_json(&tmp.join("modules.json"), &json!(modules))?;
        std::fs::create_dir(tmp.join("1_Pooling")).map_err(|e| TrainError::io(&tmp, e))?;
        let mode = |m: PoolingMode| layout.pooling.modes.contains(&m);
        write_json(
            &tmp.join("1_Pooling").join("config.json"),
            &json!({
                "word_embedding_dimension": hidden_size,
                "pooling_mode_cls_token": mode(PoolingMode::Cls),
                "pooling_mode_mean_tokens": mode(PoolingMode::Mean),
                "pooling_mode_max_tokens": mode(PoolingMode::Max),
                "pooling_mode_mean_sqrt_len_tokens": mode(PoolingMode::MeanSqrtLen),
                "pooling_mode_weightedmean_tokens": mode(PoolingMode::WeightedMean),
                "pooling_mode_lasttoken": mode(PoolingMode::LastToken),
                "include_prompt": layout.pooling.include_prompt,
            }),
        )?;
        write_json(
            &tmp.join("sentence_bert_config.json"),
            &json!({"max_seq_length": max_seq_length, "do_lower_case": layout.do_lower_case}),
        )?;
        write_json(
            &tmp.join("config_sentence_transformers.json"),
            &json!({
                "__version__": {"embedkit": env!("CARGO_PKG_VERSION")},
                "prompts": layout.prompts,
                "default_prompt_name": layout.default_prompt_name,
                "similarity_fn_name": layout.similarity_fn_name.clone().unwrap_or_else(|| "cosine".into()),
            }),
        )?;
        Ok(())
    })();
    match result {
        Ok(()) => commit_dir(&tmp, out),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// Whether the layout is one this crate trains: a single mean or CLS pooling, optionally Normalize, no Dense.
pub fn check_layout(layout: &SentenceTransformerLayout, dir: &Path) -> Result<bool, TrainError> {
    let unsupported = |reason: &str| TrainError::Unsupported {
        dir: dir.to_path_buf(),
        reason: reason.to_string(),
    };
    if layout
        .post_pooling
        .iter()
        .any(|s| matches!(s, PostPoolingStep::Dense { .. }))
    {
        return Err(unsupported(
            "models with Dense modules are not trainable yet",
        ));
    }
    match layout.pooling.modes.as_slice() {
        [PoolingMode::Mean] => Ok(true),
        [PoolingMode::Cls] => Ok(false),
        _ => Err(unsupported(
            "only a single mean or CLS pooling is trainable yet",
        )),
    }
}
