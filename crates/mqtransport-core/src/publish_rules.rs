//! What RabbitMQ 3.10 refuses in a message's properties when it routes a publish: a malformed
//! `expiration`, and `CC`/`BCC` routing headers that are not arrays. A refusal closes the
//! publishing channel, so transports check these before sending (and the embedded broker
//! refuses with the same errors).
//!
//! ```
//! use mqtransport_core::{Envelope, publish_rules};
//!
//! let mut bad = Envelope::new("m");
//! bad.properties_mut().expiration = Some("abc".into());
//! let e = publish_rules::check(bad.properties()).unwrap_err();
//! assert_eq!(e.message(), "PRECONDITION_FAILED - invalid expiration 'abc': no_integer");
//! ```

use crate::envelope::Properties;
use crate::error::{Error, Result, Scope};
use crate::field::{FieldTable, FieldValue};

/// Checks everything this module knows RabbitMQ refuses in `properties`.
pub fn check(properties: &Properties) -> Result<()> {
    if let Some(e) = &properties.expiration {
        check_expiration(e)?;
    }
    match &properties.headers {
        Some(headers) => check_routing_headers(headers),
        None => Ok(()),
    }
}

/// Checks the `CC` and `BCC` routing headers of `headers`: each, when present, an array.
pub fn check_routing_headers(headers: &FieldTable) -> Result<()> {
    for name in ["CC", "BCC"] {
        if let Some(v) = headers.get(name) {
            check_routing_header(name, v)?;
        }
    }
    Ok(())
}

/// Validates an `expiration` property as RabbitMQ does: a non-negative integer of
/// milliseconds, written in decimal.
pub fn check_expiration(e: &str) -> Result<()> {
    let invalid = |why: String| {
        Error::broker(
            406,
            format!("PRECONDITION_FAILED - invalid expiration '{e}': {why}"),
            Scope::Channel,
        )
    };
    let digits_end = e
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || (*i == 0 && *c == '-')))
        .map_or(e.len(), |(i, _)| i);
    let (num, rest) = e.split_at(digits_end);
    let Ok(n) = num.parse::<i64>() else {
        return Err(invalid("no_integer".into()));
    };
    if !rest.is_empty() {
        return Err(invalid(format!("{{leftover_string,\"{rest}\"}}")));
    }
    if n < 0 {
        return Err(invalid(format!("{{value_negative,{n}}}")));
    }
    Ok(())
}

/// A `CC` or `BCC` header must be an array (of routing keys).
fn check_routing_header(name: &str, value: &FieldValue) -> Result<()> {
    match value {
        FieldValue::Array(_) => Ok(()),
        other => Err(Error::broker(
            406,
            format!(
                "PRECONDITION_FAILED - invalid message: {{unacceptable_type_in_header,\"{name}\",{}}}",
                other.type_name()
            ),
            Scope::Channel,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expirations_as_rabbitmq_reads_them() {
        assert!(check_expiration("0").is_ok());
        assert!(check_expiration("60000").is_ok());
        let text = |e: &str| check_expiration(e).unwrap_err().message().to_owned();
        assert_eq!(
            text("abc"),
            "PRECONDITION_FAILED - invalid expiration 'abc': no_integer"
        );
        assert_eq!(text(""), "PRECONDITION_FAILED - invalid expiration '': no_integer");
        assert_eq!(
            text("10s"),
            "PRECONDITION_FAILED - invalid expiration '10s': {leftover_string,\"s\"}"
        );
        assert_eq!(
            text("-1"),
            "PRECONDITION_FAILED - invalid expiration '-1': {value_negative,-1}"
        );
    }

    #[test]
    fn routing_headers_must_be_arrays() {
        let mut p = Properties {
            headers: Some(FieldTable::new().with("CC", FieldValue::Array(vec!["k".into()]))),
            ..Properties::default()
        };
        assert!(check(&p).is_ok());
        p.headers = p.headers.map(|h| h.with("BCC", "k"));
        assert_eq!(
            check(&p).unwrap_err().message(),
            "PRECONDITION_FAILED - invalid message: {unacceptable_type_in_header,\"BCC\",longstr}"
        );
    }
}
