//! `tasker serve`: the orchestrator — engine, worker endpoint and HTTP API — on settings merged
//! from flags, `TASKER_*` variables, a config file and defaults ([`crate::serve_config`]), until
//! SIGINT or SIGTERM.

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::Context;
use tasker_engine::TemplateRegistry;

use crate::orchestrator::Orchestrator;
use crate::serve_config::{ServeArgs, ServeSettings, Source, redact_password};
use crate::shutdown_signal::shutdown_signal;

/// Runs the orchestrator until SIGINT or SIGTERM, then stops it gracefully and exits 0. Exits
/// with an error (one line, from `main`) when it cannot start.
pub(crate) fn run(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let settings = ServeSettings::resolve(args)?;
    if args.print_config {
        print!("{}", settings.describe());
        return Ok(ExitCode::SUCCESS);
    }
    let options = settings.engine_options()?;
    let templates = load_templates(&settings)?;
    if settings.database_url.source == Source::Default {
        let dir = &settings.data_dir.value;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let shutdown = shutdown_signal("tasker serve")?;
        let template_count = templates.len();
        let orchestrator = Orchestrator::start(
            options,
            &settings.database_url.value,
            templates,
            &settings.http_addr.value,
        )
        .await?;
        writeln!(
            io::stderr(),
            "tasker serve: ready — HTTP API on http://{}, workers connect to {}, database {}, \
             {template_count} template{} from {}",
            orchestrator.http_addr(),
            orchestrator.engine().endpoint(),
            redact_password(&settings.database_url.value),
            if template_count == 1 { "" } else { "s" },
            settings.templates.value.display(),
        )?;
        shutdown.await;
        orchestrator.stop().await;
        writeln!(io::stderr(), "tasker serve: stopped")?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Loads the templates directory. A missing default directory means no templates (with a
/// warning); a missing directory that was asked for, or any invalid file, is an error naming it.
fn load_templates(settings: &ServeSettings) -> anyhow::Result<TemplateRegistry> {
    let dir = &settings.templates.value;
    if settings.templates_are_optional() && !dir.exists() {
        tracing::warn!(
            dir = %dir.display(),
            "no templates directory; starting without templates (use --templates DIR)"
        );
        let _ = writeln!(
            io::stderr(),
            "tasker serve: warning: no templates directory {} — starting without templates \
             (use --templates DIR)",
            dir.display()
        );
        return Ok(TemplateRegistry::new());
    }
    // The engine's error names the file and the problem; its source chain repeats them.
    TemplateRegistry::from_dir(dir)
        .map_err(|error| anyhow::anyhow!("cannot load the templates in {}: {error}", dir.display()))
}
