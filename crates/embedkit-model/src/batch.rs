//! Planning batches by length so that sequences of similar length run together.

/// Groups of indices into the caller's list, each one forward pass.
///
/// Texts are sorted longest first (so the first batch shows the worst-case memory at once, as
/// sentence-transformers does) and cut every `max_batch` texts or when the batch would exceed `max_tokens`
/// tokens; a single text longer than the budget still forms its own batch. The caller restores its order by
/// writing each result to the index the plan names.
///
/// ```
/// use embedkit_model::plan_batches;
/// let plan = plan_batches(&[3, 10, 5, 7], 2, None);
/// assert_eq!(plan, vec![vec![1, 3], vec![2, 0]]);
/// let plan = plan_batches(&[3, 10, 5, 7], 4, Some(15));
/// assert_eq!(plan, vec![vec![1], vec![3, 2, 0]]);
/// ```
pub fn plan_batches(
    lengths: &[usize],
    max_batch: usize,
    max_tokens: Option<usize>,
) -> Vec<Vec<usize>> {
    let max_batch = max_batch.max(1);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    // Stable sort: equal lengths keep input order, which keeps plans deterministic.
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]));
    let mut plan = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut tokens = 0usize;
    for i in order {
        let len = lengths[i];
        let over_budget = max_tokens.is_some_and(|budget| tokens + len > budget);
        if !current.is_empty() && (current.len() == max_batch || over_budget) {
            plan.push(std::mem::take(&mut current));
            tokens = 0;
        }
        current.push(i);
        tokens += len;
    }
    if !current.is_empty() {
        plan.push(current);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_once() {
        let lengths: Vec<usize> = (0..100).map(|i| (i * 37) % 50 + 1).collect();
        let plan = plan_batches(&lengths, 8, Some(200));
        let mut seen: Vec<usize> = plan.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
        for b in &plan {
            assert!(b.len() <= 8);
            let total: usize = b.iter().map(|&i| lengths[i]).sum();
            assert!(total <= 200 || b.len() == 1);
        }
    }

    #[test]
    fn empty_input_is_empty_plan() {
        assert!(plan_batches(&[], 4, None).is_empty());
    }
}
