//! The cross-request queue: one compute thread per model, fed through a channel, that cuts batches from the
//! texts of all waiting requests by a token budget and runs one forward pass per batch. Requests whose
//! client went away are dropped before their texts reach a batch.

use crate::metrics::Metrics;
use embedkit_core::{EmbedError, Embedder, EncodeOptions};
use embedkit_model::{LocalEmbedder, PreparedText};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What a request wants from the model for each text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Pooled vectors before truncation and normalization (`LocalEmbedder::finish_vector` finishes them).
    Pooled,
    /// Token-level last hidden states.
    Tokens,
}

/// The work of one request.
pub enum Work {
    /// Tokenized texts for a local model: batched across requests.
    Prepared {
        /// The texts.
        texts: Vec<PreparedText>,
        /// Pooled vectors or token states.
        want: Want,
    },
    /// Raw texts for any other embedder (a cache, an API provider): one `embed` call per request.
    Texts {
        /// The texts.
        texts: Vec<String>,
        /// Options of the call.
        options: EncodeOptions,
        /// Pooled vectors or token states.
        want: Want,
    },
}

/// A request's results and where its time went.
#[derive(Debug)]
pub struct Done {
    /// One vector (or flattened token states) per text, in request order.
    pub vectors: Vec<Vec<f32>>,
    /// Time from queueing to the first forward pass that included the request.
    pub queue: Duration,
    /// Forward-pass time of the batches the request was in.
    pub inference: Duration,
}

/// A queued request.
pub struct Job {
    /// The work.
    pub work: Work,
    /// Where the results go; a closed receiver (client gone) drops the job.
    pub reply: oneshot::Sender<Result<Done, EmbedError>>,
    /// When it was queued.
    pub queued_at: Instant,
}

/// A request being worked on by the compute thread.
struct Active {
    texts: Vec<PreparedText>,
    want: Want,
    reply: oneshot::Sender<Result<Done, EmbedError>>,
    queued_at: Instant,
    /// Next text to put into a batch.
    next: usize,
    /// Texts whose results are in.
    done: usize,
    results: Vec<Vec<f32>>,
    first_batch: Option<Instant>,
    inference: Duration,
}

/// Starts the compute thread of a local model; jobs sent to the returned channel are batched together up to
/// `max_batch_tokens` tokens per forward pass.
pub fn spawn_local(
    model: Arc<LocalEmbedder>,
    max_batch_tokens: usize,
    metrics: Arc<Metrics>,
) -> std::io::Result<Sender<Job>> {
    let (tx, rx) = channel();
    std::thread::Builder::new()
        .name(format!("embedkit-compute-{}", model.name()))
        .spawn(move || local_worker(&model, rx, max_batch_tokens.max(1), &metrics))?;
    Ok(tx)
}

/// Starts the compute thread of any other embedder: one `embed` call per job, in arrival order.
pub fn spawn_generic(model: Arc<dyn Embedder>) -> std::io::Result<Sender<Job>> {
    let (tx, rx) = channel::<Job>();
    std::thread::Builder::new()
        .name(format!("embedkit-compute-{}", model.name()))
        .spawn(move || {
            while let Ok(job) = rx.recv() {
                if job.reply.is_closed() {
                    continue; // the client left while queued
                }
                let start = Instant::now();
                let queue = start - job.queued_at;
                let result = match job.work {
                    Work::Texts {
                        texts,
                        options,
                        want,
                    } => {
                        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                        match want {
                            Want::Pooled => model
                                .embed(&refs, &options)
                                .map(|e| e.iter().map(<[f32]>::to_vec).collect()),
                            Want::Tokens => model.embed_tokens(&refs, &options).map(|t| {
                                t.into_iter()
                                    .map(|t| t.vectors.as_slice().to_vec())
                                    .collect()
                            }),
                        }
                    }
                    Work::Prepared { .. } => Err(EmbedError::Unsupported(format!(
                        "{} takes texts, not token ids",
                        model.name()
                    ))),
                };
                let inference = start.elapsed();
                let _ = job.reply.send(result.map(|vectors| Done {
                    vectors,
                    queue,
                    inference,
                }));
            }
        })?;
    Ok(tx)
}

fn local_worker(
    model: &LocalEmbedder,
    rx: Receiver<Job>,
    max_batch_tokens: usize,
    metrics: &Metrics,
) {
    let mut active: VecDeque<Active> = VecDeque::new();
    let admit = |job: Job, active: &mut VecDeque<Active>| match job.work {
        Work::Prepared { texts, want } => {
            let n = texts.len();
            if n == 0 {
                let _ = job.reply.send(Ok(Done {
                    vectors: vec![],
                    queue: job.queued_at.elapsed(),
                    inference: Duration::ZERO,
                }));
                return;
            }
            active.push_back(Active {
                texts,
                want,
                reply: job.reply,
                queued_at: job.queued_at,
                next: 0,
                done: 0,
                results: vec![Vec::new(); n],
                first_batch: None,
                inference: Duration::ZERO,
            });
        }
        Work::Texts { .. } => {
            let _ = job.reply.send(Err(EmbedError::Unsupported(
                "the local model queue takes tokenized texts".into(),
            )));
        }
    };
    loop {
        if active.is_empty() {
            match rx.recv() {
                Ok(job) => admit(job, &mut active),
                Err(_) => return, // the server is gone
            }
        }
        while let Ok(job) = rx.try_recv() {
            admit(job, &mut active);
        }
        // A client that disconnected dropped its receiver: its remaining texts are not computed.
        active.retain(|a| !a.reply.is_closed());
        if active.is_empty() {
            continue;
        }
        // First come, first served: fill the budget from the oldest request on; a text longer than the budget
        // still runs, alone.
        let mut picked: Vec<(usize, usize)> = Vec::new();
        let mut tokens = 0usize;
        'fill: for (ai, a) in active.iter_mut().enumerate() {
            while a.next < a.texts.len() {
                let len = a.texts[a.next].ids.len();
                if !picked.is_empty() && tokens + len > max_batch_tokens {
                    break 'fill;
                }
                picked.push((ai, a.next));
                tokens += len;
                a.next += 1;
            }
        }
        let start = Instant::now();
        let mut outputs: Vec<Vec<f32>> = Vec::with_capacity(picked.len());
        let result = {
            let refs: Vec<&PreparedText> = picked
                .iter()
                .map(|&(ai, ti)| &active[ai].texts[ti])
                .collect();
            model.forward_prepared(&refs, |i, states| {
                let (ai, ti) = picked[i];
                let a = &active[ai];
                outputs.push(match a.want {
                    Want::Pooled => model.pool_prepared(&a.texts[ti], states),
                    Want::Tokens => states.to_vec(),
                });
            })
        };
        let took = start.elapsed();
        metrics.batch_texts.observe(picked.len() as f64);
        metrics.batch_tokens.observe(tokens as f64);
        metrics.tokens.fetch_add(tokens as u64, Ordering::Relaxed);
        if let Err(e) = result {
            // A backend failure fails every request in the batch; the others carry on.
            let msg = e.to_string();
            let mut failed: Vec<usize> = picked.iter().map(|&(ai, _)| ai).collect();
            failed.dedup();
            for ai in failed.into_iter().rev() {
                if let Some(a) = active.remove(ai) {
                    let _ = a.reply.send(Err(EmbedError::Backend(msg.clone().into())));
                }
            }
            continue;
        }
        let mut touched: Vec<usize> = Vec::new();
        for (&(ai, ti), out) in picked.iter().zip(outputs) {
            let a = &mut active[ai];
            a.results[ti] = out;
            a.done += 1;
            if touched.last() != Some(&ai) {
                touched.push(ai);
                a.first_batch.get_or_insert(start);
                a.inference += took;
            }
        }
        // Finished requests leave in order; they are a prefix-or-not, so scan all touched from the back.
        for ai in touched.into_iter().rev() {
            if active[ai].done == active[ai].texts.len()
                && let Some(a) = active.remove(ai)
            {
                let queue = a.first_batch.unwrap_or(start) - a.queued_at;
                let _ = a.reply.send(Ok(Done {
                    vectors: a.results,
                    queue,
                    inference: a.inference,
                }));
            }
        }
    }
}
