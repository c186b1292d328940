//! Simulated DM clients: devices with real DM trees that speak SyncML DM over HTTP.

pub mod device;
pub mod fleet;
