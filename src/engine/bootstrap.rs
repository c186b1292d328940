//! The bootstrap endpoint of the Delegated server (DMS-2), for the Bootstrap Server URL approach
//! (docs/PROTOCOL.md section 9, "Bootstrap URL", and decision 14).
//!
//! DMS-2 issues a one-time token bound to the device's `DevId` and to an expiry, and sends
//! `{url}/bootstrap/{token}` to DMS-1, which writes it into the device's bootstrap config. The
//! device then fetches its DMS-2 account (a TNDS document) from here, naming itself with the
//! `X-DM-DevId` header. The account is served to that device only, once, before the expiry.
//!
//! Two halves, as elsewhere in the engine:
//! - [`BootstrapTokens`], the sans-IO registry: time and randomness are arguments, so tests
//!   drive it with plain numbers;
//! - [`spawn`], the HTTP shell: it reads the clock, asks the registry, and answers. Each token
//!   the device used successfully is reported as a [`Served`] on a channel (DMS-2's engine
//!   then expects the device to call it).
//!
//! Every refusal is the same answer, 403 with an empty body and no distinguishing header, so
//! a client learns nothing about why (unknown token, another device, a second use, an expired
//! token). A token is burnt by its first use, even a failed one. The registry never prints a
//! token or an account: its `Debug` shows only how many tokens it holds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode as HttpStatus, Uri, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedSender;

use crate::dm::tree_tnds::TNDS_XML_MIME;

/// The HTTP header with which the device names itself (its `./DevInfo/DevId`).
pub const DEV_ID_HEADER: &str = "X-DM-DevId";

/// The path prefix of bootstrap URLs.
pub const BOOTSTRAP_PATH: &str = "/bootstrap/";

/// The default lifetime of a token: 15 minutes (decision 14).
pub const DEFAULT_TTL_MS: i64 = 15 * 60 * 1000;

/// The length of a token: 32 random bytes as lower-case hex digits.
pub const TOKEN_LEN: usize = 64;

/// A token that was used successfully: the account was handed to its device.
#[derive(Clone, PartialEq, Eq)]
pub struct Served {
    /// The device that fetched it.
    pub dev_id: String,
    /// The TNDS document (XML) that was served: the account node `<x>` for `./DMAcc`.
    pub account_xml: String,
    /// The token that was used (now burnt).
    pub token: String,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The account holds the device's secrets and the token is a credential.
        f.debug_struct("Served")
            .field("dev_id", &self.dev_id)
            .field(
                "account_xml",
                &format_args!("<{} bytes>", self.account_xml.len()),
            )
            .finish_non_exhaustive()
    }
}

/// Why a bootstrap request was refused. For logs and tests only: the client always gets the
/// same 403 with an empty body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// No such token: never issued, already used (or burnt by a failed use), purged, revoked,
    /// or not even the shape of a token.
    #[error("unknown bootstrap token")]
    UnknownToken,
    /// The token was issued for another device, or the request named no device.
    #[error("the bootstrap token belongs to another device")]
    OtherDevice,
    /// The token's lifetime is over.
    #[error("the bootstrap token has expired")]
    Expired,
    /// Not a GET or POST of `/bootstrap/{token}` (the registry was not asked).
    #[error("not a bootstrap request")]
    BadRequest,
}

/// One issued token.
struct Issued {
    /// The token itself, kept to compare in constant time after the lookup.
    token: String,
    dev_id: String,
    account_xml: String,
    /// Valid while `now < expires_ms`.
    expires_ms: i64,
}

/// The registry of bootstrap tokens: sans-IO, no clock and no randomness inside.
///
/// Tokens are looked up by their SHA-256 digest rather than by their text: the time a lookup
/// takes then depends on the digest, which tells a guesser nothing about any token it does not
/// already know. The entry found is then confirmed by comparing the whole token without early
/// exit ([`ct_eq`]).
#[derive(Default)]
pub struct BootstrapTokens {
    by_digest: HashMap<[u8; 32], Issued>,
}

impl std::fmt::Debug for BootstrapTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapTokens")
            .field("tokens", &self.by_digest.len())
            .finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Whether two strings are equal, comparing every byte whatever the first difference (the
/// lengths are not secret: every token has [`TOKEN_LEN`] digits).
fn ct_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Whether `token` has the shape of a token: [`TOKEN_LEN`] lower-case hex digits.
pub fn is_token_syntax(token: &str) -> bool {
    token.len() == TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl BootstrapTokens {
    /// An empty registry.
    pub fn new() -> BootstrapTokens {
        BootstrapTokens::default()
    }

    /// Issues a token for `dev_id`, valid from `now_ms` for `ttl_ms` milliseconds, that serves
    /// `account_xml` (a TNDS document whose single top node is the account node for
    /// `./DMAcc`). The token is `random` as 64 lower-case hex digits; the caller draws it from
    /// the OS generator.
    pub fn issue(
        &mut self,
        dev_id: &str,
        account_xml: String,
        now_ms: i64,
        ttl_ms: i64,
        random: [u8; 32],
    ) -> String {
        let token: String = random.iter().map(|b| format!("{b:02x}")).collect();
        self.by_digest.insert(
            digest(&token),
            Issued {
                token: token.clone(),
                dev_id: dev_id.to_owned(),
                account_xml,
                expires_ms: now_ms.saturating_add(ttl_ms),
            },
        );
        token
    }

    /// Uses `token` for the device `dev_id` at `now_ms`. The token is burnt whatever the
    /// outcome: a wrong device or an expired token burns it too.
    pub fn take(&mut self, token: &str, dev_id: &str, now_ms: i64) -> Result<Served, Refused> {
        if !is_token_syntax(token) {
            return Err(Refused::UnknownToken);
        }
        let key = digest(token);
        match self.by_digest.get(&key) {
            Some(issued) if ct_eq(&issued.token, token) => {}
            _ => return Err(Refused::UnknownToken),
        }
        let Some(issued) = self.by_digest.remove(&key) else {
            return Err(Refused::UnknownToken);
        };
        if now_ms >= issued.expires_ms {
            return Err(Refused::Expired);
        }
        if dev_id.is_empty() || issued.dev_id != dev_id {
            return Err(Refused::OtherDevice);
        }
        Ok(Served {
            dev_id: issued.dev_id,
            account_xml: issued.account_xml,
            token: issued.token,
        })
    }

    /// Burns every token issued for `dev_id` (its delegation ended or was undone).
    pub fn revoke_device(&mut self, dev_id: &str) {
        self.by_digest.retain(|_, i| i.dev_id != dev_id);
    }

    /// Forgets every token whose lifetime is over at `now_ms`.
    pub fn purge_expired(&mut self, now_ms: i64) {
        self.by_digest.retain(|_, i| now_ms < i.expires_ms);
    }

    /// How many tokens are live (issued, not yet used, revoked or purged).
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether no token is live.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

/// What the endpoint counted.
#[derive(Debug, Default)]
struct Counters {
    served: AtomicU64,
    refused: AtomicU64,
    last_refusal: Mutex<Option<Refused>>,
}

#[derive(Clone)]
struct BootstrapState {
    tokens: Arc<Mutex<BootstrapTokens>>,
    served: UnboundedSender<Served>,
    counters: Arc<Counters>,
}

#[derive(Debug)]
enum Serving {
    Plain(tokio::task::JoinHandle<()>),
    Tls(crate::tls::TlsServerHandle),
}

/// A running bootstrap endpoint. Dropping it stops the server.
#[derive(Debug)]
pub struct BootstrapEndpoint {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The base URL, e.g. `https://127.0.0.1:9443`; bootstrap URLs are
    /// [`BootstrapEndpoint::token_url`].
    pub url: String,
    counters: Arc<Counters>,
    serving: Serving,
}

impl BootstrapEndpoint {
    /// The bootstrap URL for `token`: `{url}/bootstrap/{token}`.
    pub fn token_url(&self, token: &str) -> String {
        format!("{}{BOOTSTRAP_PATH}{token}", self.url)
    }

    /// Accounts served so far.
    pub fn served_count(&self) -> u64 {
        self.counters.served.load(Ordering::Relaxed)
    }

    /// Requests refused so far.
    pub fn refused_count(&self) -> u64 {
        self.counters.refused.load(Ordering::Relaxed)
    }

    /// Why the latest request was refused (for tests and diagnostics; never sent to a client).
    pub fn last_refusal(&self) -> Option<Refused> {
        match self.counters.last_refusal.lock() {
            Ok(g) => *g,
            Err(p) => *p.into_inner(),
        }
    }

    /// TLS handshakes that failed (HTTPS endpoints only).
    pub fn tls_handshake_failures(&self) -> u64 {
        match &self.serving {
            Serving::Tls(h) => h.handshake_failure_count(),
            Serving::Plain(_) => 0,
        }
    }
}

impl Drop for BootstrapEndpoint {
    fn drop(&mut self) {
        match &self.serving {
            Serving::Plain(task) => task.abort(),
            Serving::Tls(handle) => handle.abort(),
        }
    }
}

/// Starts the bootstrap endpoint on `listener`: HTTPS with `tls` (a server certificate only,
/// e.g. [`crate::tls::server_config`]), plain HTTP without. Each account served is reported on
/// `served`.
pub async fn spawn(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    tokens: Arc<Mutex<BootstrapTokens>>,
    served: UnboundedSender<Served>,
) -> Result<BootstrapEndpoint, std::io::Error> {
    let addr = listener.local_addr()?;
    let counters = Arc::new(Counters::default());
    let app = Router::new().fallback(handle).with_state(BootstrapState {
        tokens,
        served,
        counters: counters.clone(),
    });
    let (url, serving) = match tls {
        None => {
            let task = tokio::spawn(async move {
                // The server only stops when the task is aborted.
                let _ = axum::serve(listener, app).await;
            });
            (format!("http://{addr}"), Serving::Plain(task))
        }
        Some(tls) => {
            let handle = crate::tls::serve_tls(listener, tls, app).await;
            (format!("https://{addr}"), Serving::Tls(handle))
        }
    };
    Ok(BootstrapEndpoint {
        addr,
        url,
        counters,
        serving,
    })
}

fn unix_ms_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        // A clock before 1970 makes every token look expired: refusing is the safe side.
        .unwrap_or(i64::MAX)
}

/// The one refusal: 403, empty body, no header that says why.
fn refuse(st: &BootstrapState, why: Refused) -> Response {
    // The log says why; the client learns nothing. The token is never logged.
    tracing::warn!("bootstrap endpoint: refused (403): {why:?}");
    st.counters.refused.fetch_add(1, Ordering::Relaxed);
    match st.counters.last_refusal.lock() {
        Ok(mut g) => *g = Some(why),
        Err(p) => *p.into_inner() = Some(why),
    }
    HttpStatus::FORBIDDEN.into_response()
}

/// Every request lands here (the router has no other route), so no request gets an answer
/// axum would shape on its own (404, 405, a rejection's 400).
async fn handle(
    State(st): State<BootstrapState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let Some(token) = uri.path().strip_prefix(BOOTSTRAP_PATH) else {
        return refuse(&st, Refused::BadRequest);
    };
    if method != Method::GET && method != Method::POST {
        // Not a use of the token: the registry is not asked and the token stays live.
        return refuse(&st, Refused::BadRequest);
    }
    // Exactly one DevId header; a missing or ambiguous one names no device, which still uses
    // (and burns) the token.
    let mut values = headers.get_all(DEV_ID_HEADER).iter();
    let dev_id = match (values.next(), values.next()) {
        (Some(v), None) => v.to_str().unwrap_or(""),
        _ => "",
    };
    let taken = {
        let Ok(mut tokens) = st.tokens.lock() else {
            return refuse(&st, Refused::UnknownToken);
        };
        tokens.take(token, dev_id.trim(), unix_ms_now())
    };
    match taken {
        Err(why) => refuse(&st, why),
        Ok(served) => {
            tracing::info!(device = %served.dev_id, "bootstrap endpoint: served the account");
            st.counters.served.fetch_add(1, Ordering::Relaxed);
            let body = served.account_xml.clone();
            // Nobody listening means nobody waits for the device: serving it is still right.
            let _ = st.served.send(served);
            let mut resp = (HttpStatus::OK, body).into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(TNDS_XML_MIME),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "IMEI:350000000000001";
    const B: &str = "IMEI:350000000000002";

    fn reg() -> BootstrapTokens {
        BootstrapTokens::new()
    }

    #[test]
    fn a_token_is_64_hex_digits_of_the_random_bytes() {
        let mut r = reg();
        let mut random = [0u8; 32];
        random[0] = 0xAB;
        random[31] = 0x01;
        let t = r.issue(A, "<MgmtTree/>".into(), 0, 1000, random);
        assert_eq!(t.len(), TOKEN_LEN);
        assert!(t.starts_with("ab00"));
        assert!(t.ends_with("01"));
        assert!(is_token_syntax(&t));
        assert!(!is_token_syntax(&t.to_uppercase()));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn the_right_device_takes_it_once() {
        let mut r = reg();
        let t = r.issue(A, "acc".into(), 100, 1000, [7; 32]);
        let s = r.take(&t, A, 500).unwrap();
        assert_eq!((s.dev_id.as_str(), s.account_xml.as_str()), (A, "acc"));
        assert_eq!(s.token, t);
        assert_eq!(r.take(&t, A, 501), Err(Refused::UnknownToken));
        assert!(r.is_empty());
    }

    #[test]
    fn another_device_burns_the_token() {
        let mut r = reg();
        let t = r.issue(A, "acc".into(), 0, 1000, [1; 32]);
        assert_eq!(r.take(&t, B, 10), Err(Refused::OtherDevice));
        assert_eq!(r.take(&t, A, 11), Err(Refused::UnknownToken));
        let t = r.issue(A, "acc".into(), 0, 1000, [2; 32]);
        assert_eq!(r.take(&t, "", 10), Err(Refused::OtherDevice));
        assert_eq!(r.take(&t, A, 11), Err(Refused::UnknownToken));
    }

    #[test]
    fn an_expired_token_is_refused_and_burnt() {
        let mut r = reg();
        let t = r.issue(A, "acc".into(), 0, 1000, [3; 32]);
        assert_eq!(r.take(&t, A, 1000), Err(Refused::Expired));
        assert!(r.is_empty());
        let t = r.issue(A, "acc".into(), 50, 0, [4; 32]);
        assert_eq!(r.take(&t, A, 50), Err(Refused::Expired));
        let t = r.issue(A, "acc".into(), 50, -10, [5; 32]);
        assert_eq!(r.take(&t, A, 45), Err(Refused::Expired));
        // Just before the end it still works.
        let t = r.issue(A, "acc".into(), 0, 1000, [6; 32]);
        assert!(r.take(&t, A, 999).is_ok());
    }

    #[test]
    fn malformed_and_unknown_tokens_leave_the_others_alone() {
        let mut r = reg();
        let t = r.issue(A, "acc".into(), 0, 1000, [0xab; 32]);
        for bad in [
            "",
            "zz",
            &t.to_uppercase(),
            &format!("{t}0"),
            &"0".repeat(64),
        ] {
            assert_eq!(r.take(bad, A, 1), Err(Refused::UnknownToken), "{bad}");
        }
        assert_eq!(r.len(), 1);
        assert!(r.take(&t, A, 1).is_ok());
    }

    #[test]
    fn purge_and_revoke() {
        let mut r = reg();
        let short = r.issue(A, "a".into(), 0, 10, [9; 32]);
        let long = r.issue(A, "b".into(), 0, 1000, [10; 32]);
        let other = r.issue(B, "c".into(), 0, 1000, [11; 32]);
        r.purge_expired(10);
        assert_eq!(r.len(), 2);
        assert_eq!(r.take(&short, A, 5), Err(Refused::UnknownToken));
        r.revoke_device(A);
        assert_eq!(r.len(), 1);
        assert_eq!(r.take(&long, A, 5), Err(Refused::UnknownToken));
        assert!(r.take(&other, B, 5).is_ok());
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let mut r = reg();
        let t = r.issue(A, "<secret-account/>".into(), 0, 1000, [12; 32]);
        assert!(!format!("{r:?}").contains(&t));
        let s = r.take(&t, A, 1).unwrap();
        let text = format!("{s:?}");
        assert!(
            !text.contains(&t) && !text.contains("secret-account"),
            "{text}"
        );
    }

    #[test]
    fn constant_time_compare() {
        assert!(ct_eq("abc", "abc"));
        assert!(!ct_eq("abc", "abd"));
        assert!(!ct_eq("abc", "abcd"));
    }
}
