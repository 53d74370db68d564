//! RabbitMQ's rules for declarations that exchanges and queues share: the name limit, and how a
//! re-declaration's arguments compare with the existing ones.

use std::time::Duration;

use crate::error::{Error, Result, Scope};
use crate::field::{FieldTable, FieldValue};

/// The longest queue or exchange name AMQP can carry (a short string).
pub const MAX_NAME_LEN: usize = 255;

pub(crate) fn compare_arg(
    arg: &str,
    what: &str,
    name: &str,
    vhost: &str,
    mine: &FieldTable,
    theirs: &FieldTable,
) -> Result<()> {
    let (a, b) = (mine.get(arg), theirs.get(arg));
    let same = match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => {
            // Numbers compare by value; a string never equals a number.
            let x_num = x.as_i64().is_some();
            let y_num = y.as_i64().is_some();
            x_num == y_num && x.loose_eq(y)
        }
        _ => false,
    };
    if same {
        Ok(())
    } else {
        Err(inequivalent(arg, what, name, vhost, a, b))
    }
}

pub(crate) fn inequivalent(
    arg: &str,
    what: &str,
    name: &str,
    vhost: &str,
    got: Option<&FieldValue>,
    cur: Option<&FieldValue>,
) -> Error {
    let describe = |v: Option<&FieldValue>, full: bool| match v {
        None => "none".to_string(),
        Some(v) if full => format!("the value '{}' of type '{}'", v.display_value(), v.type_name()),
        Some(v) => format!("'{}'", v.display_value()),
    };
    // RabbitMQ spells out the type only when the other side is absent.
    let full = got.is_none() || cur.is_none();
    Error::broker(
        406,
        format!(
            "PRECONDITION_FAILED - inequivalent arg '{arg}' for {what} '{name}' in vhost '{vhost}': received {} but current is {}",
            describe(got, full),
            describe(cur, full)
        ),
        Scope::Channel,
    )
}

pub(crate) fn check_name_len(what: &str, name: &str) -> Result<()> {
    if name.len() > MAX_NAME_LEN {
        return Err(Error::invalid(format!(
            "{what} name is {} bytes long, the maximum is {MAX_NAME_LEN}: '{}…'",
            name.len(),
            name.chars().take(32).collect::<String>()
        )));
    }
    Ok(())
}

pub(crate) fn duration_ms(d: Duration) -> FieldValue {
    int_value(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// An integer argument as clients send it: int32 when it fits (RabbitMQ's `signedint`), else int64.
pub(crate) fn int_value(v: i64) -> FieldValue {
    match i32::try_from(v) {
        Ok(small) => FieldValue::I32(small),
        Err(_) => FieldValue::I64(v),
    }
}
