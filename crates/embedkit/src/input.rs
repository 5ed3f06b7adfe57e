//! Reading the texts to embed: arguments, `.txt` (one per line), `.jsonl` (a field per record), or stdin.

use anyhow::{Context, Result, bail};
use std::io::Read;
use std::path::Path;

/// How an input file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputFormat {
    /// One text per line.
    Txt,
    /// One JSON object per line; the text is in `--field`.
    Jsonl,
}

/// Reads texts from `path` (`-` = stdin). The format comes from `format`, else from the extension (`.jsonl`,
/// `.json` → JSONL; anything else, and stdin, → text lines).
pub fn read_texts(path: &str, format: Option<InputFormat>, field: &str) -> Result<Vec<String>> {
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
    let format = format.unwrap_or_else(|| {
        let ext = Path::new(path)
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("jsonl") | Some("ndjson") | Some("json") => InputFormat::Jsonl,
            _ => InputFormat::Txt,
        }
    });
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
        let line_no = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let line = std::str::from_utf8(raw).map_err(|e| {
            anyhow::anyhow!(
                "{name}:{line_no}: invalid UTF-8 at byte {} of the line",
                e.valid_up_to() + 1
            )
        })?;
        match format {
            InputFormat::Txt => texts.push(line.to_string()),
            InputFormat::Jsonl => {
                if line.trim().is_empty() {
                    continue;
                }
                let value: serde_json::Value = serde_json::from_str(line)
                    .map_err(|e| anyhow::anyhow!("{name}:{line_no}: invalid JSON: {e}"))?;
                match value.get(field) {
                    Some(serde_json::Value::String(s)) => texts.push(s.clone()),
                    Some(other) => bail!(
                        "{name}:{line_no}: field '{field}' is {}, expected a string",
                        json_kind(other)
                    ),
                    None => bail!(
                        "{name}:{line_no}: record has no field '{field}' (choose another with --field)"
                    ),
                }
            }
        }
    }
    Ok(texts)
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
