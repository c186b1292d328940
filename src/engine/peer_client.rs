//! The client side of the peer protocol: POSTs one delegation message to a peer over mutual
//! TLS (reqwest with this server's client certificate, trusting the configured CAs and the
//! pinned peer certificates: [`crate::tls::peer_client_builder`]) and
//! classifies the answer. Retries, with exponential backoff and jitter, until the peer
//! accepts or refuses the message for good, are in [`PeerClient::deliver`]; the delegation's
//! own deadline bounds them (docs/PROTOCOL.md section 2).
//!
//! Until a message has reached a peer over the current connection, the messages for it go
//! one at a time: otherwise a burst (the first wave after a start, a hundred delegations at
//! once) would open a connection and run a mutual-TLS handshake for each message, where
//! HTTP/2 carries them all over one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::delegation::messages::MEDIA_TYPE;

/// The path peers accept messages on.
pub const MESSAGES_PATH: &str = "/dm-delegation/v1/messages";

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// 202: the peer stored the message (or had it already).
    Accepted,
    /// 400, 403, 404 or 409: final, never retried.
    Refused {
        /// The HTTP status.
        status: u16,
        /// The peer's explanation (`text/plain`), cut to 300 characters.
        reason: String,
    },
    /// No answer, a 5xx, a 429 or anything else: retried.
    Failed(String),
}

/// Sends messages to peers.
#[derive(Debug, Clone)]
pub struct PeerClient {
    http: reqwest::Client,
    /// Per peer URL: whether its connection is known to be up, and the turn the messages
    /// take while it is not.
    gates: Arc<Mutex<HashMap<String, Arc<Gate>>>>,
}

/// The first-connection gate of one peer.
#[derive(Debug, Default)]
struct Gate {
    /// A message reached the peer, and no attempt has failed since.
    open: AtomicBool,
    /// Held by the one message in flight while the gate is closed.
    turn: tokio::sync::Mutex<()>,
}

/// The first retry delay; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest delay between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl PeerClient {
    /// A client using `http` (built with [`crate::tls::peer_client_builder`] and this
    /// server's identity).
    pub fn new(http: reqwest::Client) -> PeerClient {
        PeerClient {
            http,
            gates: Arc::default(),
        }
    }

    fn gate(&self, base_url: &str) -> Arc<Gate> {
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        gates.entry(base_url.to_owned()).or_default().clone()
    }

    /// One attempt to deliver `msg` to the peer at `base_url`.
    pub async fn post(&self, base_url: &str, body: Vec<u8>) -> Attempt {
        let url = format!("{}{MESSAGES_PATH}", base_url.trim_end_matches('/'));
        let gate = self.gate(base_url);
        let turn = if gate.open.load(Ordering::Acquire) {
            None
        } else {
            let turn = gate.turn.lock().await;
            // The message before this one may have opened it.
            (!gate.open.load(Ordering::Acquire)).then_some(turn)
        };
        let resp = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, MEDIA_TYPE)
            .body(body)
            .send()
            .await;
        // Any HTTP answer means a connection is up; without one, the next messages take
        // turns again until one gets through.
        gate.open.store(resp.is_ok(), Ordering::Release);
        drop(turn);
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return Attempt::Failed(crate::sim::device::error_chain(&e)),
        };
        let status = resp.status().as_u16();
        match status {
            202 | 200 | 204 => Attempt::Accepted,
            400 | 403 | 404 | 409 => {
                let text = resp.text().await.unwrap_or_default();
                let reason: String = text.chars().take(300).collect();
                Attempt::Refused {
                    status,
                    reason: if reason.is_empty() {
                        http_reason(status).to_owned()
                    } else {
                        reason
                    },
                }
            }
            other => Attempt::Failed(format!("the peer answered HTTP {other}")),
        }
    }

    /// Delivers a message (its XML, `body`), retrying with backoff (1 s doubling to 60 s, each delay varied by
    /// ±20 %) until it is accepted or refused. Cancel by dropping the future (the caller's
    /// deadline). `on_retry` hears of each failed attempt.
    pub async fn deliver(
        &self,
        base_url: &str,
        body: Vec<u8>,
        mut on_retry: impl FnMut(u32, &str),
    ) -> Attempt {
        let mut delay = FIRST_BACKOFF;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self.post(base_url, body.clone()).await {
                Attempt::Failed(why) => {
                    on_retry(attempt, &why);
                    tokio::time::sleep(jitter(delay)).await;
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
                done => return done,
            }
        }
    }
}

fn http_reason(status: u16) -> &'static str {
    match status {
        400 => "bad request",
        403 => "forbidden",
        404 => "unknown delegation",
        409 => "not valid in the delegation's state",
        _ => "refused",
    }
}

/// `d` varied by ±20 %.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    // Without randomness the delay is simply not varied.
    let _ = crate::random::fill(&mut b);
    let r = f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX); // 0..=1
    d.mul_f64(0.8 + 0.4 * r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_twenty_percent() {
        for _ in 0..200 {
            let j = jitter(Duration::from_secs(10));
            assert!(j >= Duration::from_secs(8) && j <= Duration::from_secs(12));
        }
    }
}
