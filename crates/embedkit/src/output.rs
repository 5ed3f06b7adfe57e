//! Writing vectors as JSON, JSONL, CSV or `.npy`, streamed in chunks, to stdout or atomically to a file
//! (Parquet goes through `shards.rs` and embedkit-parquet).

use anyhow::{Context, Result, bail};
use embedkit_core::AtomicFile;
use embedkit_core::Embeddings;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Output encodings of `embedkit embed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// One JSON document: `{"model", "dimensions", "embeddings": [[…], …]}`.
    Json,
    /// One `{"index": i, "embedding": […]}` per line, in input order.
    Jsonl,
    /// A numpy `.npy` float32 array of shape (texts, dims).
    Npy,
    /// One comma-separated row of floats per text, no header.
    Csv,
    /// Parquet: `id`, `embedding` (fixed-size list), optional `text`; the settings in the file metadata.
    Parquet,
}

impl OutputFormat {
    /// The format an output file's extension names (`.npy`; `.parquet`, `.pq`; `.csv`; `.json`; `.jsonl`,
    /// `.ndjson`; any case), or `None`: so `-o vectors.npy` writes a numpy array, not JSON lines under a
    /// `.npy` name.
    pub fn from_extension(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "npy" => OutputFormat::Npy,
            "parquet" | "pq" => OutputFormat::Parquet,
            "csv" => OutputFormat::Csv,
            "json" => OutputFormat::Json,
            "jsonl" | "ndjson" => OutputFormat::Jsonl,
            _ => return None,
        })
    }
}

/// Where output goes: stdout, or a temp file renamed over the target when complete (so a killed run never
/// leaves a partial file under the target's name).
pub enum Sink {
    /// Standard output.
    Stdout(BufWriter<std::io::Stdout>),
    /// A temporary file next to its final path.
    File(BufWriter<AtomicFile>, PathBuf),
}

impl Sink {
    /// Opens stdout (`None` or `-`) or a temp file beside `path`.
    pub fn open(path: Option<&Path>) -> Result<Self> {
        match path {
            None => Ok(Sink::Stdout(BufWriter::new(std::io::stdout()))),
            Some(p) if p.as_os_str() == "-" => Ok(Sink::Stdout(BufWriter::new(std::io::stdout()))),
            Some(p) => {
                let tmp = AtomicFile::create(p)
                    .with_context(|| format!("cannot create a file beside '{}'", p.display()))?;
                Ok(Sink::File(BufWriter::new(tmp), p.to_path_buf()))
            }
        }
    }

    /// Flushes and, for a file, renames it into place.
    pub fn finish(self) -> Result<()> {
        match self {
            Sink::Stdout(mut w) => w.flush().context("cannot write to standard output"),
            Sink::File(w, path) => {
                // Readable by everyone (rw-r--r--) like any file the user creates, synced, renamed into place.
                w.into_inner()
                    .map_err(|e| e.into_error())
                    .and_then(AtomicFile::commit)
                    .with_context(|| format!("cannot write '{}'", path.display()))
            }
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Stdout(w) => w.write(buf),
            Sink::File(w, _) => w.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Stdout(w) => w.flush(),
            Sink::File(w, _) => w.flush(),
        }
    }
}

/// Writes vectors chunk by chunk in one format.
pub struct VectorWriter {
    sink: Sink,
    format: OutputFormat,
    written: usize,
}

impl VectorWriter {
    /// Starts the output: `rows × dims` vectors will follow.
    pub fn begin(
        mut sink: Sink,
        format: OutputFormat,
        model: &str,
        rows: usize,
        dims: usize,
    ) -> Result<Self> {
        match format {
            OutputFormat::Json => write!(
                sink,
                "{{\"model\":{},\"dimensions\":{dims},\"embeddings\":[",
                serde_json::to_string(model)?
            )?,
            OutputFormat::Npy => write_npy_header(&mut sink, rows, dims)?,
            OutputFormat::Jsonl | OutputFormat::Csv => {}
            OutputFormat::Parquet => {
                bail!("Parquet is written by embedkit-parquet, not VectorWriter")
            }
        }
        Ok(Self {
            sink,
            format,
            written: 0,
        })
    }

    /// Appends the next vectors, in order.
    pub fn write(&mut self, chunk: &Embeddings) -> Result<()> {
        for row in chunk.iter() {
            match self.format {
                OutputFormat::Json => {
                    if self.written > 0 {
                        self.sink.write_all(b",")?;
                    }
                    write_json_array(&mut self.sink, row)?;
                }
                OutputFormat::Jsonl => {
                    write!(self.sink, "{{\"index\":{},\"embedding\":", self.written)?;
                    write_json_array(&mut self.sink, row)?;
                    self.sink.write_all(b"}\n")?;
                }
                OutputFormat::Csv => {
                    for (i, v) in row.iter().enumerate() {
                        if i > 0 {
                            self.sink.write_all(b",")?;
                        }
                        write!(self.sink, "{v}")?;
                    }
                    self.sink.write_all(b"\n")?;
                }
                OutputFormat::Npy => {
                    for v in row {
                        self.sink.write_all(&v.to_le_bytes())?;
                    }
                }
                OutputFormat::Parquet => bail!("Parquet is written by embedkit-parquet"),
            }
            self.written += 1;
        }
        Ok(())
    }

    /// Closes the document and commits the file.
    pub fn finish(mut self) -> Result<()> {
        if self.format == OutputFormat::Json {
            self.sink.write_all(b"]}\n")?;
        }
        self.sink.finish()
    }
}

/// Writes `[v0,v1,…]` with the shortest text that reads back as the same f32. NaN and infinities, which JSON
/// cannot hold, become null.
pub fn write_json_array(w: &mut impl Write, row: &[f32]) -> std::io::Result<()> {
    w.write_all(b"[")?;
    for (i, v) in row.iter().enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        if v.is_finite() {
            write!(w, "{v}")?;
        } else {
            w.write_all(b"null")?;
        }
    }
    w.write_all(b"]")
}

/// The `.npy` v1.0 header for a little-endian float32 C-order array of shape (rows, dims).
fn write_npy_header(w: &mut impl Write, rows: usize, dims: usize) -> std::io::Result<()> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dims}), }}");
    // The magic (6) + version (2) + length (2) + dict + padding + '\n' must be a multiple of 64.
    let unpadded = 10 + dict.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    let header_len = (dict.len() + pad + 1) as u16;
    w.write_all(b"\x93NUMPY\x01\x00")?;
    w.write_all(&header_len.to_le_bytes())?;
    w.write_all(dict.as_bytes())?;
    w.write_all(&vec![b' '; pad])?;
    w.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned() {
        let mut buf = Vec::new();
        write_npy_header(&mut buf, 3, 384).unwrap();
        assert_eq!(buf.len() % 64, 0);
        assert!(buf.starts_with(b"\x93NUMPY\x01\x00"));
        assert_eq!(*buf.last().unwrap(), b'\n');
        let text = String::from_utf8_lossy(&buf[10..]);
        assert!(text.contains("'shape': (3, 384)"));
    }

    #[test]
    fn json_arrays_round_trip_and_null_non_finite() {
        let mut buf = Vec::new();
        write_json_array(&mut buf, &[0.1, -2.5e-8, f32::NAN]).unwrap();
        assert_eq!(String::from_utf8(buf).unwrap(), "[0.1,-0.000000025,null]");
    }
}
