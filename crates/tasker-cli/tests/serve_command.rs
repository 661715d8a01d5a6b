//! `tasker serve`, `tasker task` and `tasker demo` as a user meets them: settings from flags,
//! variables and a config file; one clear line and a non-zero exit for every start-up problem;
//! a graceful stop on SIGTERM; tasks created and shown from the command line.

#![allow(clippy::unwrap_used, reason = "a test should fail loudly on any error")]

mod support;

use std::process::{Output, Stdio};

use nix::sys::signal::kill;
use nix::unistd::Pid;
use support::{Db, Serve, ServeConfig, TestEnv, Worker, examples_dir, free_port, tasker};

fn run(command: &mut std::process::Command) -> Output {
    command.stdin(Stdio::null()).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The line of `--print-config` output for `key`.
fn config_line(output: &str, key: &str) -> String {
    output
        .lines()
        .find(|line| line.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in {output}"))
        .to_owned()
}

#[test]
fn settings_come_from_flag_then_environment_then_file_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tasker.toml");
    std::fs::write(
        &config,
        "endpoint = \"tcp://127.0.0.1:6001\"\n\
         http_addr = \"127.0.0.1:6002\"\n\
         batch_size = 20\n\
         liveness = 7\n\
         data_dir = \"state\"\n",
    )
    .unwrap();
    let output = run(tasker(&[
        "serve",
        "--print-config",
        "--endpoint",
        "tcp://127.0.0.1:7001",
    ])
    .env("TASKER_CONFIG", &config)
    .env("TASKER_ENDPOINT", "tcp://127.0.0.1:8001")
    .env("TASKER_HTTP_ADDR", "127.0.0.1:8002")
    .env("TASKER_BATCH_SIZE", "30"));
    assert!(output.status.success(), "{}", text(&output.stderr));
    let out = text(&output.stdout);
    // flag beats variable and file
    assert!(
        config_line(&out, "endpoint").contains("\"tcp://127.0.0.1:7001\""),
        "{out}"
    );
    // variable beats file
    assert!(
        config_line(&out, "http_addr").contains("\"127.0.0.1:8002\""),
        "{out}"
    );
    assert!(config_line(&out, "batch_size").contains("= 30 "), "{out}");
    // file beats default; file paths are relative to the file
    assert!(config_line(&out, "liveness").contains("= 7 "), "{out}");
    assert!(
        config_line(&out, "liveness").ends_with("# config file"),
        "{out}"
    );
    let state = dir.path().join("state").join("tasker.db");
    assert!(
        config_line(&out, "database_url").contains(&format!("sqlite:{}", state.display())),
        "{out}"
    );
    // default
    assert!(
        config_line(&out, "heartbeat_interval_ms").contains("= 1000 "),
        "{out}"
    );
    assert!(
        config_line(&out, "heartbeat_interval_ms").ends_with("# default"),
        "{out}"
    );
}

/// Runs `tasker serve ARGS` expecting it to refuse to start: exit 1, one `error:` line naming
/// `expected`, no panic.
fn assert_refuses(args: &[&str], expected: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec!["serve", "--data-dir"];
    let data = dir.path().join("data").display().to_string();
    all.push(&data);
    all.extend_from_slice(args);
    let output = run(&mut tasker(&all));
    let err = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{args:?}: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: expected one line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    for part in expected {
        assert!(err.contains(part), "{args:?}: {part:?} missing from: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn start_up_problems_are_one_clear_line() {
    let templates = examples_dir().display().to_string();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    assert_refuses(
        &["--templates", &templates, "--http-addr", &taken_addr],
        &["cannot listen for HTTP on", &taken_addr, "in use"],
    );
    let endpoint = format!("tcp://{taken_addr}");
    let http = format!("127.0.0.1:{}", free_port());
    assert_refuses(
        &[
            "--templates",
            &templates,
            "--http-addr",
            &http,
            "--endpoint",
            &endpoint,
        ],
        &["cannot start the engine", &endpoint, "already in use"],
    );
    assert_refuses(
        &[
            "--templates",
            &templates,
            "--database-url",
            "mysql://db/tasker",
        ],
        &["invalid database URL", "mysql"],
    );
    assert_refuses(
        &["--templates", "/nonexistent/templates"],
        &["/nonexistent/templates"],
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("broken.yaml"),
        "name: broken\nnamespace: t\nversion: 1.0.0\nsteps:\n  - name: a\n    handler_class: x\n    depends_on: [missing]\n",
    )
    .unwrap();
    let broken = dir.path().display().to_string();
    assert_refuses(
        &["--templates", &broken],
        &["broken.yaml", "depends on `missing`"],
    );
    assert_refuses(
        &["--templates", &templates, "--batch-size", "0"],
        &["batch_size"],
    );
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "endpont = \"tcp://127.0.0.1:1\"\n").unwrap();
    let config = config.display().to_string();
    assert_refuses(&["--config", &config], &["bad.toml", "line 1", "endpont"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_serve_gracefully() {
    let env = TestEnv::new(Db::Sqlite).await.unwrap();
    let serve = Serve::start(&env, &ServeConfig::tcp()).await;
    let log = serve.log.clone();
    let status = serve.stop().await;
    assert!(status.success(), "{status}");
    let err = std::fs::read_to_string(log).unwrap();
    assert!(err.contains("SIGTERM received"), "{err}");
    assert!(err.contains("tasker serve: stopped"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_created_and_shown_from_the_command_line() {
    let env = TestEnv::new(Db::Sqlite).await.unwrap();
    let serve = Serve::start(&env, &ServeConfig::tcp()).await;
    let worker = Worker::start(&env, &serve.endpoint, "cli");
    let context_file = env.dir.path().join("order.json");
    std::fs::write(&context_file, support::order_context(77).to_string()).unwrap();
    let context_arg = format!("@{}", context_file.display());
    let create = |extra: &[&str]| {
        let mut args = vec![
            "task",
            "create",
            "--server",
            &serve.base,
            "--namespace",
            "order_fulfillment",
            "--name",
            "order_fulfillment",
            "--version",
            "1.0.0",
            "--context",
            &context_arg,
        ];
        args.extend_from_slice(extra);
        run(&mut tasker(&args))
    };
    let created = create(&["--idempotency-key", "order-77"]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let task_id: i64 = text(&created.stdout).trim().parse().unwrap();
    assert!(text(&created.stderr).contains(&format!("created task {task_id}")));
    let again = create(&["--idempotency-key", "order-77"]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(text(&again.stdout).trim(), task_id.to_string());
    assert!(
        text(&again.stderr).contains("already exists"),
        "{}",
        text(&again.stderr)
    );

    let id = task_id.to_string();
    let shown = run(&mut tasker(&[
        "task",
        "show",
        &id,
        "--server",
        &serve.base,
        "--wait",
        "--timeout-secs",
        "60",
    ]));
    let out = text(&shown.stdout);
    assert!(shown.status.success(), "{out}{}", text(&shown.stderr));
    assert!(
        out.starts_with(&format!(
            "task {task_id}  order_fulfillment/order_fulfillment 1.0.0  complete"
        )),
        "{out}"
    );
    for (step, deps) in [
        ("validate_order", "-"),
        ("reserve_inventory", "validate_order"),
        ("process_payment", "validate_order"),
        ("ship_order", "reserve_inventory,process_payment"),
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{step} ")))
            .unwrap_or_else(|| panic!("no row for {step}: {out}"));
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[1], "complete", "{line}");
        assert!(cells[2].starts_with("1/"), "{line}");
        assert_eq!(cells[3], deps, "{line}");
    }

    // Create and wait in one command: the task's id on stderr, the finished task on stdout.
    let waited = create(&[
        "--idempotency-key",
        "order-78",
        "--wait",
        "--timeout-secs",
        "60",
    ]);
    let out = text(&waited.stdout);
    assert!(waited.status.success(), "{out}{}", text(&waited.stderr));
    assert!(
        out.starts_with("task ") && out.lines().next().unwrap().ends_with("complete"),
        "{out}"
    );
    assert_ne!(
        out.split_whitespace().nth(1),
        Some(id.as_str()),
        "a new task"
    );

    let json = run(&mut tasker(&[
        "task",
        "show",
        &id,
        "--server",
        &serve.base,
        "--json",
    ]));
    let body: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(body["task_id"], serde_json::json!(task_id));
    assert_eq!(body["steps"].as_array().unwrap().len(), 4);

    let refused = run(&mut tasker(&[
        "task",
        "create",
        "--server",
        &serve.base,
        "--namespace",
        "order_fulfillment",
        "--name",
        "order_fulfillment",
        "--context",
        "{\"order_id\": 0}",
    ]));
    assert_eq!(refused.status.code(), Some(1));
    let err = text(&refused.stderr);
    assert!(err.contains("422 invalid_context"), "{err}");
    for pointer in ["/context/order_id", "/context/customer", "/context/items"] {
        assert!(err.contains(pointer), "{pointer} missing: {err}");
    }
    let unknown = run(&mut tasker(&[
        "task",
        "show",
        "999999",
        "--server",
        &serve.base,
    ]));
    assert_eq!(unknown.status.code(), Some(1));
    assert!(text(&unknown.stderr).contains("task 999999 not found"));

    assert!(worker.stop().await.success());
    assert!(serve.stop().await.success());
    let down = run(&mut tasker(&[
        "task",
        "show",
        &id,
        "--server",
        &serve_base_of_a_dead_port(),
    ]));
    assert_eq!(down.status.code(), Some(1));
    assert!(
        text(&down.stderr).contains("cannot reach the Tasker server"),
        "{}",
        text(&down.stderr)
    );
}

fn serve_base_of_a_dead_port() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_twenty_tasks_to_completion() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo").display().to_string();
    let output = run(&mut tasker(&["demo", "--tasks", "20", "--data-dir", &data]));
    let out = text(&output.stdout);
    let err = text(&output.stderr);
    assert!(output.status.success(), "{out}\n{err}");
    assert!(
        out.contains("20 submitted: 20 complete, 0 failed, 0 unfinished"),
        "{out}"
    );
    assert!(out.contains("order_fulfillment/order_fulfillment"), "{out}");
    assert!(out.contains("step handoff     p50"), "{out}");
    assert!(err.contains("2 worker processes connected"), "{err}");
    assert!(err.contains("tasker demo: stopped"), "{err}");
    // Every worker process the demo started is gone.
    let pids = err
        .split("(pids ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no pids in {err}"));
    for pid in pids.split(", ") {
        let pid = Pid::from_raw(pid.parse().unwrap());
        assert!(
            kill(pid, None).is_err(),
            "worker {pid} still runs after the demo"
        );
    }
}
