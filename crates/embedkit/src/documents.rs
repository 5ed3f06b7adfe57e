//! The documents and queries the index and search commands read: .txt (one per line, ids are line numbers)
//! or JSONL records with an id, a text and an optional title (a BEIR corpus.jsonl / queries.jsonl), streamed
//! so that no input is read whole.

use crate::CHUNK;
use crate::input::{InputFormat, detect_format};
use anyhow::{Context, Result, anyhow, bail};
use embedkit_core::{Embedder, Embeddings, EncodeOptions};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

/// One document or query: its id (None for .txt input, where ids are line numbers) and text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Doc {
    pub(crate) id: Option<String>,
    pub(crate) text: String,
}

/// Streams documents from a .txt or JSONL file without reading it whole.
pub(crate) struct DocReader {
    reader: BufReader<File>,
    name: String,
    jsonl: bool,
    line_no: usize,
    pub(crate) bytes_read: u64,
    pub(crate) total_bytes: u64,
    id_field: String,
    text_field: String,
    title_field: String,
    buf: Vec<u8>,
}

impl DocReader {
    /// Opens `path`: JSONL when `format` says so or (without it) when the extension is .jsonl/.ndjson/.json,
    /// else one document per line; Parquet (by `format` or extension) is an error naming the file. JSONL
    /// records give their id, text and optional title in the named fields (an empty `title_field` ignores
    /// titles).
    pub(crate) fn open(
        path: &Path,
        format: Option<InputFormat>,
        id_field: &str,
        text_field: &str,
        title_field: &str,
    ) -> Result<DocReader> {
        let file = File::open(path).with_context(|| format!("cannot open '{}'", path.display()))?;
        let total_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        // The extensions `embed` knows; a Parquet file read as text lines would index its bytes.
        let format = detect_format(&path.to_string_lossy(), format);
        if format == InputFormat::Parquet {
            bail!(
                "'{}': index and search read .txt or JSONL documents, not Parquet (embed the Parquet \
                 file with `embedkit embed`, or write its texts to JSONL)",
                path.display()
            );
        }
        Ok(DocReader {
            reader: BufReader::with_capacity(1 << 20, file),
            name: path.display().to_string(),
            jsonl: format == InputFormat::Jsonl,
            line_no: 0,
            bytes_read: 0,
            total_bytes,
            id_field: id_field.to_string(),
            text_field: text_field.to_string(),
            title_field: title_field.to_string(),
            buf: Vec::new(),
        })
    }

    /// Up to `n` more documents; empty at the end of the file.
    pub(crate) fn next_batch(&mut self, n: usize) -> Result<Vec<Doc>> {
        // `n` may be usize::MAX ("the whole file", as for --queries): never reserve more than a chunk upfront.
        let mut docs = Vec::with_capacity(n.min(CHUNK));
        while docs.len() < n {
            self.buf.clear();
            let read = self
                .reader
                .read_until(b'\n', &mut self.buf)
                .with_context(|| format!("cannot read '{}'", self.name))?;
            if read == 0 {
                break;
            }
            self.bytes_read += read as u64;
            self.line_no += 1;
            let raw = self.buf.strip_suffix(b"\n").unwrap_or(&self.buf);
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let line = std::str::from_utf8(raw).map_err(|e| {
                anyhow!(
                    "{}:{}: invalid UTF-8 at byte {} of the line",
                    self.name,
                    self.line_no,
                    e.valid_up_to() + 1
                )
            })?;
            if !self.jsonl {
                docs.push(Doc {
                    id: None,
                    text: line.to_string(),
                });
                continue;
            }
            if line.trim().is_empty() {
                continue;
            }
            docs.push(self.parse_record(line)?);
        }
        Ok(docs)
    }

    fn parse_record(&self, line: &str) -> Result<Doc> {
        let at = || format!("{}:{}", self.name, self.line_no);
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| anyhow!("{}: invalid JSON: {e}", at()))?;
        let id = match v.get(&self.id_field) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(_) => bail!(
                "{}: field '{}' is not a string or number",
                at(),
                self.id_field
            ),
            None => bail!(
                "{}: record has no field '{}' (choose another with --id-field)",
                at(),
                self.id_field
            ),
        };
        let text = match v.get(&self.text_field) {
            Some(serde_json::Value::String(s)) => s.as_str(),
            Some(_) => bail!("{}: field '{}' is not a string", at(), self.text_field),
            None => bail!(
                "{}: record has no field '{}' (choose another with --text-field)",
                at(),
                self.text_field
            ),
        };
        let title = if self.title_field.is_empty() {
            ""
        } else {
            v.get(&self.title_field)
                .and_then(|t| t.as_str())
                .unwrap_or("")
        };
        // BEIR's convention: title and text joined by a space, stripped.
        let text = if title.is_empty() {
            text.to_string()
        } else {
            format!("{title} {text}").trim().to_string()
        };
        Ok(Doc { id: Some(id), text })
    }
}

/// The vectors of `docs`' texts, in order.
pub(crate) fn embed_docs(
    embedder: &dyn Embedder,
    docs: &[Doc],
    options: &EncodeOptions,
) -> Result<Embeddings> {
    let refs: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    Ok(embedder.embed(&refs, options)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &Path, format: Option<InputFormat>) -> Result<DocReader> {
        DocReader::open(path, format, "_id", "text", "title")
    }

    /// The extension picks JSONL or lines as `embed` does; Parquet, by extension or flag, is refused with
    /// the file's name instead of being read as lines of bytes.
    #[test]
    fn formats_follow_the_extension_and_parquet_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let jsonl = dir.path().join("corpus.NDJSON");
        std::fs::write(&jsonl, "{\"_id\": \"d1\", \"text\": \"a\"}\n").unwrap();
        let docs = open(&jsonl, None).unwrap().next_batch(10).unwrap();
        assert_eq!(docs[0].id.as_deref(), Some("d1"));
        let txt = dir.path().join("corpus.txt");
        std::fs::write(&txt, "{\"_id\": \"d1\"}\n").unwrap();
        let docs = open(&txt, None).unwrap().next_batch(10).unwrap();
        assert_eq!(
            (docs[0].id.as_ref(), docs[0].text.as_str()),
            (None, "{\"_id\": \"d1\"}")
        );
        let parquet = dir.path().join("corpus.parquet");
        std::fs::write(&parquet, b"PAR1").unwrap();
        for (path, format) in [(&parquet, None), (&txt, Some(InputFormat::Parquet))] {
            let err = format!(
                "{:#}",
                open(path, format).err().expect("Parquet is refused")
            );
            assert!(
                err.contains(&path.display().to_string()) && err.contains("not Parquet"),
                "{err}"
            );
        }
    }
}
