//! The store conformance suite: every case runs against SQLite (always) and PostgreSQL (when
//! `TASKER_TEST_POSTGRES_URL` names a server; required when `TASKER_REQUIRE_POSTGRES=1`).
//!
//! A case is an `async fn(&mut Harness)` in one of the modules below; add it to the list at the
//! bottom and it runs on both backends. Change a backend → extend this suite.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod fixtures;
mod harness;

mod batches;
mod claims;
mod ledger;
mod maintenance;
mod tasks;
mod transitions;

macro_rules! conformance {
    ($($module:ident :: $case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let mut h = crate::harness::Harness::sqlite().await;
                    crate::$module::$case(&mut h).await;
                    h.cleanup().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(mut h) = crate::harness::Harness::postgres().await else {
                        return;
                    };
                    crate::$module::$case(&mut h).await;
                    h.cleanup().await;
                }
            )*
        }
    };
}

conformance! {
    tasks::migrations_from_empty,
    tasks::schema_from_the_future_is_refused,
    tasks::task_create_stores_the_dag,
    tasks::task_create_is_idempotent_per_template,
    tasks::task_create_rejects_bad_input_writing_nothing,
    tasks::missing_rows_are_not_found,
    tasks::tasks_load_dags_reads_each_as_task_load_dag_does,
    tasks::tasks_list_filters_and_paginates,
    tasks::steps_list_filters_and_paginates,
    tasks::restart_loses_nothing_committed,
    tasks::closed_store_reports_unavailable,
    batches::ready_steps_follow_dependencies,
    batches::ready_steps_follow_retry_rules,
    batches::ready_steps_filter_by_task_and_skip_finished_tasks,
    batches::batch_record_puts_steps_in_flight,
    batches::batch_record_leaves_out_stale_steps,
    batches::batches_record_records_each_in_order_in_one_transaction,
    batches::children_are_dispatched_in_the_commit_that_completes_their_parent,
    batches::a_step_appears_in_many_batches_across_retries,
    transitions::group_commit_applies_many_results,
    transitions::stale_and_conflicting_changes_are_refused_whole,
    transitions::all_or_nothing_writes_nothing_on_conflict,
    transitions::entering_in_progress_needs_a_batch,
    transitions::task_and_batch_transitions_keep_history,
    transitions::requeue_does_not_count_an_attempt,
    transitions::transitions_outside_the_state_machine_are_refused,
    ledger::ledger_deduplicates_on_batch_step_and_kind,
    ledger::refused_results_are_recorded_with_the_reason,
    maintenance::timed_out_steps_are_found_by_deadline,
    maintenance::batches_of_gone_workers_are_orphaned,
    maintenance::worker_heartbeats_only_move_forward,
    maintenance::dead_letters_insert_list_resolve,
    maintenance::state_counts_follow_the_data,
    claims::concurrent_claimers_never_share_a_task,
    claims::leases_expire_renew_and_release,
    claims::claims_fence_changes_and_dispatch,
    claims::concurrent_dispatch_never_sends_a_step_twice,
    claims::concurrent_results_apply_each_step_once,
}
