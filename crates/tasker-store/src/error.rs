//! The store's one error type, with neutral kinds: callers never branch on SQLSTATE codes or
//! SQLite result codes.

use std::fmt;

use uuid::Uuid;

/// Result of every store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// What went wrong in a store operation. Each kind names its cause in its message.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database URL could not be understood (bad syntax, unknown scheme, bad option).
    #[error("invalid database URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL with any password replaced by `***`.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The database could not be reached or opened (server down, refused, timed out, no such
    /// directory, permission denied).
    #[error("database unavailable ({target}): {cause}")]
    Unavailable {
        /// Which database: the server address or the file path.
        target: String,
        /// The underlying cause.
        cause: String,
    },
    /// The database was migrated by a newer Tasker; this one refuses to touch it.
    #[error(
        "database schema version {found} is newer than this Tasker supports ({supported}); \
         upgrade Tasker or point it at another database"
    )]
    SchemaTooNew {
        /// The newest migration recorded in the database.
        found: i64,
        /// The newest migration this build knows.
        supported: i64,
    },
    /// The database is locked by someone else and stayed locked past the busy timeout (SQLite), or
    /// a lock wait was aborted (PostgreSQL deadlock or lock timeout). Retrying later may succeed.
    #[error("database locked: {cause}")]
    Locked {
        /// The underlying cause, naming the file or the lock.
        cause: String,
    },
    /// The disk (or the configured size cap) is full; nothing of the failed operation was written.
    #[error("database disk full: {cause}")]
    DiskFull {
        /// The underlying cause.
        cause: String,
    },
    /// The requested row does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// Which kind of row (`task`, `step`, `batch`, `dead letter`).
        what: &'static str,
        /// Its identifier.
        id: String,
    },
    /// Conditional changes were refused because the stored state was not what the caller
    /// expected; nothing was written.
    #[error("conflict: {}", RefusalList(refused))]
    Conflict {
        /// Every refused change and why.
        refused: Vec<Refusal>,
    },
    /// The caller passed parameters that cannot be stored (edge index out of range, empty task,
    /// duplicate step name, negative limit).
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// What is wrong.
        reason: String,
    },
    /// The database holds something this build cannot read (an unknown state name, bad JSON).
    #[error("corrupt or unreadable data: {reason}")]
    Corrupt {
        /// What could not be read.
        reason: String,
    },
    /// Any other database error, with the database's own message.
    #[error("database error: {cause}")]
    Backend {
        /// The database's message.
        cause: String,
    },
}

/// Which stored row a refused change was aimed at.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum ChangeTarget {
    /// A workflow step, by step id.
    Step(i64),
    /// A task, by task id.
    Task(i64),
    /// A step-execution batch, by batch UUID.
    Batch(Uuid),
    /// A dead letter, by id.
    DeadLetter(i64),
}

impl fmt::Display for ChangeTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChangeTarget::Step(id) => write!(f, "step {id}"),
            ChangeTarget::Task(id) => write!(f, "task {id}"),
            ChangeTarget::Batch(id) => write!(f, "batch {id}"),
            ChangeTarget::DeadLetter(id) => write!(f, "dead letter {id}"),
        }
    }
}

/// Why a conditional change was refused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum RefusalReason {
    /// The row does not exist.
    NotFound,
    /// The row is in another state than the change expected.
    StateMismatch {
        /// The state the change expected.
        expected: String,
        /// The state found.
        found: String,
    },
    /// The step is in flight in another batch than the change expected (or in none / in one).
    BatchMismatch {
        /// The batch the change expected the step to be in flight in.
        expected: Option<Uuid>,
        /// The batch the step is in flight in.
        found: Option<Uuid>,
    },
    /// The task is not claimed by the orchestrator making the change (or its lease expired).
    NotClaimed {
        /// The orchestrator that holds the claim now, if any.
        claimed_by: Option<String>,
    },
    /// The step's task is finished or failed; its steps cannot be dispatched.
    TaskNotActive {
        /// The task's state.
        state: String,
    },
    /// The dead letter was already resolved.
    AlreadyResolved,
    /// The change is not allowed by the store's invariants (for example entering `in_progress`
    /// other than by recording a batch).
    NotAllowed {
        /// Why.
        detail: String,
    },
    /// Another change in the same set was refused, and the set is all-or-nothing.
    SetRefused,
    /// The step cannot be dispatched: some of its parents are not `complete` or
    /// `resolved_manually`.
    ParentsNotDone {
        /// How many parents are not done.
        unmet: i32,
    },
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefusalReason::NotFound => f.write_str("not found"),
            RefusalReason::StateMismatch { expected, found } => {
                write!(f, "expected state {expected}, found {found}")
            }
            RefusalReason::BatchMismatch { expected, found } => write!(
                f,
                "expected in-flight batch {}, found {}",
                show_batch(expected),
                show_batch(found)
            ),
            RefusalReason::NotClaimed { claimed_by } => match claimed_by {
                Some(owner) => write!(f, "task is claimed by orchestrator {owner}"),
                None => f.write_str("task is not claimed by this orchestrator"),
            },
            RefusalReason::TaskNotActive { state } => write!(f, "task is {state}"),
            RefusalReason::AlreadyResolved => f.write_str("already resolved"),
            RefusalReason::NotAllowed { detail } => write!(f, "not allowed: {detail}"),
            RefusalReason::SetRefused => f.write_str("another change in the same set was refused"),
            RefusalReason::ParentsNotDone { unmet } => {
                write!(
                    f,
                    "{unmet} of its parents not complete or resolved manually"
                )
            }
        }
    }
}

fn show_batch(batch: &Option<Uuid>) -> String {
    match batch {
        Some(id) => id.to_string(),
        None => "none".to_owned(),
    }
}

/// One refused change: what it targeted and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refusal {
    /// The row the change was aimed at.
    pub target: ChangeTarget,
    /// Why it was refused.
    #[serde(flatten)]
    pub reason: RefusalReason,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.target, self.reason)
    }
}

struct RefusalList<'a>(&'a [Refusal]);

impl fmt::Display for RefusalList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, refusal) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{refusal}")?;
        }
        Ok(())
    }
}

/// Replaces the password in a URL with `***` so it can be shown in errors and logs.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_password_only() {
        assert_eq!(
            redact_url("postgres://u:secret@db:5432/x?a=b"),
            "postgres://u:***@db:5432/x?a=b"
        );
        assert_eq!(redact_url("postgres://u@db/x"), "postgres://u@db/x");
        assert_eq!(redact_url("sqlite:/tmp/x.db"), "sqlite:/tmp/x.db");
    }

    #[test]
    fn conflict_message_lists_every_refusal() {
        let err = StoreError::Conflict {
            refused: vec![
                Refusal {
                    target: ChangeTarget::Step(7),
                    reason: RefusalReason::StateMismatch {
                        expected: "in_progress".into(),
                        found: "complete".into(),
                    },
                },
                Refusal {
                    target: ChangeTarget::Task(3),
                    reason: RefusalReason::NotFound,
                },
            ],
        };
        assert_eq!(
            err.to_string(),
            "conflict: step 7: expected state in_progress, found complete; task 3: not found"
        );
    }
}

/// An error inside a backend function: either from the driver (mapped to a [`StoreError`] by the
/// backend, which knows the database's name) or already a [`StoreError`]. `E` is the driver's
/// error type: `sqlx::Error` for PostgreSQL, `rusqlite::Error` for SQLite.
#[derive(Debug)]
pub(crate) enum Fail<E = sqlx::Error> {
    /// A driver error, not yet mapped.
    Db(E),
    /// A store error.
    Store(StoreError),
}

impl From<sqlx::Error> for Fail<sqlx::Error> {
    fn from(e: sqlx::Error) -> Self {
        Fail::Db(e)
    }
}

impl From<rusqlite::Error> for Fail<rusqlite::Error> {
    fn from(e: rusqlite::Error) -> Self {
        Fail::Db(e)
    }
}

impl<E> From<StoreError> for Fail<E> {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

/// What backend functions return.
pub(crate) type FailResult<T, E = sqlx::Error> = Result<T, Fail<E>>;
