//! Typed, binary-safe header values: every AMQP 0-9-1 field value, losslessly.

use bytes::Bytes;

/// A decimal value: `value × 10^-scale`, as AMQP's `D` field type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decimal {
    /// Number of decimal digits after the point.
    pub scale: u8,
    /// The unscaled value.
    pub value: u32,
}

/// One header value. Each variant maps to exactly one AMQP field-type tag, so a table read from
/// the wire and written back is byte-identical.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// `t`: boolean.
    Bool(bool),
    /// `b`: signed 8-bit.
    I8(i8),
    /// `B`: unsigned 8-bit.
    U8(u8),
    /// `s`: signed 16-bit (RabbitMQ's reading of `s`).
    I16(i16),
    /// `u`: unsigned 16-bit.
    U16(u16),
    /// `I`: signed 32-bit.
    I32(i32),
    /// `i`: unsigned 32-bit.
    U32(u32),
    /// `l`: signed 64-bit.
    I64(i64),
    /// `L`: a 64-bit integer RabbitMQ passes through as-is.
    U64(u64),
    /// `f`: 32-bit float.
    F32(f32),
    /// `d`: 64-bit float.
    F64(f64),
    /// `D`: decimal.
    Decimal(Decimal),
    /// `S`: long string. Binary-safe: the bytes need not be UTF-8.
    LongString(Bytes),
    /// `x`: byte array.
    Bytes(Bytes),
    /// `A`: array.
    Array(Vec<FieldValue>),
    /// `T`: timestamp, seconds since the Unix epoch.
    Timestamp(u64),
    /// `F`: nested table.
    Table(FieldTable),
    /// `V`: void (no value).
    Void,
}

impl FieldValue {
    /// A long string from UTF-8 text.
    pub fn string(s: impl Into<String>) -> Self {
        FieldValue::LongString(Bytes::from(s.into()))
    }

    /// The value as text, for long strings and byte arrays holding UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::LongString(b) | FieldValue::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The value as an integer, for any integer type that fits `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            FieldValue::I8(v) => Some(v.into()),
            FieldValue::U8(v) => Some(v.into()),
            FieldValue::I16(v) => Some(v.into()),
            FieldValue::U16(v) => Some(v.into()),
            FieldValue::I32(v) => Some(v.into()),
            FieldValue::U32(v) => Some(v.into()),
            FieldValue::I64(v) => Some(v),
            FieldValue::U64(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a number (integers, floats and decimals), for comparisons by value.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            FieldValue::F32(v) => Some(v.into()),
            FieldValue::F64(v) => Some(v),
            FieldValue::U64(v) => Some(v as f64),
            FieldValue::Decimal(d) => Some(f64::from(d.value) / 10f64.powi(i32::from(d.scale))),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The array, for `A` values.
    pub fn as_array(&self) -> Option<&[FieldValue]> {
        match self {
            FieldValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The nested table, for `F` values.
    pub fn as_table(&self) -> Option<&FieldTable> {
        match self {
            FieldValue::Table(t) => Some(t),
            _ => None,
        }
    }

    /// The AMQP type name RabbitMQ uses in error texts (`signedint`, `longstr`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            FieldValue::Bool(_) => "bool",
            FieldValue::I8(_) | FieldValue::I16(_) | FieldValue::I32(_) | FieldValue::I64(_) => {
                if matches!(self, FieldValue::I64(_)) {
                    "long"
                } else {
                    "signedint"
                }
            }
            FieldValue::U8(_) | FieldValue::U16(_) | FieldValue::U32(_) | FieldValue::U64(_) => "unsignedint",
            FieldValue::F32(_) => "float",
            FieldValue::F64(_) => "double",
            FieldValue::Decimal(_) => "decimal",
            FieldValue::LongString(_) => "longstr",
            FieldValue::Bytes(_) => "binary",
            FieldValue::Array(_) => "array",
            FieldValue::Timestamp(_) => "timestamp",
            FieldValue::Table(_) => "table",
            FieldValue::Void => "void",
        }
    }

    /// Equality as RabbitMQ's headers exchange and argument checks see it (Erlang `==` on the
    /// decoded value): numbers compare by value across widths and float/int, a long string equals a
    /// byte array with the same bytes, a boolean is never a number.
    pub fn loose_eq(&self, other: &FieldValue) -> bool {
        use FieldValue as V;
        match (self, other) {
            (V::LongString(a) | V::Bytes(a), V::LongString(b) | V::Bytes(b)) => a == b,
            (V::Bool(a), V::Bool(b)) => a == b,
            (V::Void, V::Void) => true,
            (V::Timestamp(a), V::Timestamp(b)) => a == b,
            (V::Array(a), V::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.loose_eq(y)),
            (V::Table(a), V::Table(b)) => a.loose_eq(b),
            (a, b) => match (a.as_i64(), b.as_i64()) {
                (Some(x), Some(y)) => x == y,
                _ => match (a.as_f64(), b.as_f64()) {
                    (Some(x), Some(y)) => x == y,
                    _ => false,
                },
            },
        }
    }

    /// The value as RabbitMQ prints it in error texts: `'1000'`.
    pub fn display_value(&self) -> String {
        match self {
            FieldValue::LongString(b) | FieldValue::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            FieldValue::Bool(b) => b.to_string(),
            FieldValue::F32(v) => v.to_string(),
            FieldValue::F64(v) => v.to_string(),
            other => match other.as_i64() {
                Some(v) => v.to_string(),
                None => format!("{other:?}"),
            },
        }
    }
}

macro_rules! from_impls {
    ($($t:ty => $v:ident),* $(,)?) => {
        $(impl From<$t> for FieldValue {
            fn from(v: $t) -> Self { FieldValue::$v(v) }
        })*
    };
}
from_impls!(bool => Bool, i8 => I8, u8 => U8, i16 => I16, u16 => U16, i32 => I32, u32 => U32,
    i64 => I64, u64 => U64, f32 => F32, f64 => F64, Decimal => Decimal, FieldTable => Table,
    Vec<FieldValue> => Array);

impl From<&str> for FieldValue {
    fn from(v: &str) -> Self {
        FieldValue::LongString(Bytes::copy_from_slice(v.as_bytes()))
    }
}

impl From<String> for FieldValue {
    fn from(v: String) -> Self {
        FieldValue::LongString(Bytes::from(v))
    }
}

/// An ordered field table (AMQP `F`): the header table of a message and the arguments of queues,
/// exchanges and bindings. Insertion order is kept, so a table round-trips byte-identically; keys
/// are unique. Equality is that of a map: the same keys with equal values, in any order (client
/// libraries such as lapin decode tables sorted by key).
#[derive(Debug, Clone, Default)]
pub struct FieldTable {
    entries: Vec<(String, FieldValue)>,
}

impl FieldTable {
    /// An empty table.
    pub fn new() -> Self {
        FieldTable::default()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&FieldValue> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key` to `value`: replaces the value in place if the key exists, appends otherwise.
    /// Returns the previous value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<FieldValue>) -> Option<FieldValue> {
        let key = key.into();
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => Some(std::mem::replace(v, value)),
            None => {
                self.entries.push((key, value));
                None
            }
        }
    }

    /// Removes `key`, keeping the order of the others.
    pub fn remove(&mut self, key: &str) -> Option<FieldValue> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.remove(i).1)
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &FieldValue)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Sorts the entries by key (RabbitMQ writes re-encoded tables sorted).
    pub fn sort_by_key(&mut self) {
        self.entries.sort_by(|a, b| a.0.cmp(&b.0));
    }

    /// Builder-style [`insert`](Self::insert).
    pub fn with(mut self, key: impl Into<String>, value: impl Into<FieldValue>) -> Self {
        self.insert(key, value);
        self
    }

    /// Same keys with [`loose_eq`](FieldValue::loose_eq) values, in any order.
    pub fn loose_eq(&self, other: &FieldTable) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k).is_some_and(|o| v.loose_eq(o)))
    }
}

impl PartialEq for FieldTable {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl<K: Into<String>, V: Into<FieldValue>> FromIterator<(K, V)> for FieldTable {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut t = FieldTable::new();
        for (k, v) in iter {
            t.insert(k, v);
        }
        t
    }
}

impl<'a> IntoIterator for &'a FieldTable {
    type Item = (&'a str, &'a FieldValue);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, FieldValue)>,
        fn(&'a (String, FieldValue)) -> (&'a str, &'a FieldValue),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_keeps_order_and_replaces_in_place() {
        let mut t = FieldTable::new().with("b", 1i32).with("a", "x");
        assert_eq!(t.insert("b", 2i64), Some(FieldValue::I32(1)));
        let keys: Vec<_> = t.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["b", "a"]);
        t.sort_by_key();
        let keys: Vec<_> = t.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(t.remove("a"), Some(FieldValue::from("x")));
        assert_eq!(t.len(), 1);
        // Equality is a map's: order does not matter, types do.
        let ab = FieldTable::new().with("a", 1i32).with("b", 2i32);
        assert_eq!(ab, FieldTable::new().with("b", 2i32).with("a", 1i32));
        assert_ne!(ab, FieldTable::new().with("a", 1i64).with("b", 2i32));
    }

    #[test]
    fn loose_equality_follows_erlang() {
        assert!(FieldValue::I32(1).loose_eq(&FieldValue::I64(1)));
        assert!(FieldValue::I8(1).loose_eq(&FieldValue::F64(1.0)));
        assert!(FieldValue::from("1").loose_eq(&FieldValue::Bytes(Bytes::from_static(b"1"))));
        assert!(!FieldValue::from("1").loose_eq(&FieldValue::I32(1)));
        assert!(!FieldValue::Bool(true).loose_eq(&FieldValue::I32(1)));
        let non_utf8 = FieldValue::LongString(Bytes::from_static(&[0xff, 0xfe, 0, 0x61]));
        assert_eq!(non_utf8.as_str(), None);
        assert!(non_utf8.loose_eq(&non_utf8.clone()));
    }
}
