//! `tasker template validate FILE...`: load each template, report it, and exit 1 if any fails.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use tasker_core::template::TaskTemplate;

use crate::args::ValidateArgs;

/// Validates every file in `args`, writing one `ok` line per valid file to `out` and one `error`
/// line per invalid or unreadable file to `err`. Returns success only when every file is valid.
///
/// # Errors
///
/// Only when writing to `out` or `err` fails.
pub(crate) fn run(
    args: &ValidateArgs,
    out: &mut impl Write,
    err: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    let mut all_valid = true;
    for file in &args.files {
        match load(file) {
            Ok(template) => {
                let summary = summarize(&template, args.env.as_deref());
                writeln!(out, "ok    {}: {summary}", file.display())
                    .context("writing to stdout")?;
            }
            Err(problem) => {
                all_valid = false;
                tracing::debug!(file = %file.display(), %problem, "template rejected");
                writeln!(err, "error {}: {problem}", file.display())
                    .context("writing to stderr")?;
            }
        }
    }
    Ok(if all_valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Reads and parses one template file. The error is the message to show.
fn load(file: &Path) -> Result<TaskTemplate, String> {
    let text = std::fs::read_to_string(file).map_err(|error| format!("cannot read: {error}"))?;
    TaskTemplate::from_yaml_str(&text).map_err(|error| error.to_string())
}

/// `examples/diamond v1.0.0, 4 steps (roots: a; leaves: d)`, plus the environment's overrides
/// when one is given.
fn summarize(template: &TaskTemplate, environment: Option<&str>) -> String {
    let names = |indices: Vec<usize>| {
        indices
            .into_iter()
            .map(|index| template.steps()[index].name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let step_count = template.steps().len();
    let mut summary = format!(
        "{}/{} v{}, {step_count} step{} (roots: {}; leaves: {})",
        template.namespace(),
        template.name(),
        template.version(),
        if step_count == 1 { "" } else { "s" },
        names(template.dag().roots()),
        names(template.dag().leaves()),
    );
    if let Some(environment) = environment {
        let resolved = template.for_environment(environment);
        let changed: Vec<&str> = template
            .steps()
            .iter()
            .zip(resolved.steps())
            .filter(|(base, applied)| base != applied)
            .map(|(base, _)| base.name.as_str())
            .collect();
        if changed.is_empty() {
            let mentioned = if template.environments().contains_key(environment) {
                ""
            } else {
                " (the template does not mention it)"
            };
            summary.push_str(&format!("; env {environment}: no changes{mentioned}"));
        } else {
            summary.push_str(&format!(
                "; env {environment} changes: {}",
                changed.join(", ")
            ));
        }
    }
    summary
}
