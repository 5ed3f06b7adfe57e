//! A bounded "best k" collector: a heap whose top is the worst kept candidate, so each new score costs one
//! comparison against a cached threshold in the common case (most rows of a large corpus are not in the top k).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// One search result: a row of the corpus and its score (higher is better).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// Row of the corpus / index (0-based).
    pub row: usize,
    /// Similarity (higher is closer); what it measures depends on the search (see the search docs).
    pub score: f32,
}

/// A heap entry ordered so that the *worst* candidate is the greatest: lower score, then higher row.
#[derive(Debug, Clone, Copy)]
struct Worst(Hit);

impl PartialEq for Worst {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Worst {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .0
            .score
            .total_cmp(&self.0.score)
            .then(self.0.row.cmp(&other.0.row))
    }
}

/// Keeps the `k` best hits seen: highest score first, ties broken by the lower row, so results do not depend
/// on the order rows were visited in (threads, chunking). NaN scores are never kept.
#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Worst>,
    /// The worst kept score once the heap is full; scores below it are rejected with one comparison.
    threshold: f32,
}

impl TopK {
    /// An empty collector for `k` hits.
    pub fn new(k: usize) -> TopK {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k.min(1 << 16) + 1),
            threshold: f32::NEG_INFINITY,
        }
    }

    /// Offers one candidate.
    #[inline]
    pub fn push(&mut self, row: usize, score: f32) {
        // NaN is never kept; below the threshold cannot enter a full heap.
        if score.is_nan() || score < self.threshold || self.k == 0 {
            return;
        }
        let hit = Worst(Hit { row, score });
        if self.heap.len() < self.k {
            self.heap.push(hit);
            if self.heap.len() == self.k {
                self.threshold = self.heap.peek().map_or(f32::NEG_INFINITY, |w| w.0.score);
            }
        } else {
            let replaced = match self.heap.peek_mut() {
                // Strictly better than the worst kept (same score needs a lower row).
                Some(mut top) if hit < *top => {
                    *top = hit;
                    true
                }
                _ => false,
            };
            if replaced {
                self.threshold = self.heap.peek().map_or(f32::NEG_INFINITY, |w| w.0.score);
            }
        }
    }

    /// Offers the scores of consecutive rows starting at `first_row`.
    #[inline]
    pub fn push_slice(&mut self, first_row: usize, scores: &[f32]) {
        // Once the heap is full almost no score of a large scan qualifies: test 16 at a time with a
        // branch-free comparison the compiler vectorizes, and look closer only at groups with a candidate.
        const GROUP: usize = 16;
        let mut groups = scores.chunks_exact(GROUP);
        let mut row = first_row;
        for g in &mut groups {
            let thr = self.threshold;
            if g.iter().fold(false, |any, &s| any | (s >= thr)) {
                for (i, &s) in g.iter().enumerate() {
                    self.push(row + i, s);
                }
            }
            row += GROUP;
        }
        for (i, &s) in groups.remainder().iter().enumerate() {
            self.push(row + i, s);
        }
    }

    /// Adds every hit of `other`.
    pub fn merge(&mut self, other: TopK) {
        for w in other.heap {
            self.push(w.0.row, w.0.score);
        }
    }

    /// Number of hits kept so far.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// `true` when nothing was kept.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The kept hits, best first.
    pub fn into_sorted(self) -> Vec<Hit> {
        // Ascending in `Worst` order is best first.
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|w| w.0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_best_k_with_row_tie_break() {
        let mut t = TopK::new(3);
        for (row, s) in [
            (5, 0.5),
            (1, 0.9),
            (2, 0.5),
            (3, f32::NAN),
            (4, 0.1),
            (0, 0.5),
        ] {
            t.push(row, s);
        }
        let rows: Vec<usize> = t.into_sorted().iter().map(|h| h.row).collect();
        assert_eq!(rows, vec![1, 0, 2]);
    }

    #[test]
    fn merge_equals_single_pass() {
        let scores: Vec<f32> = (0..100).map(|i| ((i * 37) % 11) as f32).collect();
        let mut all = TopK::new(7);
        all.push_slice(0, &scores);
        let mut a = TopK::new(7);
        a.push_slice(50, &scores[50..]);
        let mut b = TopK::new(7);
        b.push_slice(0, &scores[..50]);
        a.merge(b);
        assert_eq!(a.into_sorted(), all.into_sorted());
    }

    #[test]
    fn zero_k_keeps_nothing() {
        let mut t = TopK::new(0);
        t.push(0, 1.0);
        assert!(t.is_empty());
    }
}
