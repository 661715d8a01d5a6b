//! Dispatch planning: which ready steps go to which worker, in which batches. Pure: it takes the
//! queue of ready steps and the workers' free credit and returns batches; the engine records and
//! sends them.
//!
//! Rules (spec §8): a step goes only to a worker whose `handler_classes` contains its class
//! exactly; a batch holds at most `batch_size` steps and never more than the worker's free
//! credit; its encoded frame stays within `max_frame_bytes`. Each next batch goes to the worker
//! with the most free credit that can run something still queued, so load spreads over workers.
//! Steps keep their queue order (first ready, first sent).

use std::collections::HashSet;

/// A queued ready step, as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate<K> {
    /// Whatever identifies the step to the caller.
    pub key: K,
    /// The handler class it needs.
    pub handler_class: String,
    /// An upper bound of its encoded size inside a `step_batch`, in bytes.
    pub bytes: usize,
}

/// A worker's capacity for more steps, as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkerCredit {
    /// The worker.
    pub worker_id: String,
    /// What it can run.
    pub handler_classes: HashSet<String>,
    /// How many more steps it may be sent.
    pub free: usize,
}

/// One batch to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlannedBatch<K> {
    /// The worker it goes to.
    pub worker_id: String,
    /// Its steps, in queue order.
    pub steps: Vec<K>,
}

/// What the planner decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DispatchPlan<K> {
    /// Batches to record and send.
    pub batches: Vec<PlannedBatch<K>>,
    /// Steps whose request alone exceeds the frame limit: they can never be sent.
    pub oversized: Vec<K>,
    /// Steps left in the queue (no capable worker with credit).
    pub waiting: Vec<K>,
}

/// Bytes of a `step_batch` besides its steps (envelope, batch id, brackets), rounded up.
pub(crate) const BATCH_OVERHEAD_BYTES: usize = 160;

/// Plans batches for `candidates` (in queue order) over `workers`.
pub(crate) fn plan_batches<K: Clone>(
    candidates: Vec<Candidate<K>>,
    workers: &[WorkerCredit],
    batch_size: usize,
    max_frame_bytes: usize,
) -> DispatchPlan<K> {
    let budget = max_frame_bytes.saturating_sub(BATCH_OVERHEAD_BYTES);
    let mut free: Vec<usize> = workers.iter().map(|w| w.free).collect();
    let mut oversized = Vec::new();
    let mut remaining: Vec<Option<Candidate<K>>> = Vec::with_capacity(candidates.len());
    for candidate in candidates {
        if candidate.bytes + 1 > budget {
            oversized.push(candidate.key);
        } else {
            remaining.push(Some(candidate));
        }
    }
    let mut batches = Vec::new();
    loop {
        // The worker with the most free credit that can run something still queued.
        let chosen = (0..workers.len())
            .filter(|&w| free[w] > 0)
            .filter(|&w| {
                remaining
                    .iter()
                    .flatten()
                    .any(|c| workers[w].handler_classes.contains(&c.handler_class))
            })
            .max_by(|&a, &b| {
                free[a]
                    .cmp(&free[b])
                    .then_with(|| workers[b].worker_id.cmp(&workers[a].worker_id))
            });
        let Some(w) = chosen else { break };
        let limit = batch_size.min(free[w]);
        let mut steps = Vec::new();
        let mut bytes = 0;
        for slot in remaining.iter_mut() {
            if steps.len() == limit {
                break;
            }
            let fits = slot.as_ref().is_some_and(|c| {
                workers[w].handler_classes.contains(&c.handler_class) && bytes + c.bytes < budget
            });
            if fits && let Some(candidate) = slot.take() {
                bytes += candidate.bytes + 1;
                steps.push(candidate.key);
            }
        }
        if steps.is_empty() {
            break;
        }
        free[w] -= steps.len();
        batches.push(PlannedBatch {
            worker_id: workers[w].worker_id.clone(),
            steps,
        });
    }
    DispatchPlan {
        batches,
        oversized,
        waiting: remaining.into_iter().flatten().map(|c| c.key).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(key: u32, class: &str) -> Candidate<u32> {
        Candidate {
            key,
            handler_class: class.to_owned(),
            bytes: 100,
        }
    }

    fn worker(id: &str, classes: &[&str], free: usize) -> WorkerCredit {
        WorkerCredit {
            worker_id: id.to_owned(),
            handler_classes: classes.iter().map(|c| (*c).to_owned()).collect(),
            free,
        }
    }

    #[test]
    fn batches_respect_batch_size_and_credit() {
        let candidates = (0..25).map(|k| candidate(k, "x")).collect();
        let plan = plan_batches(candidates, &[worker("w1", &["x"], 12)], 10, 1 << 20);
        assert_eq!(plan.batches.len(), 2);
        assert_eq!(plan.batches[0].steps, (0..10).collect::<Vec<_>>());
        assert_eq!(plan.batches[1].steps, vec![10, 11], "only 2 credits left");
        assert_eq!(plan.waiting, (12..25).collect::<Vec<_>>());
        assert!(plan.oversized.is_empty());
    }

    #[test]
    fn steps_go_only_to_workers_that_run_their_class() {
        let candidates = vec![candidate(1, "a"), candidate(2, "b"), candidate(3, "c")];
        let workers = [worker("wa", &["a"], 5), worker("wb", &["b"], 5)];
        let plan = plan_batches(candidates, &workers, 10, 1 << 20);
        assert_eq!(
            plan.batches,
            vec![
                PlannedBatch {
                    worker_id: "wa".into(),
                    steps: vec![1]
                },
                PlannedBatch {
                    worker_id: "wb".into(),
                    steps: vec![2]
                },
            ]
        );
        assert_eq!(plan.waiting, vec![3], "nobody runs class c");
    }

    #[test]
    fn load_spreads_to_the_worker_with_most_credit() {
        let candidates = (0..8).map(|k| candidate(k, "x")).collect();
        let workers = [worker("w1", &["x"], 4), worker("w2", &["x"], 4)];
        let plan = plan_batches(candidates, &workers, 2, 1 << 20);
        let per_worker = |id: &str| {
            plan.batches
                .iter()
                .filter(|b| b.worker_id == id)
                .map(|b| b.steps.len())
                .sum::<usize>()
        };
        assert_eq!(per_worker("w1"), 4);
        assert_eq!(per_worker("w2"), 4);
        assert!(plan.waiting.is_empty());
    }

    #[test]
    fn frames_stay_within_the_limit_and_oversized_steps_are_set_aside() {
        let budget = 1000;
        let mut candidates: Vec<Candidate<u32>> = (0..5)
            .map(|k| Candidate {
                key: k,
                handler_class: "x".into(),
                bytes: 300,
            })
            .collect();
        candidates.push(Candidate {
            key: 99,
            handler_class: "x".into(),
            bytes: 5000,
        });
        let plan = plan_batches(candidates, &[worker("w", &["x"], 100)], 10, budget);
        assert_eq!(plan.oversized, vec![99]);
        for batch in &plan.batches {
            assert!(batch.steps.len() * 301 <= budget - BATCH_OVERHEAD_BYTES);
        }
        let sent: usize = plan.batches.iter().map(|b| b.steps.len()).sum();
        assert_eq!(sent, 5);
    }

    #[test]
    fn no_worker_no_batches() {
        let plan = plan_batches(vec![candidate(1, "x")], &[], 10, 1 << 20);
        assert!(plan.batches.is_empty());
        assert_eq!(plan.waiting, vec![1]);
        let plan = plan_batches(
            vec![candidate(1, "x")],
            &[worker("w", &["x"], 0)],
            10,
            1 << 20,
        );
        assert!(plan.batches.is_empty(), "no credit");
    }
}
