//! Training and dev data: CSV, TSV or JSONL files of labelled pairs or (anchor, positive[, negative]) rows.
//!
//! CSV and TSV files start with a header naming the columns; JSONL files hold one object per line. Column
//! names: `text1`/`sentence1`, `text2`/`sentence2`, `label`/`score` for pairs; `anchor`, `positive`,
//! `negative` for MNRL (which also accepts `text1`/`text2`). Every bad row is counted and the first is
//! reported with its line number.

use crate::TrainError;
use std::path::{Path, PathBuf};

/// What the rows hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    /// (text1, text2, label).
    Pairs,
    /// (anchor, positive[, negative]).
    Triplets,
}

/// One training example.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The texts, one per column.
    pub texts: Vec<String>,
    /// The similarity label (pairs only).
    pub label: Option<f32>,
    /// 1-based line in the file (for messages).
    pub line: usize,
}

/// A whole data file.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// The file it came from.
    pub path: PathBuf,
    /// What the rows hold.
    pub kind: DataKind,
    /// The rows, in file order.
    pub examples: Vec<Example>,
}

impl Dataset {
    /// Texts per example (2 for pairs; 2 or 3 for triplets).
    pub fn columns(&self) -> usize {
        self.examples.first().map_or(2, |e| e.texts.len())
    }
}

const TEXT1: &[&str] = &["text1", "sentence1", "anchor", "query"];
const TEXT2: &[&str] = &["text2", "sentence2", "positive"];
const NEGATIVE: &[&str] = &["negative", "text3"];
const LABEL: &[&str] = &["label", "score"];

#[derive(Clone, Copy)]
enum Format {
    Csv,
    Tsv,
    Jsonl,
}

fn format_of(path: &Path) -> Result<Format, TrainError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "csv" => Ok(Format::Csv),
        "tsv" | "tab" => Ok(Format::Tsv),
        "jsonl" | "ndjson" | "json" => Ok(Format::Jsonl),
        _ => Err(TrainError::DataFile {
            path: path.to_path_buf(),
            message: "unknown format: name it .csv, .tsv or .jsonl".into(),
        }),
    }
}

/// Which field holds which column.
struct Columns {
    text1: String,
    text2: String,
    negative: Option<String>,
    label: Option<String>,
}

fn pick(names: &[String], wanted: &[&str]) -> Option<String> {
    wanted
        .iter()
        .find_map(|w| names.iter().find(|n| n.trim().eq_ignore_ascii_case(w)))
        .cloned()
}

fn columns_for(names: &[String], kind: DataKind, path: &Path) -> Result<Columns, TrainError> {
    let missing = |what: &str| TrainError::DataFile {
        path: path.to_path_buf(),
        message: format!(
            "no {what} column (found: {}); pairs need text1,text2,label, MNRL needs anchor,positive[,negative]",
            names.join(", ")
        ),
    };
    let text1 = pick(names, TEXT1).ok_or_else(|| missing("first text"))?;
    let text2 = pick(names, TEXT2).ok_or_else(|| missing("second text"))?;
    Ok(match kind {
        DataKind::Pairs => Columns {
            text1,
            text2,
            negative: None,
            label: Some(pick(names, LABEL).ok_or_else(|| missing("label"))?),
        },
        DataKind::Triplets => Columns {
            text1,
            text2,
            negative: pick(names, NEGATIVE),
            label: None,
        },
    })
}

/// Collects the first bad row and counts the rest.
struct Problems {
    path: PathBuf,
    first: Option<(usize, String)>,
    count: usize,
}

impl Problems {
    fn add(&mut self, line: usize, message: String) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some((line, message));
        }
    }

    fn finish(self) -> Result<(), TrainError> {
        match self.first {
            None => Ok(()),
            Some((line, mut message)) => {
                if self.count > 1 {
                    message.push_str(&format!(" (and {} more bad rows)", self.count - 1));
                }
                Err(TrainError::Data {
                    path: self.path,
                    line,
                    message,
                })
            }
        }
    }
}

fn parse_label(s: &str) -> Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(format!("label '{s}' is not a finite number")),
    }
}

/// Reads a data file; the format follows the extension.
pub fn read_dataset(path: &Path, kind: DataKind) -> Result<Dataset, TrainError> {
    let format = format_of(path)?;
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| TrainError::DataFile {
        path: path.to_path_buf(),
        message: format!("not UTF-8 (byte {})", e.utf8_error().valid_up_to()),
    })?;
    let mut problems = Problems {
        path: path.to_path_buf(),
        first: None,
        count: 0,
    };
    let examples = match format {
        Format::Csv | Format::Tsv => read_delimited(path, &text, format, kind, &mut problems)?,
        Format::Jsonl => read_jsonl(path, &text, kind, &mut problems)?,
    };
    problems.finish()?;
    if examples.is_empty() {
        return Err(TrainError::DataFile {
            path: path.to_path_buf(),
            message: "no rows".into(),
        });
    }
    let width = examples[0].texts.len();
    if let Some(e) = examples.iter().find(|e| e.texts.len() != width) {
        return Err(TrainError::Data {
            path: path.to_path_buf(),
            line: e.line,
            message: "some rows have a negative and others do not".into(),
        });
    }
    Ok(Dataset {
        path: path.to_path_buf(),
        kind,
        examples,
    })
}

fn read_delimited(
    path: &Path,
    text: &str,
    format: Format,
    kind: DataKind,
    problems: &mut Problems,
) -> Result<Vec<Example>, TrainError> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(if matches!(format, Format::Tsv) {
            b'\t'
        } else {
            b','
        })
        .quoting(matches!(format, Format::Csv))
        .flexible(true)
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| TrainError::DataFile {
            path: path.to_path_buf(),
            message: format!("cannot read the header: {e}"),
        })?
        .iter()
        .map(str::to_string)
        .collect();
    let cols = columns_for(&header, kind, path)?;
    let idx = |name: &String| header.iter().position(|h| h == name);
    let i1 = idx(&cols.text1);
    let i2 = idx(&cols.text2);
    let ineg = cols.negative.as_ref().and_then(idx);
    let ilabel = cols.label.as_ref().and_then(idx);
    let mut out = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line() as usize);
                problems.add(line, format!("unreadable row: {e}"));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line() as usize);
        if record.len() != header.len() {
            problems.add(
                line,
                format!("{} fields, the header has {}", record.len(), header.len()),
            );
            continue;
        }
        let get = |i: Option<usize>| i.and_then(|i| record.get(i)).map(str::to_string);
        let mut texts = vec![get(i1).unwrap_or_default(), get(i2).unwrap_or_default()];
        if ineg.is_some() {
            texts.push(get(ineg).unwrap_or_default());
        }
        let label = match ilabel {
            Some(_) => match parse_label(&get(ilabel).unwrap_or_default()) {
                Ok(v) => Some(v),
                Err(m) => {
                    problems.add(line, m);
                    continue;
                }
            },
            None => None,
        };
        out.push(Example { texts, label, line });
    }
    Ok(out)
}

fn read_jsonl(
    path: &Path,
    text: &str,
    kind: DataKind,
    problems: &mut Problems,
) -> Result<Vec<Example>, TrainError> {
    let mut out = Vec::new();
    let mut cols: Option<Columns> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let obj = match serde_json::from_str::<serde_json::Value>(raw) {
            Ok(serde_json::Value::Object(o)) => o,
            Ok(_) => {
                problems.add(line, "not a JSON object".into());
                continue;
            }
            Err(e) => {
                problems.add(line, format!("invalid JSON: {e}"));
                continue;
            }
        };
        if cols.is_none() {
            let names: Vec<String> = obj.keys().cloned().collect();
            cols = Some(columns_for(&names, kind, path)?);
        }
        let Some(c) = &cols else { continue };
        let text_of = |name: &str| -> Result<String, String> {
            match obj.get(name) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(format!("\"{name}\" is not a string")),
                None => Err(format!("no \"{name}\" field")),
            }
        };
        let mut texts = Vec::with_capacity(3);
        let mut bad = None;
        let mut names = vec![c.text1.as_str(), c.text2.as_str()];
        if let Some(n) = &c.negative {
            names.push(n);
        }
        for name in names {
            match text_of(name) {
                Ok(t) => texts.push(t),
                Err(m) => {
                    bad = Some(m);
                    break;
                }
            }
        }
        if let Some(m) = bad {
            problems.add(line, m);
            continue;
        }
        let label = match &c.label {
            Some(name) => {
                let v = match obj.get(name) {
                    Some(serde_json::Value::Number(n)) => n
                        .as_f64()
                        .map(|x| x as f32)
                        .filter(|x| x.is_finite())
                        .ok_or_else(|| format!("\"{name}\" is not a finite number")),
                    Some(serde_json::Value::String(s)) => parse_label(s),
                    Some(_) => Err(format!("\"{name}\" is not a number")),
                    None => Err(format!("no \"{name}\" field")),
                };
                match v {
                    Ok(v) => Some(v),
                    Err(m) => {
                        problems.add(line, m);
                        continue;
                    }
                }
            }
            None => None,
        };
        out.push(Example { texts, label, line });
    }
    Ok(out)
}
