//! Intake: what waits for the next group commit ([`CommitItem`]) and what a result is before
//! the commit says whether its change applied (spec §9.4): applicable, fenced or rejected
//! (duplicates are found by the ledger).

use std::time::Instant;

use tasker_protocol::{BatchCompletion, PartialResult};
use tasker_transport::PeerId;
use uuid::Uuid;

use crate::runtime::{BatchEndCause, Busy};

use super::*;

/// A state change waiting for the next group commit.
#[derive(Debug, Clone)]
pub(crate) enum CommitItem {
    /// A step's final result from a worker.
    Partial {
        peer: PeerId,
        worker_id: String,
        raw: String,
        result: PartialResult,
        received: Instant,
    },
    /// A batch's completion from a worker.
    Completion {
        peer: PeerId,
        worker_id: String,
        raw: String,
        completion: BatchCompletion,
    },
    /// An attempt ended without a result: fail it (retryable unless the cause says otherwise).
    Lost {
        batch_id: Uuid,
        step_id: i64,
        cause: LossCause,
    },
    /// An attempt that never reached its worker: back to `pending`.
    Requeue {
        batch_id: Uuid,
        step_id: i64,
        cause: &'static str,
    },
    /// A task whose steps say it is finished.
    Finalize { task_id: i64 },
    /// A batch whose steps all ended but whose completion will never come (its worker is gone).
    CloseBatch { batch_id: Uuid },
}

/// Why an attempt ended without a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LossCause {
    /// Its deadline (timeout + grace) passed.
    Timeout,
    /// Its worker was declared dead (or never came back after a restart).
    WorkerLost,
    /// Its worker re-registered without listing it.
    NotListed,
    /// Its request alone is larger than the frame limit.
    RequestTooLarge,
}

impl LossCause {
    pub(super) fn error_class(self) -> &'static str {
        match self {
            LossCause::Timeout => "tasker.timeout",
            LossCause::WorkerLost | LossCause::NotListed => "tasker.worker_lost",
            LossCause::RequestTooLarge => "tasker.request_too_large",
        }
    }

    pub(super) fn retryable(self) -> bool {
        !matches!(self, LossCause::RequestTooLarge)
    }

    pub(super) fn message(self) -> &'static str {
        match self {
            LossCause::Timeout => "no result before the step's timeout (plus grace) passed",
            LossCause::WorkerLost => "the worker running the step was lost",
            LossCause::NotListed => "the worker re-registered without listing the step",
            LossCause::RequestTooLarge => {
                "the step's request (context and previous results) exceeds max_frame_bytes"
            }
        }
    }

    pub(super) fn batch_end(self) -> BatchEndCause {
        match self {
            LossCause::Timeout => BatchEndCause::TimedOut,
            LossCause::WorkerLost | LossCause::NotListed => BatchEndCause::WorkerLost,
            LossCause::RequestTooLarge => BatchEndCause::NotRun,
        }
    }
}

/// What a result is, before the commit says whether its change applied (spec §9.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Its attempt is the step's current one: its change is in the commit.
    Applicable,
    /// Its attempt is over (superseded, ended, already being applied).
    Fenced,
    /// Never sent to this worker, not in the batch, or the wrong attempt.
    Rejected,
}

impl EngineCore {
    /// Where a partial result stands (spec §9.4; duplicates are found by the ledger).
    pub(super) fn classify_partial(&self, result: &PartialResult, worker_id: &str) -> Class {
        if let Some(batch) = self.batches.get(&result.batch_id) {
            if batch.worker_id.as_deref().is_some_and(|w| w != worker_id) {
                return Class::Rejected;
            }
            let member = batch.steps.iter().find(|s| s.step_id == result.step_id);
            match member {
                None if batch.complete_list => return Class::Rejected,
                Some(member) if member.attempt != result.attempt => return Class::Rejected,
                _ => {}
            }
        }
        let Some((task_id, index)) = self.step_index.get(&result.step_id).copied() else {
            return self.old_or_unknown(&result.batch_id);
        };
        let Some(step) = self.tasks.get(&task_id).map(|t| &t.steps[index]) else {
            return self.old_or_unknown(&result.batch_id);
        };
        if step.in_flight != Some(result.batch_id) {
            return self.old_or_unknown(&result.batch_id);
        }
        if step.attempts != result.attempt {
            return Class::Rejected;
        }
        if step.worker.as_deref().is_some_and(|w| w != worker_id) {
            return Class::Rejected;
        }
        if step.busy != Busy::Idle {
            // Its attempt is being ended by another change (a copy of this result, a timeout).
            return Class::Fenced;
        }
        Class::Applicable
    }

    /// Where a batch completion stands.
    pub(super) fn classify_completion(
        &self,
        completion: &BatchCompletion,
        worker_id: &str,
    ) -> Class {
        match self.batches.get(&completion.batch_id) {
            Some(batch) => {
                if batch.worker_id.as_deref().is_some_and(|w| w != worker_id) {
                    Class::Rejected
                } else if batch.completion.is_some() {
                    Class::Fenced
                } else {
                    Class::Applicable
                }
            }
            None => self.old_or_unknown(&completion.batch_id),
        }
    }

    pub(super) fn old_or_unknown(&self, batch_id: &Uuid) -> Class {
        if self.knows_batch(batch_id) {
            Class::Fenced
        } else {
            Class::Rejected
        }
    }
}
