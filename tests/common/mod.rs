//! Helpers shared by integration tests.

pub mod syncml_gen;
