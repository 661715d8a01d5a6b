//! `tasker serve`'s settings: the arguments, the optional TOML config file, and the one rule
//! that merges them — **flag > environment variable (`TASKER_*`) > config file > default**.
//!
//! Flags and environment variables are merged by clap (each flag names its variable); the config
//! file fills what neither set; defaults fill the rest. Relative paths in the config file are
//! relative to the file's directory. `tasker serve --print-config` shows the merged settings and
//! where each came from.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;

/// Default `--data-dir`.
pub(crate) const DEFAULT_DATA_DIR: &str = "./tasker-data";
/// The SQLite file inside the data directory used when no `--database-url` is given.
pub(crate) const DATABASE_FILE: &str = "tasker.db";
/// Default `--endpoint`.
pub(crate) const DEFAULT_ENDPOINT: &str = tasker_engine::options::DEFAULT_ENDPOINT;
/// Default `--http-addr`.
pub(crate) const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
/// The first default templates directory (used when it exists: running from a checkout).
pub(crate) const EXAMPLE_TEMPLATES_DIR: &str = "examples/templates";
/// The second default templates directory.
pub(crate) const DEFAULT_TEMPLATES_DIR: &str = "./templates";

/// Arguments of `tasker serve`. Each setting can also come from its `TASKER_*` variable or from
/// the config file; a flag beats the variable, which beats the file, which beats the default.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct ServeArgs {
    /// A TOML config file with any of the settings below, as `snake_case` keys (`data_dir`,
    /// `database_url`, `endpoint`, `http_addr`, `templates`, `orchestrator_id`, `environment`,
    /// `batch_size`, `heartbeat_interval_ms`, `liveness`, `poll_interval_ms`).
    #[arg(long, env = "TASKER_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// Directory for the embedded SQLite database (created if missing) [default: ./tasker-data].
    #[arg(long, env = "TASKER_DATA_DIR", value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,

    /// The database: `sqlite:PATH` or `postgres://USER:PASSWORD@HOST:PORT/DATABASE`
    /// [default: sqlite:DATA_DIR/tasker.db].
    #[arg(long, env = "TASKER_DATABASE_URL", value_name = "URL")]
    pub(crate) database_url: Option<String>,

    /// The ZeroMQ endpoint workers connect to: `tcp://HOST:PORT` or `ipc:///PATH`
    /// [default: tcp://127.0.0.1:5555].
    #[arg(long, env = "TASKER_ENDPOINT", value_name = "ENDPOINT")]
    pub(crate) endpoint: Option<String>,

    /// Where the HTTP API listens, `HOST:PORT` [default: 127.0.0.1:8080].
    #[arg(long, env = "TASKER_HTTP_ADDR", value_name = "HOST:PORT")]
    pub(crate) http_addr: Option<String>,

    /// Directory of task templates (`*.yaml`) [default: examples/templates if it exists, else
    /// ./templates].
    #[arg(long, env = "TASKER_TEMPLATES", value_name = "DIR")]
    pub(crate) templates: Option<PathBuf>,

    /// This orchestrator's id; keep it stable across restarts [default: orchestrator-HOSTNAME].
    #[arg(long, env = "TASKER_ORCHESTRATOR_ID", value_name = "ID")]
    pub(crate) orchestrator_id: Option<String>,

    /// The template environment whose overrides apply (e.g. `production`) [default: none].
    #[arg(long, env = "TASKER_ENVIRONMENT", value_name = "NAME")]
    pub(crate) environment: Option<String>,

    /// Most steps in one batch sent to a worker (1–1000) [default: 10].
    #[arg(long, env = "TASKER_BATCH_SIZE", value_name = "N")]
    pub(crate) batch_size: Option<usize>,

    /// Heartbeat interval with workers, in milliseconds (100–60000) [default: 1000].
    #[arg(long, env = "TASKER_HEARTBEAT_INTERVAL_MS", value_name = "MS")]
    pub(crate) heartbeat_interval_ms: Option<u64>,

    /// Silent heartbeat intervals after which a worker is declared dead and its steps are
    /// retried elsewhere (1–100) [default: 5].
    #[arg(long, env = "TASKER_LIVENESS", value_name = "N")]
    pub(crate) liveness: Option<u32>,

    /// How often the store is checked for tasks created by other processes, in milliseconds
    /// [default: 5000].
    #[arg(long, env = "TASKER_POLL_INTERVAL_MS", value_name = "MS")]
    pub(crate) poll_interval_ms: Option<u64>,

    /// Print the merged settings (and where each came from) and exit.
    #[arg(long)]
    pub(crate) print_config: bool,
}

/// The config file: the same settings as the flags, all optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) database_url: Option<String>,
    pub(crate) endpoint: Option<String>,
    pub(crate) http_addr: Option<String>,
    pub(crate) templates: Option<PathBuf>,
    pub(crate) orchestrator_id: Option<String>,
    pub(crate) environment: Option<String>,
    pub(crate) batch_size: Option<usize>,
    pub(crate) heartbeat_interval_ms: Option<u64>,
    pub(crate) liveness: Option<u32>,
    pub(crate) poll_interval_ms: Option<u64>,
}

impl ConfigFile {
    /// Reads and parses `path`, making its relative paths relative to the file's directory.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut file: ConfigFile = toml::from_str(&text).map_err(|error| {
            let position = error.span().map_or_else(String::new, |span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {column}: ")
            });
            anyhow::anyhow!(
                "config file {}: {position}{}",
                path.display(),
                error.message().trim().replace('\n', " ")
            )
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        for relative in [&mut file.data_dir, &mut file.templates]
            .into_iter()
            .flatten()
        {
            if relative.is_relative() {
                *relative = base.join(&*relative);
            }
        }
        Ok(file)
    }
}

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// A command-line flag or its `TASKER_*` variable.
    CommandLine,
    /// The config file.
    File,
    /// The built-in default.
    Default,
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Source::CommandLine => "flag or environment",
            Source::File => "config file",
            Source::Default => "default",
        }
    }
}

/// A merged value and its origin.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Setting<T> {
    pub(crate) value: T,
    pub(crate) source: Source,
}

fn pick<T>(flag: Option<T>, file: Option<T>, default: impl FnOnce() -> T) -> Setting<T> {
    match (flag, file) {
        (Some(value), _) => Setting {
            value,
            source: Source::CommandLine,
        },
        (None, Some(value)) => Setting {
            value,
            source: Source::File,
        },
        (None, None) => Setting {
            value: default(),
            source: Source::Default,
        },
    }
}

/// Everything `tasker serve` runs with, merged.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServeSettings {
    pub(crate) data_dir: Setting<PathBuf>,
    pub(crate) database_url: Setting<String>,
    pub(crate) endpoint: Setting<String>,
    pub(crate) http_addr: Setting<String>,
    pub(crate) templates: Setting<PathBuf>,
    pub(crate) orchestrator_id: Setting<Option<String>>,
    pub(crate) environment: Setting<Option<String>>,
    pub(crate) batch_size: Setting<usize>,
    pub(crate) heartbeat_interval_ms: Setting<u64>,
    pub(crate) liveness: Setting<u32>,
    pub(crate) poll_interval_ms: Setting<u64>,
}

impl ServeSettings {
    /// Merges `args` (flags and variables, already merged by clap) over the config file they
    /// name, over the defaults.
    pub(crate) fn resolve(args: &ServeArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => ConfigFile::load(path)?,
            None => ConfigFile::default(),
        };
        Ok(Self::merge(
            args,
            file,
            Path::new(EXAMPLE_TEMPLATES_DIR).is_dir(),
        ))
    }

    /// The pure merge: `args` over `file` over the defaults (`examples_exist` says whether
    /// `examples/templates` exists, which picks the default templates directory).
    pub(crate) fn merge(args: &ServeArgs, file: ConfigFile, examples_exist: bool) -> Self {
        let defaults = tasker_engine::EngineOptions::default();
        let data_dir = pick(args.data_dir.clone(), file.data_dir, || {
            PathBuf::from(DEFAULT_DATA_DIR)
        });
        let database_url = pick(args.database_url.clone(), file.database_url, || {
            format!("sqlite:{}", data_dir.value.join(DATABASE_FILE).display())
        });
        Self {
            database_url,
            data_dir,
            endpoint: pick(args.endpoint.clone(), file.endpoint, || {
                DEFAULT_ENDPOINT.to_owned()
            }),
            http_addr: pick(args.http_addr.clone(), file.http_addr, || {
                DEFAULT_HTTP_ADDR.to_owned()
            }),
            templates: pick(args.templates.clone(), file.templates, || {
                PathBuf::from(if examples_exist {
                    EXAMPLE_TEMPLATES_DIR
                } else {
                    DEFAULT_TEMPLATES_DIR
                })
            }),
            orchestrator_id: pick(
                args.orchestrator_id.clone().map(Some),
                file.orchestrator_id.map(Some),
                || None,
            ),
            environment: pick(
                args.environment.clone().map(Some),
                file.environment.map(Some),
                || None,
            ),
            batch_size: pick(args.batch_size, file.batch_size, || defaults.batch_size),
            heartbeat_interval_ms: pick(
                args.heartbeat_interval_ms,
                file.heartbeat_interval_ms,
                || u64::try_from(defaults.heartbeat_interval.as_millis()).unwrap_or(u64::MAX),
            ),
            liveness: pick(args.liveness, file.liveness, || defaults.liveness),
            poll_interval_ms: pick(args.poll_interval_ms, file.poll_interval_ms, || {
                u64::try_from(defaults.poll_interval.as_millis()).unwrap_or(u64::MAX)
            }),
        }
    }

    /// The engine options these settings ask for.
    ///
    /// # Errors
    ///
    /// When a value breaks the engine's rules (the message names the setting).
    pub(crate) fn engine_options(&self) -> anyhow::Result<tasker_engine::EngineOptions> {
        let mut options = tasker_engine::EngineOptions::with_endpoint(&self.endpoint.value);
        if let Some(id) = &self.orchestrator_id.value {
            options.orchestrator_id.clone_from(id);
        }
        options.environment.clone_from(&self.environment.value);
        options.batch_size = self.batch_size.value;
        options.heartbeat_interval = Duration::from_millis(self.heartbeat_interval_ms.value);
        options.liveness = self.liveness.value;
        options.poll_interval = Duration::from_millis(self.poll_interval_ms.value);
        if let Err(error) = options.validate() {
            bail!("{error}");
        }
        Ok(options)
    }

    /// Whether the templates directory is a default that may be absent (then the server starts
    /// with no templates instead of failing).
    pub(crate) fn templates_are_optional(&self) -> bool {
        self.templates.source == Source::Default
    }

    /// The settings as TOML (a valid config file), each line commented with its origin.
    pub(crate) fn describe(&self) -> String {
        fn entry(key: &str, value: &str, source: Source) -> String {
            format!("{:<58} # {}\n", format!("{key} = {value}"), source.label())
        }
        let path = |p: &Path| toml_string(&p.display().to_string());
        let mut out = String::new();
        out.push_str(&entry(
            "data_dir",
            &path(&self.data_dir.value),
            self.data_dir.source,
        ));
        out.push_str(&entry(
            "database_url",
            &toml_string(&redact_password(&self.database_url.value)),
            self.database_url.source,
        ));
        out.push_str(&entry(
            "endpoint",
            &toml_string(&self.endpoint.value),
            self.endpoint.source,
        ));
        out.push_str(&entry(
            "http_addr",
            &toml_string(&self.http_addr.value),
            self.http_addr.source,
        ));
        out.push_str(&entry(
            "templates",
            &path(&self.templates.value),
            self.templates.source,
        ));
        out.push_str(&match &self.orchestrator_id.value {
            Some(id) => entry(
                "orchestrator_id",
                &toml_string(id),
                self.orchestrator_id.source,
            ),
            None => format!(
                "{:<58} # default\n",
                format!(
                    "# orchestrator_id = {}",
                    toml_string(&tasker_engine::EngineOptions::default().orchestrator_id)
                )
            ),
        });
        out.push_str(&match &self.environment.value {
            Some(name) => entry("environment", &toml_string(name), self.environment.source),
            None => format!("{:<58} # default\n", "# environment = (none)"),
        });
        for (key, value, source) in [
            (
                "batch_size",
                self.batch_size.value.to_string(),
                self.batch_size.source,
            ),
            (
                "heartbeat_interval_ms",
                self.heartbeat_interval_ms.value.to_string(),
                self.heartbeat_interval_ms.source,
            ),
            (
                "liveness",
                self.liveness.value.to_string(),
                self.liveness.source,
            ),
            (
                "poll_interval_ms",
                self.poll_interval_ms.value.to_string(),
                self.poll_interval_ms.source,
            ),
        ] {
            out.push_str(&entry(key, &value, source));
        }
        out
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub(crate) fn redact_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &authority[..colon],
            &rest[at..]
        ),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_configuration() {
        let settings = ServeSettings::merge(&ServeArgs::default(), ConfigFile::default(), true);
        assert_eq!(settings.data_dir.value, PathBuf::from("./tasker-data"));
        assert_eq!(
            settings.database_url.value,
            "sqlite:./tasker-data/tasker.db"
        );
        assert_eq!(settings.endpoint.value, "tcp://127.0.0.1:5555");
        assert_eq!(settings.http_addr.value, "127.0.0.1:8080");
        assert_eq!(
            settings.templates.value,
            PathBuf::from("examples/templates")
        );
        assert_eq!(settings.batch_size.value, 10);
        assert_eq!(settings.heartbeat_interval_ms.value, 1000);
        assert!(settings.templates_are_optional());
        let without_examples =
            ServeSettings::merge(&ServeArgs::default(), ConfigFile::default(), false);
        assert_eq!(
            without_examples.templates.value,
            PathBuf::from("./templates")
        );
        settings.engine_options().expect("defaults are valid");
    }

    #[test]
    fn a_flag_beats_the_file_which_beats_the_default() {
        let args = ServeArgs {
            endpoint: Some("tcp://127.0.0.1:7000".into()),
            ..ServeArgs::default()
        };
        let file = ConfigFile {
            endpoint: Some("tcp://127.0.0.1:6000".into()),
            http_addr: Some("127.0.0.1:9000".into()),
            data_dir: Some(PathBuf::from("/srv/tasker")),
            ..ConfigFile::default()
        };
        let settings = ServeSettings::merge(&args, file, true);
        assert_eq!(settings.endpoint.value, "tcp://127.0.0.1:7000");
        assert_eq!(settings.endpoint.source, Source::CommandLine);
        assert_eq!(settings.http_addr.value, "127.0.0.1:9000");
        assert_eq!(settings.http_addr.source, Source::File);
        assert_eq!(settings.database_url.value, "sqlite:/srv/tasker/tasker.db");
        assert_eq!(settings.database_url.source, Source::Default);
        assert_eq!(settings.liveness.source, Source::Default);
    }

    #[test]
    fn the_config_file_is_strict_and_relative_to_itself() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tasker.toml");
        std::fs::write(
            &path,
            "data_dir = \"data\"\ntemplates = \"/abs/t\"\nliveness = 3\n",
        )
        .expect("write");
        let file = ConfigFile::load(&path).expect("valid");
        assert_eq!(file.data_dir, Some(dir.path().join("data")));
        assert_eq!(file.templates, Some(PathBuf::from("/abs/t")));
        assert_eq!(file.liveness, Some(3));

        std::fs::write(&path, "endpoint = \"tcp://x:1\"\nhttp_port = 80\n").expect("write");
        let error = ConfigFile::load(&path)
            .expect_err("unknown key")
            .to_string();
        assert!(error.contains("tasker.toml"), "{error}");
        assert!(error.contains("http_port"), "{error}");
        assert!(error.contains("line 2, column 1"), "{error}");
        assert!(!error.contains('\n'), "{error}");
    }

    #[test]
    fn bad_engine_values_are_named() {
        let args = ServeArgs {
            batch_size: Some(0),
            ..ServeArgs::default()
        };
        let settings = ServeSettings::merge(&args, ConfigFile::default(), true);
        let error = settings.engine_options().expect_err("invalid").to_string();
        assert!(error.contains("batch_size"), "{error}");
    }

    #[test]
    fn the_description_is_a_valid_config_file() {
        let args = ServeArgs {
            database_url: Some("postgres://tasker:secret@db:5432/tasker".into()),
            orchestrator_id: Some("orch-1".into()),
            ..ServeArgs::default()
        };
        let settings = ServeSettings::merge(&args, ConfigFile::default(), true);
        let text = settings.describe();
        assert!(
            text.contains("postgres://tasker:***@db:5432/tasker"),
            "{text}"
        );
        assert!(!text.contains("secret"), "{text}");
        let parsed: ConfigFile = toml::from_str(&text).expect("valid TOML");
        assert_eq!(parsed.orchestrator_id.as_deref(), Some("orch-1"));
        assert_eq!(parsed.batch_size, Some(10));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_password("postgres://u:p@h/d"),
            "postgres://u:***@h/d"
        );
        assert_eq!(redact_password("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(redact_password("sqlite:x.db"), "sqlite:x.db");
    }
}
