//! The headers exchange's bindings: how one matches a message's headers (`x-match`).

use crate::error::{Error, Result, Scope};
use crate::field::{FieldTable, FieldValue};
use crate::topology::Destination;

/// How a headers binding matches (`x-match`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum XMatch {
    All { with_x: bool },
    Any { with_x: bool },
}

impl XMatch {
    pub(super) fn parse(args: &FieldTable) -> Result<Self> {
        let Some(v) = args.get("x-match") else {
            return Ok(XMatch::All { with_x: false });
        };
        let FieldValue::LongString(s) = v else {
            return Err(Error::broker(
                406,
                format!(
                    "PRECONDITION_FAILED - Invalid x-match field type {} (value {}); expected longstr",
                    v.type_name(),
                    v.display_value()
                ),
                Scope::Channel,
            ));
        };
        Ok(match &s[..] {
            b"all" => XMatch::All { with_x: false },
            b"any" => XMatch::Any { with_x: false },
            b"all-with-x" => XMatch::All { with_x: true },
            b"any-with-x" => XMatch::Any { with_x: true },
            other => {
                return Err(Error::broker(
                    406,
                    format!(
                        "PRECONDITION_FAILED - Invalid x-match field value <<\"{}\">>; expected all, any, all-with-x, or any-with-x",
                        String::from_utf8_lossy(other)
                    ),
                    Scope::Channel,
                ));
            }
        })
    }
}

#[derive(Debug)]
pub(super) struct HeadersBinding {
    pub(super) mode: XMatch,
    /// The keys that count, with `None` for a void value (a presence test).
    pub(super) keys: Vec<(String, Option<FieldValue>)>,
    pub(super) destination: Destination,
}

impl HeadersBinding {
    pub(super) fn matches(&self, headers: Option<&FieldTable>) -> bool {
        let test = |(k, v): &(String, Option<FieldValue>)| {
            let Some(actual) = headers.and_then(|h| h.get(k)) else {
                return false;
            };
            match v {
                None => true,
                Some(v) => v.loose_eq(actual),
            }
        };
        match self.mode {
            XMatch::All { .. } => self.keys.iter().all(test),
            XMatch::Any { .. } => self.keys.iter().any(test),
        }
    }
}
