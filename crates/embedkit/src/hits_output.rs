//! How `embedkit search` writes hits, for single- and multi-vector indexes alike: a table per query, one JSON
//! line per hit, or one JSON array, to stdout or atomically to a file.

use crate::documents::Doc;
use crate::output::Sink;
use anyhow::Result;
use clap::ValueEnum;
use embedkit_vectors::{Hit, Index};
use std::io::Write;
use std::path::Path;

/// How `embedkit search` prints hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SearchFormat {
    /// A readable table per query.
    Table,
    /// One `{"query_id", "doc_id", "rank", "score"}` per line.
    Jsonl,
    /// One JSON array of `{"query_id", "query", "hits": [{"rank", "doc_id", "score"}]}`.
    Json,
}

/// Writes the hits of one query after another in one [`SearchFormat`].
pub(crate) struct HitWriter {
    sink: Sink,
    format: SearchFormat,
    /// No query written yet (JSON needs commas between queries, the table blank lines).
    first: bool,
}

impl HitWriter {
    /// Starts the output: stdout when `output` is None, else a temporary file renamed into place by
    /// [`HitWriter::finish`].
    pub(crate) fn open(output: Option<&Path>, format: SearchFormat) -> Result<HitWriter> {
        let mut sink = Sink::open(output)?;
        if format == SearchFormat::Json {
            sink.write_all(b"[")?;
        }
        Ok(HitWriter {
            sink,
            format,
            first: true,
        })
    }

    /// Writes `query`'s `hits` (best first), naming documents by their ids in `index`.
    pub(crate) fn write(&mut self, index: &Index, query: &Doc, hits: &[Hit]) -> Result<()> {
        let qid = query.id.as_deref().unwrap_or("");
        match self.format {
            SearchFormat::Jsonl => {
                for (rank, h) in hits.iter().enumerate() {
                    let line = serde_json::json!({
                        "query_id": qid, "doc_id": index.id(h.row)?, "rank": rank + 1, "score": h.score,
                    });
                    writeln!(self.sink, "{line}")?;
                }
            }
            SearchFormat::Json => {
                let rows = hits
                    .iter()
                    .enumerate()
                    .map(|(rank, h)| {
                        Ok(serde_json::json!({"rank": rank + 1, "doc_id": index.id(h.row)?, "score": h.score}))
                    })
                    .collect::<Result<Vec<_>>>()?;
                if !self.first {
                    self.sink.write_all(b",")?;
                }
                let v = serde_json::json!({"query_id": qid, "query": query.text, "hits": rows});
                write!(self.sink, "{v}")?;
            }
            SearchFormat::Table => {
                if !self.first {
                    writeln!(self.sink)?;
                }
                writeln!(self.sink, "query {qid}: {}", query.text)?;
                writeln!(self.sink, "{:>4}  {:>9}  doc", "rank", "score")?;
                for (rank, h) in hits.iter().enumerate() {
                    writeln!(
                        self.sink,
                        "{:>4}  {:>9.4}  {}",
                        rank + 1,
                        h.score,
                        index.id(h.row)?
                    )?;
                }
            }
        }
        self.first = false;
        Ok(())
    }

    /// Ends the output (closing the JSON array) and, for a file, moves it into place.
    pub(crate) fn finish(mut self) -> Result<()> {
        if self.format == SearchFormat::Json {
            self.sink.write_all(b"]\n")?;
        }
        self.sink.finish()
    }
}
