//! Reading tensors from safetensors files (single file or sharded), one tensor at a time.
//!
//! Only the headers are kept in memory; each tensor's bytes are read with positioned reads when it is asked
//! for, converted to f32 in small chunks, and handed over. The files are deliberately not memory-mapped: every
//! page of a mapping a loader touches stays in the process's resident set until the mapping is dropped, so a
//! mapped model counted twice at load (all-MiniLM-L6-v2: 90 MB of mapped file beside its f32 copies and the
//! packed layers), and a file truncated while mapped kills the process with SIGBUS, where a read returns an
//! error naming the file and tensor.

use crate::ModelError;
use crate::files::read_json;
use crate::weights::Tensor;
use safetensors::Dtype;
use safetensors::tensor::Metadata;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

/// safetensors' own limit on the JSON header (`MAX_HEADER_SIZE` in the crate).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Bytes read per positioned read: the only transient buffer besides the tensor being returned.
const CHUNK_BYTES: usize = 1 << 20;

/// One safetensors file: its open handle and parsed header.
struct Shard {
    path: PathBuf,
    file: File,
    /// Where the tensor data starts: after the 8-byte length and the JSON header.
    data_start: u64,
    metadata: Metadata,
}

/// The safetensors files of one model (their headers; tensors are read on demand), with a name → file map.
pub struct SafetensorsFiles {
    pub(crate) dir: PathBuf,
    shards: Vec<Shard>,
    /// Tensor name → index into `shards`.
    index: HashMap<String, usize>,
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

impl SafetensorsFiles {
    /// Opens `model.safetensors`, or the shards listed in `model.safetensors.index.json`, in `dir`.
    pub fn open_dir(dir: &Path) -> Result<Self, ModelError> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if single.is_file() {
            vec![single]
        } else if index_path.is_file() {
            let index: ShardIndex = read_json(&index_path)?;
            let mut shards: Vec<String> = index.weight_map.into_values().collect();
            shards.sort();
            shards.dedup();
            shards.into_iter().map(|s| dir.join(s)).collect()
        } else if dir.join("pytorch_model.bin").is_file()
            || dir.join("pytorch_model.bin.index.json").is_file()
        {
            return Err(ModelError::PytorchOnly(dir.to_path_buf()));
        } else {
            return Err(ModelError::MissingFile {
                dir: dir.to_path_buf(),
                what: "weights (model.safetensors or model.safetensors.index.json)".into(),
            });
        };
        Self::open_files(dir, files)
    }

    /// Opens a single safetensors file (e.g. a Dense module's weights).
    pub fn open_file(path: &Path) -> Result<Self, ModelError> {
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Self::open_files(&dir, vec![path.to_path_buf()])
    }

    fn open_files(dir: &Path, files: Vec<PathBuf>) -> Result<Self, ModelError> {
        let mut shards = Vec::with_capacity(files.len());
        let mut index = HashMap::new();
        for (i, path) in files.into_iter().enumerate() {
            let shard = Shard::open(path)?;
            for name in shard.metadata.tensors().into_keys() {
                index.insert(name, i);
            }
            shards.push(shard);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            shards,
            index,
        })
    }

    /// Whether a tensor of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// All tensor names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// Total number of scalar parameters.
    pub fn num_parameters(&self) -> usize {
        self.shards
            .iter()
            .flat_map(|s| s.metadata.tensors().into_values())
            .map(|info| info.shape.iter().product::<usize>())
            .sum()
    }

    /// Reads tensor `name` from its file as f32 (F16 and BF16 are widened).
    pub fn get(&self, name: &str) -> Result<Tensor, ModelError> {
        let &i = self
            .index
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                dir: self.dir.clone(),
                name: name.to_string(),
            })?;
        self.shards[i].read(name)
    }

    /// Reads tensor `name` and checks its shape.
    pub fn get_shaped(&self, name: &str, shape: &[usize]) -> Result<Tensor, ModelError> {
        let t = self.get(name)?;
        if t.shape != shape {
            return Err(ModelError::TensorShape {
                name: name.to_string(),
                expected: shape.to_vec(),
                found: t.shape,
            });
        }
        Ok(t)
    }
}

impl Shard {
    /// Opens `path` and parses its header, which must describe exactly the bytes the file holds.
    fn open(path: PathBuf) -> Result<Self, ModelError> {
        let invalid = |message: String| ModelError::Safetensors {
            path: path.clone(),
            message,
        };
        let file = File::open(&path).map_err(|e| ModelError::io(&path, e))?;
        let file_len = file.metadata().map_err(|e| ModelError::io(&path, e))?.len();
        let mut len_bytes = [0u8; 8];
        if file_len < 8 {
            return Err(invalid(format!(
                "{file_len} bytes, shorter than the 8-byte header length"
            )));
        }
        read_at(&file, &mut len_bytes, 0).map_err(|e| ModelError::io(&path, e))?;
        let header_len = u64::from_le_bytes(len_bytes);
        if header_len > MAX_HEADER_BYTES || header_len > file_len - 8 {
            return Err(invalid(format!(
                "header of {header_len} bytes in a file of {file_len}"
            )));
        }
        let mut header = vec![0u8; header_len as usize];
        read_at(&file, &mut header, 8).map_err(|e| ModelError::io(&path, e))?;
        // Metadata's deserializer is safetensors' own: it sorts the tensors by offset and checks that they
        // tile the data without gaps and that each one's byte length matches its dtype and shape.
        let metadata: Metadata =
            serde_json::from_slice(&header).map_err(|e| invalid(format!("header: {e}")))?;
        let data_start = 8 + header_len;
        let data_len = metadata.data_len() as u64;
        if data_start + data_len != file_len {
            return Err(invalid(format!(
                "the header describes {data_len} bytes of tensor data, the file holds {}",
                file_len - data_start
            )));
        }
        Ok(Self {
            path,
            file,
            data_start,
            metadata,
        })
    }

    /// Reads tensor `name` (which this file holds) as f32, converting chunk by chunk as it is read.
    fn read(&self, name: &str) -> Result<Tensor, ModelError> {
        let missing = || ModelError::MissingTensor {
            dir: self.path.clone(),
            name: name.to_string(),
        };
        let info = self.metadata.info(name).ok_or_else(missing)?;
        let (elem_bytes, widen): (usize, fn(&[u8]) -> f32) = match info.dtype {
            Dtype::F32 => (4, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            Dtype::F16 => (2, |b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
            Dtype::BF16 => (2, |b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            other => {
                return Err(ModelError::TensorDtype {
                    name: name.to_string(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        let (start, end) = info.data_offsets;
        // The header was validated at open: end - start is the element count times elem_bytes.
        let mut data = Vec::with_capacity((end - start) / elem_bytes);
        // Whole elements per chunk, so no element straddles two reads.
        let mut chunk = vec![0u8; (end - start).min(CHUNK_BYTES / elem_bytes * elem_bytes)];
        let mut at = start;
        while at < end {
            let buf = &mut chunk[..(end - at).min(CHUNK_BYTES / elem_bytes * elem_bytes)];
            read_at(&self.file, buf, self.data_start + at as u64).map_err(|source| {
                ModelError::TensorRead {
                    path: self.path.clone(),
                    name: name.to_string(),
                    source,
                }
            })?;
            data.extend(buf.chunks_exact(elem_bytes).map(widen));
            at += buf.len();
        }
        Ok(Tensor {
            shape: info.shape.clone(),
            data,
        })
    }
}

/// Fills `buf` from `file` at `offset` without moving a shared cursor (so concurrent reads of one file are
/// safe); a file shorter than asked is an `UnexpectedEof` error.
#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(not(any(unix, windows)))]
fn read_at(_file: &File, _buf: &mut [u8], _offset: u64) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    /// A fresh folder under the system's temp dir for one test.
    fn temp_dir(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "embedkit-tensor-files-{}-{test}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Writes a safetensors file of one tensor per dtype (and an I32 one) to `dir/model.safetensors`.
    fn write_model(dir: &Path) -> PathBuf {
        let f32s: Vec<u8> = [1.5f32, -2.25, 3.0e-8, f32::MAX, 0.0, -0.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let f16s: Vec<u8> = [0.5f32, -65504.0, 1.0e-3]
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        // Larger than one read chunk, so the chunk loop runs more than once and ends on a partial chunk.
        let n_bf16 = CHUNK_BYTES / 2 + 3;
        let bf16s: Vec<u8> = (0..n_bf16)
            .flat_map(|i| half::bf16::from_f32(i as f32 - 7.0).to_le_bytes())
            .collect();
        let i32s: Vec<u8> = [7i32, 8].iter().flat_map(|v| v.to_le_bytes()).collect();
        let tensors = [
            (
                "a.f32",
                TensorView::new(Dtype::F32, vec![2, 3], &f32s).unwrap(),
            ),
            (
                "b.f16",
                TensorView::new(Dtype::F16, vec![3], &f16s).unwrap(),
            ),
            (
                "c.bf16",
                TensorView::new(Dtype::BF16, vec![n_bf16], &bf16s).unwrap(),
            ),
            (
                "d.i32",
                TensorView::new(Dtype::I32, vec![2], &i32s).unwrap(),
            ),
        ];
        let path = dir.join("model.safetensors");
        safetensors::serialize_to_file(tensors, None, &path).unwrap();
        path
    }

    #[test]
    fn reads_every_float_dtype_exactly() {
        let dir = temp_dir("dtypes");
        write_model(&dir);
        let files = SafetensorsFiles::open_dir(&dir).unwrap();
        let a = files.get_shaped("a.f32", &[2, 3]).unwrap();
        let want = [1.5f32, -2.25, 3.0e-8, f32::MAX, 0.0, -0.0];
        assert_eq!(
            a.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        let b = files.get("b.f16").unwrap();
        assert_eq!(b.shape, [3]);
        assert_eq!(
            b.data,
            [0.5, -65504.0, half::f16::from_f32(1.0e-3).to_f32()]
        );
        let c = files.get("c.bf16").unwrap();
        assert_eq!(c.data.len(), CHUNK_BYTES / 2 + 3);
        assert!(
            c.data
                .iter()
                .enumerate()
                .all(|(i, &v)| v == half::bf16::from_f32(i as f32 - 7.0).to_f32())
        );
        assert_eq!(files.num_parameters(), 6 + 3 + CHUNK_BYTES / 2 + 3 + 2);
        assert!(files.contains("d.i32") && !files.contains("e"));
        let err = files.get("d.i32").unwrap_err().to_string();
        assert!(err.contains("d.i32") && err.contains("I32"), "{err}");
        let err = files.get("e").unwrap_err().to_string();
        assert!(err.contains("lack tensor 'e'"), "{err}");
        let err = files.get_shaped("a.f32", &[3, 2]).unwrap_err().to_string();
        assert!(err.contains("[2, 3]"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_truncated_file_is_an_error_naming_it() {
        let dir = temp_dir("truncated");
        let path = write_model(&dir);
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 1)
            .unwrap();
        let err = SafetensorsFiles::open_file(&path)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("model.safetensors") && err.contains("tensor data"),
            "{err}"
        );
        std::fs::write(&path, [1u8, 2, 3]).unwrap();
        let err = SafetensorsFiles::open_file(&path)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("shorter than the 8-byte"), "{err}");
        let mut huge = u64::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        std::fs::write(&path, huge).unwrap();
        let err = SafetensorsFiles::open_file(&path)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("header of"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A mapped file cut short under the loader would end the process with SIGBUS; a read reports it.
    #[test]
    fn a_file_truncated_after_opening_is_an_error_naming_the_tensor() {
        let dir = temp_dir("truncated-later");
        let path = write_model(&dir);
        let files = SafetensorsFiles::open_dir(&dir).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(100)
            .unwrap();
        let err = files.get("c.bf16").unwrap_err();
        assert!(matches!(err, ModelError::TensorRead { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("c.bf16") && msg.contains("model.safetensors"),
            "{msg}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
