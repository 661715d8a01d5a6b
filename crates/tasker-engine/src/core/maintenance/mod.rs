//! The periodic work: services that [`EngineCore::on_tick`] runs whenever something is due,
//! one file each, each with a `run_*` entry a test can call on its own with a chosen `now`.
//!
//! | service | file | what it does | options it reads |
//! | --- | --- | --- | --- |
//! | deadlines | `deadlines.rs` | fails attempts whose deadline (timeout + grace) passed, tells their workers to cancel | `timeout_grace` (at dispatch), `batch_size` |
//! | backoff wakeups | `wakeups.rs` | steps whose backoff ended are looked at again | — |
//! | liveness | `liveness.rs` | declares silent workers dead, sends the engine's heartbeats | `heartbeat_interval`, `liveness` |
//! | recovery | `recovery.rs` | after a store failure, retries the changes it refused; steps in flight since before a restart that no worker claims are lost | — (1 s pause) |
//! | poll | `poll.rs` | the safety net: claims tasks created elsewhere, re-reads tasks awaited but not held, releases finished tasks' claims | `poll_interval` |
//! | leases | `leases.rs` | renews the claims on held tasks | `lease_duration` |

use std::cmp::Reverse;

use chrono::{DateTime, Utc};

mod deadlines;
mod leases;
mod liveness;
mod poll;
mod recovery;
mod wakeups;

use super::*;

impl EngineCore {
    /// The earliest time something is due.
    pub(crate) fn next_due(&self) -> DateTime<Utc> {
        let mut due = self.next_poll.min(self.next_renew);
        if let Some(Reverse((at, _, _))) = self.deadlines.peek() {
            due = due.min(*at);
        }
        if let Some(Reverse((at, _))) = self.wakeups.peek() {
            due = due.min(*at);
        }
        if let Some(Reverse((at, _, _))) = self.orphan_checks.peek() {
            due = due.min(*at);
        }
        if let Some(until) = self.paused_until {
            due = due.min(until);
        }
        for session in self.sessions.values() {
            due = due.min(session.next_heartbeat).min(
                session.last_seen + delta(self.options.liveness_window(session.heartbeat_interval)),
            );
        }
        due
    }

    /// Whatever is due at `now`: every service, in this order.
    pub(crate) fn on_tick(&mut self, now: DateTime<Utc>) {
        self.run_store_recovery(now);
        self.run_deadlines(now);
        self.run_wakeups(now);
        self.run_orphan_checks(now);
        self.run_liveness(now);
        self.run_poll(now);
        self.run_lease_renewal(now);
    }
}
