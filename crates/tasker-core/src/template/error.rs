//! Why a template was rejected, and how YAML parser errors become precise messages.

use std::fmt;

/// Why a task template was rejected. Each variant is one kind of problem, and its message names
/// the culprit: the step, the key, the cycle, or the line and column in the YAML.
///
/// Locations such as ``step `reserve_inventory` (steps[1])`` come from the YAML path of the
/// problem; `the template` means the top level of the document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The text is not YAML (a syntax error), or is empty.
    #[error("invalid YAML at {position}: {message}")]
    Yaml {
        /// Where the parser stopped.
        position: Position,
        /// The parser's description of the problem.
        message: String,
    },
    /// A required key is absent.
    #[error("{location} is missing required field `{field}`{}", at(*position))]
    MissingField {
        /// The missing key.
        field: String,
        /// The mapping that lacks it, e.g. ``step `ship_order` (steps[3])``.
        location: String,
        /// Where that mapping is in the YAML. `None` when the
        /// document uses merge keys or `x-` keys (see [`crate::template`]).
        position: Option<Position>,
    },
    /// A key that the template format does not have (usually a typo).
    #[error("unknown key `{key}` in {location}{}; expected {expected}", at(*position))]
    UnknownKey {
        /// The unexpected key.
        key: String,
        /// The mapping that holds it.
        location: String,
        /// The keys allowed there, as the parser lists them.
        expected: String,
        /// Where the key is in the YAML. `None` when the
        /// document uses merge keys or `x-` keys (see [`crate::template`]).
        position: Option<Position>,
    },
    /// The same key appears twice in one mapping.
    #[error("duplicate key `{key}` in {location}{}", at(*position))]
    DuplicateKey {
        /// The repeated key.
        key: String,
        /// The mapping that holds it.
        location: String,
        /// Where the repetition is in the YAML. `None` when the
        /// document uses merge keys or `x-` keys (see [`crate::template`]).
        position: Option<Position>,
    },
    /// A value has the wrong type or is out of its type's range (`retry_limit: -1`,
    /// `steps: {}`, `handler_config: [1]`).
    #[error("invalid value for {location}{}: {message}", at(*position))]
    InvalidValue {
        /// The key whose value is wrong.
        location: String,
        /// What was expected and what was found.
        message: String,
        /// Where the value is in the YAML. `None` when the
        /// document uses merge keys or `x-` keys (see [`crate::template`]).
        position: Option<Position>,
    },
    /// A name (template name, namespace, step name, environment name) that is empty or contains
    /// characters that are not allowed.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        /// Which name, e.g. `step name` or `namespace`.
        what: String,
        /// The rejected value.
        value: String,
        /// The rule it breaks.
        reason: String,
    },
    /// A `handler_class` that is empty or contains whitespace or control characters.
    #[error("invalid handler_class {value:?} for step `{step}`: {reason}")]
    InvalidHandlerClass {
        /// The step.
        step: String,
        /// The rejected value.
        value: String,
        /// The rule it breaks.
        reason: String,
    },
    /// `version` is not a semantic version.
    #[error("invalid version {version:?}: {reason}; expected a semantic version like \"1.0.0\"")]
    InvalidVersion {
        /// The rejected version.
        version: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The `steps` list is empty.
    #[error("the template has no steps; `steps` must list at least one step")]
    EmptySteps,
    /// Two steps share a name.
    #[error("duplicate step name `{name}` (steps[{first}] and steps[{second}])")]
    DuplicateStep {
        /// The shared name.
        name: String,
        /// Index of the first step with that name.
        first: usize,
        /// Index of the second.
        second: usize,
    },
    /// A step depends on a step that does not exist.
    #[error("step `{step}` depends on `{dependency}`, which is not a step of this template")]
    UnknownDependency {
        /// The depending step.
        step: String,
        /// The missing name.
        dependency: String,
    },
    /// A step lists itself in `depends_on`.
    #[error("step `{step}` depends on itself")]
    SelfDependency {
        /// The step.
        step: String,
    },
    /// A step lists the same dependency twice.
    #[error("step `{step}` lists `{dependency}` in depends_on more than once")]
    DuplicateDependency {
        /// The step.
        step: String,
        /// The repeated dependency.
        dependency: String,
    },
    /// The dependencies form a cycle.
    #[error("dependency cycle: {} (each step depends on the next)", path.join(" -> "))]
    Cycle {
        /// The step names around the cycle, first name repeated at the end: `[a, b, c, a]`
        /// means a depends on b, b on c and c on a. It starts at the cycle's step that comes
        /// first in the file.
        path: Vec<String>,
    },
    /// `context_schema` is not a valid JSON Schema (or refers to something that cannot be
    /// resolved offline).
    #[error(
        "context_schema is not a valid JSON Schema: {message}{}",
        schema_location(pointer)
    )]
    InvalidContextSchema {
        /// JSON pointer into the schema where the problem is (empty for the whole schema).
        pointer: String,
        /// What is wrong.
        message: String,
    },
    /// `retry_limit` is out of range.
    #[error("invalid retry_limit {value} for {location}: {reason}")]
    InvalidRetryLimit {
        /// The step, e.g. ``step `a` `` or ``step `a` in environment `production` ``.
        location: String,
        /// The rejected value.
        value: u32,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// `timeout_ms` is out of range.
    #[error("invalid timeout_ms {value} for {location}: {reason}")]
    InvalidTimeout {
        /// The step, as for [`TemplateError::InvalidRetryLimit`].
        location: String,
        /// The rejected value.
        value: u64,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// A backoff policy with impossible settings.
    #[error("invalid backoff for {location}: {reason}")]
    InvalidBackoff {
        /// `the template` or the step, as for [`TemplateError::InvalidRetryLimit`].
        location: String,
        /// Which setting is wrong and why.
        reason: String,
    },
    /// An environment overrides a step the template does not have.
    #[error(
        "environment `{environment}` overrides step `{step}`, which is not a step of this template"
    )]
    UnknownOverrideStep {
        /// The environment.
        environment: String,
        /// The unknown step name.
        step: String,
    },
}

fn schema_location(pointer: &str) -> String {
    if pointer.is_empty() {
        String::new()
    } else {
        format!(" (at `{pointer}` in the schema)")
    }
}

/// ` (line L, column C)`, or nothing without a position.
fn at(position: Option<Position>) -> String {
    position.map_or_else(String::new, |position| format!(" ({position})"))
}

/// Which pass over the YAML produced an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum YamlPass {
    /// Parsing the text into a YAML value: errors are syntax errors (or duplicate keys).
    Parse,
    /// Reading the template's shape from the original text: positions are accurate.
    Shape,
    /// Reading the shape from text regenerated after expanding merge keys: positions would point
    /// into the regenerated text, so none are reported.
    ShapeOfNormalized,
}

/// A line and column in the YAML text, both counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

impl TemplateError {
    /// Turns a `serde_norway` error into the variant it describes.
    ///
    /// `serde_norway` formats its errors as `<path>: <message> at line L column C`, where the
    /// path (`steps[1].retry_limit`) is absent at the top level and the message is serde's
    /// standard wording (`missing field `x``, `unknown field `x`, expected …`). The classification
    /// reads that wording; anything it does not recognise becomes [`TemplateError::InvalidValue`]
    /// (or [`TemplateError::Yaml`] when the text did not even parse).
    /// `document` is the already-parsed YAML, when there is one, used to name steps by their
    /// `name` instead of their index.
    pub(crate) fn from_yaml(
        error: &serde_norway::Error,
        document: Option<&serde_norway::Value>,
        pass: YamlPass,
    ) -> Self {
        let parser_position =
            error
                .location()
                .map_or(Position { line: 1, column: 1 }, |location| Position {
                    line: location.line(),
                    column: location.column(),
                });
        let position = (pass != YamlPass::ShapeOfNormalized).then_some(parser_position);
        let text = strip_position(&error.to_string());
        let (path, message) = split_path(&text);
        let location = describe_path(path, document);
        if let Some(field) = backticked_after(message, "missing field ") {
            return Self::MissingField {
                field,
                location,
                position,
            };
        }
        if let Some(key) = backticked_after(message, "unknown field ") {
            let expected = message
                .split_once(", expected ")
                .map_or_else(|| "no keys here".to_owned(), |(_, rest)| rest.to_owned())
                .replace("there are no fields", "no keys here");
            return Self::UnknownKey {
                key,
                location,
                expected,
                position,
            };
        }
        if let Some(key) = backticked_after(message, "duplicate field ") {
            return Self::DuplicateKey {
                key,
                location,
                position,
            };
        }
        if let Some(key) = message.strip_prefix("duplicate entry with key ") {
            return Self::DuplicateKey {
                key: key.trim_matches('"').to_owned(),
                location,
                position,
            };
        }
        if pass == YamlPass::Parse {
            return Self::Yaml {
                position: parser_position,
                message: text,
            };
        }
        Self::InvalidValue {
            location,
            message: plain_type_names(message),
            position,
        }
    }
}

/// Replaces Rust type names in serde's "expected …" wording with words.
fn plain_type_names(message: &str) -> String {
    message
        .replace(
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        )
        .replace("expected u64", "expected a whole number, 0 or more")
        .replace("expected f64", "expected a number")
}

/// Removes every ` at line L column C` that `serde_norway` inserts; the position is reported
/// separately.
fn strip_position(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(" at line ") {
        out.push_str(&rest[..start]);
        let after = &rest[start + " at line ".len()..];
        let digits = after.chars().take_while(char::is_ascii_digit).count();
        let after_line = &after[digits..];
        if digits > 0 && after_line.starts_with(" column ") {
            let after_column = &after_line[" column ".len()..];
            let column_digits = after_column
                .chars()
                .take_while(char::is_ascii_digit)
                .count();
            rest = &after_column[column_digits..];
        } else {
            out.push_str(" at line ");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Splits `steps[1].retry_limit: invalid type …` into the path and the message. The path never
/// contains whitespace; a message that starts with words (`invalid type: …`) has no path.
fn split_path(text: &str) -> (&str, &str) {
    match text.split_once(": ") {
        Some((path, message)) if !path.is_empty() && !path.contains(char::is_whitespace) => {
            (path, message)
        }
        _ => ("", text),
    }
}

/// The text between the backticks that follow `prefix`, e.g. `x` in ``missing field `x` ``.
fn backticked_after(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?.strip_prefix('`')?;
    let end = rest.find('`')?;
    Some(rest[..end].to_owned())
}

/// Describes a YAML path for a human: `steps[1].retry_limit` becomes
/// ``field `retry_limit` of step `reserve_inventory` (steps[1])``.
fn describe_path(path: &str, document: Option<&serde_norway::Value>) -> String {
    if path.is_empty() || path == "." {
        return "the template".to_owned();
    }
    if let Some(rest) = path.strip_prefix("steps[")
        && let Some((index, tail)) = rest.split_once(']')
    {
        let step_name = index
            .parse::<usize>()
            .ok()
            .and_then(|i| document?.get("steps")?.get(i)?.get("name")?.as_str());
        let step = match step_name {
            Some(name) => format!("step `{name}` (steps[{index}])"),
            None => format!("steps[{index}]"),
        };
        let field = tail.strip_prefix('.').unwrap_or(tail);
        return if field.is_empty() {
            step
        } else {
            format!("`{field}` of {step}")
        };
    }
    if let Some(rest) = path.strip_prefix("environments.") {
        if let Some((environment, tail)) = rest.split_once('.')
            && let Some(after_steps) = tail.strip_prefix("steps.")
        {
            let (step, field) = after_steps.split_once('.').unwrap_or((after_steps, ""));
            let target = format!("override of step `{step}` in environment `{environment}`");
            return if field.is_empty() {
                target
            } else {
                format!("`{field}` of {target}")
            };
        }
        return format!("environments `{rest}`");
    }
    format!("`{path}`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_positions_but_keeps_other_text() {
        assert_eq!(
            strip_position("did not find node at line 4 column 1, while parsing"),
            "did not find node, while parsing"
        );
        assert_eq!(strip_position("see at line x"), "see at line x");
    }

    #[test]
    fn splits_path_only_when_it_has_no_spaces() {
        assert_eq!(
            split_path("steps[0].retry_limit: invalid type: x"),
            ("steps[0].retry_limit", "invalid type: x")
        );
        assert_eq!(split_path("invalid type: x"), ("", "invalid type: x"));
    }

    #[test]
    fn describes_paths() {
        assert_eq!(describe_path(".", None), "the template");
        assert_eq!(describe_path("steps[2]", None), "steps[2]");
        assert_eq!(
            describe_path("steps[2].backoff", None),
            "`backoff` of steps[2]"
        );
        assert_eq!(
            describe_path("environments.production.steps.pay.timeout_ms", None),
            "`timeout_ms` of override of step `pay` in environment `production`"
        );
        assert_eq!(describe_path("context_schema", None), "`context_schema`");
    }
}
