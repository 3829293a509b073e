//! The port contract suite: every test here states a rule that each backend's adapters must
//! honour, and runs once per backend. The one integration-test binary of `bulklink-contract`.
// Tests may read the machine's time; production code reads bulklink_core::clock::Clock.
#![allow(clippy::disallowed_methods)]

mod support;

mod catalog;
mod imports;
mod jobs;
mod queue;
mod webhooks;

/// Generates one `#[tokio::test]` per backend and contract test. Tests are listed once; a
/// backend is one `name => fixture constructor` line, and its tests are named
/// `<backend>::<port>::<test>`, e.g. `aws::queue::a_batch_of_more_than_ten_messages_is_refused`.
/// Attributes written before a test's name (`#[ignore = "..."]`) go onto every backend's test.
macro_rules! contract {
    (backends: [$($backend:ident => $fixture:path),+ $(,)?], tests: $tests:tt $(,)?) => {
        $( contract!(@backend $backend, $fixture, $tests); )+
    };
    (@backend $backend:ident, $fixture:path, {
        $($port:ident: [$($(#[$attr:meta])* $test:ident),* $(,)?]),* $(,)?
    }) => {
        mod $backend {
            $(
                mod $port {
                    $(
                        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                        $(#[$attr])*
                        async fn $test() {
                            let fixture = $fixture().await;
                            crate::$port::$test(&fixture).await;
                        }
                    )*
                }
            )*
        }
    };
}

contract! {
    backends: [
        embedded => crate::support::Fixture::embedded,
        aws => crate::support::Fixture::aws,
    ],
    tests: {
        catalog: [
            an_offer_is_created_once,
            unknown_offers_and_locations_read_as_none,
            a_location_batch_reads_back_without_an_offer,
            a_location_batch_sent_again_whole_is_already_created,
            a_location_batch_with_an_existing_id_creates_nothing,
            a_location_keeps_its_attributes_and_times,
            a_batch_sent_again_later_is_already_created_but_other_attributes_conflict,
            a_location_change_applies_what_it_names_and_moves_updated_at_only_if_it_changes,
            an_external_id_is_unique_in_its_brand_and_free_in_another,
            an_upsert_creates_then_changes_nothing_then_updates_in_place,
            concurrent_upserts_of_one_new_external_id_make_one_location,
            deleting_a_location_frees_its_external_id,
            locations_matching_are_the_brands_matching_ones_in_order,
            external_ids_name_each_location_in_order,
            an_offers_schedule_is_kept_with_it_and_changes_in_place,
            brand_locations_page_in_id_order_exactly_once,
            closing_a_location_leaves_every_offer_and_nothing_links_it_until_it_reopens,
            an_upsert_that_closes_a_store_leaves_its_offers,
            brand_locations_page_by_status_and_all_of_them_active_first,
            links_made_while_stores_close_do_not_outlive_the_closing_nor_block_a_reopening,
            a_brands_offers_page_in_id_order_and_no_other_brands,
            an_offers_rule_is_set_replaced_read_removed_and_goes_with_the_offer,
            following_a_rule_links_what_it_wants_unlinks_the_rest_and_counts_each_once,
            a_brands_rules_are_those_of_its_offers_only,
            every_rule_is_listed_with_its_drift_watch_and_notes_are_conditional,
            linking_a_fresh_location_marks_it_as_having_the_offer,
            relinking_by_the_same_job_counts_as_linked_again,
            a_location_linked_by_one_job_is_already_linked_for_anyone_else,
            locations_of_another_brand_or_unknown_ids_are_not_found_and_not_linked,
            linking_for_a_job_leaves_the_offer_total_alone,
            a_direct_link_counts_on_the_offer_exactly_once,
            existing_links_report_who_linked_each_location,
            offer_links_page_through_every_link_of_that_offer_once,
        ],
        imports: [
            a_new_row_creates_its_location_and_a_replay_answers_from_the_mark,
            another_row_of_the_same_store_in_one_file_is_a_duplicate_and_changes_nothing,
            a_later_import_of_the_same_row_is_unchanged_and_leaves_its_own_mark,
            a_changed_row_updates_the_location_in_place_and_keeps_its_links,
            a_row_that_closes_a_store_takes_it_out_of_its_offers,
            closing_what_a_file_did_not_name_closes_each_active_unnamed_store_once,
            closing_an_unnamed_store_takes_it_out_of_every_offer_once,
            an_import_reads_back_as_created_waiting_for_its_file,
            an_import_starts_once_at_the_first_time_recorded,
            a_taken_file_reads_back_by_byte_range_until_deleted,
            a_file_taken_is_the_imports_own_and_a_later_upload_changes_nothing,
            a_received_file_over_the_limit_or_broken_off_is_refused_and_nothing_kept,
        ],
        jobs: [
            a_new_job_is_created_pending,
            the_same_claim_replays_the_first_job,
            the_same_key_for_a_different_request_is_refused,
            a_second_job_for_a_busy_offer_names_the_active_one,
            concurrent_creates_for_one_offer_create_one_job,
            concurrent_retries_with_one_claim_create_one_job,
            starting_a_pending_job_runs_it_once,
            a_scheduled_job_is_due_at_its_time_and_released_once,
            an_approval_records_its_approver_and_leaves_the_end_to_be_notified,
            an_offers_start_is_due_at_its_time_moves_and_is_cleared,
            starting_leaves_a_job_in_any_other_status_alone,
            starting_an_unknown_job_finds_nothing,
            a_fanout_advance_applies_only_from_the_current_cursor,
            concurrent_fanout_advances_from_one_cursor_apply_once,
            a_close_never_leaves_accounted_chunks_outside_the_total,
            recording_a_chunk_adds_its_counts_to_the_job_and_the_offer,
            a_replayed_chunk_adds_nothing_to_the_counters,
            a_chunks_outcomes_are_kept_with_it_once_and_read_back_in_order,
            concurrent_deliveries_of_one_chunk_are_recorded_once,
            recorded_failures_are_listed_with_reason_and_attempts,
            completion_waits_for_fanout_and_every_chunk,
            concurrent_completion_attempts_have_exactly_one_winner,
            a_running_job_with_failures_completes_with_errors,
            a_cancelling_job_completes_as_cancelled,
            a_paused_job_parks_each_chunk_once_and_resumes_with_its_pause_counted,
            a_paused_job_can_be_cancelled_but_an_ended_one_not_paused,
            a_setting_reads_back_as_last_written,
            a_failing_job_completes_as_failed,
            completion_frees_the_offer_for_a_new_job,
            a_pending_or_running_job_can_be_cancelled,
            a_terminal_job_cannot_be_cancelled,
            cancelling_an_unknown_job_finds_nothing,
            only_a_running_job_can_be_marked_failing,
            marking_a_job_notified_records_when,
            a_brands_jobs_list_newest_first_page_by_page,
            a_job_is_not_created_for_an_offer_that_does_not_exist,
            an_offer_is_deleted_only_without_links_or_an_active_job,
            unsettled_jobs_are_the_idle_ones_not_yet_notified,
        ],
        queue: [
            sent_messages_arrive_once_and_deleted_ones_never_return,
            an_undeleted_message_is_redelivered_after_its_visibility_timeout,
            a_receipt_from_another_queue_deletes_nothing,
            a_message_received_too_often_moves_to_the_dead_letter_queue,
            a_batch_of_more_than_ten_messages_is_refused,
            a_batch_with_a_body_over_256_kib_sends_nothing,
            a_body_of_exactly_256_kib_is_sent,
            a_batch_over_256_kib_in_all_sends_nothing,
            a_long_poll_returns_as_soon_as_a_message_is_sent,
            depth_counts_waiting_and_in_flight_messages,
            a_delayed_message_arrives_only_after_its_delay,
            a_delay_longer_than_fifteen_minutes_is_refused,
            a_typed_queue_sends_messages_that_its_receiver_decodes_as_sent,
        ],
        webhooks: [
            a_new_subscription_reads_back_with_its_secret,
            creating_a_subscription_that_exists_returns_the_stored_one,
            a_brands_subscriptions_list_newest_first_page_by_page,
            deleting_a_subscription_removes_it_once,
            rotating_keeps_the_previous_secret_until_its_expiry,
            disabling_a_subscription_stops_it_wanting_events_and_enabling_brings_it_back,
            a_delivery_is_created_once_and_a_replay_finds_it,
            a_delivery_update_applies_only_from_the_attempt_count_it_was_read_at,
            deliveries_list_newest_first_by_subscription_and_by_job,
            overdue_deliveries_are_the_pending_ones_past_due,
            a_published_event_reaches_the_webhook_queue_raw,
            a_subscriptions_progress_window_and_a_delivery_of_no_job_read_back,
            a_brands_events_page_oldest_first_in_a_half_open_range,
        ],
    },
}
