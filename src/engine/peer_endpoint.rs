//! The peer endpoint: HTTPS with mutual TLS where peer servers POST delegation messages
//! (docs/PROTOCOL.md section 2). The handshake requires a client certificate from a trusted
//! CA or pinned for a peer ([`crate::tls::PeerTrust`], which changes while the endpoint runs);
//! the handler then finds which peer the certificate belongs to, checks the
//! message's `DMServerID` is that peer's (403 with an empty body otherwise), parses the body
//! within the protocol's limits (400) and hands the message to the delegation driver, which
//! answers 202, 404 or 409 once the message is stored.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use super::peer_client::MESSAGES_PATH;
use super::peers::PeerDirectory;
use crate::delegation::messages::{MAX_MESSAGE_LEN, MEDIA_TYPE, Message};
use crate::tls::{PeerCertificates, TlsServerHandle, serve_tls};

/// The driver's answer to a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAnswer {
    /// 202, 400, 404 or 409; 503 when the engine cannot read its own state (the peer
    /// tries again).
    pub status: u16,
    /// `text/plain` body (empty for 202).
    pub body: String,
}

impl PeerAnswer {
    /// 202 with no body.
    pub fn accepted() -> PeerAnswer {
        PeerAnswer {
            status: 202,
            body: String::new(),
        }
    }

    /// 503: the message was not looked at (the engine cannot read its state); the peer
    /// sends it again later.
    pub fn unavailable(why: &str) -> PeerAnswer {
        PeerAnswer {
            status: 503,
            body: why.to_owned(),
        }
    }

    /// A refusal: `3001 BadMessage: ` and why.
    pub fn refused(status: u16, why: &str) -> PeerAnswer {
        PeerAnswer {
            status,
            body: format!("3001 BadMessage: {why}"),
        }
    }
}

/// A message from an authenticated peer, waiting for the driver.
#[derive(Debug)]
pub struct Inbound {
    /// The peer's ServerID (from its certificate).
    pub peer: String,
    /// The message (its DMServerID is the peer's).
    pub msg: Message,
    /// Where the answer goes; answered after the message is stored.
    pub reply: oneshot::Sender<PeerAnswer>,
}

#[derive(Clone)]
struct EndpointState {
    peers: Arc<PeerDirectory>,
    inbox: mpsc::Sender<Inbound>,
}

/// A running peer endpoint. Dropping it stops it.
#[derive(Debug)]
pub struct PeerEndpoint {
    /// Its base URL (`https://127.0.0.1:port`).
    pub url: String,
    /// The TLS server (handshake failure counts).
    pub tls: TlsServerHandle,
}

/// Serves the peer endpoint on `listener` with the mutual-TLS configuration `tls`
/// ([`crate::tls::mtls_server_config_with`]), recognising the peers in `peers` (read at each
/// request, so peers added later are recognised).
pub async fn spawn(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    peers: Arc<PeerDirectory>,
    inbox: mpsc::Sender<Inbound>,
) -> PeerEndpoint {
    let url = listener
        .local_addr()
        .map(|a| format!("https://{a}"))
        .unwrap_or_default();
    let app = Router::new()
        .route(MESSAGES_PATH, post(receive))
        .layer(DefaultBodyLimit::max(MAX_MESSAGE_LEN))
        .with_state(EndpointState { peers, inbox });
    let tls = serve_tls(listener, tls, app).await;
    PeerEndpoint { url, tls }
}

fn text(status: StatusCode, body: String) -> Response {
    if body.is_empty() {
        return status.into_response();
    }
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn receive(
    State(st): State<EndpointState>,
    certs: Option<axum::Extension<PeerCertificates>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Which peer is this? The handshake verified the chain (or the pin); a certificate that
    // is no peer's learns nothing.
    let peer = certs
        .as_ref()
        .and_then(|c| c.0.leaf())
        .and_then(|leaf| st.peers.identify(leaf))
        .map(|p| p.server_id.clone());
    let Some(peer) = peer else {
        tracing::warn!("peer endpoint: a certificate of no configured peer; refused (403)");
        return StatusCode::FORBIDDEN.into_response();
    };
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    if media.as_deref() != Some(MEDIA_TYPE) {
        return text(
            StatusCode::BAD_REQUEST,
            format!("3001 BadMessage: the Content-Type must be {MEDIA_TYPE}"),
        );
    }
    let msg = match Message::from_xml(&body) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(peer = %peer, "peer endpoint: a malformed message refused (400): {e}");
            return text(StatusCode::BAD_REQUEST, format!("3001 BadMessage: {e}"));
        }
    };
    if msg.server_id != peer {
        // A peer speaking for another server: refused, and nothing is revealed.
        tracing::warn!(
            peer = %peer,
            claimed = %msg.server_id,
            "peer endpoint: a message claiming another DMServerID; refused (403)"
        );
        return StatusCode::FORBIDDEN.into_response();
    }
    let (tx, rx) = oneshot::channel();
    let inbound = Inbound {
        peer,
        msg,
        reply: tx,
    };
    if st.inbox.send(inbound).await.is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    match rx.await {
        Ok(answer) => text(
            StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            answer.body,
        ),
        // The driver stopped before storing it: the sender retries.
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}
