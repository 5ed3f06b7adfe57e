//! Streaming index writer: vectors go straight into a temp file beside the target, which is renamed into
//! place only by [`IndexWriter::finish`].

use super::{
    FLAG_MULTI_VECTOR, FLAG_NORMALIZED, HEADER_LEN, IndexError, IndexMeta, MultiVectorInfo,
    RawHeader, VECTOR_ALIGN, checksum, metric_code, precision_code, rescore_code,
};
use crate::quantize::{CalibrationRanges, Precision, Quantizer};
use embedkit_core::{AtomicFile, Embeddings, Metric};
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// What an index will hold. `dims` is fixed for all rows.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexSpec {
    /// Model name (see [`IndexMeta::model`]).
    pub model: String,
    /// Model fingerprint (see [`IndexMeta::fingerprint`]).
    pub fingerprint: String,
    /// Primary precision: `F32`, `Int8`, or `Binary`/`Ubinary` (both store the packed sign bits).
    pub precision: Precision,
    /// Rescoring vectors for a binary index: `None`, `Some(Int8)` or `Some(F32)`.
    pub rescore: Option<Precision>,
    /// `Cosine` (rows are normalized on write) or `Dot`.
    pub metric: Metric,
    /// Dimensions of every row.
    pub dims: usize,
    /// Calibration ranges; required when `precision` or `rescore` is `Int8`.
    pub ranges: Option<CalibrationRanges>,
    /// Free-form notes stored in the metadata.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// What [`IndexWriter::finish`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexSummary {
    /// Rows written (token vectors in a multi-vector index).
    pub count: usize,
    /// Documents written (equal to `count` in a single-vector index).
    pub documents: usize,
    /// Total file size in bytes.
    pub file_bytes: u64,
    /// Bytes of the primary vectors.
    pub vector_bytes: u64,
}

/// Spools ids to two unnamed temp files until `finish` knows where they go.
struct IdSpool {
    offsets: BufWriter<File>,
    bytes: BufWriter<File>,
    total: u64,
}

/// Writes an index in batches. Dropping it without [`IndexWriter::finish`] deletes the temp file, so the
/// target path is never left with a partial index.
pub struct IndexWriter {
    path: PathBuf,
    meta: IndexMeta,
    file: BufWriter<AtomicFile>,
    dir: PathBuf,
    primary: Quantizer,
    rescore: Option<(Quantizer, BufWriter<File>)>,
    ids: Option<IdSpool>,
    /// `Some(true)` once a batch with ids was added, `Some(false)` once one without.
    named: Option<bool>,
    count: u64,
    vector_bytes: u64,
    rescore_bytes: u64,
    buf: Vec<u8>,
    row: Vec<f32>,
    /// A multi-vector index: the spooled token-offset table and the documents so far.
    multi: Option<(BufWriter<File>, u64)>,
}

/// Squared norm tolerance within which a row already counts as unit length and is stored untouched (so an
/// already normalized model's vectors quantize to exactly sentence-transformers' bytes).
const UNIT_TOLERANCE: f32 = 2e-5;

impl IndexWriter {
    /// Starts an index that will appear at `path` when finished. The temp file is created in the same
    /// directory so the final rename is atomic.
    pub fn create(path: impl AsRef<Path>, spec: IndexSpec) -> Result<IndexWriter, IndexError> {
        let path = path.as_ref().to_path_buf();
        let invalid = |reason: String| IndexError::Invalid {
            path: path.clone(),
            reason,
        };
        let precision = match spec.precision {
            Precision::F32 | Precision::Int8 => spec.precision,
            Precision::Binary | Precision::Ubinary => Precision::Ubinary,
            p => {
                return Err(invalid(format!(
                    "an index holds float32, int8 or binary vectors, not {p}"
                )));
            }
        };
        match (precision, spec.rescore) {
            (_, None) | (Precision::Ubinary, Some(Precision::Int8 | Precision::F32)) => {}
            (Precision::Ubinary, Some(p)) => {
                return Err(invalid(format!(
                    "binary indexes rescore with int8 or float32 vectors, not {p}"
                )));
            }
            (p, Some(_)) => {
                return Err(invalid(format!(
                    "only binary indexes store rescoring vectors ({p} scores are already final)"
                )));
            }
        }
        if !matches!(spec.metric, Metric::Cosine | Metric::Dot) {
            return Err(invalid(format!(
                "an index ranks by cosine or dot product, not {}",
                spec.metric
            )));
        }
        if spec.dims == 0 || u32::try_from(spec.dims).is_err() {
            return Err(invalid(format!("{} dimensions", spec.dims)));
        }
        let quantize_err = |source| IndexError::Quantize {
            path: path.clone(),
            source,
        };
        let primary =
            Quantizer::new(precision, spec.dims, spec.ranges.as_ref()).map_err(quantize_err)?;
        let rescore_q = spec
            .rescore
            .map(|p| Quantizer::new(p, spec.dims, spec.ranges.as_ref()))
            .transpose()
            .map_err(quantize_err)?;
        let uses_ranges = precision == Precision::Int8 || spec.rescore == Some(Precision::Int8);
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let io = |action, source| IndexError::Io {
            path: path.clone(),
            action,
            source,
        };
        let tmp = AtomicFile::create(&path).map_err(|e| io("create a temp file for", e))?;
        let mut file = BufWriter::with_capacity(1 << 20, tmp);
        // A zero header until `finish`: even a temp file left by a killed process never opens as an index.
        file.write_all(&[0u8; HEADER_LEN])
            .map_err(|e| io("write", e))?;
        let rescore = match rescore_q {
            Some(q) => {
                let f = tempfile::tempfile_in(&dir).map_err(|e| io("create a temp file for", e))?;
                Some((q, BufWriter::with_capacity(1 << 20, f)))
            }
            None => None,
        };
        let meta = IndexMeta {
            model: spec.model,
            fingerprint: spec.fingerprint,
            precision,
            rescore: spec.rescore,
            metric: spec.metric,
            dims: spec.dims,
            count: 0,
            normalized: spec.metric == Metric::Cosine,
            ranges: if uses_ranges { spec.ranges } else { None },
            has_ids: false,
            multi_vector: None,
            created_by: format!("embedkit-vectors {}", env!("CARGO_PKG_VERSION")),
            extra: spec.extra,
        };
        Ok(IndexWriter {
            path,
            meta,
            file,
            dir,
            primary,
            rescore,
            ids: None,
            named: None,
            count: 0,
            vector_bytes: 0,
            rescore_bytes: 0,
            buf: Vec::new(),
            row: Vec::new(),
            multi: None,
        })
    }

    /// Starts a multi-vector (late-interaction) index: documents are added with
    /// [`IndexWriter::add_document`], each with its token vectors.
    pub fn create_multi_vector(
        path: impl AsRef<Path>,
        spec: IndexSpec,
    ) -> Result<IndexWriter, IndexError> {
        let mut w = Self::create(path, spec)?;
        let mut ends = BufWriter::with_capacity(
            1 << 16,
            tempfile::tempfile_in(&w.dir).map_err(w.io("create a temp file for"))?,
        );
        ends.write_all(&0u64.to_le_bytes()).map_err(w.io("write"))?;
        w.multi = Some((ends, 0));
        Ok(w)
    }

    /// Appends one document of a multi-vector index: its id and its token vectors (possibly none).
    pub fn add_document(&mut self, id: &str, tokens: &Embeddings) -> Result<(), IndexError> {
        if self.multi.is_none() {
            return Err(IndexError::Invalid {
                path: self.path.clone(),
                reason: "add_document needs an index made by create_multi_vector".into(),
            });
        }
        self.add_rows(&[id], tokens, true)?;
        let count = self.count;
        let path = &self.path;
        if let Some((ends, docs)) = self.multi.as_mut() {
            ends.write_all(&count.to_le_bytes())
                .map_err(|source| IndexError::Io {
                    path: path.clone(),
                    action: "write",
                    source,
                })?;
            *docs += 1;
        }
        Ok(())
    }

    /// The metadata so far.
    pub fn meta(&self) -> &IndexMeta {
        &self.meta
    }

    /// Rows added so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Documents added so far (rows, in a single-vector index).
    pub fn documents(&self) -> usize {
        self.multi.as_ref().map_or(self.count, |(_, d)| *d) as usize
    }

    /// `true` before the first row.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn io(&self, action: &'static str) -> impl FnOnce(std::io::Error) -> IndexError + '_ {
        move |source| IndexError::Io {
            path: self.path.clone(),
            action,
            source,
        }
    }

    /// Appends rows with string ids (one per row). An index has either ids for every row or for none.
    pub fn add<S: AsRef<str>>(
        &mut self,
        ids: &[S],
        vectors: &Embeddings,
    ) -> Result<(), IndexError> {
        self.add_rows(ids, vectors, false)
    }

    /// `add`, or (with `document`) one id for all of `vectors`, a multi-vector document.
    fn add_rows<S: AsRef<str>>(
        &mut self,
        ids: &[S],
        vectors: &Embeddings,
        document: bool,
    ) -> Result<(), IndexError> {
        if !document && self.multi.is_some() {
            return Err(self.multi_only());
        }
        if !document && ids.len() != vectors.rows() {
            return Err(IndexError::Invalid {
                path: self.path.clone(),
                reason: format!("{} ids for {} vectors", ids.len(), vectors.rows()),
            });
        }
        self.set_named(true)?;
        if self.ids.is_none() {
            let mk = |dir: &Path| -> std::io::Result<BufWriter<File>> {
                Ok(BufWriter::with_capacity(
                    1 << 16,
                    tempfile::tempfile_in(dir)?,
                ))
            };
            let mut offsets = mk(&self.dir).map_err(self.io("create a temp file for"))?;
            offsets
                .write_all(&0u64.to_le_bytes())
                .map_err(self.io("write"))?;
            let bytes = mk(&self.dir).map_err(self.io("create a temp file for"))?;
            self.ids = Some(IdSpool {
                offsets,
                bytes,
                total: 0,
            });
        }
        self.write_vectors(vectors)?;
        let path = &self.path;
        let io = |source| IndexError::Io {
            path: path.clone(),
            action: "write",
            source,
        };
        if let Some(spool) = self.ids.as_mut() {
            for id in ids {
                let b = id.as_ref().as_bytes();
                spool.bytes.write_all(b).map_err(io)?;
                spool.total += b.len() as u64;
                spool
                    .offsets
                    .write_all(&spool.total.to_le_bytes())
                    .map_err(io)?;
            }
        }
        Ok(())
    }

    /// Appends rows whose ids are their row numbers (`"0"`, `"1"`, …), storing no id table.
    pub fn add_unnamed(&mut self, vectors: &Embeddings) -> Result<(), IndexError> {
        if self.multi.is_some() {
            return Err(self.multi_only());
        }
        self.set_named(false)?;
        self.write_vectors(vectors)
    }

    fn multi_only(&self) -> IndexError {
        IndexError::Invalid {
            path: self.path.clone(),
            reason: "a multi-vector index takes whole documents (add_document)".into(),
        }
    }

    fn set_named(&mut self, named: bool) -> Result<(), IndexError> {
        match self.named {
            Some(n) if n != named => Err(IndexError::Invalid {
                path: self.path.clone(),
                reason: "either every batch has ids or none does".into(),
            }),
            _ => {
                self.named = Some(named);
                Ok(())
            }
        }
    }

    fn write_vectors(&mut self, vectors: &Embeddings) -> Result<(), IndexError> {
        if vectors.rows() == 0 {
            return Ok(());
        }
        if vectors.dims() != self.meta.dims {
            return Err(IndexError::Dims {
                path: self.path.clone(),
                expected: self.meta.dims,
                found: vectors.dims(),
            });
        }
        let normalize = self.meta.metric == Metric::Cosine;
        for r in vectors.iter() {
            let row: &[f32] = if normalize {
                let sq: f32 = r.iter().map(|x| x * x).sum();
                if (sq - 1.0).abs() > UNIT_TOLERANCE {
                    self.row.clear();
                    self.row.extend_from_slice(r);
                    embedkit_core::l2_normalize(&mut self.row);
                    &self.row
                } else {
                    r
                }
            } else {
                r
            };
            self.buf.clear();
            self.primary.quantize_row(row, &mut self.buf);
            self.vector_bytes += self.buf.len() as u64;
            let path = &self.path;
            let io = |source| IndexError::Io {
                path: path.clone(),
                action: "write",
                source,
            };
            self.file.write_all(&self.buf).map_err(io)?;
            if let Some((q, w)) = self.rescore.as_mut() {
                self.buf.clear();
                q.quantize_row(row, &mut self.buf);
                self.rescore_bytes += self.buf.len() as u64;
                w.write_all(&self.buf).map_err(io)?;
            }
        }
        self.count += vectors.rows() as u64;
        Ok(())
    }

    /// Completes the file: appends the rescoring vectors, ids and metadata, writes the header, syncs, and
    /// renames the temp file over `path`.
    pub fn finish(mut self) -> Result<IndexSummary, IndexError> {
        self.meta.count = self.count as usize;
        self.meta.has_ids = self.named == Some(true);
        let path = self.path.clone();
        let io = |action: &'static str| {
            let path = path.clone();
            move |source| IndexError::Io {
                path,
                action,
                source,
            }
        };
        let mut tmp = self
            .file
            .into_inner()
            .map_err(|e| io("write")(e.into_error()))?;
        let f = tmp.as_file_mut();
        let mut pos = HEADER_LEN as u64 + self.vector_bytes;
        let documents = self.multi.as_ref().map_or(self.count, |(_, d)| *d);
        let mut header = RawHeader {
            version: if self.multi.is_some() {
                super::MULTI_VECTOR_VERSION
            } else {
                super::FORMAT_VERSION
            },
            count: self.count,
            dims: self.meta.dims as u32,
            precision: precision_code(self.meta.precision),
            rescore: rescore_code(self.meta.rescore),
            metric: metric_code(self.meta.metric),
            flags: if self.meta.normalized {
                FLAG_NORMALIZED
            } else {
                0
            } | if self.multi.is_some() {
                FLAG_MULTI_VECTOR
            } else {
                0
            },
            vectors: (HEADER_LEN as u64, self.vector_bytes),
            ..RawHeader::default()
        };
        if let Some((_, w)) = self.rescore.take() {
            pos = pad_to(f, pos, VECTOR_ALIGN).map_err(io("write"))?;
            let mut src = w.into_inner().map_err(|e| io("write")(e.into_error()))?;
            header.rescore_vectors = (pos, self.rescore_bytes);
            pos += append(f, &mut src, self.rescore_bytes).map_err(io("write"))?;
        }
        if let Some(spool) = self.ids.take() {
            pos = pad_to(f, pos, 8).map_err(io("write"))?;
            let offsets_len = (documents + 1) * 8;
            let mut off = spool
                .offsets
                .into_inner()
                .map_err(|e| io("write")(e.into_error()))?;
            header.id_offsets = (pos, offsets_len);
            pos += append(f, &mut off, offsets_len).map_err(io("write"))?;
            let mut bytes = spool
                .bytes
                .into_inner()
                .map_err(|e| io("write")(e.into_error()))?;
            header.id_bytes = (pos, spool.total);
            pos += append(f, &mut bytes, spool.total).map_err(io("write"))?;
        }
        if let Some((ends, docs)) = self.multi.take() {
            pos = pad_to(f, pos, 8).map_err(io("write"))?;
            let mut src = ends.into_inner().map_err(|e| io("write")(e.into_error()))?;
            let len = (docs + 1) * 8;
            self.meta.multi_vector = Some(MultiVectorInfo {
                documents: docs as usize,
                token_offsets: (pos, len),
            });
            pos += append(f, &mut src, len).map_err(io("write"))?;
        }
        let meta = serde_json::to_vec(&self.meta).map_err(|e| IndexError::Invalid {
            path: path.clone(),
            reason: format!("cannot encode metadata: {e}"),
        })?;
        f.write_all(&meta).map_err(io("write"))?;
        header.meta = (pos, meta.len() as u64);
        pos += meta.len() as u64;
        header.file_len = pos;
        let mut bytes = header.encode();
        header.checksum = checksum(&bytes, &meta);
        bytes = header.encode();
        f.seek(SeekFrom::Start(0)).map_err(io("write"))?;
        f.write_all(&bytes).map_err(io("write"))?;
        tmp.commit().map_err(io("sync and rename into place"))?;
        Ok(IndexSummary {
            count: self.count as usize,
            documents: documents as usize,
            file_bytes: pos,
            vector_bytes: self.vector_bytes,
        })
    }
}

/// Writes zeros from `pos` up to the next multiple of `align`; returns the new position.
fn pad_to(f: &mut File, pos: u64, align: u64) -> std::io::Result<u64> {
    let next = pos.div_ceil(align) * align;
    f.write_all(&vec![0u8; (next - pos) as usize])?;
    Ok(next)
}

/// Copies all of `src` (rewound) to the end of `f`, checking that `expected` bytes were copied.
fn append(f: &mut File, src: &mut File, expected: u64) -> std::io::Result<u64> {
    src.seek(SeekFrom::Start(0))?;
    let n = std::io::copy(src, f)?;
    if n != expected {
        return Err(std::io::Error::other(format!(
            "spooled {expected} bytes but copied {n}"
        )));
    }
    Ok(n)
}
