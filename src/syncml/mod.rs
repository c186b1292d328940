//! SyncML DM 1.2: the message model and its XML codec, authentication (basic, MD5 digest,
//! HMAC), the Package #0 trigger, and the sans-IO session logic for both ends.
//!
//! Nothing here performs I/O or reads a clock.
#![warn(missing_docs, unreachable_pub)]

pub mod auth;
mod build;
pub mod message;
pub mod pkg0;
pub mod session;
pub mod wbxml;
pub mod xml;

pub use crate::dm::status::StatusCode;
