//! Size and range limits of protocol v1.
//!
//! Two limits are set per deployment and announced by the orchestrator in `welcome`
//! ([`Limits`]); the others are fixed by the protocol so that every implementation rejects the
//! same messages. Lengths are counted in UTF-8 bytes, never in characters.

/// The per-deployment limits a decoder enforces. The orchestrator announces its values in
/// `welcome`; a worker decodes with [`Limits::default`] until then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame, in bytes, either side accepts. Default [`DEFAULT_MAX_FRAME_BYTES`]
    /// (1 MiB); configurable between [`MIN_MAX_FRAME_BYTES`] and [`MAX_MAX_FRAME_BYTES`].
    /// Too low and large step outputs or task contexts cannot be carried (the worker reports
    /// `tasker.output_too_large`); too high and one bad peer can make the other buffer a lot
    /// of memory per frame.
    pub max_frame_bytes: usize,
    /// Most steps in one `step_batch` (and step ids in one `cancel_steps`, summaries in one
    /// `batch_completion`). Default [`DEFAULT_MAX_STEPS_PER_BATCH`]; configurable between 1 and
    /// [`MAX_STEPS_PER_BATCH_CEILING`]. Larger batches mean fewer frames but a larger unit of
    /// loss when a worker dies.
    pub max_steps_per_batch: usize,
}

impl Limits {
    /// The limits a worker decodes with after `welcome`: the announced frame size and batch size.
    pub fn from_welcome(welcome: &crate::Welcome) -> Self {
        Self {
            max_frame_bytes: usize::try_from(welcome.max_frame_bytes).unwrap_or(usize::MAX),
            max_steps_per_batch: usize::try_from(welcome.max_steps_per_batch).unwrap_or(usize::MAX),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_steps_per_batch: DEFAULT_MAX_STEPS_PER_BATCH,
        }
    }
}

/// Default largest frame: 1 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1024 * 1024;
/// Smallest `max_frame_bytes` an orchestrator may announce: 64 KiB.
pub const MIN_MAX_FRAME_BYTES: usize = 64 * 1024;
/// Largest `max_frame_bytes` an orchestrator may announce: 64 MiB.
pub const MAX_MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// Default most steps per batch.
pub const DEFAULT_MAX_STEPS_PER_BATCH: usize = 100;
/// Largest `max_steps_per_batch` an orchestrator may announce.
pub const MAX_STEPS_PER_BATCH_CEILING: usize = 1000;

/// Deepest nesting of arrays and objects in a message; the top-level object is depth 1.
/// (Ruby's JSON parser refuses more than 100 levels by default; 64 leaves room.)
pub const MAX_NESTING_DEPTH: usize = 64;

/// Longest `worker_id` / `orchestrator_id`, in bytes.
pub const MAX_IDENTIFIER_BYTES: usize = 128;
/// Longest name (`name`, `handler_class`, `step_name`, `error_class`, `sdk.*`,
/// `offending_message_type`), in bytes.
pub const MAX_NAME_BYTES: usize = 255;
/// Longest human-readable text (`error.message`, `message`, `reason`), in bytes.
pub const MAX_TEXT_BYTES: usize = 16 * 1024;
/// Longest error `code`, in bytes.
pub const MAX_CODE_BYTES: usize = 64;
/// Most entries in `error.backtrace`.
pub const MAX_BACKTRACE_ENTRIES: usize = 100;
/// Longest `error.backtrace` entry, in bytes.
pub const MAX_BACKTRACE_ENTRY_BYTES: usize = 2048;
/// Most entries in `hello.handler_classes`.
pub const MAX_HANDLER_CLASSES: usize = 1000;
/// Largest `hello.capacity`.
pub const MAX_CAPACITY: u32 = 10_000;

/// Shortest heartbeat interval, in milliseconds.
pub const MIN_HEARTBEAT_INTERVAL_MS: u64 = 100;
/// Longest heartbeat interval, in milliseconds.
pub const MAX_HEARTBEAT_INTERVAL_MS: u64 = 60_000;
/// Default heartbeat interval, in milliseconds.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 1000;
/// Default liveness: heartbeat intervals of silence after which a peer is declared dead.
pub const DEFAULT_LIVENESS: u32 = 5;
/// Largest liveness an orchestrator may announce.
pub const MAX_LIVENESS: u32 = 100;

/// The longest prefix of `text` that is at most `max_bytes` bytes long and ends on a character
/// boundary. Senders use it to fit free text (error messages, backtraces) into the limits above.
pub fn truncate_to_bytes(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate_to_bytes("abc", 5), "abc");
        assert_eq!(truncate_to_bytes("abc", 2), "ab");
        // "é" is two bytes; cutting in its middle drops it entirely.
        assert_eq!(truncate_to_bytes("aé", 2), "a");
        assert_eq!(truncate_to_bytes("🚀🚀", 7), "🚀");
        assert_eq!(truncate_to_bytes("🚀", 0), "");
    }
}
