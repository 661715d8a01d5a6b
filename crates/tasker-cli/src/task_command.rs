//! `tasker task create` and `tasker task show`: create and read tasks through the HTTP API of a
//! running `tasker serve`.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};
use tasker_api::TaskView;

use crate::api_client::{ApiClient, DEFAULT_SERVER};

/// `tasker task …`
#[derive(Debug, Subcommand)]
pub(crate) enum TaskCommand {
    /// Create a task from a loaded template; prints its id on stdout.
    ///
    /// With an `--idempotency-key` already used for the same template, the existing task's id is
    /// printed and nothing is created.
    #[command(disable_version_flag = true)]
    Create(CreateArgs),
    /// Show a task and a table of its steps (state, attempts, dependencies, result or error).
    Show(ShowArgs),
}

/// Where the server is.
#[derive(Debug, Args)]
pub(crate) struct ServerArg {
    /// The HTTP address of `tasker serve`.
    #[arg(long, env = "TASKER_SERVER", value_name = "URL", default_value = DEFAULT_SERVER)]
    pub(crate) server: String,
}

/// Arguments of `tasker task create`.
#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// The template's namespace.
    #[arg(long, value_name = "NAMESPACE")]
    pub(crate) namespace: String,
    /// The template's name.
    #[arg(long, value_name = "NAME")]
    pub(crate) name: String,
    /// The template's version [default: the latest loaded].
    #[arg(long, value_name = "VERSION")]
    pub(crate) version: Option<String>,
    /// The task's context: a JSON object, or `@FILE` to read it from a file (`@-`: stdin)
    /// [default: {}].
    #[arg(long, value_name = "JSON|@FILE")]
    pub(crate) context: Option<String>,
    /// A key that makes repeating this request return the same task.
    #[arg(long, value_name = "KEY")]
    pub(crate) idempotency_key: Option<String>,
    /// Who asks [default: the user name from $USER].
    #[arg(long, value_name = "WHO")]
    pub(crate) initiator: Option<String>,
    /// Why.
    #[arg(long, value_name = "TEXT")]
    pub(crate) reason: Option<String>,
    /// A label (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub(crate) tags: Vec<String>,
    /// Print the server's JSON answer instead of the id.
    #[arg(long)]
    pub(crate) json: bool,
    /// Then wait until the task is finished and show it as `tasker task show` does (the id still
    /// goes to stderr); exits 1 if it did not complete.
    #[arg(long)]
    pub(crate) wait: bool,
    /// With --wait: the longest wait, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub(crate) timeout_secs: u64,
    #[command(flatten)]
    pub(crate) server: ServerArg,
}

/// Arguments of `tasker task show`.
#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// The task's id.
    #[arg(value_name = "ID")]
    pub(crate) task_id: i64,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Wait until the task is finished (complete, error, cancelled or resolved manually) before
    /// showing it; exits 1 if it did not complete.
    #[arg(long)]
    pub(crate) wait: bool,
    /// With --wait: the longest wait, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub(crate) timeout_secs: u64,
    #[command(flatten)]
    pub(crate) server: ServerArg,
}

/// Runs a `tasker task` subcommand.
pub(crate) fn run(command: &TaskCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        match command {
            TaskCommand::Create(args) => create(args).await,
            TaskCommand::Show(args) => show(args).await,
        }
    })
}

async fn create(args: &CreateArgs) -> anyhow::Result<ExitCode> {
    let client = ApiClient::new(&args.server.server)?;
    let context = match &args.context {
        Some(text) => read_context(text)?,
        None => Value::Object(Map::new()),
    };
    let mut body = json!({
        "namespace": args.namespace,
        "name": args.name,
        "context": context,
        "initiator": args.initiator.clone().or_else(|| std::env::var("USER").ok()),
        "source_system": "tasker-cli",
    });
    let fields = [
        ("version", &args.version),
        ("idempotency_key", &args.idempotency_key),
        ("reason", &args.reason),
    ];
    for (key, value) in fields {
        if let Some(value) = value {
            body[key] = json!(value);
        }
    }
    if !args.tags.is_empty() {
        body["tags"] = json!(args.tags);
    }
    let (created, raw) = client.create_task(&body).await?;
    if args.wait {
        writeln!(io::stderr(), "task {}", created.task_id)?;
        return wait_and_print(
            &client,
            created.task_id,
            Duration::from_secs(args.timeout_secs),
            args.json,
        )
        .await;
    }
    let mut stdout = io::stdout().lock();
    if args.json {
        writeln!(stdout, "{}", serde_json::to_string_pretty(&raw)?)?;
    } else {
        writeln!(stdout, "{}", created.task_id)?;
    }
    let what = format!(
        "{}/{} {}, {} step{}",
        created.namespace,
        created.name,
        created.version,
        created.step_count,
        if created.step_count == 1 { "" } else { "s" }
    );
    if created.created {
        writeln!(io::stderr(), "created task {} ({what})", created.task_id)?;
    } else {
        writeln!(
            io::stderr(),
            "task {} already exists for this idempotency key ({what}); nothing created",
            created.task_id
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `{…}` as JSON, `@FILE` read from a file, `@-` from stdin; must be an object.
fn read_context(text: &str) -> anyhow::Result<Value> {
    let (source, json) = match text.strip_prefix('@') {
        Some("-") => {
            let mut input = String::new();
            io::Read::read_to_string(&mut io::stdin(), &mut input)
                .context("reading the context from stdin")?;
            ("stdin".to_owned(), input)
        }
        Some(path) => {
            let path = PathBuf::from(path);
            let json = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read the context file {}", path.display()))?;
            (path.display().to_string(), json)
        }
        None => ("--context".to_owned(), text.to_owned()),
    };
    let value: Value = serde_json::from_str(&json)
        .with_context(|| format!("the context in {source} is not valid JSON"))?;
    if !value.is_object() {
        bail!("the context in {source} must be a JSON object like {{\"order_id\": 1}}");
    }
    Ok(value)
}

async fn show(args: &ShowArgs) -> anyhow::Result<ExitCode> {
    let client = ApiClient::new(&args.server.server)?;
    if args.wait {
        return wait_and_print(
            &client,
            args.task_id,
            Duration::from_secs(args.timeout_secs),
            args.json,
        )
        .await;
    }
    let (task, raw) = client.task(args.task_id).await?;
    let mut stdout = io::stdout().lock();
    print_task(&mut stdout, &task, &raw, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// Waits for the task's end with the long poll (answered the moment it finishes), at most
/// `timeout`, and prints it; fails when it is still running then, exits 1 when it finished
/// other than complete or resolved manually.
async fn wait_and_print(
    client: &ApiClient,
    task_id: i64,
    timeout: Duration,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let deadline = Instant::now() + timeout;
    let (task, raw) = loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let (task, raw) = client
            .task_wait(task_id, remaining.min(Duration::from_secs(30)))
            .await?;
        if is_finished(&task) {
            break (task, raw);
        }
        if Instant::now() >= deadline {
            let mut stdout = io::stdout().lock();
            print_task(&mut stdout, &task, &raw, json)?;
            bail!(
                "task {} is still {} after {} s",
                task.task_id,
                task.state,
                timeout.as_secs()
            );
        }
    };
    let mut stdout = io::stdout().lock();
    print_task(&mut stdout, &task, &raw, json)?;
    let complete = matches!(task.state.as_str(), "complete" | "resolved_manually");
    Ok(if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn is_finished(task: &TaskView) -> bool {
    matches!(
        task.state.as_str(),
        "complete" | "error" | "cancelled" | "resolved_manually"
    )
}

fn print_task(out: &mut impl Write, task: &TaskView, raw: &Value, json: bool) -> io::Result<()> {
    if json {
        return writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(raw).unwrap_or_else(|_| raw.to_string())
        );
    }
    write!(out, "{}", render_task(task))
}

/// The human-readable view: a header, then one row per step.
pub(crate) fn render_task(task: &TaskView) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "task {}  {}/{} {}  {}\n",
        task.task_id, task.namespace, task.name, task.version, task.state
    ));
    out.push_str(&format!(
        "created {}",
        task.created_at.format("%Y-%m-%d %H:%M:%S%.3f UTC")
    ));
    if let Some(done) = task.completed_at {
        let took = done - task.created_at;
        out.push_str(&format!(
            ", finished {} ({} ms)",
            done.format("%Y-%m-%d %H:%M:%S%.3f UTC"),
            took.num_milliseconds()
        ));
    }
    out.push('\n');
    out.push_str(&format!(
        "context {}\n\n",
        clip(&task.context.to_string(), 100)
    ));

    let header = [
        "STEP",
        "STATE",
        "ATTEMPTS",
        "DEPENDS ON",
        "RESULT / LAST ERROR",
    ];
    let rows: Vec<[String; 5]> = task
        .steps
        .iter()
        .map(|step| {
            let outcome = match (&step.results, &step.last_error) {
                (Some(results), _) if step.state.as_str() == "complete" => results.to_string(),
                (_, Some(error)) => format!("error: {}", error_summary(error)),
                (Some(results), None) => results.to_string(),
                (None, None) => "-".to_owned(),
            };
            [
                step.name.clone(),
                step.state.to_string(),
                format!("{}/{}", step.attempts, step.retry_limit),
                if step.depends_on.is_empty() {
                    "-".to_owned()
                } else {
                    step.depends_on.join(",")
                },
                clip(&outcome, 70),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i == 4 {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        text.trim_end().to_owned() + "\n"
    };
    out.push_str(&line(header));
    for row in &rows {
        out.push_str(&line([&row[0], &row[1], &row[2], &row[3], &row[4]]));
    }
    out
}

/// `ErrorClass: message` from a step's last error.
fn error_summary(error: &Value) -> String {
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .map_or_else(|| error.to_string(), str::to_owned);
    match error.get("error_class").and_then(Value::as_str) {
        Some(class) => format!("{class}: {message}"),
        None => message,
    }
}

/// At most `max` characters, with `…` when cut.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut clipped: String = text.chars().take(max.saturating_sub(1)).collect();
        clipped.push('…');
        clipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_come_from_text_or_files() {
        assert_eq!(read_context("{\"a\": 1}").expect("valid"), json!({"a": 1}));
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("ctx.json");
        std::fs::write(&file, "{\"order_id\": 7}").expect("write");
        assert_eq!(
            read_context(&format!("@{}", file.display())).expect("valid"),
            json!({"order_id": 7})
        );
        let error = read_context("[1]").expect_err("not an object").to_string();
        assert!(error.contains("must be a JSON object"), "{error}");
        let error = read_context("{oops").expect_err("bad JSON").to_string();
        assert!(error.contains("not valid JSON"), "{error}");
        let error = read_context("@/nonexistent/ctx.json")
            .expect_err("missing")
            .to_string();
        assert!(error.contains("/nonexistent/ctx.json"), "{error}");
    }

    #[test]
    fn the_table_lists_every_step() {
        let task: TaskView = serde_json::from_value(json!({
            "task_id": 3, "namespace": "examples", "name": "diamond", "version": "1.0.0",
            "state": "error", "execution": "blocked_by_failures", "context": {"x": 1},
            "initiator": null, "source_system": null, "reason": null, "tags": [],
            "idempotency_key": null,
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:01Z",
            "completed_at": "2026-01-01T00:00:01.250Z",
            "step_counts": {"complete": 1, "error": 1, "pending": 2},
            "steps": [
                {"step_id": 1, "name": "a", "handler_class": "tasker.test", "state": "complete",
                 "attempts": 1, "retry_limit": 3, "retryable": true, "depends_on": [],
                 "results": {"ok": true}, "last_error": null, "last_attempted_at": null,
                 "backoff_until": null, "created_at": "2026-01-01T00:00:00Z",
                 "updated_at": "2026-01-01T00:00:00Z"},
                {"step_id": 2, "name": "b", "handler_class": "tasker.test", "state": "error",
                 "attempts": 3, "retry_limit": 3, "retryable": true, "depends_on": ["a"],
                 "results": null,
                 "last_error": {"message": "boom", "error_class": "TestRetryableFailure"},
                 "last_attempted_at": null, "backoff_until": null,
                 "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}
            ]
        }))
        .expect("valid view");
        let text = render_task(&task);
        let expected = "\
task 3  examples/diamond 1.0.0  error
created 2026-01-01 00:00:00.000 UTC, finished 2026-01-01 00:00:01.250 UTC (1250 ms)
context {\"x\":1}

STEP  STATE     ATTEMPTS  DEPENDS ON  RESULT / LAST ERROR
a     complete  1/3       -           {\"ok\":true}
b     error     3/3       a           error: TestRetryableFailure: boom
";
        assert_eq!(text, expected);
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        crate::args::Cli::command().debug_assert();
    }

    #[test]
    fn long_text_is_clipped() {
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
    }
}
