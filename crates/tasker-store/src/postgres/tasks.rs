//! Tasks: creation (with steps, edges and first transitions), reads, listing, claims.

use serde_json::Value;
use sqlx::PgConnection;
use sqlx::types::Json;

use super::rows::{self, step_select, task_select};
use crate::error::{FailResult, StoreError};
use crate::params::{NewTask, TasksActive, TasksClaim, TasksLease, TasksList, page_size};
use crate::records::{Page, TaskCreated, TaskDag, TaskRecord, dags_in_order};
use crate::time::to_ms;

/// Finds or creates the named task (template row) and its namespace. Concurrent creators of the
/// same template wait on each other's insert and then find the row.
async fn named_task_id(conn: &mut PgConnection, task: &NewTask, now: i64) -> FailResult<i64> {
    const FIND: &str = "SELECT nt.named_task_id FROM tasker_named_tasks nt
         JOIN tasker_namespaces ns ON ns.namespace_id = nt.namespace_id
         WHERE ns.name = $1 AND nt.name = $2 AND nt.version = $3";
    if let Some(id) = sqlx::query_scalar::<_, i64>(FIND)
        .bind(&task.namespace)
        .bind(&task.name)
        .bind(&task.version)
        .fetch_optional(&mut *conn)
        .await?
    {
        return Ok(id);
    }
    sqlx::query(
        "INSERT INTO tasker_namespaces (name, created_at) VALUES ($1, $2)
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(&task.namespace)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO tasker_named_tasks (namespace_id, name, version, template_json, created_at)
         SELECT namespace_id, $2, $3, $4, $5 FROM tasker_namespaces WHERE name = $1
         ON CONFLICT (namespace_id, name, version) DO NOTHING",
    )
    .bind(&task.namespace)
    .bind(&task.name)
    .bind(&task.version)
    .bind(&task.template_json)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(sqlx::query_scalar::<_, i64>(FIND)
        .bind(&task.namespace)
        .bind(&task.name)
        .bind(&task.version)
        .fetch_one(&mut *conn)
        .await?)
}

async fn existing(
    conn: &mut PgConnection,
    named_task_id: i64,
    key: &str,
) -> FailResult<Option<TaskCreated>> {
    let Some(task_id) = sqlx::query_scalar::<_, i64>(
        "SELECT task_id FROM tasker_tasks WHERE named_task_id = $1 AND idempotency_key = $2",
    )
    .bind(named_task_id)
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let step_ids = sqlx::query_scalar(
        "SELECT step_id FROM tasker_workflow_steps WHERE task_id = $1 ORDER BY position",
    )
    .bind(task_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(TaskCreated {
        task_id,
        created: false,
        step_ids,
    }))
}

/// Creates one task inside the caller's transaction.
pub(crate) async fn task_create(
    conn: &mut PgConnection,
    task: &NewTask,
) -> FailResult<TaskCreated> {
    task.check()?;
    let now = to_ms(task.now);
    let named_task_id = named_task_id(conn, task, now).await?;

    if let Some(key) = &task.idempotency_key
        && let Some(found) = existing(conn, named_task_id, key).await?
    {
        return Ok(found);
    }

    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO tasker_tasks (named_task_id, state, context, initiator, source_system,
                                   reason, tags, idempotency_key, created_at, updated_at,
                                   claimed_by, claim_expires_at)
         VALUES ($1, 'pending', $2, $3, $4, $5, $6, $7, $8, $8, $9, $10)
         ON CONFLICT (named_task_id, idempotency_key) DO NOTHING
         RETURNING task_id",
    )
    .bind(named_task_id)
    .bind(&task.context)
    .bind(&task.initiator)
    .bind(&task.source_system)
    .bind(&task.reason)
    .bind(Json(&task.tags))
    .bind(&task.idempotency_key)
    .bind(now)
    .bind(task.claim.as_ref().map(|c| c.orchestrator_id.as_str()))
    .bind(task.claim.as_ref().map(|c| to_ms(c.expires_at)))
    .fetch_optional(&mut *conn)
    .await?;
    let Some(task_id) = inserted else {
        // Another transaction created it between our look-up and insert; it has committed now.
        let key = task.idempotency_key.as_deref().unwrap_or_default();
        return existing(conn, named_task_id, key).await?.ok_or_else(|| {
            StoreError::Backend {
                cause: "idempotency key conflicted but no task was found".to_owned(),
            }
            .into()
        });
    };

    let n = task.steps.len();
    let mut names = Vec::with_capacity(n);
    let mut positions = Vec::with_capacity(n);
    let mut handlers = Vec::with_capacity(n);
    let mut configs = Vec::with_capacity(n);
    let mut retryable = Vec::with_capacity(n);
    let mut retry_limits = Vec::with_capacity(n);
    let mut timeouts = Vec::with_capacity(n);
    let mut backoffs: Vec<Option<Value>> = Vec::with_capacity(n);
    for (position, step) in task.steps.iter().enumerate() {
        names.push(step.name.as_str());
        positions.push(i32::try_from(position).unwrap_or(i32::MAX));
        handlers.push(step.handler_class.as_str());
        configs.push(&step.handler_config);
        retryable.push(step.retryable);
        retry_limits.push(step.retry_limit);
        timeouts.push(step.timeout_ms);
        backoffs.push(
            step.backoff
                .as_ref()
                .map(|b| serde_json::to_value(b).unwrap_or(Value::Null)),
        );
    }
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "INSERT INTO tasker_workflow_steps (task_id, name, position, handler_class, handler_config,
                                            retryable, retry_limit, timeout_ms, backoff, state,
                                            attempts, unmet_parents, created_at, updated_at)
         SELECT $1, u.name, u.position, u.handler_class, u.handler_config, u.retryable,
                u.retry_limit, u.timeout_ms, u.backoff, 'pending', 0, u.unmet_parents, $2, $2
         FROM UNNEST($3::text[], $4::int4[], $5::text[], $6::jsonb[], $7::bool[], $8::int4[],
                     $9::int8[], $10::jsonb[], $11::int4[])
              AS u(name, position, handler_class, handler_config, retryable, retry_limit,
                   timeout_ms, backoff, unmet_parents)
         RETURNING position, step_id",
    )
    .bind(task_id)
    .bind(now)
    .bind(&names)
    .bind(&positions)
    .bind(&handlers)
    .bind(&configs)
    .bind(&retryable)
    .bind(&retry_limits)
    .bind(&timeouts)
    .bind(&backoffs)
    .bind(task.parent_counts())
    .fetch_all(&mut *conn)
    .await?;
    let mut step_ids = vec![0_i64; n];
    for (position, step_id) in rows {
        let slot = usize::try_from(position)
            .ok()
            .and_then(|p| step_ids.get_mut(p))
            .ok_or_else(|| StoreError::Corrupt {
                reason: format!("step position {position} out of range"),
            })?;
        *slot = step_id;
    }

    if !task.edges.is_empty() {
        let from: Vec<i64> = task.edges.iter().map(|&(p, _)| step_ids[p]).collect();
        let to: Vec<i64> = task.edges.iter().map(|&(_, c)| step_ids[c]).collect();
        sqlx::query(
            "INSERT INTO tasker_step_edges (from_step_id, to_step_id, task_id)
             SELECT u.from_id, u.to_id, $3 FROM UNNEST($1::int8[], $2::int8[]) AS u(from_id, to_id)",
        )
        .bind(&from)
        .bind(&to)
        .bind(task_id)
        .execute(&mut *conn)
        .await?;
    }

    sqlx::query(
        "INSERT INTO tasker_task_transitions
             (task_id, from_state, to_state, event, metadata, sort_key, most_recent, created_at)
         VALUES ($1, NULL, 'pending', 'created', NULL, 1, true, $2)",
    )
    .bind(task_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO tasker_step_transitions
             (step_id, from_state, to_state, event, metadata, sort_key, most_recent, created_at)
         SELECT u.step_id, NULL, 'pending', 'created', NULL, 1, true, $2
         FROM UNNEST($1::int8[]) AS u(step_id)",
    )
    .bind(&step_ids)
    .bind(now)
    .execute(&mut *conn)
    .await?;

    Ok(TaskCreated {
        task_id,
        created: true,
        step_ids,
    })
}

/// One task.
pub(crate) async fn task_get(conn: &mut PgConnection, task_id: i64) -> FailResult<TaskRecord> {
    let row = sqlx::query(concat!(task_select!(), "WHERE t.task_id = $1"))
        .bind(task_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: "task",
            id: task_id.to_string(),
        })?;
    Ok(rows::task(&row)?)
}

/// Several tasks with their steps and edges, one query per table (the caller provides a
/// snapshot transaction).
pub(crate) async fn tasks_load_dags(
    conn: &mut PgConnection,
    task_ids: &[i64],
) -> FailResult<Vec<TaskDag>> {
    let tasks = sqlx::query(concat!(task_select!(), "WHERE t.task_id = ANY($1)"))
        .bind(task_ids)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(rows::task)
        .collect::<Result<Vec<_>, _>>()?;
    let steps = sqlx::query(concat!(
        step_select!(),
        "WHERE s.task_id = ANY($1) ORDER BY s.task_id, s.position"
    ))
    .bind(task_ids)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(rows::step)
    .collect::<Result<Vec<_>, _>>()?;
    let edges: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT task_id, from_step_id, to_step_id FROM tasker_step_edges
         WHERE task_id = ANY($1)
         ORDER BY task_id, from_step_id, to_step_id",
    )
    .bind(task_ids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(dags_in_order(task_ids, tasks, steps, edges))
}

/// A task with its steps and edges (the caller provides a snapshot transaction).
pub(crate) async fn task_load_dag(conn: &mut PgConnection, task_id: i64) -> FailResult<TaskDag> {
    let task = task_get(conn, task_id).await?;
    let steps = sqlx::query(concat!(
        step_select!(),
        "WHERE s.task_id = $1 ORDER BY s.position"
    ))
    .bind(task_id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(rows::step)
    .collect::<Result<Vec<_>, _>>()?;
    let edges: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT from_step_id, to_step_id FROM tasker_step_edges WHERE task_id = $1
         ORDER BY from_step_id, to_step_id",
    )
    .bind(task_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(TaskDag { task, steps, edges })
}

/// Tasks for the API, newest first.
pub(crate) async fn tasks_list(
    conn: &mut PgConnection,
    params: &TasksList,
) -> FailResult<Page<TaskRecord>> {
    let limit = page_size(params.limit, 100, 1000);
    let rows = sqlx::query(concat!(
        task_select!(),
        "WHERE ($1::text IS NULL OR t.state = $1)
           AND ($2::text IS NULL OR ns.name = $2)
           AND ($3::text IS NULL OR nt.name = $3)
           AND ($4::int8 IS NULL OR t.created_at >= $4)
           AND ($5::int8 IS NULL OR t.created_at < $5)
           AND ($6::int8 IS NULL OR t.task_id < $6)
         ORDER BY t.task_id DESC
         LIMIT $7"
    ))
    .bind(params.state.map(|s| s.as_str()))
    .bind(&params.namespace)
    .bind(&params.name)
    .bind(params.created_from.map(to_ms))
    .bind(params.created_before.map(to_ms))
    .bind(params.before_task_id)
    .bind(limit + 1)
    .fetch_all(&mut *conn)
    .await?;
    let mut items = rows.iter().map(rows::task).collect::<Result<Vec<_>, _>>()?;
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
pub(crate) async fn tasks_active(
    conn: &mut PgConnection,
    params: &TasksActive,
) -> FailResult<Page<i64>> {
    let limit = page_size(params.limit, 1000, 10_000);
    let mut ids: Vec<i64> = sqlx::query_scalar(
        "SELECT task_id FROM tasker_tasks
         WHERE state IN ('pending', 'in_progress')
           AND ($1::int8 IS NULL OR task_id > $1)
           AND ($2::text IS NULL OR claimed_by = $2)
         ORDER BY task_id LIMIT $3",
    )
    .bind(params.after_task_id)
    .bind(&params.claimed_by)
    .bind(limit + 1)
    .fetch_all(&mut *conn)
    .await?;
    Ok(paginate(&mut ids, limit, |id| *id))
}

/// Claims free unfinished tasks. Rows another claimer is locking are skipped, and a row whose
/// claim changed while we waited is re-checked, so two claimers never get the same task.
pub(crate) async fn tasks_claim(
    conn: &mut PgConnection,
    params: &TasksClaim,
) -> FailResult<Vec<i64>> {
    let now = to_ms(params.now);
    let mut ids: Vec<i64> = sqlx::query_scalar(
        "WITH picked AS (
             SELECT task_id FROM tasker_tasks
             WHERE state IN ('pending', 'in_progress')
               AND (claimed_by IS NULL OR claim_expires_at <= $2)
             ORDER BY task_id
             LIMIT $4
             FOR NO KEY UPDATE SKIP LOCKED)
         UPDATE tasker_tasks t SET claimed_by = $1, claim_expires_at = $3
         FROM picked WHERE t.task_id = picked.task_id
         RETURNING t.task_id",
    )
    .bind(&params.orchestrator_id)
    .bind(now)
    .bind(now.saturating_add(params.lease_ms))
    .bind(i64::from(params.limit))
    .fetch_all(&mut *conn)
    .await?;
    ids.sort_unstable();
    Ok(ids)
}

/// Extends leases still held.
pub(crate) async fn tasks_lease_renew(
    conn: &mut PgConnection,
    params: &TasksLease,
) -> FailResult<Vec<i64>> {
    let mut ids: Vec<i64> = sqlx::query_scalar(
        "UPDATE tasker_tasks SET claim_expires_at = $3
         WHERE task_id = ANY($2) AND claimed_by = $1
         RETURNING task_id",
    )
    .bind(&params.orchestrator_id)
    .bind(&params.task_ids)
    .bind(to_ms(params.now).saturating_add(params.lease_ms))
    .fetch_all(&mut *conn)
    .await?;
    ids.sort_unstable();
    Ok(ids)
}

/// Gives up claims.
pub(crate) async fn tasks_release(
    conn: &mut PgConnection,
    params: &TasksLease,
) -> FailResult<Vec<i64>> {
    let mut ids: Vec<i64> = sqlx::query_scalar(
        "UPDATE tasker_tasks SET claimed_by = NULL, claim_expires_at = NULL
         WHERE task_id = ANY($2) AND claimed_by = $1
         RETURNING task_id",
    )
    .bind(&params.orchestrator_id)
    .bind(&params.task_ids)
    .fetch_all(&mut *conn)
    .await?;
    ids.sort_unstable();
    Ok(ids)
}
