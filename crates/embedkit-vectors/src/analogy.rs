//! Word analogies by vector arithmetic, as gensim's `KeyedVectors.most_similar` (3CosAdd) and
//! `evaluate_word_analogies` do them — over vectors from any embedder, one per vocabulary word.
//!
//! `most_similar(positive, negative)`: the unit mean of `+v` for positive and `−v` for negative words (each
//! word's vector unit length first), cosine to every candidate, the input words themselves excluded.
//! `evaluate`: gensim's rules exactly — sections start with ": name"; a line that is not four words is skipped;
//! words are uppercased (case-insensitive, the default) and a case variant maps to its first occurrence in the
//! vocabulary; only the first `restrict_vocab` words are known and are candidates; a question with an unknown
//! word is counted as OOV and skipped; the prediction is the first of the top 5 of `b − a + c` that is not one
//! of a, b, c.

use crate::simd;
use embedkit_core::Embeddings;
use rayon::prelude::*;
use std::collections::HashMap;

/// Why an analogy could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum AnalogyError {
    /// The words and the vectors do not line up.
    #[error("{words} words but {vectors} vectors")]
    Mismatch {
        /// Words given.
        words: usize,
        /// Vector rows given.
        vectors: usize,
    },
    /// A query word is not in the vocabulary.
    #[error("'{0}' is not in the vocabulary")]
    UnknownWord(String),
    /// No positive or negative words.
    #[error("give at least one positive or negative word")]
    NoWords,
    /// The questions text has a question before any ": section" line.
    #[error("line {line}: a question before the first ': section' header")]
    MissingSection {
        /// 1-based line number.
        line: usize,
    },
}

/// A vocabulary with one unit-length vector per word.
pub struct WordVectors {
    words: Vec<String>,
    vectors: Embeddings,
    exact: HashMap<String, usize>,
}

/// One nearest word.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Neighbour {
    /// The word as the vocabulary spells it.
    pub word: String,
    /// Cosine similarity to the combined query vector.
    pub score: f32,
}

/// How to evaluate questions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvaluateOptions {
    /// Only the first N vocabulary words are known and are candidates (gensim's default 300,000).
    pub restrict_vocab: usize,
    /// Uppercase everything before comparing (gensim's default).
    pub case_insensitive: bool,
}

impl Default for EvaluateOptions {
    fn default() -> Self {
        Self {
            restrict_vocab: 300_000,
            case_insensitive: true,
        }
    }
}

/// Accuracy of one section (or the total).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SectionScore {
    /// The section name (`Total accuracy` for the total, as gensim names it).
    pub section: String,
    /// Questions answered correctly.
    pub correct: usize,
    /// Questions answered wrongly.
    pub incorrect: usize,
}

impl SectionScore {
    /// correct / (correct + incorrect); 0 for an empty section.
    pub fn accuracy(&self) -> f64 {
        let n = self.correct + self.incorrect;
        if n == 0 {
            0.0
        } else {
            self.correct as f64 / n as f64
        }
    }
}

/// The outcome of [`WordVectors::evaluate`].
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct AnalogyReport {
    /// Per section, in file order.
    pub sections: Vec<SectionScore>,
    /// All sections together.
    pub total: SectionScore,
    /// Well-formed questions (four words).
    pub questions: usize,
    /// Questions skipped because a word is outside the (restricted) vocabulary.
    pub oov: usize,
    /// Lines skipped because they are not four words.
    pub invalid_lines: usize,
}

/// Questions scored per block: one `dot_many` call of the block's query vectors against the candidates.
const QUERY_BLOCK: usize = 64;

/// The distinct words of a questions file (lines of four words; `: section` lines skipped), in order of first
/// appearance: the vocabulary when none is given.
pub fn question_words(text: &str) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    text.lines()
        .filter(|l| !l.starts_with(": "))
        .filter(|l| l.split_whitespace().count() == 4)
        .flat_map(str::split_whitespace)
        .filter(|w| seen.insert(w.to_string()))
        .map(str::to_string)
        .collect()
}

impl WordVectors {
    /// Words and their vectors (one row each); rows are scaled to unit length here.
    pub fn new(words: Vec<String>, mut vectors: Embeddings) -> Result<Self, AnalogyError> {
        if words.len() != vectors.rows() {
            return Err(AnalogyError::Mismatch {
                words: words.len(),
                vectors: vectors.rows(),
            });
        }
        vectors.normalize();
        let mut exact = HashMap::with_capacity(words.len());
        for (i, w) in words.iter().enumerate() {
            exact.entry(w.clone()).or_insert(i);
        }
        Ok(Self {
            words,
            vectors,
            exact,
        })
    }

    /// Vocabulary size.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether the vocabulary is empty.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The unit query vector `unit(Σ v⁺ − Σ v⁻)` over the given rows.
    fn query(&self, positive: &[usize], negative: &[usize]) -> Vec<f32> {
        let mut mean = vec![0.0f32; self.vectors.dims()];
        for (rows, w) in [(positive, 1.0f32), (negative, -1.0)] {
            for &r in rows {
                for (m, x) in mean.iter_mut().zip(self.vectors.row(r)) {
                    *m += w * x;
                }
            }
        }
        embedkit_core::l2_normalize(&mut mean);
        mean
    }

    /// Best `top_n` of `scores` (candidates `0..scores.len()`), highest first, ties by index, `exclude` left out.
    fn best(scores: &[f32], top_n: usize, exclude: &[usize]) -> Vec<(usize, f32)> {
        let mut idx: Vec<usize> = (0..scores.len()).filter(|i| !exclude.contains(i)).collect();
        let by = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b));
        if top_n < idx.len() {
            idx.select_nth_unstable_by(top_n, by);
            idx.truncate(top_n);
        }
        idx.sort_by(by);
        idx.into_iter().map(|i| (i, scores[i])).collect()
    }

    /// Looks a word up as written, else case-insensitively (the first vocabulary word that matches).
    fn lookup(&self, word: &str) -> Result<usize, AnalogyError> {
        if let Some(&i) = self.exact.get(word) {
            return Ok(i);
        }
        let upper = word.to_uppercase();
        self.words
            .iter()
            .position(|w| w.to_uppercase() == upper)
            .ok_or_else(|| AnalogyError::UnknownWord(word.to_string()))
    }

    /// The `top_n` words nearest to `Σ positive − Σ negative` (3CosAdd), excluding the input words.
    pub fn most_similar(
        &self,
        positive: &[&str],
        negative: &[&str],
        top_n: usize,
    ) -> Result<Vec<Neighbour>, AnalogyError> {
        if positive.is_empty() && negative.is_empty() {
            return Err(AnalogyError::NoWords);
        }
        let pos = positive
            .iter()
            .map(|w| self.lookup(w))
            .collect::<Result<Vec<_>, _>>()?;
        let neg = negative
            .iter()
            .map(|w| self.lookup(w))
            .collect::<Result<Vec<_>, _>>()?;
        let q = self.query(&pos, &neg);
        let mut scores = vec![0.0f32; self.len()];
        simd::active().dot_many(
            &q,
            self.vectors.as_slice(),
            self.vectors.dims(),
            &mut scores,
        );
        let exclude: Vec<usize> = pos.iter().chain(&neg).copied().collect();
        Ok(Self::best(&scores, top_n, &exclude)
            .into_iter()
            .map(|(i, score)| Neighbour {
                word: self.words[i].clone(),
                score,
            })
            .collect())
    }

    /// Accuracy on a questions file's text (gensim's questions-words.txt format); see the module docs.
    pub fn evaluate(
        &self,
        questions: &str,
        options: EvaluateOptions,
    ) -> Result<AnalogyReport, AnalogyError> {
        let restrict = options.restrict_vocab.min(self.len());
        let key = |w: &str| {
            if options.case_insensitive {
                w.to_uppercase()
            } else {
                w.to_string()
            }
        };
        // gensim builds this from the reversed list, so the first occurrence of a case variant wins.
        let mut ok_vocab: HashMap<String, usize> = HashMap::with_capacity(restrict);
        for (i, w) in self.words[..restrict].iter().enumerate() {
            ok_vocab.entry(key(w)).or_insert(i);
        }
        let mut report = AnalogyReport::default();
        // (section, [a, b, c] rows, the keys of a, b, c, expected key)
        let mut asked: Vec<(usize, [usize; 3], [String; 3], String)> = Vec::new();
        for (n, line) in questions.lines().enumerate() {
            if let Some(name) = line.strip_prefix(": ") {
                report.sections.push(SectionScore {
                    section: name.trim_start_matches([':', ' ']).trim().to_string(),
                    ..Default::default()
                });
                continue;
            }
            if report.sections.is_empty() {
                return Err(AnalogyError::MissingSection { line: n + 1 });
            }
            let words: Vec<String> = line.split_whitespace().map(key).collect();
            let [a, b, c, expected]: [String; 4] = match words.try_into() {
                Ok(w) => w,
                Err(_) => {
                    report.invalid_lines += 1;
                    continue;
                }
            };
            report.questions += 1;
            let rows = [&a, &b, &c].map(|w| ok_vocab.get(w.as_str()).copied());
            match (rows, ok_vocab.contains_key(&expected)) {
                ([Some(ra), Some(rb), Some(rc)], true) => {
                    asked.push((report.sections.len() - 1, [ra, rb, rc], [a, b, c], expected));
                }
                _ => report.oov += 1,
            }
        }
        let dims = self.vectors.dims();
        let candidates = &self.vectors.as_slice()[..restrict * dims];
        let k = simd::active();
        let verdicts: Vec<bool> = asked
            .par_chunks(QUERY_BLOCK)
            .flat_map_iter(|block| {
                let mut queries = Vec::with_capacity(block.len() * dims);
                for (_, [ra, rb, rc], _, _) in block {
                    queries.extend(self.query(&[*rb, *rc], &[*ra]));
                }
                let mut scores = vec![0.0f32; block.len() * restrict];
                k.dot_many(&queries, candidates, dims, &mut scores);
                block
                    .iter()
                    .zip(scores.chunks_exact(restrict.max(1)))
                    .map(|((_, rows, ignore, expected), s)| {
                        let mut predicted: Option<String> = None;
                        for (i, _) in Self::best(s, 5, rows) {
                            let p = key(&self.words[i]);
                            let done = ok_vocab.contains_key(&p) && !ignore.contains(&p);
                            predicted = Some(p);
                            if done {
                                break;
                            }
                        }
                        predicted.as_deref() == Some(expected.as_str())
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        for ((section, ..), ok) in asked.iter().zip(verdicts) {
            let s = &mut report.sections[*section];
            if ok {
                s.correct += 1;
            } else {
                s.incorrect += 1;
            }
        }
        report.total = SectionScore {
            section: "Total accuracy".into(),
            correct: report.sections.iter().map(|s| s.correct).sum(),
            incorrect: report.sections.iter().map(|s| s.incorrect).sum(),
        };
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> WordVectors {
        // king = royal + male, queen = royal + female, man = male, woman = female, apple elsewhere.
        let rows = vec![
            vec![1.0, 1.0, 0.0, 0.0],
            vec![1.0, 0.0, 1.0, 0.0],
            vec![0.0, 1.0, 0.0, 0.1],
            vec![0.0, 0.0, 1.0, 0.1],
            vec![0.0, 0.0, 0.0, 1.0],
            vec![1.0, 1.0, 0.0, 0.01],
        ];
        let words = ["king", "queen", "man", "woman", "apple", "King"];
        WordVectors::new(
            words.iter().map(|w| w.to_string()).collect(),
            Embeddings::from_rows(rows).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn king_minus_man_plus_woman_is_queen() {
        let v = vocab();
        let got = v.most_similar(&["king", "woman"], &["man"], 2).unwrap();
        assert_eq!(got[0].word, "queen");
        assert!(
            got.iter()
                .all(|n| !["king", "woman", "man"].contains(&n.word.as_str()))
        );
        assert!(matches!(
            v.most_similar(&["kong"], &[], 1),
            Err(AnalogyError::UnknownWord(w)) if w == "kong"
        ));
    }

    #[test]
    fn evaluation_counts_sections_oov_and_invalid_lines() {
        let v = vocab();
        let q = ": royals\nman king woman queen\nMAN KING WOMAN QUEEN\nman king woman pear\nnot four words\n: other\nking man queen woman\n";
        let r = v.evaluate(q, EvaluateOptions::default()).unwrap();
        assert_eq!(r.questions, 4);
        assert_eq!(r.oov, 1);
        assert_eq!(r.invalid_lines, 1);
        assert_eq!(r.sections.len(), 2);
        assert_eq!((r.sections[0].correct, r.sections[0].incorrect), (2, 0));
        assert_eq!(r.total.correct + r.total.incorrect, 3);
        // Restricting the vocabulary to 3 words makes "woman" unknown.
        let r = v
            .evaluate(
                q,
                EvaluateOptions {
                    restrict_vocab: 3,
                    case_insensitive: true,
                },
            )
            .unwrap();
        assert_eq!(r.oov, 4);
        assert!(matches!(
            v.evaluate("a b c d\n", EvaluateOptions::default()),
            Err(AnalogyError::MissingSection { line: 1 })
        ));
    }
}
