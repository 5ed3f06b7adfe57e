//! Opening an index (memory-mapped, validated without reading the vectors) and searching it.

use super::{
    FLAG_MULTI_VECTOR, HEADER_LEN, IndexError, IndexMeta, MAGIC, MultiVectorInfo, RawHeader,
    RescoreWith, SearchOptions, VECTOR_ALIGN, checksum, metric_code, precision_code,
    precision_from_code, rescore_code,
};
use crate::maxsim::{EMPTY_DOCUMENT_SCORE, maxsim_with};
use crate::quantize::Precision;
use crate::search;
use crate::simd::{self, Kernels};
use crate::topk::Hit;
use crate::topk::TopK;
use embedkit_core::{Embeddings, Metric};
use memmap2::Mmap;
use rayon::prelude::*;
use std::fs::File;
use std::path::{Path, PathBuf};

/// An open index file. Opening maps the file and checks the header, section bounds and metadata; it reads
/// no vectors, so it takes the same time for any size.
pub struct Index {
    path: PathBuf,
    map: Mmap,
    header: RawHeader,
    meta: IndexMeta,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("path", &self.path)
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

impl Index {
    /// Opens and validates `path`. A truncated, foreign or damaged file is an [`IndexError`] naming the file
    /// and the problem, never a panic.
    pub fn open(path: impl AsRef<Path>) -> Result<Index, IndexError> {
        let path = path.as_ref().to_path_buf();
        if cfg!(target_endian = "big") {
            return Err(IndexError::Invalid {
                path,
                reason: "index files are little-endian and this machine is big-endian".into(),
            });
        }
        let file = File::open(&path).map_err(|source| IndexError::Io {
            path: path.clone(),
            action: "open",
            source,
        })?;
        // SAFETY: the map is read-only and private to this process. If another process truncates or rewrites
        // the file while it is mapped, reads could see changed bytes or fault — the usual caveat of mmap,
        // which index files accept for instant opening (the writer never modifies a finished file in place:
        // it renames a new one over it, which leaves this mapping intact).
        let map = unsafe { Mmap::map(&file) }.map_err(|source| IndexError::Io {
            path: path.clone(),
            action: "map",
            source,
        })?;
        let (header, meta) = validate(&path, &map)?;
        Ok(Index {
            path,
            map,
            header,
            meta,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The metadata.
    pub fn meta(&self) -> &IndexMeta {
        &self.meta
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.meta.count
    }

    /// `true` when the index holds no vectors.
    pub fn is_empty(&self) -> bool {
        self.meta.count == 0
    }

    /// Total file size in bytes.
    pub fn file_bytes(&self) -> u64 {
        self.map.len() as u64
    }

    /// Bytes of the primary vectors.
    pub fn vector_bytes(&self) -> u64 {
        self.header.vectors.1
    }

    fn corrupt(&self, what: String) -> IndexError {
        IndexError::Corrupt {
            path: self.path.clone(),
            what,
        }
    }

    /// The document structure, for a multi-vector index.
    pub fn multi_vector(&self) -> Option<&MultiVectorInfo> {
        self.meta.multi_vector.as_ref()
    }

    /// Number of documents: rows, or the documents of a multi-vector index.
    pub fn documents(&self) -> usize {
        self.meta
            .multi_vector
            .map_or(self.meta.count, |m| m.documents)
    }

    /// The token rows of document `doc` of a multi-vector index.
    pub fn document_rows(&self, doc: usize) -> Result<std::ops::Range<usize>, IndexError> {
        let Some(m) = self.meta.multi_vector else {
            return Ok(doc..doc + 1);
        };
        let table = &self.map[section(m.token_offsets)];
        let at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&table[i * 8..i * 8 + 8]);
            u64::from_le_bytes(b)
        };
        if doc >= m.documents {
            return Err(IndexError::Invalid {
                path: self.path.clone(),
                reason: format!("document {doc} is out of range ({} documents)", m.documents),
            });
        }
        let (start, end) = (at(doc), at(doc + 1));
        if start > end || end > self.meta.count as u64 {
            return Err(self.corrupt(format!(
                "token rows of document {doc} ({start}..{end}) are outside the {} rows",
                self.meta.count
            )));
        }
        Ok(start as usize..end as usize)
    }

    /// The id of `row` (of document `row` in a multi-vector index): the stored string, or the row number
    /// when the index has no ids.
    pub fn id(&self, row: usize) -> Result<String, IndexError> {
        if row >= self.documents() {
            return Err(IndexError::Invalid {
                path: self.path.clone(),
                reason: format!(
                    "row {row} is out of range (the index has {} rows)",
                    self.documents()
                ),
            });
        }
        if !self.meta.has_ids {
            return Ok(row.to_string());
        }
        let offsets = &self.map[section(self.header.id_offsets)];
        let at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&offsets[i * 8..i * 8 + 8]);
            u64::from_le_bytes(b)
        };
        let (start, end) = (at(row), at(row + 1));
        let bytes = &self.map[section(self.header.id_bytes)];
        if start > end || end > bytes.len() as u64 {
            return Err(self.corrupt(format!(
                "id offsets of row {row} ({start}..{end}) are outside the {} id bytes",
                bytes.len()
            )));
        }
        std::str::from_utf8(&bytes[start as usize..end as usize])
            .map(str::to_string)
            .map_err(|_| self.corrupt(format!("the id of row {row} is not UTF-8")))
    }

    /// Fails with [`IndexError::ModelMismatch`] unless `fingerprint` is the index's.
    pub fn check_model(&self, model: &str, fingerprint: &str) -> Result<(), IndexError> {
        if fingerprint == self.meta.fingerprint {
            return Ok(());
        }
        Err(IndexError::ModelMismatch {
            path: self.path.clone(),
            index_model: self.meta.model.clone(),
            index_fingerprint: self.meta.fingerprint.clone(),
            model: model.to_string(),
            fingerprint: fingerprint.to_string(),
        })
    }

    fn f32_section(&self, s: (u64, u64)) -> Result<&[f32], IndexError> {
        bytemuck::try_cast_slice(&self.map[section(s)])
            .map_err(|e| self.corrupt(format!("float32 vectors are misaligned: {e}")))
    }

    fn i8_section(&self, s: (u64, u64)) -> &[i8] {
        bytemuck::cast_slice(&self.map[section(s)])
    }

    /// The `top_k` best rows for each query, best first, with the active SIMD kernels.
    ///
    /// Scores: f32 indexes give the dot product (cosine for cosine indexes, whose rows and queries are unit
    /// length); int8 indexes give the float query dotted with the dequantized row — the score
    /// sentence-transformers' rescoring computes for int8 — exactly, without a candidate stage; binary
    /// indexes give the rescoring score (see [`RescoreWith`]) or, with `rescore = 0`, minus the Hamming
    /// distance.
    pub fn search(
        &self,
        queries: &Embeddings,
        opts: &SearchOptions,
    ) -> Result<Vec<Vec<Hit>>, IndexError> {
        self.search_with(simd::active(), queries, opts)
    }

    /// [`Index::search`] with explicit kernels.
    pub fn search_with(
        &self,
        k: Kernels,
        queries: &Embeddings,
        opts: &SearchOptions,
    ) -> Result<Vec<Vec<Hit>>, IndexError> {
        let dims = self.meta.dims;
        if self.meta.multi_vector.is_some() {
            return Err(IndexError::Invalid {
                path: self.path.clone(),
                reason: "a multi-vector index is searched with token vectors (search_maxsim)"
                    .into(),
            });
        }
        if queries.rows() > 0 && queries.dims() != dims {
            return Err(IndexError::Dims {
                path: self.path.clone(),
                expected: dims,
                found: queries.dims(),
            });
        }
        let rescore_with = self.rescore_source(opts)?;
        let mut out = Vec::with_capacity(queries.rows());
        let batch = opts.query_batch.max(1);
        let mut start = 0;
        while start < queries.rows() {
            let end = (start + batch).min(queries.rows());
            let mut q = queries.as_slice()[start * dims..end * dims].to_vec();
            if self.meta.metric == Metric::Cosine {
                for r in q.chunks_exact_mut(dims) {
                    embedkit_core::l2_normalize(r);
                }
            }
            out.extend(self.search_batch(k, &q, opts, rescore_with)?);
            start = end;
        }
        Ok(out)
    }

    /// Exact MaxSim of every query (its token vectors) against every document of a multi-vector index, the
    /// `top_k` best documents per query, best first (`Hit::row` is the document number).
    ///
    /// Document tokens are scored as stored: f32 rows directly, int8 rows dequantized
    /// (`(c + 128)·step + min`), binary rows through their stored float32 or int8 rescoring vectors, or as 0/1
    /// bits when there are none. Query tokens are used as given (ColBERT models normalize them).
    pub fn search_maxsim(
        &self,
        queries: &[Embeddings],
        top_k: usize,
    ) -> Result<Vec<Vec<Hit>>, IndexError> {
        let dims = self.meta.dims;
        let Some(m) = self.meta.multi_vector else {
            return Err(IndexError::Invalid {
                path: self.path.clone(),
                reason: "search_maxsim needs a multi-vector index".into(),
            });
        };
        for q in queries {
            if q.rows() > 0 && q.dims() != dims {
                return Err(IndexError::Dims {
                    path: self.path.clone(),
                    expected: dims,
                    found: q.dims(),
                });
            }
        }
        let k = simd::active();
        let (source, prec) = match (self.meta.precision, self.meta.rescore) {
            (Precision::Ubinary, Some(p)) => (self.header.rescore_vectors, p),
            (p, _) => (self.header.vectors, p),
        };
        let dequant = match prec {
            Precision::Int8 => {
                let r = self
                    .meta
                    .ranges
                    .as_ref()
                    .ok_or_else(|| self.corrupt("int8 vectors without ranges".into()))?;
                Some((r.steps(), r.min.clone()))
            }
            _ => None,
        };
        let f32_rows = match prec {
            Precision::F32 => Some(self.f32_section(source)?),
            _ => None,
        };
        let bytes = &self.map[section(source)];
        let row_bytes = prec.row_bytes(dims);
        let ranges = (0..m.documents)
            .map(|d| self.document_rows(d))
            .collect::<Result<Vec<_>, _>>()?;
        // scores[d * nq + q], documents in parallel.
        let nq = queries.len();
        let mut scores = vec![0.0f32; m.documents * nq];
        scores
            .par_chunks_mut(nq.max(1))
            .zip(ranges.par_iter())
            .for_each_init(Vec::new, |buf: &mut Vec<f32>, (out, rows)| {
                let doc: &[f32] = match (f32_rows, &dequant) {
                    (Some(all), _) => &all[rows.start * dims..rows.end * dims],
                    (None, Some((steps, min))) => {
                        buf.clear();
                        for &c in bytemuck::cast_slice::<u8, i8>(
                            &bytes[rows.start * row_bytes..rows.end * row_bytes],
                        ) {
                            let j = buf.len() % dims;
                            buf.push((f32::from(c) + 128.0) * steps[j] + min[j]);
                        }
                        buf
                    }
                    (None, None) => {
                        buf.clear();
                        for row in bytes[rows.start * row_bytes..rows.end * row_bytes]
                            .chunks_exact(row_bytes)
                        {
                            for j in 0..dims {
                                buf.push(f32::from((row[j / 8] >> (7 - j % 8)) & 1));
                            }
                        }
                        buf
                    }
                };
                for (o, q) in out.iter_mut().zip(queries) {
                    *o = if rows.is_empty() {
                        EMPTY_DOCUMENT_SCORE
                    } else {
                        maxsim_with(k, q.as_slice(), doc, dims, dims, dims)
                    };
                }
            });
        Ok((0..nq)
            .map(|q| {
                let mut top = TopK::new(top_k);
                for d in 0..m.documents {
                    top.push(d, scores[d * nq + q]);
                }
                top.into_sorted()
            })
            .collect())
    }

    /// What a binary search rescores against (`None` for f32/int8 indexes or `rescore = 0`).
    fn rescore_source(&self, opts: &SearchOptions) -> Result<Option<RescoreWith>, IndexError> {
        if self.meta.precision != Precision::Ubinary || opts.rescore == 0 {
            return Ok(None);
        }
        let stored = match self.meta.rescore {
            Some(Precision::F32) => Some(RescoreWith::F32),
            Some(Precision::Int8) => Some(RescoreWith::Int8),
            _ => None,
        };
        match opts.rescore_with {
            None => Ok(Some(stored.unwrap_or(RescoreWith::Bits))),
            Some(RescoreWith::Bits) => Ok(Some(RescoreWith::Bits)),
            Some(w) if Some(w) == stored => Ok(Some(w)),
            Some(w) => Err(IndexError::Invalid {
                path: self.path.clone(),
                reason: format!(
                    "cannot rescore with {w}: the index stores {} rescoring vectors",
                    self.meta
                        .rescore
                        .map_or("no".to_string(), |p| p.to_string())
                ),
            }),
        }
    }

    /// Weights and bias that turn an int8 row into the dot product of the query with the dequantized row:
    /// `q · ((c + 128) · step + min) = Σ qⱼ(minⱼ + 128·stepⱼ) + Σ (qⱼ·stepⱼ) cⱼ`.
    fn int8_weights(&self, q: &[f32]) -> Result<(Vec<f32>, Vec<f32>), IndexError> {
        let ranges = self
            .meta
            .ranges
            .as_ref()
            .ok_or_else(|| self.corrupt("an int8 index without calibration ranges".into()))?;
        ranges
            .validate(self.meta.dims)
            .map_err(|e| self.corrupt(e.to_string()))?;
        let steps = ranges.steps();
        let mut weights = Vec::with_capacity(q.len());
        let mut bias = Vec::new();
        for row in q.chunks_exact(self.meta.dims) {
            let mut b = 0.0f64;
            for ((&x, &step), &min) in row.iter().zip(&steps).zip(&ranges.min) {
                weights.push(x * step);
                b += f64::from(x) * (f64::from(min) + 128.0 * f64::from(step));
            }
            bias.push(b as f32);
        }
        Ok((weights, bias))
    }

    fn search_batch(
        &self,
        k: Kernels,
        q: &[f32],
        opts: &SearchOptions,
        rescore_with: Option<RescoreWith>,
    ) -> Result<Vec<Vec<Hit>>, IndexError> {
        let dims = self.meta.dims;
        let top = opts.top_k;
        let heaps = match self.meta.precision {
            Precision::F32 => {
                let corpus = self.f32_section(self.header.vectors)?;
                search::exact_f32(k, q, dims, corpus, top)
            }
            Precision::Int8 => {
                let (w, b) = self.int8_weights(q)?;
                search::exact_i8(k, &w, &b, dims, self.i8_section(self.header.vectors), top)
            }
            Precision::Ubinary => {
                let nb = dims.div_ceil(8);
                let mut bits = Vec::with_capacity(q.len() / dims * nb);
                let quantizer = crate::quantize::Quantizer::new(Precision::Ubinary, dims, None)
                    .map_err(|e| self.corrupt(e.to_string()))?;
                for row in q.chunks_exact(dims) {
                    quantizer.quantize_row(row, &mut bits);
                }
                let cap = match rescore_with {
                    Some(_) => top.saturating_mul(opts.rescore),
                    None => top,
                };
                let corpus = &self.map[section(self.header.vectors)];
                let heaps = search::hamming(k, &bits, nb, corpus, cap);
                if let Some(with) = rescore_with {
                    return self.rescore(k, q, heaps, top, with);
                }
                heaps
            }
            p => return Err(self.corrupt(format!("unsupported precision {p}"))),
        };
        Ok(heaps.into_iter().map(|h| h.into_sorted()).collect())
    }

    fn rescore(
        &self,
        k: Kernels,
        q: &[f32],
        heaps: Vec<crate::topk::TopK>,
        top: usize,
        with: RescoreWith,
    ) -> Result<Vec<Vec<Hit>>, IndexError> {
        let dims = self.meta.dims;
        let candidates: Vec<Vec<Hit>> = heaps.into_iter().map(|h| h.into_sorted()).collect();
        let queries: Vec<&[f32]> = q.chunks_exact(dims).collect();
        Ok(match with {
            RescoreWith::F32 => {
                let rows = self.f32_section(self.header.rescore_vectors)?;
                candidates
                    .par_iter()
                    .zip(&queries)
                    .map(|(c, qv)| {
                        search::rescore(c, top, |r| k.dot(qv, &rows[r * dims..(r + 1) * dims]))
                    })
                    .collect()
            }
            RescoreWith::Int8 => {
                let rows = self.i8_section(self.header.rescore_vectors);
                let (w, b) = self.int8_weights(q)?;
                candidates
                    .par_iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let wq = &w[i * dims..(i + 1) * dims];
                        search::rescore(c, top, |r| {
                            b[i] + k.dot_f32_i8(wq, &rows[r * dims..(r + 1) * dims])
                        })
                    })
                    .collect()
            }
            RescoreWith::Bits => {
                let nb = dims.div_ceil(8);
                let bits = &self.map[section(self.header.vectors)];
                candidates
                    .par_iter()
                    .zip(&queries)
                    .map(|(c, qv)| {
                        search::rescore(c, top, |r| {
                            let row = &bits[r * nb..(r + 1) * nb];
                            qv.iter()
                                .enumerate()
                                .filter(|(j, _)| row[j / 8] & (0x80 >> (j % 8)) != 0)
                                .map(|(_, x)| x)
                                .sum()
                        })
                    })
                    .collect()
            }
        })
    }
}

/// A validated `(offset, length)` as a byte range.
fn section(s: (u64, u64)) -> std::ops::Range<usize> {
    s.0 as usize..(s.0 + s.1) as usize
}

/// Checks everything `open` promises; returns the header and metadata.
fn validate(path: &Path, map: &[u8]) -> Result<(RawHeader, IndexMeta), IndexError> {
    let corrupt = |what: String| IndexError::Corrupt {
        path: path.to_path_buf(),
        what,
    };
    let actual = map.len() as u64;
    if map.len() < MAGIC.len() || map[..MAGIC.len()] != MAGIC {
        return Err(IndexError::NotAnIndex {
            path: path.to_path_buf(),
        });
    }
    let Some(head) = map.get(..HEADER_LEN) else {
        return Err(IndexError::Truncated {
            path: path.to_path_buf(),
            expected: HEADER_LEN as u64,
            actual,
        });
    };
    let mut hb = [0u8; HEADER_LEN];
    hb.copy_from_slice(head);
    let h = RawHeader::decode(&hb);
    let multi = h.flags & FLAG_MULTI_VECTOR != 0;
    let version_ok = if multi {
        h.version == super::MULTI_VECTOR_VERSION
    } else {
        h.version == super::FORMAT_VERSION
    };
    if !version_ok {
        return Err(IndexError::Version {
            path: path.to_path_buf(),
            found: h.version,
            supported: if h.version > super::MULTI_VECTOR_VERSION {
                super::MULTI_VECTOR_VERSION
            } else {
                super::FORMAT_VERSION
            },
        });
    }
    if actual < h.file_len {
        return Err(IndexError::Truncated {
            path: path.to_path_buf(),
            expected: h.file_len,
            actual,
        });
    }
    if actual > h.file_len {
        return Err(corrupt(format!(
            "the header says {} bytes but the file has {actual} ({} unexpected trailing bytes)",
            h.file_len,
            actual - h.file_len
        )));
    }
    let in_file = |name: &str, (off, len): (u64, u64)| -> Result<(), IndexError> {
        match off.checked_add(len) {
            Some(end) if end <= actual && (len == 0 || off >= HEADER_LEN as u64) => Ok(()),
            _ => Err(corrupt(format!(
                "the {name} section ({len} bytes at offset {off}) lies outside the {actual}-byte file"
            ))),
        }
    };
    in_file("metadata", h.meta)?;
    let meta_bytes = &map[section(h.meta)];
    if checksum(&hb, meta_bytes) != h.checksum {
        return Err(corrupt(
            "the header checksum does not match (damaged header or metadata)".into(),
        ));
    }
    let meta: IndexMeta = serde_json::from_slice(meta_bytes)
        .map_err(|e| corrupt(format!("unreadable metadata: {e}")))?;
    // The header's fixed fields and the metadata must agree.
    let agrees = h.count == meta.count as u64
        && h.dims as usize == meta.dims
        && h.precision == precision_code(meta.precision)
        && h.rescore == rescore_code(meta.rescore)
        && h.metric == metric_code(meta.metric)
        && precision_from_code(h.precision).is_some();
    if !agrees {
        return Err(corrupt("the header and the metadata disagree".into()));
    }
    if !matches!(
        meta.precision,
        Precision::F32 | Precision::Int8 | Precision::Ubinary
    ) {
        return Err(corrupt(format!(
            "unsupported vector precision {}",
            meta.precision
        )));
    }
    let rows = |p: Precision| {
        (meta.count as u64)
            .checked_mul(p.row_bytes(meta.dims) as u64)
            .ok_or_else(|| corrupt("the vector count overflows".into()))
    };
    in_file("vectors", h.vectors)?;
    if h.vectors.1 != rows(meta.precision)? {
        return Err(corrupt(format!(
            "{} {} vectors of {} dims need {} bytes, the vector section has {}",
            meta.count,
            meta.precision,
            meta.dims,
            rows(meta.precision)?,
            h.vectors.1
        )));
    }
    in_file("rescoring vectors", h.rescore_vectors)?;
    let want_rescore = meta.rescore.map(rows).transpose()?.unwrap_or(0);
    if h.rescore_vectors.1 != want_rescore {
        return Err(corrupt(format!(
            "the rescoring section has {} bytes, expected {want_rescore}",
            h.rescore_vectors.1
        )));
    }
    for (name, s) in [
        ("vectors", h.vectors),
        ("rescoring vectors", h.rescore_vectors),
    ] {
        if s.0 % VECTOR_ALIGN != 0 {
            return Err(corrupt(format!(
                "the {name} section is not 64-byte aligned"
            )));
        }
    }
    in_file("id offsets", h.id_offsets)?;
    in_file("id bytes", h.id_bytes)?;
    if multi != meta.multi_vector.is_some() {
        return Err(corrupt(
            "the header's multi-vector flag and the metadata disagree".into(),
        ));
    }
    let id_rows = match meta.multi_vector {
        Some(m) => {
            in_file("token offsets", m.token_offsets)?;
            if m.token_offsets.1 != (m.documents as u64 + 1) * 8 || m.token_offsets.0 % 8 != 0 {
                return Err(corrupt(format!(
                    "the token offset table ({} bytes at {}) does not fit {} documents",
                    m.token_offsets.1, m.token_offsets.0, m.documents
                )));
            }
            let table = &map[section(m.token_offsets)];
            let at = |i: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&table[i * 8..i * 8 + 8]);
                u64::from_le_bytes(b)
            };
            if at(0) != 0 || at(m.documents) != meta.count as u64 {
                return Err(corrupt(format!(
                    "the token offsets run {}..{}, not over the {} rows",
                    at(0),
                    at(m.documents),
                    meta.count
                )));
            }
            m.documents as u64
        }
        None => meta.count as u64,
    };
    let want_offsets = if meta.has_ids { (id_rows + 1) * 8 } else { 0 };
    if h.id_offsets.1 != want_offsets {
        return Err(corrupt(format!(
            "the id offset table has {} bytes, expected {want_offsets}",
            h.id_offsets.1
        )));
    }
    if meta.ranges.is_some()
        || meta.precision == Precision::Int8
        || meta.rescore == Some(Precision::Int8)
    {
        match &meta.ranges {
            Some(r) if r.validate(meta.dims).is_ok() => {}
            _ => {
                return Err(corrupt(
                    "int8 vectors without valid calibration ranges".into(),
                ));
            }
        }
    }
    Ok((h, meta))
}
