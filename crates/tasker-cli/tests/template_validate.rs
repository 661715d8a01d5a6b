//! Runs the built `tasker` binary on real template files.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `tasker` from the repository root, so relative paths print as the user typed them.
fn tasker(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tasker"))
        .args(args)
        .current_dir(repo_root())
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

const DIAMOND: &str = "examples/templates/diamond.yaml";
const ORDER: &str = "examples/templates/order_fulfillment.yaml";
const CYCLE: &str = "crates/tasker-core/tests/fixtures/invalid_templates/cycle.yaml";
const TYPO: &str = "crates/tasker-core/tests/fixtures/invalid_templates/unknown_step_key.yaml";

#[test]
fn valid_file_prints_a_summary_and_exits_0() {
    let output = tasker(&["template", "validate", DIAMOND]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        text(&output.stdout),
        "ok    examples/templates/diamond.yaml: examples/diamond v1.0.0, 4 steps (roots: a; leaves: d)\n"
    );
    assert_eq!(text(&output.stderr), "");
}

#[test]
fn invalid_file_prints_the_problem_on_stderr_and_exits_1() {
    let output = tasker(&["template", "validate", CYCLE]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(text(&output.stdout), "");
    assert_eq!(
        text(&output.stderr),
        format!(
            "error {CYCLE}: dependency cycle: a -> b -> c -> a (each step depends on the next)\n"
        )
    );
}

#[test]
fn mixed_files_report_each_and_exit_1() {
    let output = tasker(&[
        "template",
        "validate",
        DIAMOND,
        TYPO,
        ORDER,
        "no/such/file.yaml",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(stdout.contains(&format!("ok    {DIAMOND}: ")), "{stdout}");
    assert!(stdout.contains(&format!("ok    {ORDER}: order_fulfillment/order_fulfillment v1.0.0, 4 steps (roots: validate_order; leaves: ship_order)")), "{stdout}");
    let errors: Vec<&str> = stderr.lines().collect();
    assert_eq!(errors.len(), 2, "{stderr}");
    assert!(
        errors[0].starts_with(&format!("error {TYPO}: unknown key `retry_limt`")),
        "{stderr}"
    );
    assert!(errors[0].contains("line 8, column 5"), "{stderr}");
    assert!(
        errors[1].starts_with("error no/such/file.yaml: cannot read: "),
        "{stderr}"
    );
}

#[test]
fn env_option_reports_the_steps_it_changes() {
    let output = tasker(&[
        "template",
        "validate",
        "--env",
        "production",
        ORDER,
        DIAMOND,
    ]);
    assert_eq!(output.status.code(), Some(0));
    let stdout = text(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].ends_with("; env production changes: process_payment, ship_order"),
        "{stdout}"
    );
    assert!(
        lines[1].ends_with("; env production: no changes (the template does not mention it)"),
        "{stdout}"
    );
}

#[test]
fn help_says_what_tasker_is() {
    let output = tasker(&["--help"]);
    assert_eq!(output.status.code(), Some(0));
    let help = text(&output.stdout);
    assert!(help.contains("workflow orchestration engine"), "{help}");
    assert!(help.contains("template"), "{help}");

    let output = tasker(&["template", "validate", "--help"]);
    let help = text(&output.stdout);
    assert!(help.contains("--env <NAME>"), "{help}");
    assert!(help.contains("<FILE>..."), "{help}");
}

#[test]
fn validate_without_files_is_a_usage_error() {
    let output = tasker(&["template", "validate"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("<FILE>"));
}
