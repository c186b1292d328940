//! The device-management core: node URIs, ACLs, the DM tree with its run-time properties and
//! the operations a device performs for a server, TNDS documents, and the standard MOs.
//!
//! Nothing here performs I/O or reads a clock: time arrives as an argument.
#![warn(missing_docs, unreachable_pub)]

pub mod acl;
pub mod mo;
pub mod ops;
pub mod props;
pub mod status;
pub mod tnds;
pub mod tree;
pub mod tree_tnds;
pub mod uri;
