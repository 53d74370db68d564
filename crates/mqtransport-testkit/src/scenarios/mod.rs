//! The conformance scenarios. Each is a plain `async fn(Ctx) -> TestResult` that asserts what
//! RabbitMQ 3.10 was observed to do, grouped by subject.

use mqtransport_core::{Binding, Delivery, Envelope, Error, Exchange, FieldTable, FieldValue, Queue, Topology};

use crate::{Ctx, Failure};

mod cc_bcc;
mod consumer_choice;
mod consumers;
mod dead_letters;
mod declare;
mod direct_reply;
mod expires;
mod lifetimes;
mod max_length;
mod needs;
mod priorities;
mod purge_delete_get;
mod push;
mod quorum;
mod round_trip;
mod routing;
mod ttl;

pub use cc_bcc::*;
pub use consumer_choice::*;
pub use consumers::*;
pub use dead_letters::*;
pub use declare::*;
pub use direct_reply::*;
pub use expires::*;
pub use lifetimes::*;
pub use max_length::*;
pub use needs::unmet;
pub use priorities::*;
pub use purge_delete_get::*;
pub use push::*;
pub use quorum::*;
pub use round_trip::*;
pub use routing::*;
pub use ttl::*;

/// What every scenario file uses.
mod prelude {
    pub(super) use std::time::Duration;

    pub(super) use bytes::Bytes;
    pub(super) use mqtransport_core::{
        Binding, Confirmation, ConsumeOptions, Decimal, DeleteQueue, DeliveryMode, DynTransport, Envelope, ErrorKind,
        Exchange, FieldTable, FieldValue, Overflow, Publish, Queue, QueueInfo, Subscription, Topology, Transport,
    };

    pub(super) use super::{deaths, dlx_pair, env, expect_err, get_one, keys, text, with_dlq};
    pub(super) use crate::{Ctx, Failure, TestResult, body, check, check_eq};
}

/// Calls `$cb!{ (args...), scenario_a scenario_b ... }` with every scenario name.
#[doc(hidden)]
#[macro_export]
macro_rules! __for_each_scenario {
    ($cb:path, $($args:tt),*) => {
        $cb! { $($args),*,
            declare_is_idempotent
            redeclare_with_other_flags_fails
            redeclare_with_other_arguments_fails
            exclusive_flag_mismatch_is_locked
            passive_declare_of_missing_entities_is_not_found
            exchange_redeclare_must_match
            reserved_and_oversized_names_are_refused
            quorum_queue_rejects_invalid_properties
            server_named_queues_are_generated
            default_exchange_routes_by_queue_name
            direct_exchange_routes_by_key
            fanout_ignores_routing_key
            topic_patterns_match_words
            headers_exchange_matches_values
            exchange_to_exchange_bindings_give_one_copy
            alternate_exchange_takes_unroutable
            mandatory_unroutable_is_returned
            concurrent_mandatory_publishes_learn_their_own_fate
            publish_to_missing_exchange_fails
            publish_to_internal_exchange_is_refused
            unbind_stops_routing
            auto_delete_exchange_goes_with_last_binding
            exchange_delete_if_unused
            competing_consumers_are_served_round_robin
            prefetch_bounds_unacked_deliveries
            ack_removes_the_message
            out_of_order_acks_settle_every_delivery
            nack_with_requeue_redelivers
            requeue_restores_original_position
            dropped_delivery_is_requeued
            closing_connection_requeues_unacked
            declare_ok_counts_ready_only
            exclusive_queue_belongs_to_its_connection
            auto_delete_queue_goes_with_last_consumer
            deleting_a_queue_cancels_its_consumers
            reject_dead_letters_with_x_death
            reject_without_dead_letter_exchange_drops
            dead_letter_routing_key_override
            dead_letter_to_missing_exchange_drops
            retry_loop_counts_deaths
            queue_ttl_expires_messages
            lower_ttl_wins
            expiry_is_checked_at_the_head
            invalid_expiration_is_refused
            max_length_drops_head
            reject_publish_overflow_nacks
            max_length_bytes_counts_bodies
            quorum_delivery_limit_dead_letters
            quorum_requeue_goes_to_the_back
            priority_queue_orders_by_priority
            cc_and_bcc_headers_add_routes
            direct_reply_to_round_trip
            a_refused_request_keeps_the_reply_consumer
            a_second_reply_consumer_is_refused
            purge_removes_ready_messages_only
            delete_queue_conditions
            basic_get_reports_message_count
            properties_and_headers_round_trip
            alternate_exchange_is_skipped_when_a_binding_matched
            downstream_exchange_uses_its_own_alternate
            reply_texts_are_cut_at_255_bytes
            queue_expiry_ignores_publishes
            queue_expires_after_its_last_consumer_leaves
            passive_declare_keeps_a_queue_alive
            requeue_goes_back_above_a_reject_publish_limit
            requeue_above_a_drop_head_limit_drops_the_head
            internal_dead_letter_exchange_delivers
            dead_letters_route_by_bcc_keys
            dead_letter_routing_key_removes_cc
            expired_message_requeued_behind_another_waits_for_the_head
            expiry_reaches_a_message_that_becomes_the_head
            consumer_priority_serves_the_highest_first
            consumer_priority_must_be_an_integer
            single_active_consumer_takes_everything_until_it_leaves
            deliveries_are_pushed_to_consumers_that_do_not_read
            purge_and_delete_leave_what_consumers_hold
            cancelled_consumer_returns_unread_deliveries
        }
    };
}

pub(super) fn expect_err<T>(r: Result<T, Error>, code: u16, what: &str) -> Result<Error, Failure> {
    match r {
        Ok(_) => Err(Failure(format!("{what}: expected reply code {code}, got success"))),
        Err(e) if e.reply_code() == Some(code) => Ok(e),
        Err(e) => Err(Failure(format!("{what}: expected reply code {code}, got {e}"))),
    }
}

pub(super) fn env(body: &str) -> Envelope {
    Envelope::new(body.to_owned())
}

/// The `x-death` entries of a delivery, most recent first.
pub(super) fn deaths(d: &Delivery) -> Vec<FieldTable> {
    d.envelope
        .header("x-death")
        .and_then(FieldValue::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_table().cloned()).collect())
        .unwrap_or_default()
}

pub(super) fn text<'a>(t: &'a FieldTable, key: &str) -> Option<&'a str> {
    t.get(key).and_then(FieldValue::as_str)
}

/// The keys of a table, sorted: the order RabbitMQ writes them in is not observable through
/// every client library (lapin decodes tables sorted), so the suite compares sets. The embedded
/// broker's own tests check the exact order.
pub(super) fn keys(t: &FieldTable) -> Vec<&str> {
    let mut k: Vec<&str> = t.iter().map(|(k, _)| k).collect();
    k.sort_unstable();
    k
}

pub(super) async fn get_one(c: &Ctx, q: &str) -> Result<Delivery, Failure> {
    match c.get(q).await? {
        Some(d) => Ok(d),
        None => Err(Failure(format!("queue '{q}' was empty"))),
    }
}

pub(super) fn dlx_pair(c: &Ctx) -> (String, String) {
    (c.exchange("dlx"), c.queue("dlq"))
}

pub(super) fn with_dlq(t: Topology, dlx: &str, dlq: &str) -> Topology {
    t.exchange(Exchange::fanout(dlx))
        .queue(Queue::durable(dlq))
        .bind(Binding::queue(dlq, dlx, ""))
}
