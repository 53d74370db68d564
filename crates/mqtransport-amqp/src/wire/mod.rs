//! AMQP 0-9-1 as it arrives from the broker, read by code of our own before the AMQP client
//! reads it: see [`screen`], and [`screened_stream`] for where it runs.

pub(crate) mod content_header;
pub(crate) mod screen;
pub(crate) mod screened_stream;
pub(crate) mod table;
