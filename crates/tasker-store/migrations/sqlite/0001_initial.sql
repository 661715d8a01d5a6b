-- Tasker schema, SQLite. Times are INTEGER milliseconds since the Unix epoch (UTC); JSON is TEXT.
-- Current states are kept on each row (for indexed queries) and in the transition tables (history,
-- with sort_key and most_recent); both are written in the same transaction.

CREATE TABLE tasker_namespaces (
    namespace_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE tasker_named_tasks (
    named_task_id INTEGER PRIMARY KEY,
    namespace_id INTEGER NOT NULL REFERENCES tasker_namespaces (namespace_id),
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    template_json TEXT,
    created_at INTEGER NOT NULL,
    UNIQUE (namespace_id, name, version)
);

CREATE TABLE tasker_tasks (
    task_id INTEGER PRIMARY KEY,
    named_task_id INTEGER NOT NULL REFERENCES tasker_named_tasks (named_task_id),
    state TEXT NOT NULL,
    context TEXT NOT NULL,
    initiator TEXT,
    source_system TEXT,
    reason TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    idempotency_key TEXT,
    claimed_by TEXT,
    claim_expires_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    completed_at INTEGER,
    UNIQUE (named_task_id, idempotency_key)
);
CREATE INDEX tasker_tasks_state ON tasker_tasks (state, task_id);
CREATE INDEX tasker_tasks_created_at ON tasker_tasks (created_at);
CREATE INDEX tasker_tasks_active ON tasker_tasks (task_id)
    WHERE state IN ('pending', 'in_progress');

CREATE TABLE tasker_step_execution_batches (
    batch_id INTEGER PRIMARY KEY,
    batch_uuid TEXT NOT NULL UNIQUE,
    worker_id TEXT,
    handler_class TEXT,
    orchestrator_id TEXT,
    batch_size INTEGER NOT NULL,
    timeout_ms INTEGER NOT NULL,
    state TEXT NOT NULL,
    metadata TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX tasker_batches_unfinished ON tasker_step_execution_batches (worker_id)
    WHERE state IN ('created', 'published', 'executing');

CREATE TABLE tasker_workflow_steps (
    step_id INTEGER PRIMARY KEY,
    task_id INTEGER NOT NULL REFERENCES tasker_tasks (task_id),
    name TEXT NOT NULL,
    position INTEGER NOT NULL,
    handler_class TEXT NOT NULL,
    handler_config TEXT NOT NULL,
    retryable INTEGER NOT NULL,
    retry_limit INTEGER NOT NULL,
    timeout_ms INTEGER,
    backoff TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    -- Parents not yet complete or resolved manually; 0 means the dependencies are satisfied.
    -- Only ever decreases (both satisfying states are terminal).
    unmet_parents INTEGER NOT NULL DEFAULT 0,
    last_attempted_at INTEGER,
    backoff_until INTEGER,
    results TEXT,
    last_error TEXT,
    in_flight_batch_id INTEGER REFERENCES tasker_step_execution_batches (batch_id),
    in_flight_deadline_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (task_id, name)
);
CREATE INDEX tasker_steps_state ON tasker_workflow_steps (state);
CREATE INDEX tasker_steps_candidates ON tasker_workflow_steps (step_id)
    WHERE state IN ('pending', 'error') AND in_flight_batch_id IS NULL AND unmet_parents = 0;
CREATE INDEX tasker_steps_in_flight ON tasker_workflow_steps (in_flight_deadline_at)
    WHERE in_flight_batch_id IS NOT NULL;
CREATE INDEX tasker_steps_in_flight_batch ON tasker_workflow_steps (in_flight_batch_id)
    WHERE in_flight_batch_id IS NOT NULL;

CREATE TABLE tasker_step_edges (
    from_step_id INTEGER NOT NULL REFERENCES tasker_workflow_steps (step_id),
    to_step_id INTEGER NOT NULL REFERENCES tasker_workflow_steps (step_id),
    task_id INTEGER NOT NULL REFERENCES tasker_tasks (task_id),
    PRIMARY KEY (from_step_id, to_step_id)
);
CREATE INDEX tasker_step_edges_to ON tasker_step_edges (to_step_id);
CREATE INDEX tasker_step_edges_task ON tasker_step_edges (task_id);

CREATE TABLE tasker_task_transitions (
    id INTEGER PRIMARY KEY,
    task_id INTEGER NOT NULL REFERENCES tasker_tasks (task_id),
    from_state TEXT,
    to_state TEXT NOT NULL,
    event TEXT NOT NULL,
    metadata TEXT,
    sort_key INTEGER NOT NULL,
    most_recent INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (task_id, sort_key)
);
CREATE UNIQUE INDEX tasker_task_transitions_most_recent ON tasker_task_transitions (task_id)
    WHERE most_recent = 1;

CREATE TABLE tasker_step_transitions (
    id INTEGER PRIMARY KEY,
    step_id INTEGER NOT NULL REFERENCES tasker_workflow_steps (step_id),
    from_state TEXT,
    to_state TEXT NOT NULL,
    event TEXT NOT NULL,
    metadata TEXT,
    sort_key INTEGER NOT NULL,
    most_recent INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (step_id, sort_key)
);
CREATE UNIQUE INDEX tasker_step_transitions_most_recent ON tasker_step_transitions (step_id)
    WHERE most_recent = 1;

CREATE TABLE tasker_step_execution_batch_steps (
    id INTEGER PRIMARY KEY,
    batch_id INTEGER NOT NULL REFERENCES tasker_step_execution_batches (batch_id),
    step_id INTEGER NOT NULL REFERENCES tasker_workflow_steps (step_id),
    sequence_order INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    expected_handler_class TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (batch_id, step_id)
);
CREATE INDEX tasker_batch_steps_step ON tasker_step_execution_batch_steps (step_id);

CREATE TABLE tasker_step_execution_batch_received_results (
    id INTEGER PRIMARY KEY,
    batch_uuid TEXT,
    step_id INTEGER,
    message_kind TEXT NOT NULL,
    worker_id TEXT,
    sequence_number INTEGER,
    status TEXT,
    execution_time_ms INTEGER,
    raw_message TEXT NOT NULL,
    processing_errors TEXT,
    received_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX tasker_received_results_dedup
    ON tasker_step_execution_batch_received_results (batch_uuid, coalesce(step_id, 0), message_kind);
CREATE INDEX tasker_received_results_step
    ON tasker_step_execution_batch_received_results (step_id);

CREATE TABLE tasker_step_execution_batch_transitions (
    id INTEGER PRIMARY KEY,
    batch_id INTEGER NOT NULL REFERENCES tasker_step_execution_batches (batch_id),
    from_state TEXT,
    to_state TEXT NOT NULL,
    event TEXT NOT NULL,
    metadata TEXT,
    sort_key INTEGER NOT NULL,
    most_recent INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (batch_id, sort_key)
);
CREATE UNIQUE INDEX tasker_batch_transitions_most_recent
    ON tasker_step_execution_batch_transitions (batch_id) WHERE most_recent = 1;

CREATE TABLE tasker_workers (
    worker_id TEXT PRIMARY KEY,
    capabilities TEXT NOT NULL,
    first_seen_at INTEGER NOT NULL,
    last_heartbeat_at INTEGER NOT NULL
);

CREATE TABLE tasker_dead_letters (
    dead_letter_id INTEGER PRIMARY KEY,
    task_id INTEGER NOT NULL REFERENCES tasker_tasks (task_id),
    step_id INTEGER REFERENCES tasker_workflow_steps (step_id),
    reason TEXT NOT NULL,
    snapshot TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    resolved_at INTEGER,
    resolution TEXT,
    resolved_by TEXT
);
CREATE INDEX tasker_dead_letters_unresolved ON tasker_dead_letters (dead_letter_id)
    WHERE resolved_at IS NULL;
CREATE INDEX tasker_dead_letters_task ON tasker_dead_letters (task_id);
