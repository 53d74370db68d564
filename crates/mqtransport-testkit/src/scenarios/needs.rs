//! Which scenarios need what a transport may lack: a scenario whose need its transport's
//! [`Capabilities`] deny is skipped, and the skip is printed.

use mqtransport_core::Capabilities;

/// A need: what it is called, and whether capabilities meet it.
type Need = (&'static str, fn(&Capabilities) -> bool);

/// What a scenario needs, or `None` when every transport must pass it.
fn needs(scenario: &str) -> Option<Need> {
    let need: Need = match scenario {
        "exclusive_flag_mismatch_is_locked"
        | "redeclare_with_other_flags_fails"
        | "exclusive_queue_belongs_to_its_connection"
        | "auto_delete_queue_goes_with_last_consumer"
        | "server_named_queues_are_generated" => ("exclusive and auto-delete queues", |c| c.exclusive_queues),
        "consumer_priority_serves_the_highest_first"
        | "consumer_priority_must_be_an_integer"
        | "single_active_consumer_takes_everything_until_it_leaves" => ("consumer arguments", |c| c.consumer_arguments),
        "retry_loop_counts_deaths"
        | "reject_dead_letters_with_x_death"
        | "reject_without_dead_letter_exchange_drops"
        | "internal_dead_letter_exchange_delivers"
        | "dead_letters_route_by_bcc_keys"
        | "dead_letter_to_missing_exchange_drops"
        | "dead_letter_routing_key_removes_cc"
        | "dead_letter_routing_key_override"
        | "expiry_is_checked_at_the_head"
        | "expiry_reaches_a_message_that_becomes_the_head"
        | "expired_message_requeued_behind_another_waits_for_the_head" => {
            ("dead-letter exchanges", |c| c.dead_letter_exchanges)
        }
        "queue_ttl_expires_messages"
        | "lower_ttl_wins"
        | "queue_expiry_ignores_publishes"
        | "queue_expires_after_its_last_consumer_leaves"
        | "passive_declare_keeps_a_queue_alive"
        | "invalid_expiration_is_refused"
        | "declare_is_idempotent"
        | "redeclare_with_other_arguments_fails" => ("message and queue TTLs", |c| c.message_ttl),
        "max_length_drops_head"
        | "max_length_bytes_counts_bodies"
        | "reject_publish_overflow_nacks"
        | "requeue_above_a_drop_head_limit_drops_the_head"
        | "requeue_goes_back_above_a_reject_publish_limit" => ("queue length limits", |c| c.length_limits),
        "priority_queue_orders_by_priority" => ("priorities", |c| c.priorities),
        "quorum_delivery_limit_dead_letters"
        | "quorum_requeue_goes_to_the_back"
        | "quorum_queue_rejects_invalid_properties" => ("quorum queues", |c| c.quorum_queues),
        "direct_reply_to_round_trip"
        | "a_refused_request_keeps_the_reply_consumer"
        | "a_second_reply_consumer_is_refused" => ("direct reply-to", |c| c.direct_reply_to),
        "competing_consumers_are_served_round_robin" | "requeue_restores_original_position" => {
            ("queues that deliver in order", |c| c.ordered_queues)
        }
        _ => return None,
    };
    Some(need)
}

/// Why `scenario` cannot run on a transport with `capabilities`, if it cannot.
pub fn unmet(scenario: &str, capabilities: &Capabilities) -> Option<&'static str> {
    needs(scenario).and_then(|(what, has)| (!has(capabilities)).then_some(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rabbitmq_meets_every_need() {
        let rabbit = Capabilities::rabbitmq();
        macro_rules! check_all {
            (($($args:tt)*), $($name:ident)*) => {
                $( assert_eq!(unmet(stringify!($name), &rabbit), None, stringify!($name)); )*
            };
        }
        crate::__for_each_scenario!(check_all, ());
        let mut without_ttl = rabbit;
        without_ttl.message_ttl = false;
        assert_eq!(unmet("lower_ttl_wins", &without_ttl), Some("message and queue TTLs"));
    }
}
