//! [`Outbox`]: every result the worker has produced and the orchestrator has not yet
//! acknowledged, in the order produced, ready to be sent again after a reconnect.

use std::collections::{BTreeMap, HashMap};

use tasker_protocol::{ResultKey, ResultKind, StepRef};
use tokio::time::Instant;
use uuid::Uuid;

/// One held result: its key and its encoded frame (re-sent byte for byte, so a re-sent partial
/// result keeps its `sequence`).
#[derive(Debug)]
pub(crate) struct HeldResult {
    pub(crate) key: ResultKey,
    pub(crate) frame: Vec<u8>,
    /// When the frame was last handed to the socket on the current session; `None` if it has
    /// not been since the last (re)registration or its last send failed.
    pub(crate) last_sent: Option<Instant>,
    /// Whether it was ever sent (so that a send is counted as a re-send).
    pub(crate) ever_sent: bool,
}

/// Results held until acknowledged.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    by_order: BTreeMap<u64, HeldResult>,
    order_of: HashMap<ResultKey, u64>,
    results_per_batch: HashMap<Uuid, usize>,
    next_order: u64,
}

impl Outbox {
    /// Holds `frame` under `key` (replacing an older frame with the same key).
    pub(crate) fn hold(&mut self, key: ResultKey, frame: Vec<u8>) {
        self.release(&key);
        let order = self.next_order;
        self.next_order += 1;
        self.order_of.insert(key, order);
        *self.results_per_batch.entry(key.batch_id).or_default() += 1;
        self.by_order.insert(
            order,
            HeldResult {
                key,
                frame,
                last_sent: None,
                ever_sent: false,
            },
        );
    }

    /// Drops the result with `key`; whether it was held.
    pub(crate) fn release(&mut self, key: &ResultKey) -> bool {
        let Some(order) = self.order_of.remove(key) else {
            return false;
        };
        self.by_order.remove(&order);
        if let Some(count) = self.results_per_batch.get_mut(&key.batch_id) {
            *count -= 1;
            if *count == 0 {
                self.results_per_batch.remove(&key.batch_id);
            }
        }
        true
    }

    /// The held result with `key`.
    pub(crate) fn get_mut(&mut self, key: &ResultKey) -> Option<&mut HeldResult> {
        let order = self.order_of.get(key)?;
        self.by_order.get_mut(order)
    }

    /// Every held result, oldest first.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut HeldResult> {
        self.by_order.values_mut()
    }

    /// Marks every held result as not sent on the current session.
    pub(crate) fn mark_all_unsent(&mut self) {
        for held in self.by_order.values_mut() {
            held.last_sent = None;
        }
    }

    /// The steps whose final (partial) result is held.
    pub(crate) fn held_steps(&self) -> impl Iterator<Item = StepRef> + '_ {
        self.by_order.values().filter_map(|held| match held.key {
            ResultKey {
                batch_id,
                step_id: Some(step_id),
                kind: ResultKind::PartialResult,
            } => Some(StepRef { batch_id, step_id }),
            _ => None,
        })
    }

    /// Whether any result of `batch_id` is held.
    pub(crate) fn holds_batch(&self, batch_id: Uuid) -> bool {
        self.results_per_batch.contains_key(&batch_id)
    }

    /// How many results are held.
    pub(crate) fn len(&self) -> usize {
        self.by_order.len()
    }

    /// Whether no result is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.by_order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_in_order_and_releases_by_key() {
        let batch = Uuid::from_u128(1);
        let mut outbox = Outbox::default();
        outbox.hold(ResultKey::partial_result(batch, 2), b"two".to_vec());
        outbox.hold(ResultKey::partial_result(batch, 1), b"one".to_vec());
        outbox.hold(ResultKey::batch_completion(batch), b"done".to_vec());
        assert_eq!(outbox.len(), 3);
        let frames: Vec<_> = outbox.iter_mut().map(|held| held.frame.clone()).collect();
        assert_eq!(
            frames,
            vec![b"two".to_vec(), b"one".to_vec(), b"done".to_vec()]
        );
        let steps: Vec<_> = outbox.held_steps().map(|step| step.step_id).collect();
        assert_eq!(steps, vec![2, 1]);

        assert!(outbox.release(&ResultKey::partial_result(batch, 2)));
        assert!(!outbox.release(&ResultKey::partial_result(batch, 2)));
        assert!(outbox.holds_batch(batch));
        assert!(outbox.release(&ResultKey::partial_result(batch, 1)));
        assert!(outbox.release(&ResultKey::batch_completion(batch)));
        assert!(!outbox.holds_batch(batch));
        assert!(outbox.is_empty());
    }
}
