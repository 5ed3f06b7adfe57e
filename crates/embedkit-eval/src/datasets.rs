//! Readers for evaluation data: BEIR/MTEB retrieval folders, scored sentence pairs (STS), gensim's Lee-50
//! documents with their human similarity matrix, and word-pair similarity lists (WordSim-353, SimLex-999).

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::EvalError;
use crate::metrics::Qrels;

/// One corpus document of a retrieval task.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// `_id`.
    pub id: String,
    /// `title` (empty when absent).
    pub title: String,
    /// `text`.
    pub text: String,
}

impl Document {
    /// The text a model encodes, as MTEB builds it for BEIR corpora: `title + " " + text`, stripped, when the
    /// document has a title; the stripped text otherwise.
    pub fn encode_text(&self) -> String {
        if self.title.is_empty() {
            self.text.trim().to_string()
        } else {
            format!("{} {}", self.title, self.text).trim().to_string()
        }
    }
}

/// A retrieval task in the BEIR layout: `corpus.jsonl`, `queries.jsonl`, `qrels/SPLIT.tsv`.
#[derive(Debug, Clone)]
pub struct RetrievalDataset {
    /// The folder it came from.
    pub dir: PathBuf,
    /// The qrels split used (`test`, `dev` …).
    pub split: String,
    /// Every document, in file order.
    pub corpus: Vec<Document>,
    /// The queries that have judgements in the split, in file order: `(id, text)`.
    pub queries: Vec<(String, String)>,
    /// Judgements of the split.
    pub qrels: Qrels,
}

fn read_to_string(path: &Path) -> Result<String, EvalError> {
    let bytes = fs::read(path).map_err(|e| EvalError::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        EvalError::parse(path, line, "invalid UTF-8")
    })
}

/// A JSON field as a string: strings as they are, numbers (some BEIR sets have numeric ids) printed.
fn field_str(obj: &serde_json::Map<String, Value>, key: &str) -> Option<String> {
    match obj.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

/// A JSONL record with its 1-based line number.
type Record = (usize, serde_json::Map<String, Value>);

fn read_jsonl(path: &Path) -> Result<Vec<Record>, EvalError> {
    let text = read_to_string(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(obj)) => out.push((i + 1, obj)),
            Ok(_) => return Err(EvalError::parse(path, i + 1, "expected a JSON object")),
            Err(e) => return Err(EvalError::parse(path, i + 1, format!("invalid JSON: {e}"))),
        }
    }
    Ok(out)
}

impl RetrievalDataset {
    /// Reads the BEIR folder `dir` with qrels split `split`.
    ///
    /// Queries without judgements in the split are left out (BEIR and MTEB do the same); a judgement naming a
    /// query or document that does not exist is an error, since it would silently lower every score.
    pub fn load(dir: &Path, split: &str) -> Result<Self, EvalError> {
        if !dir.is_dir() {
            return Err(EvalError::dataset(
                dir,
                "not a folder (expected corpus.jsonl, queries.jsonl and qrels/SPLIT.tsv)",
            ));
        }
        let corpus_path = dir.join("corpus.jsonl");
        let mut corpus = Vec::new();
        let mut doc_ids = std::collections::HashSet::new();
        for (line, obj) in read_jsonl(&corpus_path)? {
            let id = field_str(&obj, "_id")
                .ok_or_else(|| EvalError::parse(&corpus_path, line, "record has no field '_id'"))?;
            let text = field_str(&obj, "text").ok_or_else(|| {
                EvalError::parse(&corpus_path, line, "record has no field 'text'")
            })?;
            let title = field_str(&obj, "title").unwrap_or_default();
            if !doc_ids.insert(id.clone()) {
                return Err(EvalError::parse(
                    &corpus_path,
                    line,
                    format!("duplicate document id '{id}'"),
                ));
            }
            corpus.push(Document { id, title, text });
        }
        let qrels_path = dir.join("qrels").join(format!("{split}.tsv"));
        let qrels = load_qrels(&qrels_path)?;
        let queries_path = dir.join("queries.jsonl");
        let mut queries = Vec::new();
        let mut query_ids = std::collections::HashSet::new();
        for (line, obj) in read_jsonl(&queries_path)? {
            let id = field_str(&obj, "_id").ok_or_else(|| {
                EvalError::parse(&queries_path, line, "record has no field '_id'")
            })?;
            let text = field_str(&obj, "text").ok_or_else(|| {
                EvalError::parse(&queries_path, line, "record has no field 'text'")
            })?;
            if qrels.contains_key(&id) && query_ids.insert(id.clone()) {
                queries.push((id, text));
            }
        }
        for (query, docs) in &qrels {
            if !query_ids.contains(query) {
                return Err(EvalError::dataset(
                    &qrels_path,
                    format!("judges query '{query}', which queries.jsonl does not have"),
                ));
            }
            if let Some(doc) = docs.keys().find(|d| !doc_ids.contains(*d)) {
                return Err(EvalError::dataset(
                    &qrels_path,
                    format!(
                        "judges document '{doc}' for query '{query}', which corpus.jsonl does not have"
                    ),
                ));
            }
        }
        if queries.is_empty() {
            return Err(EvalError::dataset(&qrels_path, "no judged queries"));
        }
        Ok(RetrievalDataset {
            dir: dir.to_path_buf(),
            split: split.to_string(),
            corpus,
            queries,
            qrels,
        })
    }
}

/// Reads a qrels TSV: `query-id <TAB> corpus-id <TAB> score`, with or without BEIR's header line; TREC's
/// four-column form (`qid 0 docid grade`, whitespace-separated) is accepted too.
pub fn load_qrels(path: &Path) -> Result<Qrels, EvalError> {
    let text = read_to_string(path)?;
    let mut qrels = Qrels::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = if line.contains('\t') {
            line.split('\t').map(str::trim).collect()
        } else {
            line.split_whitespace().collect()
        };
        let (q, d, g) = match cols.as_slice() {
            [q, d, g] => (*q, *d, *g),
            [q, _, d, g] => (*q, *d, *g),
            _ => {
                return Err(EvalError::parse(
                    path,
                    line_no,
                    format!(
                        "expected 3 columns (query-id, corpus-id, score), found {}",
                        cols.len()
                    ),
                ));
            }
        };
        let grade = match g.parse::<f64>() {
            Ok(v) if v.fract() == 0.0 && v.abs() < 1e9 => v as i32,
            _ if line_no == 1 => continue, // the header
            _ => {
                return Err(EvalError::parse(
                    path,
                    line_no,
                    format!("relevance '{g}' is not an integer"),
                ));
            }
        };
        qrels
            .entry(q.to_string())
            .or_default()
            .insert(d.to_string(), grade);
    }
    if qrels.is_empty() {
        return Err(EvalError::dataset(path, "no judgements"));
    }
    Ok(qrels)
}

/// Texts with a human similarity score: the input of an STS-style evaluation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScoredPairs {
    /// `(text1, text2, gold score)`.
    pub pairs: Vec<(String, String, f64)>,
}

const TEXT1_FIELDS: [&str; 4] = ["sentence1", "text1", "s1", "anchor"];
const TEXT2_FIELDS: [&str; 4] = ["sentence2", "text2", "s2", "positive"];
const SCORE_FIELDS: [&str; 4] = ["score", "label", "similarity", "gold"];

impl ScoredPairs {
    /// Reads pairs from a `.jsonl` file (fields `sentence1`/`text1`, `sentence2`/`text2`, `score`/`label`), or
    /// from a TSV/CSV file with three columns `text1, text2, score` (a header line naming them is skipped).
    pub fn load(path: &Path) -> Result<Self, EvalError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let pairs = match ext.as_str() {
            "jsonl" | "json" => read_jsonl(path)?
                .into_iter()
                .map(|(line, obj)| {
                    let pick = |names: &[&str]| names.iter().find_map(|n| field_str(&obj, n));
                    let a = pick(&TEXT1_FIELDS).ok_or_else(|| {
                        EvalError::parse(path, line, "record has no field 'sentence1' (or text1)")
                    })?;
                    let b = pick(&TEXT2_FIELDS).ok_or_else(|| {
                        EvalError::parse(path, line, "record has no field 'sentence2' (or text2)")
                    })?;
                    let score = SCORE_FIELDS
                        .iter()
                        .find_map(|n| obj.get(*n).and_then(Value::as_f64))
                        .ok_or_else(|| {
                            EvalError::parse(
                                path,
                                line,
                                "record has no numeric field 'score' (or label)",
                            )
                        })?;
                    Ok((a, b, score))
                })
                .collect::<Result<Vec<_>, EvalError>>()?,
            _ => {
                let delimiter = if ext == "csv" { b',' } else { b'\t' };
                read_delimited(path, delimiter)?
            }
        };
        if pairs.is_empty() {
            return Err(EvalError::dataset(path, "no sentence pairs"));
        }
        Ok(ScoredPairs { pairs })
    }

    /// Every distinct text, in first-seen order (each is embedded once).
    pub fn unique_texts(&self) -> Vec<&str> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for (a, b, _) in &self.pairs {
            for t in [a.as_str(), b.as_str()] {
                if seen.insert(t) {
                    out.push(t);
                }
            }
        }
        out
    }
}

fn read_delimited(path: &Path, delimiter: u8) -> Result<Vec<(String, String, f64)>, EvalError> {
    let file = fs::File::open(path).map_err(|e| EvalError::io(path, e))?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .quoting(delimiter == b',')
        .from_reader(file);
    let mut out = Vec::new();
    for (i, record) in reader.byte_records().enumerate() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(i + 1, |p| p.line() as usize);
            EvalError::parse(path, line, format!("unreadable row: {e}"))
        })?;
        let line = record.position().map_or(i + 1, |p| p.line() as usize);
        let text = |j: usize| -> Result<String, EvalError> {
            let bytes = record.get(j).unwrap_or_default();
            String::from_utf8(bytes.to_vec()).map_err(|_| {
                EvalError::parse(path, line, format!("column {} is not valid UTF-8", j + 1))
            })
        };
        if record.len() < 3 {
            return Err(EvalError::parse(
                path,
                line,
                format!(
                    "expected 3 columns (text1, text2, score), found {}",
                    record.len()
                ),
            ));
        }
        let score_text = text(2)?;
        let Ok(score) = score_text.trim().parse::<f64>() else {
            if out.is_empty() {
                continue; // a header line
            }
            return Err(EvalError::parse(
                path,
                line,
                format!("score '{}' is not a number", score_text.trim()),
            ));
        };
        out.push((text(0)?, text(1)?, score));
    }
    Ok(out)
}

/// gensim's Lee-50 set: 50 news documents (`lee.cor`, ISO-8859-1, one a line) and the mean human similarity
/// of every pair (`similarities0-1.txt`, a 50×50 matrix whose upper triangle holds the scores).
#[derive(Debug, Clone)]
pub struct LeeDocuments {
    /// The documents, decoded from ISO-8859-1.
    pub documents: Vec<String>,
    /// `(i, j, score)` for every pair i < j.
    pub pairs: Vec<(usize, usize, f64)>,
}

impl LeeDocuments {
    /// Reads `lee.cor` and `similarities0-1.txt` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, EvalError> {
        let docs_path = dir.join("lee.cor");
        let bytes = fs::read(&docs_path).map_err(|e| EvalError::io(&docs_path, e))?;
        // ISO-8859-1 maps each byte to the code point of the same value.
        let text: String = bytes.iter().map(|&b| b as char).collect();
        let documents: Vec<String> = text
            .lines()
            .map(|l| l.trim_end_matches('\r').to_string())
            .filter(|l| !l.trim().is_empty())
            .collect();
        let sims_path = dir.join("similarities0-1.txt");
        let sims = read_to_string(&sims_path)?;
        let mut matrix = Vec::new();
        for (i, line) in sims.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let row = line
                .split_whitespace()
                .map(|v| {
                    v.parse::<f64>().map_err(|_| {
                        EvalError::parse(&sims_path, i + 1, format!("'{v}' is not a number"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            matrix.push(row);
        }
        let n = documents.len();
        if matrix.len() != n || matrix.iter().any(|r| r.len() != n) {
            return Err(EvalError::dataset(
                &sims_path,
                format!("expected a {n}×{n} matrix for the {n} documents of lee.cor"),
            ));
        }
        let mut pairs = Vec::with_capacity(n * (n - 1) / 2);
        for (i, row) in matrix.iter().enumerate() {
            for (j, &v) in row.iter().enumerate().skip(i + 1) {
                pairs.push((i, j, v));
            }
        }
        Ok(LeeDocuments { documents, pairs })
    }
}

/// Word pairs with a human score (WordSim-353, SimLex-999 as gensim ships them): `word1 <TAB> word2 <TAB>
/// score`, `#` comment lines skipped.
pub fn load_word_pairs(path: &Path) -> Result<ScoredPairs, EvalError> {
    let text = read_to_string(path)?;
    let mut pairs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        let [a, b, score, ..] = cols.as_slice() else {
            return Err(EvalError::parse(
                path,
                i + 1,
                format!(
                    "expected word1, word2, score separated by tabs, found {} columns",
                    cols.len()
                ),
            ));
        };
        let score = score.trim().parse::<f64>().map_err(|_| {
            EvalError::parse(
                path,
                i + 1,
                format!("score '{}' is not a number", score.trim()),
            )
        })?;
        pairs.push((a.trim().to_string(), b.trim().to_string(), score));
    }
    if pairs.is_empty() {
        return Err(EvalError::dataset(path, "no word pairs"));
    }
    Ok(ScoredPairs { pairs })
}
