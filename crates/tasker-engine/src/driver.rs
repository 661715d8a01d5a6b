//! The I/O shell around the engine core: one tokio task that receives frames, commands, store
//! completions and timer ticks, hands them to the [`EngineCore`], and executes the actions it
//! returns — sending frames and spawning store operations whose completions come back as events.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tasker_store::{
    Store, StoreError, TaskDag, TasksActive, TasksClaim, TasksLease, TransitionsApplied,
};
use tasker_transport::{RouterEvent, RouterEvents, RouterHandle, TransportError};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::clock::{Ambient, Clock};
use crate::core::CommitBook;
use crate::core::{Action, EngineCore, duration_ms};
use crate::error::EngineResult;
use crate::events::EngineEvent;
use crate::options::EngineOptions;
use crate::stats::StatsCounters;
use crate::task::TaskOutcome;

/// Most frames taken from the socket in one go before the core gets to commit and dispatch.
const FRAMES_PER_TURN: usize = 1024;
/// Tasks loaded per store call.
const LOAD_CHUNK: usize = 100;
/// Tasks newly claimed per claim round.
const CLAIM_LIMIT: u32 = 500;
/// Longest wait for writes in flight when stopping.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// What an [`EngineHandle`](crate::EngineHandle) asks of the loop.
#[derive(Debug)]
pub(crate) enum Command {
    /// Create these tasks in the next group commit; reply once it is durable.
    CreateTasks {
        tasks: Vec<tasker_store::NewTask>,
        reply: oneshot::Sender<EngineResult<Vec<tasker_store::TaskCreated>>>,
    },
    /// Reply once the task has finished.
    AwaitTask {
        task_id: i64,
        reply: oneshot::Sender<EngineResult<TaskOutcome>>,
    },
    /// The task as stored now, from memory when the engine holds it (`None`: not held).
    Snapshot {
        task_id: i64,
        reply: oneshot::Sender<Option<TaskDag>>,
    },
    /// Stop; reply when stopped.
    Shutdown { done: oneshot::Sender<()> },
}

/// Completions of the store operations and sends the shell spawned.
#[derive(Debug)]
enum Internal {
    SendFailed {
        batch_id: Uuid,
        error: TransportError,
    },
    CommitDone {
        book: Box<CommitBook>,
        result: Result<TransitionsApplied, StoreError>,
    },
    TasksLoaded(Vec<TaskDag>),
    /// Tasks read by a claim round (new claims, or recovery after a restart).
    TasksClaimed(Vec<TaskDag>),
    TasksLoadFailed(Vec<i64>, StoreError),
    ClaimDone(Result<bool, StoreError>),
    LeasesRenewed {
        asked: Vec<i64>,
        result: Result<Vec<i64>, StoreError>,
    },
    TaskChecked {
        task_id: i64,
        result: Box<Result<TaskDag, StoreError>>,
    },
}

/// What executing actions needs.
struct Shell {
    store: Arc<dyn Store>,
    router: RouterHandle,
    internal: mpsc::UnboundedSender<Internal>,
    clock: Arc<dyn Clock>,
    orchestrator_id: String,
    lease_ms: i64,
    published: tokio::sync::broadcast::Sender<EngineEvent>,
}

/// Spawns the engine loop.
#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn(
    options: EngineOptions,
    store: Arc<dyn Store>,
    ambient: Ambient,
    stats: Arc<StatsCounters>,
    router: RouterHandle,
    events: RouterEvents,
    commands: mpsc::UnboundedReceiver<Command>,
    published: tokio::sync::broadcast::Sender<EngineEvent>,
) -> JoinHandle<()> {
    tokio::spawn(run(
        options, store, ambient, stats, router, events, commands, published,
    ))
}

#[allow(clippy::too_many_arguments)]
async fn run(
    options: EngineOptions,
    store: Arc<dyn Store>,
    ambient: Ambient,
    stats: Arc<StatsCounters>,
    router: RouterHandle,
    mut events: RouterEvents,
    mut commands: mpsc::UnboundedReceiver<Command>,
    published: tokio::sync::broadcast::Sender<EngineEvent>,
) {
    let clock = Arc::clone(&ambient.clock);
    let mut clock_moves = clock.moves();
    let poll_interval = options.poll_interval;
    let (internal, mut internal_events) = mpsc::unbounded_channel();
    let shell = Shell {
        store,
        router,
        internal,
        clock: Arc::clone(&clock),
        orchestrator_id: options.orchestrator_id.clone(),
        lease_ms: i64::try_from(duration_ms(options.lease_duration)).unwrap_or(i64::MAX),
        published,
    };
    let mut core = EngineCore::new(options, stats, &ambient, clock.now());
    shell.execute(core.take_actions());
    let mut stopping: Option<(Option<oneshot::Sender<()>>, tokio::time::Instant)> = None;
    loop {
        let now = clock.now();
        let wait = (core.next_due() - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(poll_interval);
        tokio::select! {
            biased;
            Some(event) = internal_events.recv() => {
                handle_internal(&mut core, event, clock.now());
                while let Ok(event) = internal_events.try_recv() {
                    handle_internal(&mut core, event, clock.now());
                }
            }
            command = commands.recv(), if stopping.is_none() => match command {
                Some(Command::CreateTasks { tasks, reply }) => core.on_create(tasks, reply),
                Some(Command::AwaitTask { task_id, reply }) => core.on_await(task_id, reply),
                Some(Command::Snapshot { task_id, reply }) => {
                    let _ = reply.send(core.snapshot(task_id));
                }
                Some(Command::Shutdown { done }) => {
                    core.begin_shutdown();
                    stopping = Some((Some(done), tokio::time::Instant::now() + SHUTDOWN_WAIT));
                }
                None => {
                    core.begin_shutdown();
                    stopping = Some((None, tokio::time::Instant::now() + SHUTDOWN_WAIT));
                }
            },
            event = events.recv(), if stopping.is_none() => match event {
                Some(event) => {
                    handle_router_event(&mut core, event, clock.now(), clock.monotonic());
                    for _ in 1..FRAMES_PER_TURN {
                        match events.try_recv() {
                            Some(event) => handle_router_event(&mut core, event, clock.now(), clock.monotonic()),
                            None => break,
                        }
                    }
                }
                None => {
                    tracing::error!("the ROUTER socket closed; the engine stops");
                    core.begin_shutdown();
                    stopping = Some((None, tokio::time::Instant::now() + SHUTDOWN_WAIT));
                }
            },
            () = tokio::time::sleep(wait) => {}
            // A manual clock moved (tests): whatever fell due runs now.
            Ok(()) = async {
                match clock_moves.as_mut() {
                    Some(moves) => moves.changed().await,
                    None => std::future::pending().await,
                }
            } => {}
        }
        if let Some((_, until)) = &stopping {
            // Only store completions arrive now; their follow-ups (acks, a batch recorded just
            // before the stop) still go out, so the worker runs it and the next engine gets
            // its result. Results received and batches planned before the stop are committed
            // once the commit in flight is done, and acknowledged or sent.
            core.start_commit(clock.now());
            shell.execute(core.take_actions());
            if !core.has_writes_in_flight() || tokio::time::Instant::now() >= *until {
                break;
            }
            continue;
        }
        let now = clock.now();
        if core.next_due() <= now {
            core.on_tick(now);
        }
        core.dispatch(now);
        core.start_commit(now);
        shell.execute(core.take_actions());
    }
    let held = core.task_ids();
    if !held.is_empty() {
        let release = shell
            .store
            .tasks_release(TasksLease {
                orchestrator_id: shell.orchestrator_id.clone(),
                task_ids: held,
                now: clock.now(),
                lease_ms: shell.lease_ms,
            })
            .await;
        if let Err(error) = release {
            tracing::warn!(%error, "releasing task claims at shutdown failed; they expire with their leases");
        }
    }
    shell.router.shutdown().await;
    tracing::info!("engine stopped");
    if let Some((Some(done), _)) = stopping {
        let _ = done.send(());
    }
}

fn handle_router_event(
    core: &mut EngineCore,
    event: RouterEvent,
    now: DateTime<Utc>,
    received: Instant,
) {
    match event {
        RouterEvent::Message(inbound) => {
            core.on_frame(inbound.peer, inbound.payload, now, received);
        }
        RouterEvent::Rejected(error) => core.on_transport_rejected(error),
    }
}

fn handle_internal(core: &mut EngineCore, event: Internal, now: DateTime<Utc>) {
    match event {
        Internal::SendFailed { batch_id, error } => core.on_send_failed(batch_id, &error, now),
        Internal::CommitDone { book, result } => core.on_commit_done(*book, result, now),
        Internal::TasksLoaded(dags) => core.on_tasks_loaded(dags, now),
        Internal::TasksClaimed(dags) => core.on_tasks_claimed(dags, now),
        Internal::TasksLoadFailed(task_ids, error) => {
            for task_id in task_ids {
                core.on_task_load_failed(task_id, &error);
            }
        }
        Internal::ClaimDone(result) => core.on_claim_done(result),
        Internal::LeasesRenewed { asked, result } => core.on_leases_renewed(asked, result),
        Internal::TaskChecked { task_id, result } => core.on_task_checked(task_id, *result, now),
    }
}

impl Shell {
    fn execute(&self, actions: Vec<Action>) {
        for action in actions {
            self.execute_one(action);
        }
    }

    fn execute_one(&self, action: Action) {
        match action {
            Action::Publish(event) => {
                // Nobody subscribed is no error.
                let _ = self.published.send(event);
            }
            Action::Send { peer, message } => {
                let frame = tasker_protocol::encode(&message);
                // Fire and forget: a lost ack or heartbeat is repaired by the protocol (re-sent
                // results, liveness); the outcome is counted in the transport's stats.
                drop(self.router.send(&peer, frame));
            }
            Action::SendBatch {
                peer,
                batch_id,
                frame,
            } => {
                let pending = self.router.send(&peer, frame);
                let internal = self.internal.clone();
                tokio::spawn(async move {
                    if let Err(error) = pending.await {
                        let _ = internal.send(Internal::SendFailed { batch_id, error });
                    }
                });
            }
            Action::Commit { params, book } => {
                let store = Arc::clone(&self.store);
                let internal = self.internal.clone();
                tokio::spawn(async move {
                    let result = store.transitions_apply(params).await;
                    let _ = internal.send(Internal::CommitDone { book, result });
                });
            }
            Action::ClaimTasks { recover } => {
                let store = Arc::clone(&self.store);
                let internal = self.internal.clone();
                let orchestrator_id = self.orchestrator_id.clone();
                let lease_ms = self.lease_ms;
                let now = self.clock.now();
                tokio::spawn(async move {
                    let result =
                        claim_tasks(&*store, &orchestrator_id, lease_ms, now, recover).await;
                    match result {
                        Ok((ids, more)) => {
                            load_tasks(&*store, ids, &internal, Internal::TasksClaimed).await;
                            let _ = internal.send(Internal::ClaimDone(Ok(more)));
                        }
                        Err(error) => {
                            let _ = internal.send(Internal::ClaimDone(Err(error)));
                        }
                    }
                });
            }
            Action::LoadTasks(ids) => {
                let store = Arc::clone(&self.store);
                let internal = self.internal.clone();
                tokio::spawn(async move {
                    load_tasks(&*store, ids, &internal, Internal::TasksLoaded).await;
                });
            }
            Action::RenewLeases(ids) => {
                let store = Arc::clone(&self.store);
                let internal = self.internal.clone();
                let params = TasksLease {
                    orchestrator_id: self.orchestrator_id.clone(),
                    task_ids: ids.clone(),
                    now: self.clock.now(),
                    lease_ms: self.lease_ms,
                };
                tokio::spawn(async move {
                    let result = store.tasks_lease_renew(params).await;
                    let _ = internal.send(Internal::LeasesRenewed { asked: ids, result });
                });
            }
            Action::ReleaseLeases(ids) => {
                let store = Arc::clone(&self.store);
                let params = TasksLease {
                    orchestrator_id: self.orchestrator_id.clone(),
                    task_ids: ids,
                    now: self.clock.now(),
                    lease_ms: self.lease_ms,
                };
                tokio::spawn(async move {
                    if let Err(error) = store.tasks_release(params).await {
                        tracing::warn!(%error, "releasing claims of finished tasks failed");
                    }
                });
            }
            Action::UpsertWorker(params) => {
                let store = Arc::clone(&self.store);
                tokio::spawn(async move {
                    let worker_id = params.worker_id.clone();
                    if let Err(error) = store.worker_upsert(params).await {
                        tracing::warn!(worker_id, %error, "recording a worker failed");
                    }
                });
            }
            Action::DeadLetter(params) => {
                let store = Arc::clone(&self.store);
                tokio::spawn(async move {
                    let task_id = params.task_id;
                    if let Err(error) = store.dead_letter_insert(params).await {
                        tracing::error!(task_id, %error, "recording a dead letter failed");
                    }
                });
            }
            Action::CheckTask(task_id) => {
                let store = Arc::clone(&self.store);
                let internal = self.internal.clone();
                tokio::spawn(async move {
                    let result = store.task_load_dag(task_id).await;
                    let _ = internal.send(Internal::TaskChecked {
                        task_id,
                        result: Box::new(result),
                    });
                });
            }
        }
    }
}

/// Claims free tasks; with `recover`, first takes back (renews) those already claimed by this
/// orchestrator (a restart under the same id). Returns the ids and whether the claim hit its
/// limit.
async fn claim_tasks(
    store: &dyn Store,
    orchestrator_id: &str,
    lease_ms: i64,
    now: DateTime<Utc>,
    recover: bool,
) -> Result<(Vec<i64>, bool), StoreError> {
    let mut ids = Vec::new();
    if recover {
        let mut after = None;
        loop {
            let page = store
                .tasks_active(TasksActive {
                    after_task_id: after,
                    limit: 1000,
                    claimed_by: Some(orchestrator_id.to_owned()),
                })
                .await?;
            if !page.items.is_empty() {
                let renewed = store
                    .tasks_lease_renew(TasksLease {
                        orchestrator_id: orchestrator_id.to_owned(),
                        task_ids: page.items.clone(),
                        now,
                        lease_ms,
                    })
                    .await?;
                ids.extend(renewed);
            }
            match page.next_cursor {
                Some(cursor) => after = Some(cursor),
                None => break,
            }
        }
        if !ids.is_empty() {
            tracing::info!(
                tasks = ids.len(),
                "recovering tasks claimed before a restart"
            );
        }
    }
    let claimed = store
        .tasks_claim(TasksClaim {
            orchestrator_id: orchestrator_id.to_owned(),
            now,
            lease_ms,
            limit: CLAIM_LIMIT,
        })
        .await?;
    let more = claimed.len() >= CLAIM_LIMIT as usize;
    ids.extend(claimed);
    ids.sort_unstable();
    ids.dedup();
    Ok((ids, more))
}

/// Loads tasks' DAGs, [`LOAD_CHUNK`] tasks per store call, and reports each chunk as `report`.
async fn load_tasks(
    store: &dyn Store,
    ids: Vec<i64>,
    internal: &mpsc::UnboundedSender<Internal>,
    report: fn(Vec<TaskDag>) -> Internal,
) {
    for chunk in ids.chunks(LOAD_CHUNK) {
        match store.tasks_load_dags(chunk.to_vec()).await {
            Ok(loaded) => {
                let found: HashSet<i64> = loaded.iter().map(|dag| dag.task.task_id).collect();
                for &task_id in chunk.iter().filter(|id| !found.contains(id)) {
                    let error = StoreError::NotFound {
                        what: "task",
                        id: task_id.to_string(),
                    };
                    let _ = internal.send(Internal::TasksLoadFailed(vec![task_id], error));
                }
                if !loaded.is_empty() {
                    let _ = internal.send(report(loaded));
                }
            }
            Err(error) => {
                let _ = internal.send(Internal::TasksLoadFailed(chunk.to_vec(), error));
            }
        }
    }
}
