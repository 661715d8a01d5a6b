//! The `tasker` binary: parses arguments, sets up logging, and runs the chosen command.

mod api_client;
mod args;
mod bench;
mod bench_command;
mod demo_command;
mod orchestrator;
mod serve_command;
mod serve_config;
mod shutdown_signal;
mod task_command;
mod template_validate;
mod worker_command;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use args::{Cli, Command, TemplateCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .init();
    let outcome = match cli.command {
        Command::Template {
            command: TemplateCommand::Validate(validate),
        } => template_validate::run(
            &validate,
            &mut io::stdout().lock(),
            &mut io::stderr().lock(),
        ),
        Command::Worker(worker) => worker_command::run(&worker),
        Command::Serve(serve) => serve_command::run(&serve),
        Command::Task { command } => task_command::run(&command),
        Command::Demo(demo) => demo_command::run(&demo),
        Command::Bench(bench) => bench_command::run(&bench),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            // Writing to stderr failed too if this fails; there is nowhere left to report it.
            let _ = writeln!(io::stderr(), "error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
