//! The engine's tokio adapters around the sans-IO cores: the device endpoint where DM
//! sessions run over HTTP, the device registry with its per-device command queues, the peer
//! endpoint and client (mutual TLS), the bootstrap endpoint, the delegation driver, and the
//! [`service::Engine`] handle that starts them together.

pub mod bootstrap;
pub mod control;
pub mod device_endpoint;
pub mod devices;
pub mod dm_server;
pub mod driver;
pub mod notifier;
pub mod peer_client;
pub mod peer_endpoint;
pub mod peers;
pub mod service;
