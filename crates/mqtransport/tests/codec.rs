//! Messages and codecs: what `#[derive(Message)]` generates, encoding, and decoding that
//! honours the content type and encoding a message arrives with.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mqtransport::{Codec, DecodeError, Envelope, Message, decode, encode};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "sensor.reading")]
struct Reading {
    sensor: String,
    value: f64,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Message)]
struct HTTPRequestLogged {
    path: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Message)]
#[serde(tag = "kind")]
enum Command {
    Start { at: u64 },
    Stop,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Message, garde::Validate)]
#[message(name = "user.signed_up")]
struct SignedUp {
    #[garde(contains("@"))]
    email: String,
}

/// Validation rules present but explicitly switched off.
#[derive(Debug, PartialEq, Serialize, Deserialize, Message, garde::Validate)]
#[message(validate = false)]
struct Unchecked {
    #[garde(length(min = 5))]
    text: String,
}

mod nested {
    // The derive names the crate by path, so it works wherever the type lives and with a
    // renamed dependency.
    #[derive(serde::Serialize, serde::Deserialize, mqtransport::Message)]
    #[message(crate = "::mqtransport", name = "nested.thing")]
    pub(super) struct Thing {
        pub(super) n: u8,
    }
}

#[test]
fn names_come_from_the_attribute_or_the_type_name() {
    assert_eq!(Reading::NAME, "sensor.reading");
    assert_eq!(HTTPRequestLogged::NAME, "http_request_logged");
    assert_eq!(Command::NAME, "command");
    assert_eq!(nested::Thing::NAME, "nested.thing");
    assert_eq!(Reading::CODEC, Codec::Json);
}

#[test]
fn encoding_sets_the_name_and_content_type() {
    let env = encode(&Reading {
        sensor: "t1".into(),
        value: 21.5,
    })
    .unwrap();
    assert_eq!(env.properties().kind.as_deref(), Some("sensor.reading"));
    assert_eq!(env.properties().content_type.as_deref(), Some("application/json"));
    assert_eq!(&env.body[..], br#"{"sensor":"t1","value":21.5}"#);
    let back: Reading = decode(&env).unwrap();
    assert_eq!(back.value, 21.5);

    let env = encode(&Command::Start { at: 9 }).unwrap();
    assert_eq!(decode::<Command>(&env).unwrap(), Command::Start { at: 9 });
}

#[test]
fn decoding_honours_the_content_type_and_encoding() {
    let body = r#"{"sensor":"t1","value":1.0}"#;
    // No content type: the message's own codec.
    assert!(decode::<Reading>(&Envelope::new(body)).is_ok());
    // Parameters and case do not matter; Kombu's utf-8 content encoding is fine.
    let mut env = Envelope::new(body).with_content_type("Application/JSON; charset=utf-8");
    env.properties_mut().content_encoding = Some("utf-8".into());
    assert!(decode::<Reading>(&env).is_ok());

    let e = decode::<Reading>(&Envelope::new(body).with_content_type("application/xml")).unwrap_err();
    assert!(matches!(e, DecodeError::UnsupportedContentType { .. }));
    assert_eq!(
        e.to_string(),
        "message 'sensor.reading' has content type 'application/xml', which no codec reads"
    );

    let mut gz = Envelope::new(body);
    gz.properties_mut().content_encoding = Some("gzip".into());
    let e = decode::<Reading>(&gz).unwrap_err();
    assert_eq!(
        e.to_string(),
        "message 'sensor.reading' has content encoding 'gzip', which is not supported"
    );

    let e = decode::<Reading>(&Envelope::new(r#"{"sensor":"t1"}"#)).unwrap_err();
    assert!(
        e.to_string().starts_with(
            "message 'sensor.reading' is malformed (application/json): the JSON does not match `Reading`: missing field `value`"
        ),
        "{e}"
    );
    let e = decode::<Reading>(&Envelope::new(r#"{"sensor":"t1""#)).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("message 'sensor.reading' is malformed (application/json): invalid JSON: EOF"),
        "{e}"
    );

    // Kombu's compression names itself in a header.
    let zipped = Envelope::new(vec![0x78, 0x9c, 0x01]).with_header("compression", "application/x-gzip");
    let e = decode::<Reading>(&zipped).unwrap_err();
    assert!(matches!(e, DecodeError::Compressed { .. }));
    assert!(
        e.to_string()
            .starts_with("message 'sensor.reading' is compressed ('application/x-gzip' in its compression header"),
        "{e}"
    );
}

#[test]
fn validation_runs_when_the_type_has_rules() {
    let bad = Envelope::new(r#"{"email":"nope"}"#);
    let e = decode::<SignedUp>(&bad).unwrap_err();
    match &e {
        DecodeError::Invalid { message, invalid } => {
            assert_eq!(*message, "user.signed_up");
            let problems: Vec<_> = invalid.problems().collect();
            assert_eq!(problems.len(), 1);
            assert_eq!(problems[0].0, "email");
        }
        other => panic!("expected a validation failure, got {other:?}"),
    }
    assert!(decode::<SignedUp>(&Envelope::new(r#"{"email":"a@b.example"}"#)).is_ok());
    // Switched off by the attribute, the rule is not checked.
    assert!(decode::<Unchecked>(&Envelope::new(r#"{"text":"x"}"#)).is_ok());
    assert!(Unchecked { text: "x".into() }.validate().is_ok());
}

#[test]
fn msgpack_without_its_feature_is_refused_by_name() {
    if cfg!(feature = "msgpack") {
        return;
    }
    let env = Envelope::new(vec![0x80]).with_content_type("application/msgpack");
    let e = decode::<Reading>(&env).unwrap_err();
    assert!(e.to_string().contains("needs the `msgpack` feature"), "{e}");
}

#[cfg(feature = "msgpack")]
mod msgpack {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize, Message)]
    #[message(name = "packed", codec = "msgpack")]
    struct Packed {
        id: u32,
        tags: Vec<String>,
    }

    #[test]
    fn msgpack_messages_round_trip_as_maps() {
        assert_eq!(Packed::CODEC, Codec::MsgPack);
        let p = Packed {
            id: 7,
            tags: vec!["a".into()],
        };
        let env = encode(&p).unwrap();
        assert_eq!(env.properties().content_type.as_deref(), Some("application/msgpack"));
        // A map with field names (0x82 = fixmap of 2), readable by other languages.
        assert_eq!(env.body[0], 0x82);
        assert_eq!(decode::<Packed>(&env).unwrap(), p);
    }

    #[test]
    fn a_json_message_sent_as_msgpack_is_read_by_its_content_type() {
        let body = rmp_serde::to_vec_named(&Reading {
            sensor: "t".into(),
            value: 2.0,
        })
        .unwrap();
        let env = Envelope::new(body).with_content_type("application/x-msgpack");
        assert_eq!(decode::<Reading>(&env).unwrap().value, 2.0);
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "greeting", codec = "text")]
struct Greeting(String);

#[derive(Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "blob", codec = "bytes")]
struct Blob(Vec<u8>);

/// Not a string: the text codec refuses to encode it.
#[derive(Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(codec = "text")]
struct NotAString {
    n: u32,
}

#[test]
fn text_and_bytes_codecs_carry_the_value_itself() {
    let e = encode(&Greeting("Hello World!".into())).unwrap();
    assert_eq!(&e.body[..], b"Hello World!");
    assert_eq!(
        e.properties().content_type.as_deref(),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(decode::<Greeting>(&e).unwrap(), Greeting("Hello World!".into()));
    // Another client's plain text, with or without a content type.
    assert_eq!(
        decode::<Greeting>(&Envelope::new("hi").with_content_type("text/plain")).unwrap(),
        Greeting("hi".into())
    );
    assert_eq!(decode::<Greeting>(&Envelope::new("hi")).unwrap(), Greeting("hi".into()));
    let e = decode::<Greeting>(&Envelope::new(vec![0xff]).with_content_type("text/plain")).unwrap_err();
    assert!(e.to_string().contains("not UTF-8"), "{e}");

    let e = encode(&Blob(vec![0, 1, 0xfe, 0xff])).unwrap();
    assert_eq!(&e.body[..], &[0, 1, 0xfe, 0xff]);
    assert_eq!(e.properties().content_type.as_deref(), Some("application/octet-stream"));
    assert_eq!(decode::<Blob>(&e).unwrap(), Blob(vec![0, 1, 0xfe, 0xff]));

    let refused = encode(&NotAString { n: 1 }).unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("the text codec encodes strings only, not a map or struct"),
        "{refused}"
    );
    assert_eq!(
        decode::<Greeting>(&Envelope::new("a line").with_content_type("text/x-log")).unwrap(),
        Greeting("a line".into())
    );
    assert_eq!(Codec::from_content_type("text/plain"), Some(Codec::Text));
    assert_eq!(Codec::from_content_type("text/xml"), None);
    assert_eq!(Codec::from_content_type("application/octet-stream"), Some(Codec::Bytes));
}
