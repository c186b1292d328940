//! The engine's tokio adapters around the sans-IO cores: the device endpoint where DM
//! sessions run over HTTP, and the device registry with its per-device command queues.

pub mod device_endpoint;
pub mod devices;
pub mod dm_server;
pub mod notifier;
