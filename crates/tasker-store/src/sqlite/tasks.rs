//! Tasks: creation (with steps, edges and first transitions), reads, listing, claims.

use rusqlite::{Connection, params};

use super::errors::FailResult;
use super::rows::{self, execute, json_text, json_text_opt, query_all, query_opt};
use super::rows::{step_select, task_select};
use crate::error::StoreError;
use crate::params::{NewTask, TasksActive, TasksClaim, TasksLease, TasksList, page_size};
use crate::records::{Page, TaskCreated, TaskDag, TaskRecord, dags_in_order};
use crate::time::to_ms;

/// Finds or creates the named task (template row) and its namespace.
fn named_task_id(conn: &Connection, task: &NewTask, now: i64) -> FailResult<i64> {
    const FIND: &str = "SELECT nt.named_task_id FROM tasker_named_tasks nt
         JOIN tasker_namespaces ns ON ns.namespace_id = nt.namespace_id
         WHERE ns.name = ?1 AND nt.name = ?2 AND nt.version = ?3";
    let find = || {
        query_opt(
            conn,
            FIND,
            params![task.namespace, task.name, task.version],
            |row| rows::column::<i64>(row, "named_task_id"),
        )
    };
    if let Some(id) = find()? {
        return Ok(id);
    }
    execute(
        conn,
        "INSERT INTO tasker_namespaces (name, created_at) VALUES (?1, ?2)
         ON CONFLICT (name) DO NOTHING",
        params![task.namespace, now],
    )?;
    execute(
        conn,
        "INSERT INTO tasker_named_tasks (namespace_id, name, version, template_json, created_at)
         SELECT namespace_id, ?2, ?3, ?4, ?5 FROM tasker_namespaces WHERE name = ?1
         ON CONFLICT (namespace_id, name, version) DO NOTHING",
        params![
            task.namespace,
            task.name,
            task.version,
            json_text_opt(task.template_json.as_ref())?,
            now
        ],
    )?;
    find()?.ok_or_else(|| {
        StoreError::Corrupt {
            reason: format!(
                "template {}/{} {} vanished right after it was stored",
                task.namespace, task.name, task.version
            ),
        }
        .into()
    })
}

fn step_ids(conn: &Connection, task_id: i64) -> FailResult<Vec<i64>> {
    query_all(
        conn,
        "SELECT step_id FROM tasker_workflow_steps WHERE task_id = ?1 ORDER BY position",
        params![task_id],
        |row| rows::column(row, "step_id"),
    )
}

/// Creates one task inside the caller's transaction.
pub(crate) fn task_create(conn: &Connection, task: &NewTask) -> FailResult<TaskCreated> {
    task.check()?;
    let now = to_ms(task.now);
    let named_task_id = named_task_id(conn, task, now)?;

    if let Some(key) = &task.idempotency_key
        && let Some(task_id) = query_opt(
            conn,
            "SELECT task_id FROM tasker_tasks WHERE named_task_id = ?1 AND idempotency_key = ?2",
            params![named_task_id, key],
            |row| rows::column::<i64>(row, "task_id"),
        )?
    {
        let step_ids = step_ids(conn, task_id)?;
        return Ok(TaskCreated {
            task_id,
            created: false,
            step_ids,
        });
    }

    let task_id: i64 = query_opt(
        conn,
        "INSERT INTO tasker_tasks (named_task_id, state, context, initiator, source_system,
                                   reason, tags, idempotency_key, created_at, updated_at,
                                   claimed_by, claim_expires_at)
         VALUES (?1, 'pending', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?10)
         RETURNING task_id",
        params![
            named_task_id,
            json_text(&task.context)?,
            task.initiator,
            task.source_system,
            task.reason,
            json_text(&task.tags)?,
            task.idempotency_key,
            now,
            task.claim.as_ref().map(|c| c.orchestrator_id.as_str()),
            task.claim.as_ref().map(|c| to_ms(c.expires_at)),
        ],
        |row| rows::column(row, "task_id"),
    )?
    .ok_or_else(|| StoreError::Corrupt {
        reason: "inserting a task returned no id".to_owned(),
    })?;

    let positions: Vec<(i64, i64)> = query_all(
        conn,
        "INSERT INTO tasker_workflow_steps (task_id, name, position, handler_class, handler_config,
                                            retryable, retry_limit, timeout_ms, backoff, state,
                                            attempts, unmet_parents, created_at, updated_at)
         SELECT ?1, j.value ->> 'name', j.value ->> 'position', j.value ->> 'handler_class',
                j.value -> 'handler_config', j.value ->> 'retryable', j.value ->> 'retry_limit',
                j.value ->> 'timeout_ms', j.value -> 'backoff', 'pending', 0,
                j.value ->> 'unmet_parents', ?3, ?3
         FROM json_each(?2) AS j
         RETURNING position, step_id",
        params![task_id, json_text(&task.steps_json())?, now],
        |row| {
            Ok((
                rows::column(row, "position")?,
                rows::column(row, "step_id")?,
            ))
        },
    )?;
    let mut step_ids = vec![0_i64; task.steps.len()];
    for (position, step_id) in positions {
        let slot = usize::try_from(position)
            .ok()
            .and_then(|p| step_ids.get_mut(p))
            .ok_or_else(|| StoreError::Corrupt {
                reason: format!("step position {position} out of range"),
            })?;
        *slot = step_id;
    }

    if !task.edges.is_empty() {
        // `task.check()` bounds every edge index by the number of steps.
        let edges: Vec<[i64; 2]> = task
            .edges
            .iter()
            .map(|&(parent, child)| [step_ids[parent], step_ids[child]])
            .collect();
        execute(
            conn,
            "INSERT INTO tasker_step_edges (from_step_id, to_step_id, task_id)
             SELECT j.value ->> 0, j.value ->> 1, ?2 FROM json_each(?1) AS j",
            params![json_text(&edges)?, task_id],
        )?;
    }

    execute(
        conn,
        "INSERT INTO tasker_task_transitions
             (task_id, from_state, to_state, event, metadata, sort_key, most_recent, created_at)
         VALUES (?1, NULL, 'pending', 'created', NULL, 1, 1, ?2)",
        params![task_id, now],
    )?;
    execute(
        conn,
        "INSERT INTO tasker_step_transitions
             (step_id, from_state, to_state, event, metadata, sort_key, most_recent, created_at)
         SELECT step_id, NULL, 'pending', 'created', NULL, 1, 1, ?2
         FROM tasker_workflow_steps WHERE task_id = ?1",
        params![task_id, now],
    )?;

    Ok(TaskCreated {
        task_id,
        created: true,
        step_ids,
    })
}

/// One task.
pub(crate) fn task_get(conn: &Connection, task_id: i64) -> FailResult<TaskRecord> {
    query_opt(
        conn,
        concat!(task_select!(), "WHERE t.task_id = ?1"),
        params![task_id],
        rows::task,
    )?
    .ok_or_else(|| {
        StoreError::NotFound {
            what: "task",
            id: task_id.to_string(),
        }
        .into()
    })
}

/// A task with its steps and edges, in the caller's snapshot.
pub(crate) fn task_load_dag(conn: &Connection, task_id: i64) -> FailResult<TaskDag> {
    let task = task_get(conn, task_id)?;
    let steps = query_all(
        conn,
        concat!(step_select!(), "WHERE s.task_id = ?1 ORDER BY s.position"),
        params![task_id],
        rows::step,
    )?;
    let edges = query_all(
        conn,
        "SELECT from_step_id, to_step_id FROM tasker_step_edges WHERE task_id = ?1
         ORDER BY from_step_id, to_step_id",
        params![task_id],
        |row| {
            Ok((
                rows::column(row, "from_step_id")?,
                rows::column(row, "to_step_id")?,
            ))
        },
    )?;
    Ok(TaskDag { task, steps, edges })
}

/// Several tasks with their steps and edges, one query per table, in the caller's snapshot.
pub(crate) fn tasks_load_dags(conn: &Connection, task_ids: &[i64]) -> FailResult<Vec<TaskDag>> {
    let ids = json_text(task_ids)?;
    let tasks = query_all(
        conn,
        concat!(
            task_select!(),
            "WHERE t.task_id IN (SELECT value FROM json_each(?1))"
        ),
        params![ids],
        rows::task,
    )?;
    let steps = query_all(
        conn,
        concat!(
            step_select!(),
            "WHERE s.task_id IN (SELECT value FROM json_each(?1)) ORDER BY s.task_id, s.position"
        ),
        params![ids],
        rows::step,
    )?;
    let edges = query_all(
        conn,
        "SELECT task_id, from_step_id, to_step_id FROM tasker_step_edges
         WHERE task_id IN (SELECT value FROM json_each(?1))
         ORDER BY task_id, from_step_id, to_step_id",
        params![ids],
        |row| {
            Ok((
                rows::column(row, "task_id")?,
                rows::column(row, "from_step_id")?,
                rows::column(row, "to_step_id")?,
            ))
        },
    )?;
    Ok(dags_in_order(task_ids, tasks, steps, edges))
}

/// Tasks for the API, newest first.
pub(crate) fn tasks_list(conn: &Connection, params: &TasksList) -> FailResult<Page<TaskRecord>> {
    let limit = page_size(params.limit, 100, 1000);
    let mut items = query_all(
        conn,
        concat!(
            task_select!(),
            "WHERE (?1 IS NULL OR t.state = ?1)
               AND (?2 IS NULL OR ns.name = ?2)
               AND (?3 IS NULL OR nt.name = ?3)
               AND (?4 IS NULL OR t.created_at >= ?4)
               AND (?5 IS NULL OR t.created_at < ?5)
               AND (?6 IS NULL OR t.task_id < ?6)
             ORDER BY t.task_id DESC
             LIMIT ?7"
        ),
        params![
            params.state.map(|s| s.as_str()),
            params.namespace,
            params.name,
            params.created_from.map(to_ms),
            params.created_before.map(to_ms),
            params.before_task_id,
            limit + 1,
        ],
        rows::task,
    )?;
    Ok(paginate(&mut items, limit, |t| t.task_id))
}

/// Cuts one extra row off (fetched to know whether another page exists) and sets the cursor.
pub(crate) fn paginate<T>(items: &mut Vec<T>, limit: i64, id: impl Fn(&T) -> i64) -> Page<T> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = items.len() > limit;
    items.truncate(limit);
    let next_cursor = if more { items.last().map(id) } else { None };
    Page {
        items: std::mem::take(items),
        next_cursor,
    }
}

/// Unfinished task ids, ascending.
pub(crate) fn tasks_active(conn: &Connection, params: &TasksActive) -> FailResult<Page<i64>> {
    let limit = page_size(params.limit, 1000, 10_000);
    let mut ids = query_all(
        conn,
        "SELECT task_id FROM tasker_tasks
         WHERE state IN ('pending', 'in_progress')
           AND (?1 IS NULL OR task_id > ?1)
           AND (?2 IS NULL OR claimed_by = ?2)
         ORDER BY task_id LIMIT ?3",
        params![params.after_task_id, params.claimed_by, limit + 1],
        |row| rows::column(row, "task_id"),
    )?;
    Ok(paginate(&mut ids, limit, |id| *id))
}

/// Claims free unfinished tasks. SQLite has one writer, so the update cannot race.
pub(crate) fn tasks_claim(conn: &Connection, params: &TasksClaim) -> FailResult<Vec<i64>> {
    let now = to_ms(params.now);
    let mut ids: Vec<i64> = query_all(
        conn,
        "UPDATE tasker_tasks SET claimed_by = ?1, claim_expires_at = ?3
         WHERE task_id IN (
             SELECT task_id FROM tasker_tasks
             WHERE state IN ('pending', 'in_progress')
               AND (claimed_by IS NULL OR claim_expires_at <= ?2)
             ORDER BY task_id LIMIT ?4)
         RETURNING task_id",
        params![
            params.orchestrator_id,
            now,
            now.saturating_add(params.lease_ms),
            i64::from(params.limit),
        ],
        |row| rows::column(row, "task_id"),
    )?;
    ids.sort_unstable();
    Ok(ids)
}

/// Extends leases still held.
pub(crate) fn tasks_lease_renew(conn: &Connection, params: &TasksLease) -> FailResult<Vec<i64>> {
    let mut ids: Vec<i64> = query_all(
        conn,
        "UPDATE tasker_tasks SET claim_expires_at = ?3
         WHERE task_id IN (SELECT value FROM json_each(?2)) AND claimed_by = ?1
         RETURNING task_id",
        params![
            params.orchestrator_id,
            json_text(&params.task_ids)?,
            to_ms(params.now).saturating_add(params.lease_ms),
        ],
        |row| rows::column(row, "task_id"),
    )?;
    ids.sort_unstable();
    Ok(ids)
}

/// Gives up claims.
pub(crate) fn tasks_release(conn: &Connection, params: &TasksLease) -> FailResult<Vec<i64>> {
    let mut ids: Vec<i64> = query_all(
        conn,
        "UPDATE tasker_tasks SET claimed_by = NULL, claim_expires_at = NULL
         WHERE task_id IN (SELECT value FROM json_each(?2)) AND claimed_by = ?1
         RETURNING task_id",
        params![params.orchestrator_id, json_text(&params.task_ids)?],
        |row| rows::column(row, "task_id"),
    )?;
    ids.sort_unstable();
    Ok(ids)
}
