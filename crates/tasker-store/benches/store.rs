//! Hot paths of the store on each backend:
//!
//! - `create_diamond`: `task_create` of a four-step diamond (tasks per second);
//! - `apply_results/N`: `transitions_apply` of N step results in one transaction, N = 1, 10, 100
//!   (results per second; the dispatch that puts the steps in flight is not timed);
//! - `group_commit/N`: the engine's group commit — one `transitions_apply` with N results (each
//!   completes the parent of a two-step chain), the batches that carried them moving
//!   `published → executing → completed` with a batch completion each, and the N children thus
//!   made ready dispatched in the same transaction (`batches`): N = 1 (a handoff under light
//!   load: one result, one batch) and N = 50 (8 batches in, 8 out). Results per second; what puts
//!   the parents in flight is not timed. Each commit's latency is also kept, and its p50/p90/p99
//!   printed after the case (criterion itself reports means);
//! - `ready_steps_100k`: `steps_ready` (limit 1000) on a database holding 100 000 diamond tasks,
//!   90 % finished and 10 % with their first step done (so 20 000 steps are ready).
//!
//! SQLite runs always (`synchronous=full`, the default, and `normal`); PostgreSQL runs when
//! `TASKER_TEST_POSTGRES_URL` is set. The 100k database is seeded once (bulk insert through
//! `tasks_create_many`, then states set with one UPDATE) and kept for later runs: SQLite under
//! `target/tasker-bench/`, PostgreSQL as database `tasker_bench_ready_100k`.
//!
//! `cargo bench -p tasker-store --bench store` (add `-- --quick` for a short run).

#![allow(
    clippy::unwrap_used,
    reason = "a benchmark that cannot set up should stop loudly"
)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use sqlx::Connection;
use tasker_core::state::{BatchState, StepState};
use tasker_store::{
    BatchChange, BatchRecord, BatchStep, ChangeSet, NewStep, NewTask, StepChange, StepsReady,
    Store, TransitionsApply, connect,
};
use tokio::runtime::Runtime;
use uuid::Uuid;

const SEED_TASKS: usize = 100_000;
const SEED_CHUNK: usize = 2_000;

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_700_000_000_000).unwrap()
}

fn step(name: &str) -> NewStep {
    NewStep {
        name: name.to_owned(),
        handler_class: format!("Bench::{name}"),
        handler_config: json!({ "timeout": 30 }),
        retryable: true,
        retry_limit: 3,
        timeout_ms: None,
        backoff: None,
    }
}

fn diamond() -> NewTask {
    NewTask {
        namespace: "bench".into(),
        name: "diamond".into(),
        version: "1".into(),
        template_json: None,
        context: json!({ "order_id": 12345, "customer": { "tier": "gold" } }),
        initiator: Some("bench".into()),
        source_system: None,
        reason: None,
        tags: vec!["bench".into()],
        idempotency_key: None,
        steps: vec![step("a"), step("b"), step("c"), step("d")],
        edges: vec![(0, 1), (0, 2), (1, 3), (2, 3)],
        now: now(),
        claim: None,
    }
}

fn wide(n: usize) -> NewTask {
    NewTask {
        steps: (0..n).map(|i| step(&format!("s{i}"))).collect(),
        edges: vec![],
        ..diamond()
    }
}

fn chain() -> NewTask {
    NewTask {
        steps: vec![step("parent"), step("child")],
        edges: vec![(0, 1)],
        ..diamond()
    }
}

fn bench_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/tasker-bench");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A backend to measure: its name and a URL for a fresh database.
struct Target {
    name: &'static str,
    fresh: Box<dyn Fn(&str) -> String>,
    seeded: String,
}

fn targets(rt: &Runtime) -> Vec<Target> {
    let dir = bench_dir();
    let scratch = tempfile::tempdir_in(&dir).unwrap().keep();
    let mut out = Vec::new();
    for (name, sync) in [("sqlite", "full"), ("sqlite_normal", "normal")] {
        let scratch = scratch.clone();
        out.push(Target {
            name,
            fresh: Box::new(move |label| {
                format!(
                    "sqlite:{}?synchronous={sync}",
                    scratch
                        .join(format!("{label}-{}.db", Uuid::new_v4().simple()))
                        .display()
                )
            }),
            seeded: format!(
                "sqlite:{}?synchronous={sync}",
                dir.join("ready-100k.db").display()
            ),
        });
    }
    match std::env::var("TASKER_TEST_POSTGRES_URL") {
        Ok(admin) => {
            let admin = admin.clone();
            let server = admin.split('?').next().unwrap().to_owned();
            let server = server[..server.rfind('/').unwrap()].to_owned();
            let seeded = format!("{server}/tasker_bench_ready_100k");
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
                let exists: Option<i32> = sqlx::query_scalar(
                    "SELECT 1 FROM pg_database WHERE datname = 'tasker_bench_ready_100k'",
                )
                .fetch_optional(&mut conn)
                .await
                .unwrap();
                if exists.is_none() {
                    sqlx::raw_sql("CREATE DATABASE tasker_bench_ready_100k")
                        .execute(&mut conn)
                        .await
                        .unwrap();
                }
            });
            let admin_for_fresh = admin.clone();
            let server_for_fresh = server.clone();
            out.push(Target {
                name: "postgres",
                fresh: Box::new(move |label| {
                    let db = format!("tasker_bench_{label}_{}", Uuid::new_v4().simple());
                    let admin = admin_for_fresh.clone();
                    let create = db.clone();
                    std::thread::spawn(move || {
                        tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .unwrap()
                            .block_on(async {
                                let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
                                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                                    "CREATE DATABASE {create}"
                                )))
                                .execute(&mut conn)
                                .await
                                .unwrap();
                            });
                    })
                    .join()
                    .unwrap();
                    format!("{server_for_fresh}/{db}")
                }),
                seeded,
            });
        }
        Err(_) => eprintln!("SKIPPED PostgreSQL: TASKER_TEST_POSTGRES_URL not set"),
    }
    out
}

fn bench_create(c: &mut Criterion, rt: &Runtime, targets: &[Target]) {
    let mut group = c.benchmark_group("create_diamond");
    group.throughput(Throughput::Elements(1));
    for target in targets {
        let store = rt.block_on(connect(&(target.fresh)("create"))).unwrap();
        group.bench_function(target.name, |b| {
            b.to_async(rt).iter(|| {
                let store = Arc::clone(&store);
                async move { store.task_create(diamond()).await.unwrap() }
            });
        });
        rt.block_on(store.close());
    }
    group.finish();
}

async fn in_flight(store: &dyn Store, pool: &mut Vec<i64>, n: usize) -> (Uuid, Vec<i64>) {
    if pool.len() < n {
        let created = store.tasks_create_many(vec![wide(100); 10]).await.unwrap();
        pool.extend(created.iter().flat_map(|c| c.step_ids.iter().copied()));
    }
    let steps: Vec<i64> = pool.drain(..n).collect();
    let batch = Uuid::new_v4();
    let recorded = store
        .batch_record(BatchRecord {
            now: now(),
            claimant: None,
            batch_uuid: batch,
            worker_id: Some("bench".into()),
            handler_class: None,
            timeout_ms: 60_000,
            state: BatchState::Published,
            metadata: None,
            steps: steps
                .iter()
                .map(|&step_id| BatchStep {
                    step_id,
                    expect_state: StepState::Pending,
                })
                .collect(),
        })
        .await
        .unwrap();
    assert_eq!(recorded.included.len(), n);
    (batch, steps)
}

fn results(batch: Uuid, steps: &[i64]) -> TransitionsApply {
    TransitionsApply {
        now: now(),
        claimant: None,
        ledger: steps
            .iter()
            .map(|&id| tasker_store::LedgerEntry {
                batch_uuid: Some(batch.to_string()),
                step_id: Some(id),
                message_kind: tasker_store::LEDGER_PARTIAL_RESULT.into(),
                worker_id: Some("bench".into()),
                sequence: Some(id),
                status: Some("completed".into()),
                execution_time_ms: Some(3),
                raw_message: format!(r#"{{"step_id":{id},"status":"completed"}}"#),
                processing_errors: None,
            })
            .collect(),
        changes: steps
            .iter()
            .enumerate()
            .map(|(i, &id)| ChangeSet {
                steps: vec![StepChange {
                    step_id: id,
                    expect_state: StepState::InProgress,
                    expect_batch: Some(batch),
                    to_state: StepState::Complete,
                    event: tasker_core::state::StepEvent::Succeed,
                    metadata: None,
                    results: Some(json!({ "tracking": id })),
                    error: None,
                    backoff_until: None,
                }],
                ledger_entry: Some(i),
                ..ChangeSet::default()
            })
            .collect(),
        all_or_nothing: false,
        batches: Vec::new(),
        tasks: Vec::new(),
    }
}

fn bench_apply(c: &mut Criterion, rt: &Runtime, targets: &[Target]) {
    let mut group = c.benchmark_group("apply_results");
    for target in targets {
        let store = rt.block_on(connect(&(target.fresh)("apply"))).unwrap();
        for n in [1_usize, 10, 100] {
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(BenchmarkId::new(target.name, n), &n, |b, &n| {
                let store = Arc::clone(&store);
                b.to_async(rt).iter_custom(move |iters| {
                    let store = Arc::clone(&store);
                    async move {
                        let mut pool = Vec::new();
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let (batch, steps) = in_flight(store.as_ref(), &mut pool, n).await;
                            let params = results(batch, &steps);
                            let started = Instant::now();
                            let applied = store.transitions_apply(params).await.unwrap();
                            total += started.elapsed();
                            assert_eq!(applied.applied.len(), n);
                        }
                        total
                    }
                });
            });
        }
        rt.block_on(store.close());
    }
    group.finish();
}

/// How many batches carry `n` results in `group_commit/n` (and how many dispatch the children).
fn group_batches(n: usize) -> usize {
    n.div_ceil(7).max(1)
}

/// Puts the parents of `n` fresh chains in flight in [`group_batches`] published batches; returns
/// each batch with its (parent, child) step pairs.
async fn parents_in_flight(
    store: &dyn Store,
    pool: &mut Vec<(i64, i64)>,
    n: usize,
) -> Vec<(Uuid, Vec<(i64, i64)>)> {
    if pool.len() < n {
        let created = store.tasks_create_many(vec![chain(); 500]).await.unwrap();
        pool.extend(created.iter().map(|c| (c.step_ids[0], c.step_ids[1])));
    }
    let pairs: Vec<(i64, i64)> = pool.drain(..n).collect();
    let per_batch = n.div_ceil(group_batches(n));
    let groups: Vec<(Uuid, Vec<(i64, i64)>)> = pairs
        .chunks(per_batch)
        .map(|c| (Uuid::new_v4(), c.to_vec()))
        .collect();
    let records = groups
        .iter()
        .map(|(batch, pairs)| dispatch(*batch, pairs.iter().map(|p| p.0)))
        .collect();
    let recorded = store.batches_record(records).await.unwrap();
    assert!(recorded.iter().all(|r| r.refused.is_empty()));
    groups
}

/// A published batch of `steps`, each expected `pending`.
fn dispatch(batch_uuid: Uuid, steps: impl Iterator<Item = i64>) -> BatchRecord {
    BatchRecord {
        now: now(),
        claimant: None,
        batch_uuid,
        worker_id: Some("bench".into()),
        handler_class: None,
        timeout_ms: 60_000,
        state: BatchState::Published,
        metadata: None,
        steps: steps
            .map(|step_id| BatchStep {
                step_id,
                expect_state: StepState::Pending,
            })
            .collect(),
    }
}

/// The engine's group commit: every parent's result, each batch's completion, and the children
/// dispatched in new batches.
fn group_commit(groups: &[(Uuid, Vec<(i64, i64)>)]) -> TransitionsApply {
    let mut params = TransitionsApply {
        now: now(),
        claimant: None,
        ledger: Vec::new(),
        changes: Vec::new(),
        all_or_nothing: false,
        batches: Vec::new(),
        tasks: Vec::new(),
    };
    for (batch, pairs) in groups {
        let entry = |step_id: Option<i64>, kind: &str| tasker_store::LedgerEntry {
            batch_uuid: Some(batch.to_string()),
            step_id,
            message_kind: kind.into(),
            worker_id: Some("bench".into()),
            sequence: step_id,
            status: Some("completed".into()),
            execution_time_ms: Some(3),
            raw_message: format!(r#"{{"step_id":{step_id:?},"status":"completed"}}"#),
            processing_errors: None,
        };
        for &(parent, _) in pairs {
            params.changes.push(ChangeSet {
                steps: vec![StepChange {
                    step_id: parent,
                    expect_state: StepState::InProgress,
                    expect_batch: Some(*batch),
                    to_state: StepState::Complete,
                    event: tasker_core::state::StepEvent::Succeed,
                    metadata: None,
                    results: Some(json!({ "tracking": parent })),
                    error: None,
                    backoff_until: None,
                }],
                ledger_entry: Some(params.ledger.len()),
                ..ChangeSet::default()
            });
            params
                .ledger
                .push(entry(Some(parent), tasker_store::LEDGER_PARTIAL_RESULT));
        }
        params.changes.push(ChangeSet {
            batches: vec![
                BatchChange {
                    batch_uuid: *batch,
                    expect_state: BatchState::Published,
                    to_state: BatchState::Executing,
                    event: tasker_core::state::BatchEvent::ReceiveResult,
                    metadata: None,
                },
                BatchChange {
                    batch_uuid: *batch,
                    expect_state: BatchState::Executing,
                    to_state: BatchState::Completed,
                    event: tasker_core::state::BatchEvent::Complete,
                    metadata: Some(json!({ "reconciliation": "consistent" })),
                },
            ],
            ledger_entry: Some(params.ledger.len()),
            ..ChangeSet::default()
        });
        params
            .ledger
            .push(entry(None, tasker_store::LEDGER_BATCH_COMPLETION));
        params
            .batches
            .push(dispatch(Uuid::new_v4(), pairs.iter().map(|p| p.1)));
    }
    params
}

fn bench_group_commit(c: &mut Criterion, rt: &Runtime, targets: &[Target]) {
    let mut group = c.benchmark_group("group_commit");
    for target in targets {
        let store = rt.block_on(connect(&(target.fresh)("group"))).unwrap();
        for n in [1_usize, 50] {
            // Every commit's latency, warm-up included, for the percentiles printed below.
            let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(BenchmarkId::new(target.name, n), &n, |b, &n| {
                let store = Arc::clone(&store);
                let latencies = Arc::clone(&latencies);
                b.to_async(rt).iter_custom(move |iters| {
                    let store = Arc::clone(&store);
                    let latencies = Arc::clone(&latencies);
                    async move {
                        let mut pool = Vec::new();
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let groups = parents_in_flight(store.as_ref(), &mut pool, n).await;
                            let params = group_commit(&groups);
                            let started = Instant::now();
                            let applied = store.transitions_apply(params).await.unwrap();
                            let took = started.elapsed();
                            total += took;
                            latencies.lock().unwrap().push(took);
                            assert_eq!(applied.applied.len(), n + groups.len());
                            assert_eq!(applied.batches.len(), groups.len());
                            assert!(applied.batches.iter().all(|b| b.refused.is_empty()));
                        }
                        total
                    }
                });
            });
            print_percentiles(
                &format!("group_commit/{}/{n}", target.name),
                &mut latencies.lock().unwrap(),
            );
        }
        rt.block_on(store.close());
    }
    group.finish();
}

/// Prints p50/p90/p99 of the commits measured (criterion reports means); nothing when the
/// benchmark was filtered out.
fn print_percentiles(name: &str, latencies: &mut [Duration]) {
    if latencies.is_empty() {
        return;
    }
    latencies.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1e6
    };
    eprintln!(
        "{name}: {} commits, p50 {:.0} µs, p90 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
        latencies.len(),
        at(0.50),
        at(0.90),
        at(0.99),
        at(1.0)
    );
}

/// Seeds the 100k-task database once: bulk creation, then one UPDATE per table for the states.
async fn seed_ready_db(url: &str) -> Arc<dyn Store> {
    let store = connect(url).await.unwrap();
    let counts = store.state_counts().await.unwrap();
    let existing: i64 = counts.tasks.iter().map(|(_, n)| n).sum();
    if existing == SEED_TASKS as i64 {
        return store;
    }
    assert_eq!(
        existing, 0,
        "{url} holds a partial seed; delete it and rerun"
    );
    let started = Instant::now();
    for _ in 0..SEED_TASKS / SEED_CHUNK {
        store
            .tasks_create_many(vec![diamond(); SEED_CHUNK])
            .await
            .unwrap();
    }
    eprintln!(
        "seeded {SEED_TASKS} diamond tasks into {} in {:.1} s ({:.0} tasks/s through tasks_create_many)",
        url.split('?').next().unwrap(),
        started.elapsed().as_secs_f64(),
        SEED_TASKS as f64 / started.elapsed().as_secs_f64()
    );
    // States: 90 % of tasks finished; the rest have their first step complete, so b and c are
    // ready and d waits. Set directly (a benchmark fixture, not a store operation).
    let statements = [
        "UPDATE tasker_tasks SET state = CASE WHEN task_id % 10 = 0 THEN 'in_progress' ELSE 'complete' END",
        "UPDATE tasker_workflow_steps SET state = 'complete'
         WHERE task_id % 10 <> 0 OR name = 'a'",
        "UPDATE tasker_workflow_steps SET unmet_parents = 0
         WHERE task_id % 10 = 0 AND name IN ('b', 'c')",
    ];
    store.close().await;
    if url.starts_with("sqlite:") {
        let path = url.trim_start_matches("sqlite:").split('?').next().unwrap();
        let conn = rusqlite::Connection::open(path).unwrap();
        for sql in statements {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch("ANALYZE").unwrap();
        conn.close().unwrap();
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        for sql in statements {
            sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
        }
        sqlx::raw_sql("VACUUM ANALYZE")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
    connect(url).await.unwrap()
}

fn bench_ready(c: &mut Criterion, rt: &Runtime, targets: &[Target]) {
    let mut group = c.benchmark_group("ready_steps_100k");
    for target in targets {
        if target.name == "sqlite_normal" {
            continue; // reads do not depend on the commit durability
        }
        let store = rt.block_on(seed_ready_db(&target.seeded));
        let found = rt
            .block_on(store.steps_ready(StepsReady {
                now: now(),
                task_ids: None,
                claimed_by: None,
                limit: 1000,
            }))
            .unwrap();
        assert_eq!(found.len(), 1000, "the seed leaves 20 000 ready steps");
        group.throughput(Throughput::Elements(1000));
        group.bench_function(target.name, |b| {
            b.to_async(rt).iter(|| {
                let store = Arc::clone(&store);
                async move {
                    store
                        .steps_ready(StepsReady {
                            now: now(),
                            task_ids: None,
                            claimed_by: None,
                            limit: 1000,
                        })
                        .await
                        .unwrap()
                }
            });
        });
        rt.block_on(store.close());
    }
    group.finish();
}

fn store_benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    eprintln!(
        "machine: {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let targets = targets(&rt);
    bench_create(c, &rt, &targets);
    bench_apply(c, &rt, &targets);
    bench_group_commit(c, &rt, &targets);
    bench_ready(c, &rt, &targets);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = store_benches
}
criterion_main!(benches);
