//! The Upstash REST wire format, as pure functions over plain data.
//!
//! - [`request`] turns JSON bodies and raw URL paths into [`Command`]s;
//! - [`reply`] turns Redis reply frames into Upstash JSON (optionally base64) or raw RESP2.
//!
//! Nothing here talks to Redis or knows about HTTP frameworks.

mod json_body;
pub mod reply;
pub mod request;

pub use request::Command;
