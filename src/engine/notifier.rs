//! The notifier: delivers a Package #0 (the server-initiated session trigger) to a device.
//! Real networks carry it by WAP Push over SMS; here the transport is a trait, and the
//! built-in one POSTs the binary package to the device's push URL (simulated devices and
//! fleets listen for it).

use std::future::Future;
use std::pin::Pin;

use crate::syncml::pkg0::MIME;

/// Why a notification was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// The device has no push address.
    #[error("the device has no push address")]
    NoAddress,
    /// The push address is not usable.
    #[error("the push address `{0}` is not a valid URL")]
    BadAddress(String),
    /// The transport failed.
    #[error("the notification could not be delivered: {0}")]
    Transport(String),
    /// The receiver refused it.
    #[error("the push receiver answered HTTP {0}")]
    Refused(u16),
}

/// A way to deliver Package #0.
pub trait PushTransport: Send + Sync {
    /// Delivers `package` to `address`.
    fn deliver<'a>(
        &'a self,
        address: &'a str,
        package: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<(), NotifyError>> + Send + 'a>>;
}

/// HTTP POST of the binary package (`application/vnd.syncml.notification`).
#[derive(Debug, Clone)]
pub struct HttpPush {
    client: reqwest::Client,
}

impl HttpPush {
    /// A transport using `client`.
    pub fn new(client: reqwest::Client) -> HttpPush {
        HttpPush { client }
    }
}

impl PushTransport for HttpPush {
    fn deliver<'a>(
        &'a self,
        address: &'a str,
        package: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<(), NotifyError>> + Send + 'a>> {
        Box::pin(async move {
            let url = reqwest::Url::parse(address)
                .map_err(|_| NotifyError::BadAddress(address.to_owned()))?;
            let resp = self
                .client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, MIME)
                .body(package)
                .send()
                .await
                .map_err(|e| NotifyError::Transport(e.to_string()))?;
            if resp.status().is_success() {
                Ok(())
            } else {
                Err(NotifyError::Refused(resp.status().as_u16()))
            }
        })
    }
}
