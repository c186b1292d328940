//! The device endpoint: where devices open SyncML DM 1.2 sessions over HTTP. It accepts
//! `application/vnd.syncml.dm+xml` and the `application/vnd.syncml+xml` some clients send
//! (chunked bodies included, since hyper reassembles them), finds or starts the device's
//! session, and answers with the session's reply: the server's own credentials and a RespURI
//! that carries a session token.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode as HttpStatus, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::net::TcpListener;

use super::devices::{DeviceRecord, Devices, Handled, Incoming};
use crate::store::Store;
use crate::syncml::auth::HMAC_HEADER;
use crate::syncml::session::Encoding;
use crate::syncml::session::server::ServerConfig;

/// Settings of the device endpoint.
#[derive(Debug, Clone)]
pub struct DeviceEndpointConfig {
    /// The URL path devices post to, e.g. `/dm`.
    pub path: String,
    /// The largest message accepted (advertised as MaxMsgSize).
    pub max_msg_size: u64,
    /// The largest object accepted.
    pub max_obj_size: u64,
    /// How long a session is held open, after results someone will answer with more
    /// commands, before it ends anyway (milliseconds; 0: never held).
    pub hold_ms: u64,
}

impl Default for DeviceEndpointConfig {
    fn default() -> Self {
        DeviceEndpointConfig {
            path: "/dm".to_owned(),
            max_msg_size: 65_536,
            max_obj_size: 1 << 20,
            hold_ms: 2_000,
        }
    }
}

#[derive(Clone)]
struct EndpointState {
    devices: Arc<Mutex<Devices>>,
    server: ServerConfig,
    store: Option<Store>,
    hold_ms: u64,
}

#[derive(Debug)]
enum Serving {
    Plain(tokio::task::JoinHandle<()>),
    /// Dropping the handle stops the TLS server.
    Tls(#[allow(dead_code)] crate::tls::TlsServerHandle),
}

/// A running device endpoint.
#[derive(Debug)]
pub struct DeviceEndpoint {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The URL devices use (the server address in their DMAcc).
    pub url: String,
    serving: Serving,
}

impl DeviceEndpoint {
    /// TLS handshakes that failed (HTTPS endpoints only).
    pub fn tls_handshake_failures(&self) -> u64 {
        match &self.serving {
            Serving::Tls(h) => h.handshake_failure_count(),
            Serving::Plain(_) => 0,
        }
    }
}

impl Drop for DeviceEndpoint {
    fn drop(&mut self) {
        if let Serving::Plain(task) = &self.serving {
            task.abort();
        }
    }
}

/// Starts the endpoint on `listener`, over plain HTTP. With a store, a change to a device's
/// inventory is committed before the reply that follows it leaves; its new nonces are queued
/// for the store first (write-behind: a lost nonce costs one more challenge, never access).
pub fn spawn(
    listener: TcpListener,
    cfg: DeviceEndpointConfig,
    devices: Arc<Mutex<Devices>>,
    store: Option<Store>,
) -> std::io::Result<DeviceEndpoint> {
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}{}", cfg.path);
    let app = router(&cfg, &url, devices, store);
    let task = tokio::spawn(async move {
        // The server only stops when the task is aborted.
        let _ = axum::serve(listener, app).await;
    });
    Ok(DeviceEndpoint {
        addr,
        url,
        serving: Serving::Plain(task),
    })
}

/// Starts the endpoint over HTTPS with the server certificate in `tls`.
pub async fn spawn_tls(
    listener: TcpListener,
    cfg: DeviceEndpointConfig,
    devices: Arc<Mutex<Devices>>,
    store: Option<Store>,
    tls: Arc<rustls::ServerConfig>,
) -> std::io::Result<DeviceEndpoint> {
    let addr = listener.local_addr()?;
    let url = format!("https://{addr}{}", cfg.path);
    let app = router(&cfg, &url, devices, store);
    let handle = crate::tls::serve_tls(listener, tls, app).await;
    Ok(DeviceEndpoint {
        addr,
        url,
        serving: Serving::Tls(handle),
    })
}

fn router(
    cfg: &DeviceEndpointConfig,
    url: &str,
    devices: Arc<Mutex<Devices>>,
    store: Option<Store>,
) -> Router {
    let state = EndpointState {
        devices,
        server: ServerConfig {
            server_uri: url.to_owned(),
            resp_uri: Some(url.to_owned()),
            max_msg_size: cfg.max_msg_size,
            max_obj_size: cfg.max_obj_size,
        },
        store,
        hold_ms: cfg.hold_ms,
    };
    Router::new()
        .route(&cfg.path, post(handle_new))
        .route(&format!("{}/s/{{token}}", cfg.path), post(handle_token))
        .with_state(state)
}

fn encoding_of(headers: &HeaderMap) -> Option<Encoding> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Encoding::from_content_type(ct)
}

async fn handle_new(State(st): State<EndpointState>, headers: HeaderMap, body: Bytes) -> Response {
    respond(st, None, headers, body).await
}

async fn handle_token(
    State(st): State<EndpointState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(st, Some(token), headers, body).await
}

/// Runs the message through the session, persists what changed, then answers.
async fn respond(
    st: EndpointState,
    token: Option<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let store = st.store.clone();
    let (response, changed) = match handle(st.clone(), token, headers, body) {
        Handling::Done(r, c) => (r, c),
        Handling::Hold {
            waker,
            dev_id,
            session_id,
            encoding,
            before,
        } => {
            // Wait for the follow-up commands (or not longer than hold_ms), then answer.
            let wait = std::time::Duration::from_millis(st.hold_ms);
            let _ = tokio::time::timeout(wait, waker.notified()).await;
            let Ok(mut devices) = st.devices.lock() else {
                return HttpStatus::INTERNAL_SERVER_ERROR.into_response();
            };
            let result = devices.finish_message(&dev_id, &session_id, Ok(()));
            let changed = persist_change(&mut devices, &dev_id, &before);
            match result {
                Some(Ok(reply)) => (reply_response(reply, encoding), changed),
                Some(Err(e)) => (
                    (HttpStatus::BAD_REQUEST, e.to_string()).into_response(),
                    changed,
                ),
                None => (
                    (HttpStatus::NOT_FOUND, "no such session").into_response(),
                    None,
                ),
            }
        }
    };
    if let (Some(store), Some(change)) = (store, changed) {
        let now = std::time::SystemTime::now();
        let saved = match change {
            Persist::Record(record) => {
                store
                    .call(move |conn| crate::store::devices::upsert(conn, &record, now))
                    .await
            }
            Persist::Nonces {
                dev_id,
                client,
                server,
            } => {
                // Nonces are recoverable (a 401 with a fresh challenge, a resync Package #0):
                // the reply does not wait for their commit (store module doc).
                store
                    .write_behind("a device's nonces", move |conn| {
                        crate::store::devices::update_nonces(conn, &dev_id, &client, &server)
                    })
                    .await
            }
        };
        if saved.is_err() {
            // The store is gone or failing: the device retries later.
            return (
                HttpStatus::SERVICE_UNAVAILABLE,
                "the server cannot save its state",
            )
                .into_response();
        }
    }
    response
}

fn random16() -> [u8; 16] {
    let mut b = [0u8; 16];
    // The OS generator does not fail on supported platforms; a zero nonce would only weaken
    // one challenge, and the next one is fresh again.
    let _ = crate::random::fill(&mut b);
    b
}

/// The state of a device record that is saved before a reply leaves: its nonces, and
/// whether its inventory (DevInfo, tree) was taken.
fn durable_state(devices: &Devices, dev_id: &str) -> Option<(Vec<u8>, Vec<u8>, bool, bool)> {
    devices.get(dev_id).map(|r| {
        (
            r.client_nonce.as_bytes().to_vec(),
            r.server_nonce.as_bytes().to_vec(),
            r.needs_inventory,
            r.last_seen.is_some(),
        )
    })
}

/// What must be stored before the reply leaves.
enum Persist {
    /// The whole record (its inventory changed).
    Record(Box<DeviceRecord>),
    /// Only the nonces (the usual case: every session rotates them), write-behind.
    Nonces {
        dev_id: String,
        client: crate::syncml::auth::Nonce,
        server: crate::syncml::auth::Nonce,
    },
}

/// What the first look at a message decided.
enum Handling {
    /// The response, and what to persist before it leaves.
    Done(Response, Option<Persist>),
    /// The session is held for follow-up commands: wait on `waker`, then finish.
    Hold {
        waker: Arc<tokio::sync::Notify>,
        dev_id: String,
        session_id: String,
        encoding: crate::syncml::session::Encoding,
        before: Option<DurableState>,
    },
}

type DurableState = (Vec<u8>, Vec<u8>, bool, bool);

/// What changed in the device's durable state since `before`.
fn persist_change(
    devices: &mut Devices,
    dev_id: &str,
    before: &Option<DurableState>,
) -> Option<Persist> {
    let after = durable_state(devices, dev_id);
    match (before, &after) {
        (Some(b), Some(a)) if b == a => None,
        (Some(b), Some(a)) if (b.2, b.3) == (a.2, a.3) => {
            devices.get(dev_id).map(|r| Persist::Nonces {
                dev_id: dev_id.to_owned(),
                client: r.client_nonce.clone(),
                server: r.server_nonce.clone(),
            })
        }
        (_, Some(_)) => devices
            .record_to_save(dev_id)
            .map(|r| Persist::Record(Box::new(r))),
        _ => None,
    }
}

fn reply_response(
    reply: crate::syncml::session::server::Reply,
    encoding: crate::syncml::session::Encoding,
) -> Response {
    let mut resp = (HttpStatus::OK, reply.body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(encoding.mime()),
    );
    if let Some(h) = reply.hmac.and_then(|h| HeaderValue::from_str(&h).ok()) {
        resp.headers_mut().insert(HMAC_HEADER, h);
    }
    resp
}

/// Handles the message under the devices lock (never held across an await); returns the
/// response and the device record to persist first, when it changed, or that the session is
/// held for follow-up commands.
fn handle(st: EndpointState, token: Option<String>, headers: HeaderMap, body: Bytes) -> Handling {
    let response = |r: Response| Handling::Done(r, None);
    let Some(encoding) = encoding_of(&headers) else {
        return response(
            (
                HttpStatus::UNSUPPORTED_MEDIA_TYPE,
                "expected application/vnd.syncml.dm+xml or application/vnd.syncml.dm+wbxml",
            )
                .into_response(),
        );
    };
    let hmac = headers
        .get(HMAC_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // Route by the message's own header: DevId (Source) and SessionID.
    // Decoded once, outside the devices lock; the session takes the decoded message.
    let (dev_id, session_id, msg) = match encoding.decode(&body) {
        Ok(m) => (m.hdr.source.loc_uri.clone(), m.hdr.session_id.clone(), m),
        Err(e) => {
            if let Ok(mut d) = st.devices.lock() {
                d.stats.bad_messages += 1;
            }
            return response(
                (
                    HttpStatus::BAD_REQUEST,
                    format!("not a SyncML DM message: {e}"),
                )
                    .into_response(),
            );
        }
    };
    let Ok(mut devices) = st.devices.lock() else {
        return response(HttpStatus::INTERNAL_SERVER_ERROR.into_response());
    };
    if let Some(t) = &token {
        match devices.session_for_token(t) {
            Some((d, s)) if d == dev_id && s == session_id => {}
            _ => {
                devices.stats.bad_messages += 1;
                return response((HttpStatus::NOT_FOUND, "no such session").into_response());
            }
        }
    }
    let new_token = token.unwrap_or_else(|| {
        random16()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    });
    let before = durable_state(&devices, &dev_id);
    let result = devices.handle_message(
        &st.server,
        Incoming {
            dev_id: &dev_id,
            session_id: &session_id,
            body: &body,
            msg,
            hmac: hmac.as_deref(),
            random: random16(),
            token: new_token,
            encoding,
        },
        st.hold_ms > 0,
    );
    match result {
        None => {
            devices.stats.unknown_devices += 1;
            response((HttpStatus::FORBIDDEN, "unknown device").into_response())
        }
        Some(Handled::Hold(waker)) => Handling::Hold {
            waker,
            dev_id,
            session_id,
            encoding,
            before,
        },
        Some(Handled::Reply(Err(e))) => Handling::Done(
            (HttpStatus::BAD_REQUEST, e.to_string()).into_response(),
            persist_change(&mut devices, &dev_id, &before),
        ),
        Some(Handled::Reply(Ok(reply))) => Handling::Done(
            reply_response(reply, encoding),
            persist_change(&mut devices, &dev_id, &before),
        ),
    }
}
