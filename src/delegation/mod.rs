//! The seed's server-to-server delegation protocol, without I/O (DESIGN.md sections 3 and 4;
//! the wire format is specified in docs/PROTOCOL.md).
//!
//! [`messages`] reads and writes the eight messages as TNDS documents; [`reason`] holds the
//! failure reason codes.
#![warn(missing_docs, unreachable_pub)]

pub mod machine;
pub mod messages;
pub mod plan;
pub mod reason;
