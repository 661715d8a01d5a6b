//! [`Engine`] (start) and [`EngineHandle`] (everything a Rust caller does with a running engine).

use std::sync::{Arc, Mutex, RwLock};

use serde_json::Value;
use tasker_core::readiness::StepView;
use tasker_core::status::task_execution_status;
use tasker_core::template::TaskTemplate;
use tasker_store::{NewTask, Store};
use tasker_transport::{FrameLimits, RouterEndpoint, RouterOptions};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::clock::{Ambient, Clock};
use crate::driver::{self, Command};
use crate::error::{EngineError, EngineResult};
use crate::events::EngineEvent;
use crate::options::EngineOptions;
use crate::stats::{EngineStats, StatsCounters};
use crate::task::{TaskCreated, TaskOutcome, TaskRequest, TaskStatus};
use crate::templates::TemplateRegistry;

/// Starts engines. See the [crate documentation](crate) for what a running engine does.
#[derive(Debug)]
pub struct Engine {
    _private: (),
}

impl Engine {
    /// Validates `options`, binds the ROUTER endpoint, starts the engine loop (one tokio task)
    /// and begins recovering the unfinished tasks claimed by (or free for) this orchestrator.
    /// Must be called from within a tokio runtime.
    ///
    /// The engine runs until [`EngineHandle::shutdown`] is called or every clone of the handle is
    /// dropped. The store is the caller's: the engine never closes it.
    ///
    /// # Errors
    ///
    /// [`EngineError::InvalidOptions`], or [`EngineError::Transport`] when the endpoint cannot be
    /// bound (malformed, address in use, ipc path taken by a live socket).
    pub async fn start(
        options: EngineOptions,
        store: Arc<dyn Store>,
        templates: TemplateRegistry,
    ) -> EngineResult<EngineHandle> {
        Self::start_with_ambient(options, store, templates, Ambient::default()).await
    }

    /// [`Engine::start`] with the engine reading the time from `clock`.
    ///
    /// # Errors
    ///
    /// As [`Engine::start`].
    pub async fn start_with_clock(
        options: EngineOptions,
        store: Arc<dyn Store>,
        templates: TemplateRegistry,
        clock: Arc<dyn Clock>,
    ) -> EngineResult<EngineHandle> {
        let ambient = Ambient {
            clock,
            ..Ambient::default()
        };
        Self::start_with_ambient(options, store, templates, ambient).await
    }

    /// [`Engine::start`] with the engine's time, batch ids and jitter from `ambient` (tests:
    /// [`Ambient::manual`]).
    ///
    /// # Errors
    ///
    /// As [`Engine::start`].
    pub async fn start_with_ambient(
        options: EngineOptions,
        store: Arc<dyn Store>,
        templates: TemplateRegistry,
        ambient: Ambient,
    ) -> EngineResult<EngineHandle> {
        let clock = Arc::clone(&ambient.clock);
        options.validate()?;
        let router_options = RouterOptions {
            limits: FrameLimits {
                max_frame_bytes: options.max_frame_bytes,
                ..FrameLimits::default()
            },
            ..RouterOptions::default()
        };
        let (router, events) = RouterEndpoint::bind(&options.endpoint, router_options)?;
        let endpoint = router.endpoint().to_owned();
        let stats = Arc::new(StatsCounters::default());
        let (commands, command_receiver) = mpsc::unbounded_channel();
        let (published, _) = tokio::sync::broadcast::channel(EVENT_BUFFER);
        let join = driver::spawn(
            options.clone(),
            Arc::clone(&store),
            ambient,
            Arc::clone(&stats),
            router,
            events,
            command_receiver,
            published.clone(),
        );
        tracing::info!(
            endpoint = %endpoint,
            orchestrator_id = %options.orchestrator_id,
            templates = templates.len(),
            "engine started"
        );
        Ok(EngineHandle {
            shared: Arc::new(Shared {
                options,
                endpoint,
                store,
                clock,
                stats,
                templates: RwLock::new(templates),
                commands,
                published,
                join: Mutex::new(Some(join)),
            }),
        })
    }
}

/// A running engine, as Rust callers (the HTTP API, the CLI, tests, benchmarks) use it. Cheap to
/// clone; the engine stops when [`Self::shutdown`] is called or the last clone is dropped.
#[derive(Clone)]
pub struct EngineHandle {
    shared: Arc<Shared>,
}

struct Shared {
    options: EngineOptions,
    endpoint: String,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    stats: Arc<StatsCounters>,
    templates: RwLock<TemplateRegistry>,
    commands: mpsc::UnboundedSender<Command>,
    published: tokio::sync::broadcast::Sender<EngineEvent>,
    join: Mutex<Option<JoinHandle<()>>>,
}

/// Events kept for a subscriber that falls behind; past that it misses the oldest and its
/// next receive reports how many (`RecvError::Lagged`).
const EVENT_BUFFER: usize = 4096;

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle")
            .field("endpoint", &self.shared.endpoint)
            .field("orchestrator_id", &self.shared.options.orchestrator_id)
            .finish_non_exhaustive()
    }
}

impl EngineHandle {
    /// The endpoint actually bound (with the real port when port 0 was asked for): what workers
    /// connect to.
    pub fn endpoint(&self) -> &str {
        &self.shared.endpoint
    }

    /// The options the engine runs with.
    pub fn options(&self) -> &EngineOptions {
        &self.shared.options
    }

    /// The store the engine writes to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    /// A snapshot of the loaded templates.
    pub fn templates(&self) -> TemplateRegistry {
        self.shared
            .templates
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Loads one more template (YAML or JSON text) for later [`Self::initialize_task`] calls.
    ///
    /// # Errors
    ///
    /// [`EngineError::Template`] or [`EngineError::DuplicateTemplate`].
    pub fn register_template(&self, yaml: &str) -> EngineResult<Arc<TaskTemplate>> {
        self.shared
            .templates
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .add_yaml_str(yaml)
    }

    /// Creates a task from a loaded template (the seed's `initialize_task(task_request)`): finds
    /// the template (latest version unless one is named), validates the context against its
    /// `context_schema`, stores the task with its steps and dependencies, and hands it to the
    /// engine, which starts dispatching its ready steps at once. A repeated `idempotency_key`
    /// for the same template returns the existing task with `created: false`.
    ///
    /// # Errors
    ///
    /// [`EngineError::UnknownTemplate`] naming namespace, name and version;
    /// [`EngineError::InvalidContext`] listing every violation with its JSON pointer;
    /// [`EngineError::Store`] when the store fails.
    ///
    /// The request is validated here; the task is created by the engine loop, in its next group
    /// commit, together with the other creations, results and dispatches of that moment, already
    /// claimed by this engine and held in its memory (no claim round, no read back). The call
    /// answers once that commit is durable; the task's first steps are dispatched at once.
    pub async fn initialize_task(&self, request: TaskRequest) -> EngineResult<TaskCreated> {
        let mut created = self.initialize_tasks(vec![request]).await?;
        created.pop().ok_or_else(|| {
            EngineError::Store(tasker_store::StoreError::Backend {
                cause: "the store returned no outcome for the task created".to_owned(),
            })
        })
    }

    /// [`Self::initialize_task`] for many requests, created in one group commit (bulk loading,
    /// benchmarks, `POST /v1/tasks/bulk`). Every request is validated first; nothing is created
    /// if one is invalid.
    ///
    /// # Errors
    ///
    /// As [`Self::initialize_task`], for the first invalid request.
    pub async fn initialize_tasks(
        &self,
        requests: Vec<TaskRequest>,
    ) -> EngineResult<Vec<TaskCreated>> {
        if self.shared.commands.is_closed() {
            return Err(EngineError::Stopped);
        }
        let mut templates = Vec::with_capacity(requests.len());
        let mut new_tasks = Vec::with_capacity(requests.len());
        for request in requests {
            let (template, new_task) = self.prepare(request)?;
            // Checked before it joins a group commit, where an invalid task would fail the
            // whole group (other callers' tasks and workers' results with it).
            new_task.validate()?;
            templates.push(template);
            new_tasks.push(new_task);
        }
        if new_tasks.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.shared
            .commands
            .send(Command::CreateTasks {
                tasks: new_tasks,
                reply,
            })
            .map_err(|_| EngineError::Stopped)?;
        let created = answer.await.map_err(|_| EngineError::Stopped)??;
        Ok(templates
            .iter()
            .zip(created)
            .map(|(template, created)| task_created(template, created))
            .collect())
    }

    /// Checks a request as [`Self::initialize_task`] would (template, context, steps) without
    /// creating anything: for callers that report each of many requests' problems on its own.
    ///
    /// # Errors
    ///
    /// As [`Self::initialize_task`].
    pub fn check_request(&self, request: &TaskRequest) -> EngineResult<()> {
        let (_, new_task) = self.prepare(request.clone())?;
        new_task.validate()?;
        Ok(())
    }

    /// Finds the request's template and builds the task to store.
    fn prepare(&self, request: TaskRequest) -> EngineResult<(Arc<TaskTemplate>, NewTask)> {
        let template = self
            .shared
            .templates
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(
                &request.namespace,
                &request.name,
                request.version.as_deref(),
            )
            .ok_or_else(|| EngineError::UnknownTemplate {
                namespace: request.namespace.clone(),
                name: request.name.clone(),
                version: request.version.clone(),
            })?;
        let template = match &self.shared.options.environment {
            Some(environment) => Arc::new(template.for_environment(environment)),
            None => template,
        };
        let new_task = request.into_new_task(&template, self.shared.clock.now())?;
        Ok((template, new_task))
    }

    /// Drives one task until it has nothing left to do (the seed's `handle(task_id)`): resolves
    /// when the task is `complete`, `error` (naming the failed steps), `cancelled` or
    /// `resolved_manually`. Resolves at once for a task that already finished. Dispatching does
    /// not depend on anyone calling this; it only waits.
    ///
    /// # Errors
    ///
    /// [`EngineError::TaskNotFound`], [`EngineError::Store`], or [`EngineError::Stopped`] when
    /// the engine stops first.
    pub async fn handle(&self, task_id: i64) -> EngineResult<TaskOutcome> {
        let (reply, answer) = oneshot::channel();
        self.shared
            .commands
            .send(Command::AwaitTask { task_id, reply })
            .map_err(|_| EngineError::Stopped)?;
        answer.await.map_err(|_| EngineError::Stopped)?
    }

    /// Waits until the task has finished or `timeout` passed, whichever comes first: the long
    /// poll behind `GET /v1/tasks/{id}?wait_ms=N`. Returns the outcome when it finished, `None`
    /// at the timeout.
    ///
    /// # Errors
    ///
    /// As [`Self::handle`].
    pub async fn wait_task(
        &self,
        task_id: i64,
        timeout: std::time::Duration,
    ) -> EngineResult<Option<TaskOutcome>> {
        match tokio::time::timeout(timeout, self.handle(task_id)).await {
            Ok(outcome) => outcome.map(Some),
            Err(_elapsed) => Ok(None),
        }
    }

    /// The task as stored now: the task row, its steps and edges, and the engine's reading of
    /// them ([`tasker_core::status::ExecutionStatus`]). A task the engine holds (running) is
    /// answered from its memory, which mirrors every committed change; any other (finished, or
    /// held elsewhere) is read from the store.
    ///
    /// # Errors
    ///
    /// [`EngineError::TaskNotFound`] or [`EngineError::Store`].
    pub async fn task_status(&self, task_id: i64) -> EngineResult<TaskStatus> {
        let (reply, answer) = oneshot::channel();
        let held = match self
            .shared
            .commands
            .send(driver::Command::Snapshot { task_id, reply })
        {
            Ok(()) => answer.await.ok().flatten(),
            Err(_) => None,
        };
        let (dag, from_memory) =
            match held {
                Some(dag) => (dag, true),
                None => (
                    self.shared.store.task_load_dag(task_id).await.map_err(
                        |error| match error {
                            tasker_store::StoreError::NotFound { what: "task", .. } => {
                                EngineError::TaskNotFound { task_id }
                            }
                            other => EngineError::Store(other),
                        },
                    )?,
                    false,
                ),
            };
        let now = self.shared.clock.now();
        let views = step_views_of_records(&dag.steps, &dag.edges);
        Ok(TaskStatus {
            execution: task_execution_status(&views, now),
            task: dag.task,
            steps: dag.steps,
            edges: dag.edges,
            read_at: now,
            from_memory,
        })
    }

    /// Every [`EngineEvent`] from now on, in commit order. A subscriber more than 4096 events
    /// behind misses the oldest (its next receive says how many).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<EngineEvent> {
        self.shared.published.subscribe()
    }

    /// A snapshot of the engine's counters and handoff-latency samples.
    pub fn stats(&self) -> EngineStats {
        self.shared.stats.snapshot()
    }

    /// Stops the engine: no more dispatching, the commit in flight is finished, claims on
    /// unfinished tasks are released (so another orchestrator, or a restarted one, takes them
    /// at once) and the endpoint is closed. Steps still running on workers stay in flight in the
    /// store; a restarted engine accepts their results. Idempotent.
    pub async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self
            .shared
            .commands
            .send(Command::Shutdown { done })
            .is_ok()
        {
            let _ = finished.await;
        }
        let join = self
            .shared
            .join
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(join) = join {
            let _ = join.await;
        }
    }
}

fn task_created(template: &TaskTemplate, created: tasker_store::TaskCreated) -> TaskCreated {
    TaskCreated {
        task_id: created.task_id,
        created: created.created,
        namespace: template.namespace().to_owned(),
        name: template.name().to_owned(),
        version: template.version().to_string(),
        step_ids: created.step_ids,
    }
}

/// Readiness views of stored steps (template order) and edges (step ids).
pub(crate) fn step_views_of_records(
    steps: &[tasker_store::StepRecord],
    edges: &[(i64, i64)],
) -> Vec<StepView> {
    let position: std::collections::HashMap<i64, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.step_id, i))
        .collect();
    let mut parents = vec![Vec::new(); steps.len()];
    for (parent, child) in edges {
        if let (Some(&p), Some(&c)) = (position.get(parent), position.get(child)) {
            parents[c].push(p);
        }
    }
    steps
        .iter()
        .zip(parents)
        .map(|(step, parents)| StepView {
            state: step.state,
            parents,
            attempts: u32::try_from(step.attempts).unwrap_or(0),
            retry_limit: u32::try_from(step.retry_limit).unwrap_or(0),
            retryable: step.retryable && last_failure_retryable(step.last_error.as_ref()),
            backoff_until: step.backoff_until,
            in_flight: step.in_flight_batch.is_some(),
        })
        .collect()
}

/// Whether the last recorded failure allows a retry (`error.retryable`, default true).
pub(crate) fn last_failure_retryable(last_error: Option<&Value>) -> bool {
    last_error
        .and_then(|e| e.get("retryable"))
        .and_then(Value::as_bool)
        .unwrap_or(true)
}
