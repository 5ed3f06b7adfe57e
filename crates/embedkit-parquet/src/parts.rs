//! Shards of one corpus as part files in a folder: a shard commits chunk files as it goes (each whole or
//! absent, listed with row counts and checksums in a manifest), resumes after its last committed chunk when
//! started again, and finally becomes `part-KKKKK-of-NNNNN.parquet`. [`check`] proves a folder complete
//! (every part, the same settings, every id once, nothing partial); [`merge`] concatenates the parts.

use crate::meta::describe_differences;
use crate::reader::{VectorFile, batch_ids};
use crate::writer::{Ids, Layout, ParquetVectorWriter};
use crate::{Error, FileMeta};
use embedkit_core::{AtomicFile, write_atomic};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Name of the manifest inside a shard's staging folder.
pub const MANIFEST: &str = "manifest.json";

/// `part-KKKKK-of-NNNNN.parquet` (K counts from 0).
pub fn part_file_name(shard: u32, shards: u32) -> String {
    format!("part-{shard:05}-of-{shards:05}.parquet")
}

/// The hidden folder a shard's chunks are committed to until the part is complete.
pub fn staging_dir_name(shard: u32, shards: u32) -> String {
    format!(".part-{shard:05}-of-{shards:05}.staging")
}

/// Parses `part-KKKKK-of-NNNNN.parquet` (or the staging folder name) into (K, N).
pub fn parse_part_name(name: &str) -> Option<(u32, u32)> {
    let core = name
        .strip_suffix(".parquet")
        .and_then(|s| s.strip_prefix("part-"))
        .or_else(|| {
            name.strip_suffix(".staging")
                .and_then(|s| s.strip_prefix(".part-"))
        })?;
    let (k, n) = core.split_once("-of-")?;
    Some((k.parse().ok()?, n.parse().ok()?))
}

/// Records `start..end` of shard `shard` of `shards` over `total` records: contiguous slices by position,
/// sizes differing by at most one, so every record is in exactly one shard and parts concatenate in order.
pub fn shard_range(total: u64, shard: u32, shards: u32) -> (u64, u64) {
    let at = |k: u32| (total as u128 * k as u128 / shards.max(1) as u128) as u64;
    (at(shard), at(shard + 1))
}

/// What a shard knows of its input: a changed input is an error on resume, not a silent mix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputInfo {
    /// The input as given (for messages only: workers may mount it at other paths).
    pub name: String,
    /// Records in the whole input.
    pub records: u64,
    /// Size of the input file in bytes.
    pub bytes: u64,
}

/// One committed chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkEntry {
    /// File name inside the staging folder.
    pub file: String,
    /// Position of its first record in the input.
    pub first_record: u64,
    /// Rows it holds.
    pub rows: u64,
    /// Its size in bytes.
    pub bytes: u64,
    /// sha256 of its bytes (hex).
    pub sha256: String,
}

/// The staging folder's manifest, rewritten atomically after every chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Layout version of this file.
    pub format: u32,
    /// K.
    pub shard: u32,
    /// N.
    pub shards: u32,
    /// The settings the vectors are made with (see [`FileMeta::settings`]).
    pub settings: BTreeMap<String, String>,
    /// The input.
    pub input: InputInfo,
    /// First record of the shard.
    pub start: u64,
    /// One past its last record.
    pub end: u64,
    /// Records per chunk.
    pub chunk_size: u64,
    /// Committed chunks, in order, without gaps.
    pub chunks: Vec<ChunkEntry>,
}

impl Manifest {
    /// What must not change between a run and its resumption, as named settings.
    fn identity(&self) -> BTreeMap<String, String> {
        let mut m = self.settings.clone();
        m.insert("input records".into(), self.input.records.to_string());
        m.insert("input bytes".into(), self.input.bytes.to_string());
        m.insert("chunk size".into(), self.chunk_size.to_string());
        m
    }
}

/// A `Write` that hashes and counts what passes through.
pub struct HashingWriter<W: Write> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hash: Sha256::new(),
            bytes: 0,
        }
    }

    /// The inner writer, the hex sha256 and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex(&self.hash.finalize()), self.bytes)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn file_sha256(path: &Path) -> Result<(String, u64), Error> {
    let mut f = std::fs::File::open(path).map_err(Error::io("read", path))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(Error::io("read", path))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((hex(&hash.finalize()), bytes))
}

/// What one shard is to produce.
#[derive(Debug, Clone)]
pub struct ShardSpec {
    /// The output folder (created if missing).
    pub dir: PathBuf,
    /// K (from 0).
    pub shard: u32,
    /// N.
    pub shards: u32,
    /// Settings and info (embedkit version) of the vectors.
    pub meta: FileMeta,
    /// Columns.
    pub layout: Layout,
    /// The input.
    pub input: InputInfo,
    /// Records per committed chunk.
    pub chunk_size: u64,
    /// Rows per row group.
    pub row_group_rows: usize,
    /// Replace a finished part or a staging folder made with other settings instead of refusing.
    pub overwrite: bool,
}

/// Where a shard stands when a worker starts it.
pub enum ShardState {
    /// The part file exists with the same settings: nothing to do.
    Complete {
        /// Its rows.
        rows: u64,
    },
    /// Chunks remain (maybe all of them).
    Pending(Box<ShardJob>),
}

/// A shard being embedded: its staging folder and manifest.
pub struct ShardJob {
    spec: ShardSpec,
    staging: PathBuf,
    manifest: Manifest,
    resumed: usize,
}

impl ShardJob {
    /// Looks at the output folder: a finished part with the same settings → [`ShardState::Complete`]; with
    /// other settings → [`Error::SettingsChanged`] unless `overwrite`. A staging folder with the same settings
    /// is resumed after its last chunk whose size and checksum still match; anything not in its manifest
    /// (a chunk committed just before a kill, temp files) is removed.
    pub fn open(spec: ShardSpec) -> Result<ShardState, Error> {
        if spec.shards == 0 || spec.shard >= spec.shards {
            return Err(Error::invalid(
                &spec.dir,
                format!(
                    "shard {}/{} does not exist (K counts from 0 to N-1)",
                    spec.shard, spec.shards
                ),
            ));
        }
        std::fs::create_dir_all(&spec.dir).map_err(Error::io("create", &spec.dir))?;
        let part = spec.dir.join(part_file_name(spec.shard, spec.shards));
        let staging = spec.dir.join(staging_dir_name(spec.shard, spec.shards));
        let (start, end) = shard_range(spec.input.records, spec.shard, spec.shards);
        let fresh = Manifest {
            format: 1,
            shard: spec.shard,
            shards: spec.shards,
            settings: spec.meta.settings.clone(),
            input: spec.input.clone(),
            start,
            end,
            chunk_size: spec.chunk_size.max(1),
            chunks: Vec::new(),
        };
        if part.exists() {
            let done = VectorFile::open(&part)?;
            let mut then = done.meta.settings.clone();
            then.insert(
                "input records".into(),
                done.meta
                    .info
                    .get("input_records")
                    .cloned()
                    .unwrap_or_default(),
            );
            let mut now = fresh.settings.clone();
            now.insert("input records".into(), fresh.input.records.to_string());
            let diff = describe_differences(&then, &now);
            if diff.is_empty() {
                remove_dir(&staging)?;
                return Ok(ShardState::Complete { rows: done.rows });
            }
            if !spec.overwrite {
                return Err(Error::SettingsChanged {
                    path: part,
                    differences: diff,
                });
            }
            std::fs::remove_file(&part).map_err(Error::io("remove", &part))?;
        }
        let mut manifest = fresh.clone();
        let mut resumed = 0;
        let manifest_path = staging.join(MANIFEST);
        if manifest_path.exists() {
            let bytes = std::fs::read(&manifest_path).map_err(Error::io("read", &manifest_path))?;
            let old: Manifest = serde_json::from_slice(&bytes)
                .map_err(|e| Error::invalid(&manifest_path, format!("unreadable manifest: {e}")))?;
            let diff = describe_differences(&old.identity(), &fresh.identity());
            if !diff.is_empty() && !spec.overwrite {
                return Err(Error::SettingsChanged {
                    path: staging,
                    differences: diff,
                });
            }
            if diff.is_empty() {
                for c in old.chunks {
                    let (sha, bytes) = match file_sha256(&staging.join(&c.file)) {
                        Ok(x) => x,
                        Err(_) => break,
                    };
                    if sha != c.sha256 || bytes != c.bytes {
                        break;
                    }
                    manifest.chunks.push(c);
                }
                resumed = manifest.chunks.len();
            }
        }
        if resumed == 0 {
            remove_dir(&staging)?;
        }
        std::fs::create_dir_all(&staging).map_err(Error::io("create", &staging))?;
        // Chunks written after the manifest's last update, and temp files of a killed write, are not part of
        // the shard: remove them so that nothing but committed chunks is ever read.
        for entry in std::fs::read_dir(&staging).map_err(Error::io("list", &staging))? {
            let entry = entry.map_err(Error::io("list", &staging))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != MANIFEST && !manifest.chunks.iter().any(|c| c.file == name) {
                let p = entry.path();
                std::fs::remove_file(&p).map_err(Error::io("remove", &p))?;
            }
        }
        let mut job = ShardJob {
            spec,
            staging,
            manifest,
            resumed,
        };
        job.save_manifest()?;
        Ok(ShardState::Pending(Box::new(job)))
    }

    /// Chunks found committed when the job was opened.
    pub fn resumed_chunks(&self) -> usize {
        self.resumed
    }

    /// Records `start..end` of the whole shard.
    pub fn range(&self) -> (u64, u64) {
        (self.manifest.start, self.manifest.end)
    }

    /// Records already committed.
    pub fn committed_records(&self) -> u64 {
        self.manifest.chunks.iter().map(|c| c.rows).sum()
    }

    /// The chunks still to embed: (index, first record, one past the last). Chunks end on multiples of the
    /// chunk size counted from record 0 (the shard's first and last chunks may be shorter), so the chunks of
    /// all shards lie on one grid whatever N is.
    pub fn remaining(&self) -> Vec<(usize, u64, u64)> {
        let m = &self.manifest;
        let mut out = Vec::new();
        let mut s = m.start + self.committed_records();
        let mut i = m.chunks.len();
        while s < m.end {
            let e = ((s / m.chunk_size + 1) * m.chunk_size).min(m.end);
            out.push((i, s, e));
            s = e;
            i += 1;
        }
        out
    }

    /// Writes chunk `index` (records `start..end`): `fill` writes its rows; the file is then committed and
    /// the manifest updated. Must be called for the chunks of [`ShardJob::remaining`], in order.
    pub fn write_chunk<E: From<Error>>(
        &mut self,
        index: usize,
        start: u64,
        end: u64,
        fill: impl FnOnce(&mut ParquetVectorWriter<HashingWriter<AtomicFile>>) -> Result<(), E>,
    ) -> Result<(), E> {
        let expected = self.remaining().first().copied();
        if expected != Some((index, start, end)) {
            return Err(Error::invalid(
                &self.staging,
                format!("chunk {index} ({start}..{end}) is not the next one ({expected:?})"),
            )
            .into());
        }
        let name = format!("chunk-{index:06}.parquet");
        let path = self.staging.join(&name);
        let file = AtomicFile::create(&path).map_err(Error::io("create", &path))?;
        let mut meta = self.spec.meta.clone();
        meta.info.insert("records".into(), format!("{start}-{end}"));
        let mut w = ParquetVectorWriter::new(
            HashingWriter::new(file),
            &path,
            self.spec.layout,
            &meta,
            self.spec.row_group_rows,
        )?;
        fill(&mut w)?;
        let rows = w.rows();
        if rows != end - start {
            return Err(Error::invalid(
                &path,
                format!(
                    "chunk holds {rows} rows, records {start}..{end} are {}",
                    end - start
                ),
            )
            .into());
        }
        let (file, sha256, bytes) = w.finish()?.finish();
        file.commit().map_err(Error::io("write", &path))?;
        self.manifest.chunks.push(ChunkEntry {
            file: name,
            first_record: start,
            rows,
            bytes,
            sha256,
        });
        self.save_manifest()?;
        Ok(())
    }

    fn save_manifest(&mut self) -> Result<(), Error> {
        let path = self.staging.join(MANIFEST);
        let json = serde_json::to_vec_pretty(&self.manifest)
            .map_err(|e| Error::invalid(&path, e.to_string()))?;
        write_atomic(&path, &json).map_err(Error::io("write", &path))
    }

    /// Concatenates the chunks into the part file (atomically) and removes the staging folder; returns the
    /// part's rows.
    pub fn finish(self) -> Result<u64, Error> {
        if !self.remaining().is_empty() {
            return Err(Error::invalid(
                &self.staging,
                "chunks remain to be embedded",
            ));
        }
        let spec = &self.spec;
        let path = spec.dir.join(part_file_name(spec.shard, spec.shards));
        let mut meta = spec.meta.clone();
        let m = &self.manifest;
        meta.info
            .insert("shard".into(), format!("{}/{}", m.shard, m.shards));
        meta.info
            .insert("records".into(), format!("{}-{}", m.start, m.end));
        meta.info
            .insert("input_records".into(), m.input.records.to_string());
        meta.info
            .insert("rows".into(), (m.end - m.start).to_string());
        let file = AtomicFile::create(&path).map_err(Error::io("create", &path))?;
        let mut w = ParquetVectorWriter::new(file, &path, spec.layout, &meta, spec.row_group_rows)?;
        for c in &m.chunks {
            let chunk = VectorFile::open(&self.staging.join(&c.file))?;
            for b in chunk.batches()? {
                w.write_batch(&b?)?;
            }
        }
        let rows = w.rows();
        w.finish()?.commit().map_err(Error::io("write", &path))?;
        remove_dir(&self.staging)?;
        Ok(rows)
    }
}

fn remove_dir(dir: &Path) -> Result<(), Error> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("remove", dir)(e)),
        _ => Ok(()),
    }
}

/// What [`check`] found.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// N (0 when no part was found).
    pub shards: u32,
    /// Part files found.
    pub parts: usize,
    /// Rows over all parts.
    pub rows: u64,
    /// The settings shared by the parts (those of the first part).
    pub settings: BTreeMap<String, String>,
    /// Every problem, one line each; empty means the folder is complete and consistent.
    pub problems: Vec<String>,
}

/// Checks a folder of parts: all N parts present, no staging folder or temp file (nothing partial), the
/// same settings in every part, record ranges tiling the input, and every id exactly once (for positional
/// ids: each row's id is its record's position).
pub fn check(dir: &Path) -> Result<CheckReport, Error> {
    let mut report = CheckReport::default();
    let mut parts: BTreeMap<u32, PathBuf> = BTreeMap::new();
    let mut counts = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(dir).map_err(Error::io("list", dir))? {
        let entry = entry.map_err(Error::io("list", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".staging") {
            let chunks = std::fs::read_dir(entry.path()).map_or(0, |d| d.count().saturating_sub(1));
            report.problems.push(format!(
                "{name}: an unfinished shard ({chunks} chunk files) — run its worker again"
            ));
        } else if name.starts_with(".embedkit-") && name.ends_with(".tmp") {
            report.problems.push(format!(
                "{name}: a temp file of a write in progress or killed"
            ));
        } else if let Some((k, n)) = parse_part_name(&name) {
            counts.insert(n);
            parts.insert(k, entry.path());
        }
    }
    if counts.len() > 1 {
        report
            .problems
            .push(format!("parts of different shard counts: {counts:?}"));
    }
    report.shards = counts.iter().copied().max().unwrap_or(0);
    report.parts = parts.len();
    if parts.is_empty() {
        report.problems.push(format!(
            "no part files (part-KKKKK-of-NNNNN.parquet) in {}",
            dir.display()
        ));
        return Ok(report);
    }
    for k in 0..report.shards {
        if !parts.contains_key(&k) {
            report
                .problems
                .push(format!("missing {}", part_file_name(k, report.shards)));
        }
    }
    let mut first: Option<(u32, BTreeMap<String, String>)> = None;
    let mut next_record = 0u64;
    let mut input_records = None;
    let mut int_ids: Vec<(i64, u32)> = Vec::new();
    let mut text_ids: HashMap<String, u32> = HashMap::new();
    let mut duplicates = 0u64;
    for (&k, path) in &parts {
        let f = VectorFile::open(path)?;
        let label = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match &first {
            None => first = Some((k, f.meta.settings.clone())),
            Some((k0, s0)) => {
                let diff = describe_differences(s0, &f.meta.settings);
                if !diff.is_empty() {
                    report
                        .problems
                        .push(format!("{label}: settings differ from part {k0}: {diff}"));
                }
            }
        }
        let range = f.meta.info.get("records").and_then(|r| {
            let (a, b) = r.split_once('-')?;
            Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?))
        });
        let Some((start, end)) = range else {
            report
                .problems
                .push(format!("{label}: no record range in its metadata"));
            continue;
        };
        if start != next_record && parts.contains_key(&k.wrapping_sub(1)) | (k == 0) {
            report.problems.push(format!(
                "{label}: starts at record {start}, the previous part ends at {next_record}"
            ));
        }
        next_record = end;
        let total = f.meta.info.get("input_records").cloned();
        if input_records.get_or_insert(total.clone()) != &total {
            report.problems.push(format!(
                "{label}: made from an input of {total:?} records, not {input_records:?}"
            ));
        }
        let positional = f.meta.settings.get("ids").map(String::as_str) == Some("position");
        let mut rows = 0u64;
        for b in f.batches()? {
            let b = b?;
            match batch_ids(&b, path)? {
                Ids::Int(v) => {
                    for (i, id) in v.into_iter().enumerate() {
                        let want = start + rows + i as u64;
                        if positional && id as u64 != want {
                            report.problems.push(format!(
                                "{label}: row {} has id {id}, its record position is {want}",
                                rows + i as u64
                            ));
                        }
                        int_ids.push((id, k));
                    }
                }
                Ids::Text(v) => {
                    for id in v {
                        if let Some(other) = text_ids.insert(id.clone(), k) {
                            duplicates += 1;
                            if duplicates <= 10 {
                                report
                                    .problems
                                    .push(format!("id {id:?} is in parts {other} and {k}"));
                            }
                        }
                    }
                }
            }
            rows += b.num_rows() as u64;
        }
        if rows != end - start || rows != f.rows {
            report
                .problems
                .push(format!("{label}: {rows} rows for records {start}..{end}"));
        }
        report.rows += rows;
    }
    if let Some(Some(total)) = &input_records
        && total.parse::<u64>().ok() != Some(next_record)
        && report.parts as u32 == report.shards
    {
        report.problems.push(format!(
            "the parts end at record {next_record}, the input has {total}"
        ));
    }
    int_ids.sort_unstable();
    for w in int_ids.windows(2) {
        if w[0].0 == w[1].0 {
            duplicates += 1;
            if duplicates <= 10 {
                report.problems.push(format!(
                    "id {} is in parts {} and {}",
                    w[0].0, w[0].1, w[1].1
                ));
            }
        }
    }
    if duplicates > 10 {
        report
            .problems
            .push(format!("{duplicates} duplicate ids in all"));
    }
    report.settings = first.map(|(_, s)| s).unwrap_or_default();
    Ok(report)
}

/// Checks `dir` and concatenates its parts in order into one file at `output` (atomically); returns the rows.
pub fn merge(dir: &Path, output: &Path, row_group_rows: usize) -> Result<u64, Error> {
    let report = check(dir)?;
    if !report.problems.is_empty() {
        return Err(Error::invalid(
            dir,
            format!("not merged: {}", report.problems.join("; ")),
        ));
    }
    let paths: Vec<PathBuf> = (0..report.shards)
        .map(|k| dir.join(part_file_name(k, report.shards)))
        .collect();
    let first = VectorFile::open(&paths[0])?;
    let mut meta = FileMeta {
        settings: first.meta.settings.clone(),
        info: BTreeMap::new(),
    };
    for key in ["version", "input_records"] {
        if let Some(v) = first.meta.info.get(key) {
            meta.info.insert(key.into(), v.clone());
        }
    }
    meta.info.insert("rows".into(), report.rows.to_string());
    let file = AtomicFile::create(output).map_err(Error::io("create", output))?;
    let mut w = ParquetVectorWriter::new(file, output, first.layout, &meta, row_group_rows)?;
    for p in &paths {
        for b in VectorFile::open(p)?.batches()? {
            w.write_batch(&b?)?;
        }
    }
    let rows = w.rows();
    w.finish()?.commit().map_err(Error::io("write", output))?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_ranges_tile_the_input() {
        for total in [0u64, 1, 7, 20_000, 20_001] {
            for n in 1..6 {
                let mut next = 0;
                for k in 0..n {
                    let (s, e) = shard_range(total, k, n);
                    assert_eq!(s, next);
                    assert!(e - s <= total / n as u64 + 1);
                    next = e;
                }
                assert_eq!(next, total);
            }
        }
        assert_eq!(parse_part_name(&part_file_name(3, 12)), Some((3, 12)));
        assert_eq!(parse_part_name(&staging_dir_name(0, 4)), Some((0, 4)));
        assert_eq!(parse_part_name("all.parquet"), None);
    }
}
