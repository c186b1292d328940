//! Helpers shared by integration tests.

pub mod serve;
pub mod syncml_gen;
