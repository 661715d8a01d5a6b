//! Frames from workers: decoding, rejection (spec §11), sessions (hello, heartbeats, goodbye,
//! re-hello with `in_flight`, spec §7), and handing results to result intake.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;
use tasker_protocol::limits::{MAX_HEARTBEAT_INTERVAL_MS, MIN_HEARTBEAT_INTERVAL_MS};
use tasker_protocol::{
    CancelReason, CancelSteps, ErrorCode, ErrorReport, Hello, HelloRejected, HelloRejectionCode,
    OrchestratorMessage, PROTOCOL_VERSION, ProtocolError, Welcome, WorkerMessage,
    decode_worker_message, reply_to_rejected_worker_frame,
};
use tasker_store::WorkerUpsert;
use tasker_transport::{FrameError, FrameErrorKind, PeerId};
use uuid::Uuid;

use crate::core::{Action, EngineCore, adopt_into_batch, delta, duration_ms};
use crate::core::{CommitItem, LossCause};
use crate::runtime::{BatchStep, WorkerSession};
use crate::stats::StatsCounters;

impl EngineCore {
    /// One frame from a worker.
    pub(crate) fn on_frame(
        &mut self,
        peer: PeerId,
        payload: Vec<u8>,
        now: DateTime<Utc>,
        received: Instant,
    ) {
        match decode_worker_message(&payload, &self.limits) {
            Err(error) => self.reject_frame(&peer, &payload, &error),
            Ok(message) => self.on_message(peer, payload, message, now, received),
        }
    }

    /// A message the transport refused (too large, several frames, empty).
    pub(crate) fn on_transport_rejected(&mut self, rejected: FrameError) {
        let error = match rejected.kind {
            FrameErrorKind::TooLarge { size, max } => ProtocolError::FrameTooLarge { size, max },
            FrameErrorKind::Multipart { frames } => ProtocolError::MultipartMessage { frames },
            FrameErrorKind::Empty => ProtocolError::InvalidJson {
                reason: "the frame is empty".to_owned(),
            },
        };
        self.reject_frame(&rejected.peer, &[], &error);
    }

    /// Counts, logs and answers a rejected frame (spec §11).
    fn reject_frame(&mut self, peer: &PeerId, payload: &[u8], error: &ProtocolError) {
        let code = error.code().as_str();
        self.stats.frame_rejected(code);
        tracing::warn!(
            peer = %peer,
            worker_id = self.peers.get(peer).map_or("(no session)", String::as_str),
            code,
            %error,
            "rejected a frame from a worker"
        );
        if let Some(reply) = reply_to_rejected_worker_frame(payload, error) {
            self.push(Action::Send {
                peer: peer.clone(),
                message: reply,
            });
        }
    }

    /// Answers a decoded message that breaks a session rule with `error` (never an `error`).
    fn refuse_message(
        &mut self,
        peer: &PeerId,
        message: &WorkerMessage,
        code: ErrorCode,
        text: String,
    ) {
        self.stats.frame_rejected(code.as_str());
        tracing::warn!(peer = %peer, code = code.as_str(), "{text}");
        if matches!(message, WorkerMessage::Error(_)) {
            return;
        }
        let (batch_id, step_id) = match message {
            WorkerMessage::PartialResult(r) => (Some(r.batch_id), Some(r.step_id)),
            WorkerMessage::BatchCompletion(c) => (Some(c.batch_id), None),
            _ => (None, None),
        };
        self.push(Action::Send {
            peer: peer.clone(),
            message: OrchestratorMessage::Error(ErrorReport {
                protocol_version: PROTOCOL_VERSION,
                code: code.as_str().to_owned(),
                message: text,
                offending_message_type: Some(message.message_type().to_owned()),
                batch_id,
                step_id,
            }),
        });
    }

    fn on_message(
        &mut self,
        peer: PeerId,
        payload: Vec<u8>,
        message: WorkerMessage,
        now: DateTime<Utc>,
        received: Instant,
    ) {
        if let WorkerMessage::Hello(hello) = message {
            self.on_hello(peer, hello, now);
            return;
        }
        let Some(worker_id) = self.peers.get(&peer).cloned() else {
            let text = format!(
                "`{}` from a connection without a session: send hello first",
                message.message_type()
            );
            self.refuse_message(&peer, &message, ErrorCode::NotRegistered, text);
            return;
        };
        if let Some(session) = self.sessions.get_mut(&worker_id) {
            session.last_seen = now;
        }
        let claimed = match &message {
            WorkerMessage::Heartbeat(m) => Some(m.worker_id.as_str()),
            WorkerMessage::PartialResult(m) => Some(m.worker_id.as_str()),
            WorkerMessage::BatchCompletion(m) => Some(m.worker_id.as_str()),
            WorkerMessage::HealthReply(m) => Some(m.worker_id.as_str()),
            WorkerMessage::Goodbye(m) => Some(m.worker_id.as_str()),
            WorkerMessage::Hello(_) | WorkerMessage::Error(_) => None,
        };
        if let Some(claimed) = claimed
            && claimed != worker_id
        {
            let text = format!(
                "`{}` names worker_id {claimed:?} but this session is {worker_id:?}",
                message.message_type()
            );
            self.refuse_message(&peer, &message, ErrorCode::WorkerIdMismatch, text);
            return;
        }
        match message {
            WorkerMessage::Hello(_) => {}
            WorkerMessage::Heartbeat(_) => self.maybe_upsert(&worker_id, now),
            WorkerMessage::PartialResult(result) => {
                self.release_step(result.batch_id, result.step_id, Some(&worker_id));
                self.pending_items.push_back(CommitItem::Partial {
                    peer,
                    worker_id,
                    raw: String::from_utf8_lossy(&payload).into_owned(),
                    result,
                    received,
                });
            }
            WorkerMessage::BatchCompletion(completion) => {
                self.pending_items.push_back(CommitItem::Completion {
                    peer,
                    worker_id,
                    raw: String::from_utf8_lossy(&payload).into_owned(),
                    completion,
                });
            }
            WorkerMessage::HealthReply(reply) => {
                tracing::debug!(worker_id, status = reply.status.as_str(), "health reply");
            }
            WorkerMessage::Goodbye(goodbye) => {
                let Some(session) = self.sessions.get_mut(&worker_id) else {
                    return;
                };
                session.draining = true;
                let mut released = Vec::new();
                for handed in &goodbye.handed_back {
                    if session
                        .outstanding
                        .remove(&(handed.batch_id, handed.step_id))
                    {
                        released.push((handed.batch_id, handed.step_id));
                    }
                }
                tracing::info!(
                    worker_id,
                    reason = goodbye.reason,
                    handed_back = released.len(),
                    "worker says goodbye; no more work for it"
                );
                for (batch_id, step_id) in released {
                    self.pending_items.push_back(CommitItem::Requeue {
                        batch_id,
                        step_id,
                        cause: "handed back by its worker",
                    });
                }
            }
            WorkerMessage::Error(report) => {
                tracing::warn!(
                    worker_id,
                    code = report.code,
                    message = report.message,
                    offending = report.offending_message_type.as_deref().unwrap_or(""),
                    "worker rejected a frame of ours"
                );
            }
        }
    }

    /// `hello`: register (or re-register) the worker, reconcile its `in_flight` list, welcome it.
    fn on_hello(&mut self, peer: PeerId, hello: Hello, now: DateTime<Utc>) {
        if self.shutting_down {
            self.push(Action::Send {
                peer,
                message: OrchestratorMessage::HelloRejected(HelloRejected {
                    protocol_version: PROTOCOL_VERSION,
                    code: HelloRejectionCode::NotAcceptingWorkers.as_str().to_owned(),
                    message: "the orchestrator is shutting down".to_owned(),
                }),
            });
            return;
        }
        // This connection spoke for another worker before: that session is over.
        if let Some(previous) = self.peers.get(&peer).cloned()
            && previous != hello.worker_id
        {
            self.declare_dead(
                &previous,
                "its connection now speaks for another worker",
                now,
            );
        }
        let interval = hello
            .heartbeat_interval_ms
            .filter(|ms| (MIN_HEARTBEAT_INTERVAL_MS..=MAX_HEARTBEAT_INTERVAL_MS).contains(ms))
            .map_or(self.options.heartbeat_interval, Duration::from_millis);
        let listed: HashSet<(Uuid, i64)> = hello
            .in_flight
            .iter()
            .map(|r| (r.batch_id, r.step_id))
            .collect();
        let capabilities = json!({
            "name": hello.name,
            "sdk": { "name": hello.sdk.name, "version": hello.sdk.version, "language": hello.sdk.language },
            "handler_classes": hello.handler_classes,
            "capacity": hello.capacity,
            "heartbeat_interval_ms": duration_ms(interval),
        });
        let (mut session, not_listed) = match self.sessions.remove(&hello.worker_id) {
            Some(mut session) => {
                if session.peer != peer {
                    self.peers.remove(&session.peer);
                    tracing::info!(worker_id = hello.worker_id, "worker reconnected");
                }
                let mut not_listed: Vec<(Uuid, i64)> = session
                    .outstanding
                    .iter()
                    .filter(|pair| !listed.contains(pair))
                    .copied()
                    .collect();
                not_listed.sort_unstable();
                session.outstanding.retain(|pair| listed.contains(pair));
                (session, not_listed)
            }
            None => (
                WorkerSession {
                    worker_id: hello.worker_id.clone(),
                    name: hello.name.clone(),
                    peer: peer.clone(),
                    handler_classes: HashSet::new(),
                    capacity: hello.capacity,
                    outstanding: HashSet::new(),
                    heartbeat_interval: interval,
                    last_seen: now,
                    next_heartbeat: now,
                    last_upsert: now,
                    draining: false,
                    capabilities: serde_json::Value::Null,
                },
                Vec::new(),
            ),
        };
        session.peer = peer.clone();
        session.name = hello.name.clone();
        session.handler_classes = hello.handler_classes.iter().cloned().collect();
        session.capacity = hello.capacity;
        session.heartbeat_interval = interval;
        session.last_seen = now;
        session.next_heartbeat = now + delta(interval);
        session.last_upsert = now;
        session.draining = false;
        session.capabilities = capabilities.clone();

        for (batch_id, step_id) in not_listed {
            tracing::warn!(worker_id = hello.worker_id, %batch_id, step_id, "re-hello does not list an outstanding step: it is lost");
            self.pending_items.push_back(CommitItem::Lost {
                batch_id,
                step_id,
                cause: LossCause::NotListed,
            });
        }

        // Listed steps the engine did not count on this worker (e.g. after an orchestrator
        // restart): the worker holds a slot for each until it reports it, so they count against
        // its credit. Adopt those the engine knows are in flight in that batch; tell the worker
        // to drop those whose attempt is over; the rest (tasks not loaded yet) are adopted when
        // their task loads.
        let mut supersede: HashMap<Uuid, Vec<i64>> = HashMap::new();
        let mut listed_sorted: Vec<(Uuid, i64)> = listed.into_iter().collect();
        listed_sorted.sort_unstable();
        for (batch_id, step_id) in listed_sorted {
            if !session.outstanding.insert((batch_id, step_id)) {
                continue;
            }
            let Some((task_id, index)) = self.step_index.get(&step_id).copied() else {
                // Not a step of a task held now: if the batch was ours, its task has finished
                // (or the attempt ended) and the worker may drop the step.
                if self.knows_batch(&batch_id) {
                    supersede.entry(batch_id).or_default().push(step_id);
                }
                continue;
            };
            let Some(task) = self.tasks.get_mut(&task_id) else {
                continue;
            };
            let step = &mut task.steps[index];
            if step.in_flight == Some(batch_id) {
                step.worker = Some(hello.worker_id.clone());
                let member = BatchStep {
                    step_id,
                    task_id,
                    attempt: step.attempts,
                };
                adopt_into_batch(&mut self.batches, batch_id, &hello.worker_id, member);
                self.remember_batch(batch_id);
                tracing::info!(worker_id = hello.worker_id, %batch_id, step_id, "step in flight adopted from the worker's hello");
            } else {
                supersede.entry(batch_id).or_default().push(step_id);
            }
        }

        self.peers.insert(peer.clone(), hello.worker_id.clone());
        let worker_id = hello.worker_id.clone();
        self.sessions.insert(worker_id.clone(), session);
        StatsCounters::set(&self.stats.workers_connected, self.sessions.len() as u64);
        tracing::info!(
            worker_id,
            name = hello.name,
            capacity = hello.capacity,
            handler_classes = ?hello.handler_classes,
            in_flight = hello.in_flight.len(),
            "worker registered"
        );
        self.push(Action::Send {
            peer: peer.clone(),
            message: OrchestratorMessage::Welcome(Welcome {
                protocol_version: PROTOCOL_VERSION,
                worker_id: worker_id.clone(),
                orchestrator_id: self.options.orchestrator_id.clone(),
                heartbeat_interval_ms: duration_ms(interval),
                liveness: self.options.liveness,
                max_frame_bytes: self.options.max_frame_bytes as u64,
                max_steps_per_batch: u32::try_from(self.options.batch_size).unwrap_or(u32::MAX),
            }),
        });
        let mut supersede: Vec<(Uuid, Vec<i64>)> = supersede.into_iter().collect();
        supersede.sort_unstable();
        for (batch_id, step_ids) in supersede {
            for chunk in step_ids.chunks(self.options.batch_size.max(1)) {
                self.push(Action::Send {
                    peer: peer.clone(),
                    message: OrchestratorMessage::CancelSteps(CancelSteps {
                        protocol_version: PROTOCOL_VERSION,
                        batch_id,
                        step_ids: chunk.to_vec(),
                        reason: CancelReason::Superseded,
                    }),
                });
            }
        }
        self.push(Action::UpsertWorker(WorkerUpsert {
            worker_id,
            capabilities,
            now,
        }));
    }

    /// Records a worker's heartbeat in the store now and then (the store's orphan query and
    /// the dashboard read it; the engine itself tracks liveness in memory).
    fn maybe_upsert(&mut self, worker_id: &str, now: DateTime<Utc>) {
        let window = self
            .options
            .liveness_window(self.options.heartbeat_interval);
        let Some(session) = self.sessions.get_mut(worker_id) else {
            return;
        };
        if now - session.last_upsert >= delta(window / 2) {
            session.last_upsert = now;
            let upsert = WorkerUpsert {
                worker_id: worker_id.to_owned(),
                capabilities: session.capabilities.clone(),
                now,
            };
            self.push(Action::UpsertWorker(upsert));
        }
    }
}
