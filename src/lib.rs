//! dmdeleg: OMA DM server-to-server delegation.
//!
//! The library behind the `dmdeleg` binary. Its layers follow DESIGN.md section 2:
//! [`dm`] is the device-management core (node URIs, ACLs, the DM tree, TNDS and the
//! standard management objects). It performs no I/O: no sockets, no clock, no files.

pub mod config;
pub mod delegation;
pub mod demo;
pub mod dm;
pub mod engine;
pub mod gui;
pub mod lab;
pub mod logging;
pub mod random;
pub mod sim;
pub mod store;
pub mod syncml;
pub mod tls;
mod xmlpull;
mod xmltext;
