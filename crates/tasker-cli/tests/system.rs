//! The whole system as a user runs it: `tasker serve` and `tasker worker` as real processes,
//! tasks created over the HTTP API, on SQLite and (with `TASKER_TEST_POSTGRES_URL`) PostgreSQL.
//! Workers and the orchestrator are killed with SIGKILL mid-run; nothing may be lost and no
//! step attempt may run or be applied twice.

#![allow(clippy::unwrap_used, reason = "a test should fail loudly on any error")]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use serde_json::{Value, json};
use support::{
    Api, Db, Faults, GUARD, POLL, Serve, ServeConfig, TestEnv, Worker,
    assert_each_attempt_ran_once_and_was_applied_once, executions, executions_by_step,
    one_of_each_example,
};

async fn every_example_completes(db: Db, ipc: bool) {
    let Some(env) = TestEnv::new(db).await else {
        return;
    };
    let config = if ipc {
        ServeConfig::ipc(&env)
    } else {
        ServeConfig::tcp()
    };
    let serve = Serve::start(&env, &config).await;
    let workers = [
        Worker::start(&env, &serve.endpoint, "a"),
        Worker::start(&env, &serve.endpoint, "b"),
    ];
    let api = Api::new(&serve.base);
    let mut bodies = one_of_each_example(1);
    bodies.extend(one_of_each_example(2));
    let ids = api.create_many(bodies, 4).await;
    let tasks = api.wait_complete(&ids).await;

    let names: BTreeSet<&str> = tasks.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 6, "{names:?}");
    for task in &tasks {
        for step in task["steps"].as_array().unwrap() {
            assert_eq!(step["state"], json!("complete"), "{step}");
            assert_eq!(step["attempts"], json!(1), "{step}");
            assert!(!step["results"].is_null(), "{step}");
        }
    }
    assert_each_attempt_ran_once_and_was_applied_once(&tasks, &env, Faults::None);
    for worker in workers {
        assert!(worker.stop().await.success());
    }
    assert!(serve.stop().await.success());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_shape_completes_over_tcp_sqlite() {
    every_example_completes(Db::Sqlite, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_shape_completes_over_ipc_sqlite() {
    every_example_completes(Db::Sqlite, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_shape_completes_over_tcp_postgres() {
    every_example_completes(Db::Postgres, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_shape_completes_over_ipc_postgres() {
    every_example_completes(Db::Postgres, true).await;
}

async fn two_workers_share_500_diamonds(db: Db) {
    let Some(env) = TestEnv::new(db).await else {
        return;
    };
    let serve = Serve::start(&env, &ServeConfig::tcp()).await;
    let a = Worker::start(&env, &serve.endpoint, "a");
    let b = Worker::start(&env, &serve.endpoint, "b");
    let api = Api::new(&serve.base);
    let bodies = (0..500)
        .map(|n| json!({"namespace": "examples", "name": "diamond", "context": {"n": n}}))
        .collect();
    let ids = api.create_many(bodies, 16).await;
    let tasks = api.wait_complete(&ids).await;

    let log = executions(&env);
    assert_eq!(log.len(), 2000, "500 diamonds have 2000 steps");
    let by_step = executions_by_step(&log);
    assert_eq!(by_step.len(), 2000, "some step ran twice");
    let mut per_worker: BTreeMap<&str, usize> = BTreeMap::new();
    for execution in &log {
        *per_worker.entry(execution.worker_id.as_str()).or_default() += 1;
    }
    eprintln!("steps per worker: {per_worker:?}");
    assert_eq!(per_worker.len(), 2, "{per_worker:?}");
    for (worker, count) in &per_worker {
        assert!(
            *count >= 200,
            "worker {worker} ran only {count} of 2000 steps: {per_worker:?}"
        );
    }
    assert!(per_worker.contains_key(a.worker_id.as_str()));
    assert!(per_worker.contains_key(b.worker_id.as_str()));
    assert_each_attempt_ran_once_and_was_applied_once(&tasks, &env, Faults::None);
    assert!(a.stop().await.success());
    assert!(b.stop().await.success());
    assert!(serve.stop().await.success());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_500_diamonds_without_running_a_step_twice_sqlite() {
    two_workers_share_500_diamonds(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_500_diamonds_without_running_a_step_twice_postgres() {
    two_workers_share_500_diamonds(Db::Postgres).await;
}

async fn a_killed_worker_loses_nothing(db: Db) {
    let Some(env) = TestEnv::new(db).await else {
        return;
    };
    let serve = Serve::start(&env, &ServeConfig::tcp()).await;
    let mut victim = Worker::start(&env, &serve.endpoint, "victim");
    let survivor = Worker::start(&env, &serve.endpoint, "survivor");
    let api = Api::new(&serve.base);
    // step_2 of every task sleeps 3 s: long enough to be caught mid-step.
    let bodies = (0..12)
        .map(|n| {
            json!({
                "namespace": "examples", "name": "linear",
                "context": {"n": n, "test_behaviour": {"step_2": {"sleep_ms": 3000}}}
            })
        })
        .collect();
    let ids = api.create_many(bodies, 4).await;

    // Wait until the victim is running some step_2.
    let deadline = Instant::now() + GUARD;
    let caught: Vec<i64> = loop {
        let running: Vec<i64> = executions(&env)
            .into_iter()
            .filter(|e| e.worker_id == victim.worker_id && e.step_name == "step_2")
            .map(|e| e.step_id)
            .collect();
        if !running.is_empty() {
            break running;
        }
        assert!(
            Instant::now() < deadline,
            "the victim never started a step_2"
        );
        tokio::time::sleep(POLL).await;
    };
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    // What the victim had started by the time it died (more may have started meanwhile).
    let started_by_victim: BTreeSet<i64> = executions(&env)
        .into_iter()
        .filter(|e| e.worker_id == victim.worker_id && e.step_name == "step_2")
        .map(|e| e.step_id)
        .collect();
    assert!(started_by_victim.is_superset(&caught.into_iter().collect()));

    let tasks = api.wait_complete(&ids).await;
    assert_each_attempt_ran_once_and_was_applied_once(&tasks, &env, Faults::Injected);
    let by_step = executions_by_step(&executions(&env));
    for step_id in &started_by_victim {
        let runs = &by_step[step_id];
        let last = runs.iter().max_by_key(|r| r.attempt).unwrap();
        assert_eq!(
            last.worker_id, survivor.worker_id,
            "step {step_id} killed mid-run did not finish on the survivor: {runs:?}"
        );
        assert!(runs.len() >= 2, "{runs:?}");
    }
    for task in &tasks {
        for step in task["steps"].as_array().unwrap() {
            assert_eq!(step["state"], json!("complete"), "{step}");
        }
    }
    assert!(survivor.stop().await.success());
    assert!(serve.stop().await.success());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_step_has_its_steps_finished_by_the_other_sqlite() {
    a_killed_worker_loses_nothing(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_step_has_its_steps_finished_by_the_other_postgres() {
    a_killed_worker_loses_nothing(Db::Postgres).await;
}

async fn a_killed_orchestrator_restarts_and_finishes(db: Db) {
    let Some(env) = TestEnv::new(db).await else {
        return;
    };
    let mut serve = Serve::start(&env, &ServeConfig::tcp()).await;
    let a = Worker::start(&env, &serve.endpoint, "a");
    let b = Worker::start(&env, &serve.endpoint, "b");
    let api = Api::new(&serve.base);
    // Every test step sleeps 100 ms, so the run is still going when the orchestrator dies.
    let mut bodies = Vec::new();
    for n in 0..8 {
        for mut body in one_of_each_example(n * 10) {
            let mut behaviour = serde_json::Map::new();
            for step in [
                "a", "b", "c", "d", "step_1", "step_2", "step_3", "step_4", "ingest", "clean",
                "enrich", "score", "audit", "index", "report", "publish", "fetch_a", "fetch_b",
                "fetch_c", "fetch_d", "merge", "root", "left", "right", "leaf_1", "leaf_2",
                "leaf_3", "leaf_4",
            ] {
                behaviour.insert(step.to_owned(), json!({"sleep_ms": 100}));
            }
            body["context"]["test_behaviour"] = Value::Object(behaviour);
            bodies.push(body);
        }
    }
    // And one slow chain (6 s) that cannot be finished when the orchestrator dies.
    let slow_step = json!({"sleep_ms": 1500});
    bodies.push(json!({
        "namespace": "examples", "name": "linear",
        "context": {"slow": true, "test_behaviour": {
            "step_1": slow_step, "step_2": slow_step, "step_3": slow_step, "step_4": slow_step
        }}
    }));
    let ids = api.create_many(bodies, 8).await;
    let slow_task = *ids.last().unwrap();

    // Kill it once the first task is complete.
    let deadline = Instant::now() + GUARD;
    loop {
        if let Some(task) = api.task(ids[0]).await
            && task["state"] == json!("complete")
        {
            break;
        }
        assert!(Instant::now() < deadline, "the first task never completed");
        tokio::time::sleep(POLL).await;
    }
    serve.kill().await;
    let slow_steps_run_before_the_kill = executions(&env)
        .iter()
        .filter(|e| e.task_id == slow_task)
        .count();
    assert!(
        slow_steps_run_before_the_kill < 4,
        "the slow task finished before the orchestrator was killed"
    );
    serve.restart(&env).await;

    let tasks = api.wait_complete(&ids).await;
    assert_eq!(tasks.len(), ids.len());
    assert_each_attempt_ran_once_and_was_applied_once(&tasks, &env, Faults::Injected);
    assert!(a.stop().await.success());
    assert!(b.stop().await.success());
    assert!(serve.stop().await.success());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orchestrator_killed_and_restarted_mid_run_completes_every_task_sqlite() {
    a_killed_orchestrator_restarts_and_finishes(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orchestrator_killed_and_restarted_mid_run_completes_every_task_postgres() {
    a_killed_orchestrator_restarts_and_finishes(Db::Postgres).await;
}
