//! The I/O shell around the engine core: one tokio task that receives frames, commands, store
//! completions and timer ticks, hands them to the core, and executes the actions it returns.

use std::sync::Arc;

use tasker_store::Store;
use tasker_transport::{RouterEvents, RouterHandle};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::error::EngineResult;
use crate::options::EngineOptions;
use crate::stats::StatsCounters;
use crate::task::TaskOutcome;

/// What an [`EngineHandle`](crate::EngineHandle) asks of the loop.
#[derive(Debug)]
pub(crate) enum Command {
    /// A task was created (or re-requested): claim and drive it.
    TaskCreated { task_id: i64 },
    /// Reply once the task has finished.
    AwaitTask {
        task_id: i64,
        reply: oneshot::Sender<EngineResult<TaskOutcome>>,
    },
    /// Stop; reply when stopped.
    Shutdown { done: oneshot::Sender<()> },
}

/// Spawns the engine loop.
pub(crate) fn spawn(
    options: EngineOptions,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    stats: Arc<StatsCounters>,
    router: RouterHandle,
    events: RouterEvents,
    commands: mpsc::UnboundedReceiver<Command>,
) -> JoinHandle<()> {
    let _ = (options, store, clock, stats, events);
    tokio::spawn(async move {
        let mut commands = commands;
        while let Some(command) = commands.recv().await {
            match command {
                Command::TaskCreated { .. } => {}
                Command::AwaitTask { reply, .. } => {
                    let _ = reply.send(Err(crate::error::EngineError::Stopped));
                }
                Command::Shutdown { done } => {
                    let _ = done.send(());
                    break;
                }
            }
        }
        router.shutdown().await;
    })
}
