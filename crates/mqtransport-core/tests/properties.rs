//! Property tests of what parses input: broker URLs (with generated credentials) and the
//! frame-size measure of properties. Never a panic; round trips are lossless; a password is
//! never shown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mqtransport_core::url::BrokerUrl;
use mqtransport_core::{FieldTable, FieldValue, Properties};
use proptest::prelude::*;

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Percent-encoded credentials of any characters come back exactly, and the password is
    /// shown nowhere.
    #[test]
    fn encoded_credentials_round_trip(user in "\\PC{1,20}", pass in "\\PC{8,40}", vhost in "\\PC{0,12}") {
        let s = format!("amqp://{}:{}@rabbit:5673/{}", encode(&user), encode(&pass), encode(&vhost));
        let url = BrokerUrl::parse(&s).unwrap();
        prop_assert_eq!(url.username(), Some(user.as_str()));
        prop_assert_eq!(url.password(), Some(pass.as_str()));
        prop_assert_eq!((url.host(), url.port()), ("rabbit", Some(5673)));
        prop_assert_eq!(url.vhost(), if vhost.is_empty() { "/" } else { vhost.as_str() });
        prop_assert!(!url.to_string().contains(&encode(&pass)));
        let debug = format!("{:?}", url);
        prop_assert!(!debug.contains(&encode(&pass)));
        // The exposed form parses to the same URL.
        prop_assert_eq!(BrokerUrl::parse(&url.expose_secret_uri()).unwrap(), url);
    }

    /// A password written without encoding (generated passwords hold '/', '?', '#', '@', ':')
    /// either parses exactly or is refused; it never becomes a host or port, and the error
    /// never shows it.
    #[test]
    fn unencoded_passwords_parse_exactly_or_are_refused(pass in "[A-Za-z0-9/?#@:!$&'()*+,;=]{8,32}") {
        let s = format!("amqp://app:{pass}@rabbit:5673/orders");
        match BrokerUrl::parse(&s) {
            Ok(url) => {
                prop_assert_eq!(url.password(), Some(pass.as_str()));
                prop_assert_eq!((url.host(), url.port()), ("rabbit", Some(5673)));
                prop_assert_eq!(url.vhost(), "orders");
            }
            Err(e) => {
                prop_assert!(!e.to_string().contains(&pass), "{}", e);
                prop_assert!(e.to_string().contains("amqp://app:***@rabbit:5673/orders"), "{}", e);
            }
        }
    }

    /// Any string: parsing never panics.
    #[test]
    fn any_string_parses_or_is_refused(s in "\\PC{0,60}", t in "(amqp|amqps|memory)://\\PC{0,40}") {
        let _ = BrokerUrl::parse(&s);
        let _ = BrokerUrl::parse(&t);
    }

    /// The measure of properties equals the bytes a table of them takes, entry by entry.
    #[test]
    fn the_size_of_headers_adds_up(entries in proptest::collection::vec(("[a-z]{1,10}", proptest::collection::vec(any::<u8>(), 0..50)), 0..20)) {
        let mut t = FieldTable::new();
        for (k, v) in &entries {
            t.insert(k.clone(), FieldValue::Bytes(v.clone().into()));
        }
        let expected: usize = 4 + t.iter().map(|(k, v)| match v {
            FieldValue::Bytes(b) => 1 + k.len() + 1 + 4 + b.len(),
            _ => unreachable!(),
        }).sum::<usize>();
        let mut p = Properties::default();
        p.headers = Some(t);
        prop_assert_eq!(p.encoded_size().unwrap(), expected);
    }
}
