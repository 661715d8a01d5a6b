//! Liveness: workers silent for their liveness window are declared dead (their steps retried);
//! every session gets the engine's heartbeat at its interval.

use chrono::{DateTime, Utc};
use tasker_protocol::{OrchestratorHeartbeat, OrchestratorMessage, PROTOCOL_VERSION};

use super::super::*;

impl EngineCore {
    /// Declares silent workers dead and sends the heartbeats due.
    pub(crate) fn run_liveness(&mut self, now: DateTime<Utc>) {
        let expired: Vec<String> = self
            .sessions
            .values()
            .filter(|s| {
                s.last_seen + delta(self.options.liveness_window(s.heartbeat_interval)) <= now
            })
            .map(|s| s.worker_id.clone())
            .collect();
        for worker_id in expired {
            self.declare_dead(&worker_id, "no message within the liveness window", now);
        }
        let mut heartbeats = Vec::new();
        for session in self.sessions.values_mut() {
            if session.next_heartbeat <= now {
                session.next_heartbeat = now + delta(session.heartbeat_interval);
                heartbeats.push(session.peer.clone());
            }
        }
        for peer in heartbeats {
            self.push(Action::Send {
                peer,
                message: OrchestratorMessage::Heartbeat(OrchestratorHeartbeat {
                    protocol_version: PROTOCOL_VERSION,
                    orchestrator_id: self.options.orchestrator_id.clone(),
                    timestamp: now,
                }),
            });
        }
    }
}
