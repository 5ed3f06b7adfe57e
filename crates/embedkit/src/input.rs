//! Reading the texts to embed: arguments, `.txt` (one per line), `.jsonl` (a field per record), `.parquet`
//! (a string column), or stdin; whole, or streamed by record position for Parquet output and shards.

use anyhow::{Context, Result, bail};
use std::io::{BufRead, Read};
use std::path::Path;

/// How an input file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputFormat {
    /// One text per line.
    Txt,
    /// One JSON object per line; the text is in `--field`.
    Jsonl,
    /// A Parquet file; the text is the string column `--field`.
    Parquet,
}

/// One record of the input: its text, and its id when `--id-field` names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The `--id-field` value (JSON strings as they are, integers as decimal text).
    pub id: Option<String>,
    /// The text to embed.
    pub text: String,
}

/// The format `format` says, else the one of `path`'s extension (`.jsonl`, `.ndjson`, `.json` → JSONL;
/// `.parquet`, `.pq` → Parquet; anything else, and stdin, → text lines).
pub fn detect_format(path: &str, format: Option<InputFormat>) -> InputFormat {
    format.unwrap_or_else(|| {
        let ext = Path::new(path)
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("jsonl") | Some("ndjson") | Some("json") => InputFormat::Jsonl,
            Some("parquet") | Some("pq") => InputFormat::Parquet,
            _ => InputFormat::Txt,
        }
    })
}

/// Reads all texts from `path` (`-` = stdin) in `format`, else the format [`detect_format`] finds.
pub fn read_texts(path: &str, format: Option<InputFormat>, field: &str) -> Result<Vec<String>> {
    let format = detect_format(path, format);
    if format == InputFormat::Parquet {
        if path == "-" {
            bail!("Parquet input must be a file, not standard input");
        }
        let file = embedkit_parquet::TextFile::open(Path::new(path), field, None)?;
        let mut texts = Vec::new();
        file.read_range(0, file.rows(), 4096, |_, t| -> Result<()> {
            texts.extend(t);
            Ok(())
        })?;
        return Ok(texts);
    }
    let (bytes, name) = if path == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("cannot read standard input")?;
        (buf, "<stdin>".to_string())
    } else {
        let p = Path::new(path);
        if !p.exists() {
            bail!("input file '{path}' does not exist");
        }
        (
            std::fs::read(p).with_context(|| format!("cannot read input file '{path}'"))?,
            path.to_string(),
        )
    };
    parse_texts(&bytes, &name, format, field)
}

/// Splits `bytes` into texts. Errors name the source and the 1-based line.
pub fn parse_texts(
    bytes: &[u8],
    name: &str,
    format: InputFormat,
    field: &str,
) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    // A final newline ends the last line; it does not start an empty one.
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    for (i, raw) in lines.into_iter().enumerate() {
        if let Some(r) = parse_line(raw, name, i + 1, format, field, None)? {
            texts.push(r.text);
        }
    }
    Ok(texts)
}

/// One line of a `.txt` or `.jsonl` input as a record; `None` for a blank JSONL line (not a record). Errors
/// name the source and the 1-based line.
pub fn parse_line(
    raw: &[u8],
    name: &str,
    line_no: usize,
    format: InputFormat,
    field: &str,
    id_field: Option<&str>,
) -> Result<Option<Record>> {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let line = std::str::from_utf8(raw).map_err(|e| {
        anyhow::anyhow!(
            "{name}:{line_no}: invalid UTF-8 at byte {} of the line",
            e.valid_up_to() + 1
        )
    })?;
    match format {
        InputFormat::Txt => {
            if id_field.is_some() {
                bail!(
                    "{name}: --id-field needs JSONL or Parquet input (a .txt line has no fields)"
                );
            }
            Ok(Some(Record {
                id: None,
                text: line.to_string(),
            }))
        }
        InputFormat::Parquet => bail!("{name}: a Parquet file is not read line by line"),
        InputFormat::Jsonl => {
            if is_blank(line.as_bytes()) {
                return Ok(None);
            }
            let value: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| anyhow::anyhow!("{name}:{line_no}: invalid JSON: {e}"))?;
            let text = match value.get(field) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(other) => bail!(
                    "{name}:{line_no}: field '{field}' is {}, expected a string",
                    json_kind(other)
                ),
                None => bail!(
                    "{name}:{line_no}: record has no field '{field}' (choose another with --field)"
                ),
            };
            let id = match id_field.map(|f| (f, value.get(f))) {
                None => None,
                Some((_, Some(serde_json::Value::String(s)))) => Some(s.clone()),
                Some((_, Some(serde_json::Value::Number(n)))) if n.is_i64() || n.is_u64() => {
                    Some(n.to_string())
                }
                Some((f, Some(other))) => bail!(
                    "{name}:{line_no}: id field '{f}' is {}, expected a string or an integer",
                    json_kind(other)
                ),
                Some((f, None)) => bail!("{name}:{line_no}: record has no id field '{f}'"),
            };
            Ok(Some(Record { id, text }))
        }
    }
}

/// A JSONL line that holds no record (whitespace only).
fn is_blank(line: &[u8]) -> bool {
    std::str::from_utf8(line).is_ok_and(|l| l.trim().is_empty())
}

/// Records in a `.txt` or `.jsonl` file (lines; non-blank lines for JSONL), without parsing them.
pub fn count_records(path: &Path, format: InputFormat) -> Result<u64> {
    let mut r = std::io::BufReader::with_capacity(
        1 << 20,
        std::fs::File::open(path)
            .with_context(|| format!("cannot read input file '{}'", path.display()))?,
    );
    let mut line = Vec::new();
    let mut n = 0u64;
    loop {
        line.clear();
        let read = r
            .read_until(b'\n', &mut line)
            .with_context(|| format!("cannot read input file '{}'", path.display()))?;
        if read == 0 {
            return Ok(n);
        }
        let blank = format == InputFormat::Jsonl && is_blank(&line);
        n += u64::from(!blank);
    }
}

/// Streams records `start..end` (by position, counted as [`count_records`] counts) of a `.txt` or `.jsonl`
/// file to `each`, `batch` at a time; only those records are parsed.
pub fn read_record_range(
    path: &Path,
    format: InputFormat,
    field: &str,
    id_field: Option<&str>,
    (start, end): (u64, u64),
    batch: usize,
    mut each: impl FnMut(Vec<Record>) -> Result<()>,
) -> Result<()> {
    let name = path.display().to_string();
    let mut r = std::io::BufReader::with_capacity(
        1 << 20,
        std::fs::File::open(path).with_context(|| format!("cannot read input file '{name}'"))?,
    );
    let mut line = Vec::new();
    let (mut line_no, mut record) = (0usize, 0u64);
    let mut out = Vec::with_capacity(batch);
    while record < end {
        line.clear();
        let read = r
            .read_until(b'\n', &mut line)
            .with_context(|| format!("cannot read input file '{name}'"))?;
        if read == 0 {
            bail!("{name}: ends at record {record}, before record {end} (did the file change?)");
        }
        line_no += 1;
        let blank = format == InputFormat::Jsonl && is_blank(&line);
        if blank {
            continue;
        }
        if record >= start {
            let rec = parse_line(&line, &name, line_no, format, field, id_field)?
                .context("a non-blank line is a record")?;
            out.push(rec);
            if out.len() == batch {
                each(std::mem::take(&mut out))?;
            }
        }
        record += 1;
    }
    if !out.is_empty() {
        each(out)?;
    }
    Ok(())
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_lines_keep_empty_lines_but_not_the_final_newline() {
        let t = parse_texts(b"a\r\n\nb\n", "f", InputFormat::Txt, "text").unwrap();
        assert_eq!(t, vec!["a", "", "b"]);
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let err =
            parse_texts(b"ok\nbad \xff here\n", "in.txt", InputFormat::Txt, "text").unwrap_err();
        assert_eq!(
            err.to_string(),
            "in.txt:2: invalid UTF-8 at byte 5 of the line"
        );
    }

    #[test]
    fn jsonl_field_errors_name_the_line() {
        let data = b"{\"text\": \"a\"}\n\n{\"body\": \"b\"}\n";
        let err = parse_texts(data, "c.jsonl", InputFormat::Jsonl, "text").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("c.jsonl:3: record has no field 'text'"),
            "{err}"
        );
        let ok = parse_texts(data, "c.jsonl", InputFormat::Jsonl, "body");
        assert!(ok.is_err());
        let err = parse_texts(b"{\"text\": 5}", "c.jsonl", InputFormat::Jsonl, "text").unwrap_err();
        assert_eq!(
            err.to_string(),
            "c.jsonl:1: field 'text' is a number, expected a string"
        );
        let err = parse_texts(b"{oops", "c.jsonl", InputFormat::Jsonl, "text").unwrap_err();
        assert!(
            err.to_string().starts_with("c.jsonl:1: invalid JSON"),
            "{err}"
        );
    }
}
