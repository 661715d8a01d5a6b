//! Leases: the claims on every held task are renewed every third of `lease_duration`.

use chrono::{DateTime, Utc};

use super::super::*;

impl EngineCore {
    /// Renews the held tasks' leases, when due.
    pub(crate) fn run_lease_renewal(&mut self, now: DateTime<Utc>) {
        if now >= self.next_renew {
            self.next_renew = now + delta(self.options.lease_duration / 3);
            let ids = self.task_ids();
            if !ids.is_empty() {
                self.push(Action::RenewLeases(ids));
            }
        }
    }
}
