-- Tasker schema, PostgreSQL. Times are BIGINT milliseconds since the Unix epoch (UTC), as in the
-- SQLite schema, so both backends compare times identically; JSON is JSONB.
-- Current states are kept on each row (for indexed queries) and in the transition tables (history,
-- with sort_key and most_recent); both are written in the same transaction.

CREATE TABLE tasker_namespaces (
    namespace_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE tasker_named_tasks (
    named_task_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace_id BIGINT NOT NULL REFERENCES tasker_namespaces (namespace_id),
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    template_json JSONB,
    created_at BIGINT NOT NULL,
    UNIQUE (namespace_id, name, version)
);

CREATE TABLE tasker_tasks (
    task_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    named_task_id BIGINT NOT NULL REFERENCES tasker_named_tasks (named_task_id),
    state TEXT NOT NULL,
    context JSONB NOT NULL,
    initiator TEXT,
    source_system TEXT,
    reason TEXT,
    tags JSONB NOT NULL DEFAULT '[]',
    idempotency_key TEXT,
    claimed_by TEXT,
    claim_expires_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    completed_at BIGINT,
    UNIQUE (named_task_id, idempotency_key)
);
CREATE INDEX tasker_tasks_state ON tasker_tasks (state, task_id);
CREATE INDEX tasker_tasks_created_at ON tasker_tasks (created_at);
CREATE INDEX tasker_tasks_active ON tasker_tasks (task_id)
    WHERE state IN ('pending', 'in_progress');

CREATE TABLE tasker_step_execution_batches (
    batch_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_uuid UUID NOT NULL UNIQUE,
    worker_id TEXT,
    handler_class TEXT,
    orchestrator_id TEXT,
    batch_size INTEGER NOT NULL,
    timeout_ms BIGINT NOT NULL,
    state TEXT NOT NULL,
    metadata JSONB,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX tasker_batches_unfinished ON tasker_step_execution_batches (worker_id)
    WHERE state IN ('created', 'published', 'executing');

CREATE TABLE tasker_workflow_steps (
    step_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id BIGINT NOT NULL REFERENCES tasker_tasks (task_id),
    name TEXT NOT NULL,
    position INTEGER NOT NULL,
    handler_class TEXT NOT NULL,
    handler_config JSONB NOT NULL,
    retryable BOOLEAN NOT NULL,
    retry_limit INTEGER NOT NULL,
    timeout_ms BIGINT,
    backoff JSONB,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    -- Parents not yet complete or resolved manually; 0 means the dependencies are satisfied.
    -- Only ever decreases (both satisfying states are terminal).
    unmet_parents INTEGER NOT NULL DEFAULT 0,
    last_attempted_at BIGINT,
    backoff_until BIGINT,
    results JSONB,
    last_error JSONB,
    in_flight_batch_id BIGINT REFERENCES tasker_step_execution_batches (batch_id),
    in_flight_deadline_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
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
    from_step_id BIGINT NOT NULL REFERENCES tasker_workflow_steps (step_id),
    to_step_id BIGINT NOT NULL REFERENCES tasker_workflow_steps (step_id),
    task_id BIGINT NOT NULL REFERENCES tasker_tasks (task_id),
    PRIMARY KEY (from_step_id, to_step_id)
);
CREATE INDEX tasker_step_edges_to ON tasker_step_edges (to_step_id);
CREATE INDEX tasker_step_edges_task ON tasker_step_edges (task_id);

CREATE TABLE tasker_task_transitions (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id BIGINT NOT NULL REFERENCES tasker_tasks (task_id),
    from_state TEXT,
    to_state TEXT NOT NULL,
    event TEXT NOT NULL,
    metadata JSONB,
    sort_key INTEGER NOT NULL,
    most_recent BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (task_id, sort_key)
);
CREATE UNIQUE INDEX tasker_task_transitions_most_recent ON tasker_task_transitions (task_id)
    WHERE most_recent;

CREATE TABLE tasker_step_transitions (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    step_id BIGINT NOT NULL REFERENCES tasker_workflow_steps (step_id),
    from_state TEXT,
    to_state TEXT NOT NULL,
    event TEXT NOT NULL,
    metadata JSONB,
    sort_key INTEGER NOT NULL,
    most_recent BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (step_id, sort_key)
);
CREATE UNIQUE INDEX tasker_step_transitions_most_recent ON tasker_step_transitions (step_id)
    WHERE most_recent;

CREATE TABLE tasker_step_execution_batch_steps (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id BIGINT NOT NULL REFERENCES tasker_step_execution_batches (batch_id),
    step_id BIGINT NOT NULL REFERENCES tasker_workflow_steps (step_id),
    sequence_order INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    expected_handler_class TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (batch_id, step_id)
);
CREATE INDEX tasker_batch_steps_step ON tasker_step_execution_batch_steps (step_id);

CREATE TABLE tasker_step_execution_batch_received_results (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_uuid TEXT,
    step_id BIGINT,
    message_kind TEXT NOT NULL,
    worker_id TEXT,
    sequence_number BIGINT,
    status TEXT,
    execution_time_ms BIGINT,
    raw_message TEXT NOT NULL,
    processing_errors JSONB,
    received_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX tasker_received_results_dedup
    ON tasker_step_execution_batch_received_results (batch_uuid, coalesce(step_id, 0), message_kind);
CREATE INDEX tasker_received_results_step
    ON tasker_step_execution_batch_received_results (step_id);

CREATE TABLE tasker_step_execution_batch_transitions (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id BIGINT NOT NULL REFERENCES tasker_step_execution_batches (batch_id),
    from_state TEXT,
    to_state TEXT NOT NULL,
    event TEXT NOT NULL,
    metadata JSONB,
    sort_key INTEGER NOT NULL,
    most_recent BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (batch_id, sort_key)
);
CREATE UNIQUE INDEX tasker_batch_transitions_most_recent
    ON tasker_step_execution_batch_transitions (batch_id) WHERE most_recent;

CREATE TABLE tasker_workers (
    worker_id TEXT PRIMARY KEY,
    capabilities JSONB NOT NULL,
    first_seen_at BIGINT NOT NULL,
    last_heartbeat_at BIGINT NOT NULL
);

CREATE TABLE tasker_dead_letters (
    dead_letter_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id BIGINT NOT NULL REFERENCES tasker_tasks (task_id),
    step_id BIGINT REFERENCES tasker_workflow_steps (step_id),
    reason TEXT NOT NULL,
    snapshot JSONB NOT NULL,
    created_at BIGINT NOT NULL,
    resolved_at BIGINT,
    resolution TEXT,
    resolved_by TEXT
);
CREATE INDEX tasker_dead_letters_unresolved ON tasker_dead_letters (dead_letter_id)
    WHERE resolved_at IS NULL;
CREATE INDEX tasker_dead_letters_task ON tasker_dead_letters (task_id);
