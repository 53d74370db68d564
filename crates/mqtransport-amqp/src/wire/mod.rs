//! AMQP 0-9-1 as it arrives from the broker, read by code of our own before the AMQP client
//! reads it: see [`screen`].

pub(crate) mod content_header;
pub(crate) mod screen;
pub(crate) mod table;
