//! DM-layer authentication for SyncML DM 1.2: `syncml:auth-basic`, `syncml:auth-md5` and the
//! `syncml:auth-MAC` HTTP-header integrity scheme (facts sheet §2.1–2.3, gotchas §9).
//!
//! Everything here is sans-IO: no clock, no randomness, no I/O. Nonces are built from bytes the
//! caller supplies ([`Nonce::random_from`]). Secrets ([`Password`], [`Nonce`]) have a redacting
//! `Debug`, and no [`AuthError`] message ever carries a secret or any part of the input.
//!
//! Formulas (H = MD5, B64 = standard base64 with padding):
//!
//! * basic: `Cred/Data = B64(user ":" pass)`;
//! * md5: `digest = H( B64(H(user ":" pass)) ":" nonce )`, `Cred/Data = B64(digest)`;
//! * MAC: `mac = B64( H( B64(H(user ":" pass)) ":" nonce ":" B64(H(body)) ) )` — not RFC 2104.
//!
//! The nonce is always hashed as its **decoded bytes**; on the wire (`NextNonce`) it is base64.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use md5::{Digest, Md5};

/// The HTTP header that carries the `syncml:auth-MAC` credentials.
pub const HMAC_HEADER: &str = "x-syncml-hmac";

/// The SyncHdr Status code for missing credentials (a Chal goes with it).
pub const STATUS_MISSING_CREDENTIALS: u16 = 407;

/// The SyncHdr Status code for invalid credentials (a Chal goes with it).
pub const STATUS_INVALID_CREDENTIALS: u16 = 401;

/// The Meta `Format` value credentials and nonces are carried in.
pub const FORMAT_B64: &str = "b64";

/// Standard alphabet, padding optional on decode: peers differ on whether they pad.
const B64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Errors from decoding or parsing authentication data. Messages never include secrets or input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The value is not valid base64.
    #[error("invalid base64")]
    BadBase64,
    /// Basic credentials did not decode to UTF-8 `user:password`.
    #[error("basic credentials are not of the form user:password")]
    BadBasicFormat,
    /// The `x-syncml-hmac` header could not be parsed or is not acceptable.
    #[error("invalid x-syncml-hmac header: {reason}")]
    BadHmacHeader {
        /// What is wrong with the header (a fixed text, never a part of it).
        reason: &'static str,
    },
    /// The Meta `Type` names no authentication scheme this crate supports.
    #[error("unsupported authentication scheme")]
    UnsupportedScheme,
    /// The Meta `Format` is not `b64`.
    #[error("unsupported meta format (expected b64)")]
    UnsupportedFormat,
    /// A challenge for md5 or MAC carried no `NextNonce`.
    #[error("challenge carries no NextNonce")]
    MissingNonce,
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

/// A shared secret (DMAcc `AAuthSecret`). `Debug` prints `Password(***)`.
#[derive(Clone, Default)]
pub struct Password(String);

impl Password {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Password(secret.into())
    }

    /// The secret itself. Call it only where the secret is really needed (hashing, storage).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

impl From<String> for Password {
    fn from(s: String) -> Self {
        Password(s)
    }
}

impl From<&str> for Password {
    fn from(s: &str) -> Self {
        Password(s.to_owned())
    }
}

/// A nonce as raw bytes (the decoded form of `NextNonce` / `AAuthData`). `Debug` prints
/// `Nonce(***)`; equality is constant-time.
#[derive(Clone, Default)]
pub struct Nonce(Vec<u8>);

/// The resync nonce as Android encodes it: four zero bytes (b64 `AAAAAA==`).
pub const RESYNC_NONCE_BYTES: [u8; 4] = [0; 4];

/// The resync nonce as libdmclient encodes it: the 10-character ASCII string `0x00000000`.
pub const RESYNC_NONCE_LIBDMCLIENT: &[u8] = b"0x00000000";

impl Nonce {
    /// A nonce made of these bytes.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        Nonce(bytes.into())
    }

    /// A fresh nonce from 16 random bytes the caller drew from a CSPRNG (this crate has no
    /// randomness source of its own).
    pub fn random_from(bytes: [u8; 16]) -> Self {
        Nonce(bytes.to_vec())
    }

    /// The nonce's bytes, as they are hashed.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The number of bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the nonce has no bytes (as in a basic challenge, which carries none).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The base64 form sent in `NextNonce` and stored in `AAuthData`.
    pub fn to_b64(&self) -> String {
        STANDARD.encode(&self.0)
    }

    /// Decodes a base64 `NextNonce` / `AAuthData`. Whitespace is ignored and padding is
    /// optional.
    pub fn from_b64(s: &str) -> Result<Nonce, AuthError> {
        b64_decode_lenient(s).map(Nonce)
    }

    /// The special nonce used to resynchronise after a failed Package #0 digest (DM 1.2.1
    /// notification spec, "0x00000000").
    ///
    /// We follow Android: four zero bytes, b64 `AAAAAA==`. libdmclient instead uses the ASCII
    /// string `"0x00000000"`; [`Nonce::resync_candidates`] returns both so that a verifier can
    /// accept either.
    pub fn resync() -> Self {
        Nonce(RESYNC_NONCE_BYTES.to_vec())
    }

    /// Both encodings of the resync nonce, ours (Android's four zero bytes) first, then
    /// libdmclient's ASCII `"0x00000000"`.
    pub fn resync_candidates() -> [Nonce; 2] {
        [Nonce::resync(), Nonce(RESYNC_NONCE_LIBDMCLIENT.to_vec())]
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Nonce(***)")
    }
}

impl PartialEq for Nonce {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(&self.0, &other.0)
    }
}

impl Eq for Nonce {}

/// Compares two byte strings in time that depends only on their lengths, not their contents.
///
/// Lengths are not hidden; compare fixed-size values (digests) when the length is secret.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

// ---------------------------------------------------------------------------------------------
// Schemes
// ---------------------------------------------------------------------------------------------

/// The DM-layer authentication schemes this crate implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthScheme {
    /// `syncml:auth-basic` (DMAcc `BASIC`).
    Basic,
    /// `syncml:auth-md5` (DMAcc `DIGEST`).
    Md5,
    /// `syncml:auth-MAC` (DMAcc `HMAC`), carried in the [`HMAC_HEADER`] HTTP header.
    Hmac,
}

impl AuthScheme {
    /// The Meta `Type` string of `Cred` and `Chal`.
    pub fn meta_type(self) -> &'static str {
        match self {
            AuthScheme::Basic => "syncml:auth-basic",
            AuthScheme::Md5 => "syncml:auth-md5",
            AuthScheme::Hmac => "syncml:auth-MAC",
        }
    }

    /// The scheme named by a Meta `Type` string (case-insensitive, surrounding whitespace
    /// ignored).
    pub fn from_meta_type(s: &str) -> Option<Self> {
        let s = s.trim();
        [AuthScheme::Basic, AuthScheme::Md5, AuthScheme::Hmac]
            .into_iter()
            .find(|a| a.meta_type().eq_ignore_ascii_case(s))
    }

    /// The DMAcc `AAuthType` value: `BASIC`, `DIGEST` or `HMAC`.
    pub fn aauth_type(self) -> &'static str {
        match self {
            AuthScheme::Basic => "BASIC",
            AuthScheme::Md5 => "DIGEST",
            AuthScheme::Hmac => "HMAC",
        }
    }

    /// The scheme for a DMAcc `AAuthType` value (case-insensitive). The transport-level
    /// types (`HTTP-BASIC`, `HTTP-DIGEST`, `TRANSPORT`) and the unsupported ones give `None`.
    pub fn from_aauth_type(s: &str) -> Option<Self> {
        let s = s.trim();
        [AuthScheme::Basic, AuthScheme::Md5, AuthScheme::Hmac]
            .into_iter()
            .find(|a| a.aauth_type().eq_ignore_ascii_case(s))
    }
}

/// The SyncHdr Status code that accepts a peer's credentials: 212 ("authentication accepted",
/// valid for the whole session) for basic and md5, 200 for `syncml:auth-MAC`, which
/// authenticates each message separately (facts sheet §2.3, gotcha 6).
pub fn session_auth_status(scheme: AuthScheme) -> u16 {
    match scheme {
        AuthScheme::Basic | AuthScheme::Md5 => 212,
        AuthScheme::Hmac => 200,
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn md5_parts(parts: &[&[u8]]) -> [u8; 16] {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// `B64(H(user ":" pass))`, the first part of the md5 and MAC formulas.
fn user_pass_b64(user: &str, password: &Password) -> String {
    STANDARD.encode(md5_parts(&[
        user.as_bytes(),
        b":",
        password.expose().as_bytes(),
    ]))
}

/// Decodes base64, ignoring ASCII whitespace and accepting missing padding.
fn b64_decode_lenient(s: &str) -> Result<Vec<u8>, AuthError> {
    let compact: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    B64_LENIENT
        .decode(compact)
        .map_err(|_| AuthError::BadBase64)
}

/// Decodes a base64 value that must hold exactly 16 bytes (an MD5 digest).
fn decode_digest(s: &str) -> Option<[u8; 16]> {
    b64_decode_lenient(s).ok()?.try_into().ok()
}

fn format_is_b64(format: Option<&str>) -> bool {
    format.is_none_or(|f| f.trim().eq_ignore_ascii_case(FORMAT_B64))
}

// ---------------------------------------------------------------------------------------------
// Basic
// ---------------------------------------------------------------------------------------------

/// `Cred/Data` for `syncml:auth-basic`: `B64(user ":" pass)`.
pub fn basic_cred(user: &str, password: &Password) -> String {
    let mut s = String::with_capacity(user.len() + 1 + password.expose().len());
    s.push_str(user);
    s.push(':');
    s.push_str(password.expose());
    STANDARD.encode(s)
}

/// Decodes basic `Cred/Data` into user name and password. The user name ends at the first
/// `:`; the password may contain `:`.
pub fn parse_basic(data: &str) -> Result<(String, Password), AuthError> {
    let raw = b64_decode_lenient(data)?;
    let text = String::from_utf8(raw).map_err(|_| AuthError::BadBasicFormat)?;
    let (user, pass) = text.split_once(':').ok_or(AuthError::BadBasicFormat)?;
    Ok((user.to_owned(), Password::new(pass)))
}

// ---------------------------------------------------------------------------------------------
// MD5 digest
// ---------------------------------------------------------------------------------------------

/// The raw `syncml:auth-md5` digest: `H( B64(H(user ":" pass)) ":" nonce )`, `nonce` being the
/// decoded nonce bytes.
pub fn md5_digest(user: &str, password: &Password, nonce: &[u8]) -> [u8; 16] {
    let first = user_pass_b64(user, password);
    md5_parts(&[first.as_bytes(), b":", nonce])
}

/// `Cred/Data` for `syncml:auth-md5` (Meta Format `b64`): the base64 of [`md5_digest`].
pub fn md5_cred(user: &str, password: &Password, nonce: &Nonce) -> String {
    STANDARD.encode(md5_digest(user, password, nonce.as_bytes()))
}

/// Checks md5 `Cred/Data` against the expected user (the SyncHdr `Source/LocName`), password and
/// the nonce we issued. The decoded 16 bytes are compared in constant time; anything that does
/// not decode to 16 bytes is refused.
pub fn verify_md5(user: &str, password: &Password, nonce: &Nonce, cred_data: &str) -> bool {
    let expected = md5_digest(user, password, nonce.as_bytes());
    match decode_digest(cred_data) {
        Some(got) => constant_time_eq(&expected, &got),
        None => false,
    }
}

// ---------------------------------------------------------------------------------------------
// HMAC (syncml:auth-MAC)
// ---------------------------------------------------------------------------------------------

/// The raw 16-byte `syncml:auth-MAC` digest:
/// `H( B64(H(user ":" pass)) ":" nonce ":" B64(H(body)) )`.
///
/// Package #0 uses the same formula with the server id as `user` and the trigger as `body`.
pub fn hmac_digest(user: &str, password: &Password, nonce: &[u8], body: &[u8]) -> [u8; 16] {
    let first = user_pass_b64(user, password);
    let body_b64 = STANDARD.encode(md5_parts(&[body]));
    md5_parts(&[first.as_bytes(), b":", nonce, b":", body_b64.as_bytes()])
}

/// The `mac` value of the [`HMAC_HEADER`]: base64 of [`hmac_digest`]. `body` is the exact message
/// bytes sent (XML or WBXML); `nonce` the decoded nonce bytes.
pub fn hmac_mac(user: &str, password: &Password, nonce: &[u8], body: &[u8]) -> String {
    STANDARD.encode(hmac_digest(user, password, nonce, body))
}

/// The value of the [`HMAC_HEADER`] HTTP header:
/// `algorithm=MD5, username="<LocName>", mac=<base64>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HmacHeader {
    /// The `algorithm` attribute as received; absent means MD5, the only one defined.
    pub algorithm: Option<String>,
    /// The `username` attribute (the sender's user name).
    pub username: String,
    /// The `mac` attribute, base64.
    pub mac: String,
}

impl HmacHeader {
    /// Computes the header for a message `body` sent under `nonce` (decoded bytes).
    pub fn compute(user: &str, password: &Password, nonce: &[u8], body: &[u8]) -> Self {
        HmacHeader {
            algorithm: Some("MD5".to_owned()),
            username: user.to_owned(),
            mac: hmac_mac(user, password, nonce, body),
        }
    }

    /// Formats the header value as `algorithm=MD5, username="<name>", mac=<b64>`.
    ///
    /// `algorithm` is always written as `MD5`, the only algorithm defined for the MAC.
    /// `"` and `\` in the user name are escaped with `\`. A user name holding CR or LF cannot
    /// be carried in an HTTP header; the HTTP layer must refuse such a value.
    pub fn format(&self) -> String {
        let mut s = String::with_capacity(40 + self.username.len() + self.mac.len());
        s.push_str("algorithm=MD5, username=\"");
        for c in self.username.chars() {
            if c == '"' || c == '\\' {
                s.push('\\');
            }
            s.push(c);
        }
        s.push_str("\", mac=");
        s.push_str(&self.mac);
        s
    }

    /// Parses the header value.
    ///
    /// Tolerant of spaces or none around `,` and `=`, of any attribute order, of quoted or
    /// unquoted values, and of attribute-name case; unknown attributes are ignored. Refuses a
    /// missing `username` or `mac`, an empty `mac`, a repeated attribute, and an `algorithm`
    /// other than MD5.
    pub fn parse(value: &str) -> Result<HmacHeader, AuthError> {
        fn bad(reason: &'static str) -> AuthError {
            AuthError::BadHmacHeader { reason }
        }
        fn is_ws(b: u8) -> bool {
            b == b' ' || b == b'\t'
        }

        let s = value;
        let b = s.as_bytes();
        let n = b.len();
        let mut i = 0;
        let mut algorithm: Option<String> = None;
        let mut username: Option<String> = None;
        let mut mac: Option<String> = None;

        loop {
            while i < n && (is_ws(b[i]) || b[i] == b',') {
                i += 1;
            }
            if i >= n {
                break;
            }
            // Attribute name, up to '='. All delimiters are ASCII, so slicing is on char
            // boundaries.
            let name_start = i;
            while i < n && b[i] != b'=' && b[i] != b',' {
                i += 1;
            }
            if i >= n || b[i] != b'=' {
                return Err(bad("attribute without a value"));
            }
            let name = s[name_start..i].trim_matches(|c| c == ' ' || c == '\t');
            if name.is_empty() {
                return Err(bad("empty attribute name"));
            }
            i += 1;
            while i < n && is_ws(b[i]) {
                i += 1;
            }
            let val: String = if i < n && b[i] == b'"' {
                i += 1;
                let mut out = Vec::new();
                loop {
                    if i >= n {
                        return Err(bad("unterminated quoted string"));
                    }
                    match b[i] {
                        b'"' => {
                            i += 1;
                            break;
                        }
                        b'\\' => {
                            i += 1;
                            if i >= n {
                                return Err(bad("unterminated quoted string"));
                            }
                            out.push(b[i]);
                            i += 1;
                        }
                        c => {
                            out.push(c);
                            i += 1;
                        }
                    }
                }
                while i < n && is_ws(b[i]) {
                    i += 1;
                }
                if i < n && b[i] != b',' {
                    return Err(bad("unexpected text after a quoted value"));
                }
                String::from_utf8(out).map_err(|_| bad("quoted value is not UTF-8"))?
            } else {
                let start = i;
                while i < n && b[i] != b',' {
                    i += 1;
                }
                s[start..i]
                    .trim_matches(|c| c == ' ' || c == '\t')
                    .to_owned()
            };

            let slot = if name.eq_ignore_ascii_case("algorithm") {
                &mut algorithm
            } else if name.eq_ignore_ascii_case("username") {
                &mut username
            } else if name.eq_ignore_ascii_case("mac") {
                &mut mac
            } else {
                continue;
            };
            if slot.is_some() {
                return Err(bad("repeated attribute"));
            }
            *slot = Some(val);
        }

        if let Some(alg) = &algorithm
            && !alg.eq_ignore_ascii_case("MD5")
        {
            return Err(bad("unsupported algorithm (only MD5)"));
        }
        let username = username.ok_or(bad("missing username"))?;
        let mac = mac.ok_or(bad("missing mac"))?;
        if mac.is_empty() {
            return Err(bad("empty mac"));
        }
        Ok(HmacHeader {
            algorithm,
            username,
            mac,
        })
    }
}

/// Checks a received [`HmacHeader`] for `body` against the expected user, password and the
/// nonce (decoded bytes) we sent in the previous message's NextNonce. The algorithm must be
/// absent or MD5, the user name must match, and the decoded 16-byte MAC is compared in
/// constant time.
pub fn verify_hmac(
    header: &HmacHeader,
    expected_user: &str,
    password: &Password,
    nonce: &[u8],
    body: &[u8],
) -> bool {
    let alg_ok = header
        .algorithm
        .as_deref()
        .is_none_or(|a| a.trim().eq_ignore_ascii_case("MD5"));
    let user_ok = header.username == expected_user;
    let expected = hmac_digest(expected_user, password, nonce, body);
    let mac_ok = match decode_digest(&header.mac) {
        Some(got) => constant_time_eq(&expected, &got),
        None => false,
    };
    alg_ok & user_ok & mac_ok
}

// ---------------------------------------------------------------------------------------------
// Challenges
// ---------------------------------------------------------------------------------------------

/// What a `Chal` carries (with a 401/407 Status, or with 212/200 to hand over the next nonce):
/// Meta `Type`, Meta `Format` `b64`, and `NextNonce`.
///
/// Independent of the message model: the codec copies these fields in and out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme the peer must use.
    pub scheme: AuthScheme,
    /// The nonce to use next (empty for basic, whose Chal carries none).
    pub next_nonce: Nonce,
}

impl Challenge {
    /// A challenge for `scheme` with `next_nonce`.
    pub fn new(scheme: AuthScheme, next_nonce: Nonce) -> Self {
        Challenge { scheme, next_nonce }
    }

    /// The Meta `Type` value.
    pub fn meta_type(&self) -> &'static str {
        self.scheme.meta_type()
    }

    /// The Meta `Format` value: always `b64`.
    pub fn format(&self) -> &'static str {
        FORMAT_B64
    }

    /// The `NextNonce` value (base64), or `None` for basic, whose Chal carries no nonce.
    pub fn next_nonce_b64(&self) -> Option<String> {
        match self.scheme {
            AuthScheme::Basic if self.next_nonce.is_empty() => None,
            _ => Some(self.next_nonce.to_b64()),
        }
    }

    /// Reads a received Chal's Meta. `format` must be absent or `b64`; md5 and MAC need a
    /// `NextNonce`, basic may omit it.
    pub fn from_meta(
        meta_type: &str,
        format: Option<&str>,
        next_nonce: Option<&str>,
    ) -> Result<Challenge, AuthError> {
        let scheme = AuthScheme::from_meta_type(meta_type).ok_or(AuthError::UnsupportedScheme)?;
        if !format_is_b64(format) {
            return Err(AuthError::UnsupportedFormat);
        }
        let next_nonce = match (next_nonce, scheme) {
            (Some(n), _) => Nonce::from_b64(n)?,
            (None, AuthScheme::Basic) => Nonce::default(),
            (None, _) => return Err(AuthError::MissingNonce),
        };
        Ok(Challenge { scheme, next_nonce })
    }
}

// ---------------------------------------------------------------------------------------------
// Server-side credential check
// ---------------------------------------------------------------------------------------------

/// The result of checking a received `Cred`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredOutcome {
    /// The credentials are valid: answer [`session_auth_status`] (212).
    Accepted,
    /// Wrong or malformed credentials: answer 401 ([`STATUS_INVALID_CREDENTIALS`]) with a Chal.
    BadCredentials,
    /// The Meta `Type` is not basic or md5 (`syncml:auth-MAC` is never carried in `Cred`):
    /// answer 401 with a Chal for the scheme we require.
    UnsupportedScheme,
}

/// A received SyncHdr `Cred`, with the `Source/LocName` that names the user for md5.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CredCheck<'a> {
    /// The Cred Meta `Type`.
    pub meta_type: &'a str,
    /// The Cred Meta `Format`, if any (must be absent or `b64`).
    pub format: Option<&'a str>,
    /// The Cred `Data`.
    pub data: &'a str,
    /// The SyncHdr `Source/LocName`, if any. For md5 it is the user name; when present it must
    /// equal the expected user.
    pub loc_name: Option<&'a str>,
}

impl CredCheck<'_> {
    /// Checks the credentials against the account's user, password and (for md5) the nonce
    /// we issued last.
    pub fn check(
        &self,
        expected_user: &str,
        password: &Password,
        expected_nonce: &Nonce,
    ) -> CredOutcome {
        let Some(scheme) = AuthScheme::from_meta_type(self.meta_type) else {
            return CredOutcome::UnsupportedScheme;
        };
        if !format_is_b64(self.format) {
            return CredOutcome::BadCredentials;
        }
        let loc_ok = self.loc_name.is_none_or(|l| l == expected_user);
        let ok = match scheme {
            AuthScheme::Hmac => return CredOutcome::UnsupportedScheme,
            AuthScheme::Basic => match parse_basic(self.data) {
                Ok((user, pass)) => {
                    // Compare digests so that the password's length does not leak either.
                    let user_ok = user == expected_user;
                    let pass_ok = constant_time_eq(
                        &md5_parts(&[pass.expose().as_bytes()]),
                        &md5_parts(&[password.expose().as_bytes()]),
                    );
                    user_ok & pass_ok
                }
                Err(_) => false,
            },
            AuthScheme::Md5 => verify_md5(expected_user, password, expected_nonce, self.data),
        };
        if ok && loc_ok {
            CredOutcome::Accepted
        } else {
            CredOutcome::BadCredentials
        }
    }
}

/// Checks a received `Cred` (Meta Type, Meta Format, Data) against the expected user, password
/// and the nonce we issued. For md5 the user name is not in the Cred: `expected_user` is the
/// account user, which the caller has matched with the SyncHdr `Source/LocName` (use
/// [`CredCheck`] to have that checked here).
pub fn check_cred(
    scheme_meta_type: &str,
    format: Option<&str>,
    data: &str,
    expected_user: &str,
    password: &Password,
    expected_nonce: &Nonce,
) -> CredOutcome {
    CredCheck {
        meta_type: scheme_meta_type,
        format,
        data,
        loc_name: None,
    }
    .check(expected_user, password, expected_nonce)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pw(s: &str) -> Password {
        Password::new(s)
    }

    #[test]
    fn scheme_strings() {
        for s in [AuthScheme::Basic, AuthScheme::Md5, AuthScheme::Hmac] {
            assert_eq!(AuthScheme::from_meta_type(s.meta_type()), Some(s));
            assert_eq!(AuthScheme::from_aauth_type(s.aauth_type()), Some(s));
        }
        assert_eq!(AuthScheme::Hmac.meta_type(), "syncml:auth-MAC");
        assert_eq!(
            AuthScheme::from_meta_type("SYNCML:AUTH-MD5"),
            Some(AuthScheme::Md5)
        );
        assert_eq!(
            AuthScheme::from_meta_type("syncml:auth-mac"),
            Some(AuthScheme::Hmac)
        );
        assert_eq!(AuthScheme::from_meta_type("syncml:auth-X509"), None);
        assert_eq!(AuthScheme::from_aauth_type("digest"), Some(AuthScheme::Md5));
        assert_eq!(AuthScheme::from_aauth_type("HTTP-DIGEST"), None);
        assert_eq!(session_auth_status(AuthScheme::Basic), 212);
        assert_eq!(session_auth_status(AuthScheme::Md5), 212);
        assert_eq!(session_auth_status(AuthScheme::Hmac), 200);
    }

    #[test]
    fn secrets_are_redacted() {
        let p = pw("OhBehave");
        assert_eq!(format!("{p:?}"), "Password(***)");
        let n = Nonce::from_bytes(b"Nonce");
        assert_eq!(format!("{n:?}"), "Nonce(***)");
        let c = Challenge::new(AuthScheme::Md5, n);
        assert!(!format!("{c:?}").contains("Nonce\""));
        assert!(!format!("{c:?}").contains("Tm9uY2U"));
    }

    #[test]
    fn basic_vector() {
        assert_eq!(
            basic_cred("Bruce2", &pw("OhBehave")),
            "QnJ1Y2UyOk9oQmVoYXZl"
        );
        let (u, p) = parse_basic("QnJ1Y2UyOk9oQmVoYXZl").unwrap();
        assert_eq!(u, "Bruce2");
        assert_eq!(p.expose(), "OhBehave");
    }

    #[test]
    fn basic_round_trip_and_errors() {
        let (u, p) = parse_basic(&basic_cred("a", &pw("b:c"))).unwrap();
        assert_eq!((u.as_str(), p.expose()), ("a", "b:c"));
        assert!(matches!(parse_basic("!!!"), Err(AuthError::BadBase64)));
        assert!(matches!(
            parse_basic(&STANDARD.encode("nocolon")),
            Err(AuthError::BadBasicFormat)
        ));
        assert!(matches!(
            parse_basic(&STANDARD.encode([0xff, b':', 0xfe])),
            Err(AuthError::BadBasicFormat)
        ));
    }

    #[test]
    fn md5_vector() {
        let n = Nonce::from_bytes(b"Nonce");
        assert_eq!(
            md5_cred("Bruce2", &pw("OhBehave"), &n),
            "Zz6EivR3yeaaENcRN6lpAQ=="
        );
        assert!(verify_md5(
            "Bruce2",
            &pw("OhBehave"),
            &n,
            "Zz6EivR3yeaaENcRN6lpAQ=="
        ));
        // Padding optional, whitespace ignored.
        assert!(verify_md5(
            "Bruce2",
            &pw("OhBehave"),
            &n,
            " Zz6EivR3yeaaENcRN6lpAQ\n"
        ));
        assert!(!verify_md5(
            "Bruce2",
            &pw("OhBehavf"),
            &n,
            "Zz6EivR3yeaaENcRN6lpAQ=="
        ));
        assert!(!verify_md5(
            "Bruce3",
            &pw("OhBehave"),
            &n,
            "Zz6EivR3yeaaENcRN6lpAQ=="
        ));
        assert!(!verify_md5(
            "Bruce2",
            &pw("OhBehave"),
            &n,
            "Zz6EivR3yeaaENcRN6lp"
        ));
        assert!(!verify_md5("Bruce2", &pw("OhBehave"), &n, "not base64!"));
        // The nonce is hashed as decoded bytes: "Nonce" travels as b64 "Tm9uY2U=".
        let decoded = Nonce::from_b64("Tm9uY2U=").unwrap();
        assert_eq!(decoded, n);
        assert_eq!(
            md5_cred("Bruce2", &pw("OhBehave"), &decoded),
            "Zz6EivR3yeaaENcRN6lpAQ=="
        );
    }

    #[test]
    fn hmac_self_check() {
        assert_eq!(
            hmac_mac("user", &pw("pass"), b"nonce", b"<SyncML/>"),
            "BzE6dDP0ZGNGys1kp3A54Q=="
        );
        let h = HmacHeader::compute("user", &pw("pass"), b"nonce", b"<SyncML/>");
        assert_eq!(
            h.format(),
            "algorithm=MD5, username=\"user\", mac=BzE6dDP0ZGNGys1kp3A54Q=="
        );
        assert!(verify_hmac(&h, "user", &pw("pass"), b"nonce", b"<SyncML/>"));
        assert!(!verify_hmac(
            &h,
            "user",
            &pw("pasS"),
            b"nonce",
            b"<SyncML/>"
        ));
        assert!(!verify_hmac(
            &h,
            "user",
            &pw("pass"),
            b"nonc3",
            b"<SyncML/>"
        ));
        assert!(!verify_hmac(
            &h,
            "user",
            &pw("pass"),
            b"nonce",
            b"<SyncML />"
        ));
        assert!(!verify_hmac(&h, "usr", &pw("pass"), b"nonce", b"<SyncML/>"));
        let mut other_alg = h.clone();
        other_alg.algorithm = Some("SHA1".into());
        assert!(!verify_hmac(
            &other_alg,
            "user",
            &pw("pass"),
            b"nonce",
            b"<SyncML/>"
        ));
        let mut no_alg = h.clone();
        no_alg.algorithm = None;
        assert!(verify_hmac(
            &no_alg,
            "user",
            &pw("pass"),
            b"nonce",
            b"<SyncML/>"
        ));
    }

    #[test]
    fn hmac_header_tolerance() {
        let want = |alg: Option<&str>| HmacHeader {
            algorithm: alg.map(str::to_owned),
            username: "Robert Jordan".into(),
            mac: "NTI2OTJhMDAwNjYxODkwYmQ3NWUxN2RhN2ZmYmJlMzk".into(),
        };
        let spec = "algorithm=MD5, username=\"Robert Jordan\", mac=NTI2OTJhMDAwNjYxODkwYmQ3NWUxN2RhN2ZmYmJlMzk";
        assert_eq!(HmacHeader::parse(spec).unwrap(), want(Some("MD5")));
        let android = "algorithm=MD5,username=\"Robert Jordan\",mac=NTI2OTJhMDAwNjYxODkwYmQ3NWUxN2RhN2ZmYmJlMzk";
        assert_eq!(HmacHeader::parse(android).unwrap(), want(Some("MD5")));
        let shuffled = "  MAC = \"NTI2OTJhMDAwNjYxODkwYmQ3NWUxN2RhN2ZmYmJlMzk\" ,UserName=\"Robert Jordan\" , Algorithm=md5 ,";
        assert_eq!(HmacHeader::parse(shuffled).unwrap(), want(Some("md5")));
        let no_alg =
            "username=\"Robert Jordan\", mac=NTI2OTJhMDAwNjYxODkwYmQ3NWUxN2RhN2ZmYmJlMzk, extra=1";
        assert_eq!(HmacHeader::parse(no_alg).unwrap(), want(None));
        let unquoted = "username=bob,mac=abc==";
        let h = HmacHeader::parse(unquoted).unwrap();
        assert_eq!((h.username.as_str(), h.mac.as_str()), ("bob", "abc=="));
        let escaped = r#"username="a\"b\\c, d", mac=x"#;
        assert_eq!(HmacHeader::parse(escaped).unwrap().username, "a\"b\\c, d");
    }

    #[test]
    fn hmac_header_refusals() {
        for (input, reason) in [
            ("username=\"u\"", "missing mac"),
            ("mac=abc", "missing username"),
            (
                "algorithm=SHA1, username=\"u\", mac=abc",
                "unsupported algorithm (only MD5)",
            ),
            ("username=\"u\", mac=", "empty mac"),
            ("username=\"u, mac=abc", "unterminated quoted string"),
            (
                "username=\"u\" x, mac=abc",
                "unexpected text after a quoted value",
            ),
            (
                "username=\"u\", username=\"v\", mac=abc",
                "repeated attribute",
            ),
            ("username, mac=abc", "attribute without a value"),
            ("=x, username=u, mac=abc", "empty attribute name"),
            ("", "missing username"),
        ] {
            assert_eq!(
                HmacHeader::parse(input),
                Err(AuthError::BadHmacHeader { reason }),
                "{input}"
            );
        }
        // Error messages carry no input.
        let e = HmacHeader::parse("algorithm=SECRETALG, username=\"u\", mac=abc").unwrap_err();
        assert!(!e.to_string().contains("SECRETALG"));
    }

    #[test]
    fn constant_time_eq_is_correct() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"\x00", b"\x80"));
        for i in 0..16 {
            let a = [0u8; 16];
            let mut b = a;
            b[i] = 1;
            assert!(!constant_time_eq(&a, &b));
        }
    }

    #[test]
    fn nonce_encodings() {
        assert_eq!(Nonce::resync().to_b64(), "AAAAAA==");
        assert_eq!(Nonce::resync().as_bytes(), &[0, 0, 0, 0]);
        let [a, b] = Nonce::resync_candidates();
        assert_eq!(a, Nonce::resync());
        assert_eq!(b.as_bytes(), b"0x00000000");
        let r = Nonce::random_from([7; 16]);
        assert_eq!(r.len(), 16);
        assert_eq!(Nonce::from_b64(&r.to_b64()).unwrap(), r);
        assert_eq!(Nonce::from_b64("AAAAAA").unwrap(), Nonce::resync());
        assert_eq!(Nonce::from_b64("*"), Err(AuthError::BadBase64));
    }

    #[test]
    fn challenges() {
        let c = Challenge::new(AuthScheme::Md5, Nonce::from_bytes(b"Nonce"));
        assert_eq!(c.meta_type(), "syncml:auth-md5");
        assert_eq!(c.format(), "b64");
        assert_eq!(c.next_nonce_b64().as_deref(), Some("Tm9uY2U="));
        let back = Challenge::from_meta("syncml:auth-md5", Some("b64"), Some("Tm9uY2U=")).unwrap();
        assert_eq!(back, c);
        let basic = Challenge::from_meta("syncml:auth-basic", None, None).unwrap();
        assert_eq!(basic.next_nonce_b64(), None);
        assert_eq!(
            Challenge::from_meta("syncml:auth-MAC", Some("b64"), None),
            Err(AuthError::MissingNonce)
        );
        assert_eq!(
            Challenge::from_meta("syncml:auth-md5", Some("chr"), Some("AA==")),
            Err(AuthError::UnsupportedFormat)
        );
        assert_eq!(
            Challenge::from_meta("syncml:auth-X509", None, None),
            Err(AuthError::UnsupportedScheme)
        );
    }

    #[test]
    fn server_side_check() {
        let p = pw("OhBehave");
        let n = Nonce::from_bytes(b"Nonce");
        let md5 = "Zz6EivR3yeaaENcRN6lpAQ==";
        let ok = |t, f, d| check_cred(t, f, d, "Bruce2", &p, &n);
        assert_eq!(
            ok("syncml:auth-md5", Some("b64"), md5),
            CredOutcome::Accepted
        );
        assert_eq!(ok("syncml:auth-md5", None, md5), CredOutcome::Accepted);
        assert_eq!(
            ok("syncml:auth-md5", Some("chr"), md5),
            CredOutcome::BadCredentials
        );
        assert_eq!(
            ok("syncml:auth-md5", Some("b64"), "AAAA"),
            CredOutcome::BadCredentials
        );
        let basic = "QnJ1Y2UyOk9oQmVoYXZl";
        assert_eq!(
            ok("syncml:auth-basic", Some("b64"), basic),
            CredOutcome::Accepted
        );
        let wrong = basic_cred("Bruce2", &pw("OhBehav"));
        assert_eq!(
            ok("syncml:auth-basic", Some("b64"), &wrong),
            CredOutcome::BadCredentials
        );
        let wrong_user = basic_cred("Bruce3", &p);
        assert_eq!(
            ok("syncml:auth-basic", Some("b64"), &wrong_user),
            CredOutcome::BadCredentials
        );
        assert_eq!(
            ok("syncml:auth-MAC", Some("b64"), md5),
            CredOutcome::UnsupportedScheme
        );
        assert_eq!(
            ok("syncml:auth-X509", Some("b64"), md5),
            CredOutcome::UnsupportedScheme
        );

        let with_loc = |loc| {
            CredCheck {
                meta_type: "syncml:auth-md5",
                format: Some("b64"),
                data: md5,
                loc_name: Some(loc),
            }
            .check("Bruce2", &p, &n)
        };
        assert_eq!(with_loc("Bruce2"), CredOutcome::Accepted);
        assert_eq!(with_loc("Mallory"), CredOutcome::BadCredentials);
    }

    proptest! {
        #[test]
        fn md5_cred_verifies(user in ".{0,20}", pass in ".{0,20}", nonce in proptest::collection::vec(any::<u8>(), 0..32), flip in any::<char>()) {
            let p = Password::new(pass.clone());
            let n = Nonce::from_bytes(nonce);
            let cred = md5_cred(&user, &p, &n);
            prop_assert!(verify_md5(&user, &p, &n, &cred));
            prop_assert_eq!(check_cred("syncml:auth-md5", Some("b64"), &cred, &user, &p, &n), CredOutcome::Accepted);
            let changed = Password::new(format!("{pass}{flip}"));
            prop_assert!(!verify_md5(&user, &changed, &n, &cred));
        }

        #[test]
        fn hmac_header_round_trip(user in "[^\r\n]{0,20}", pass in ".{0,12}", nonce in proptest::collection::vec(any::<u8>(), 0..16), body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let p = Password::new(pass);
            let h = HmacHeader::compute(&user, &p, &nonce, &body);
            let back = HmacHeader::parse(&h.format()).unwrap();
            prop_assert_eq!(&back, &h);
            prop_assert!(verify_hmac(&back, &user, &p, &nonce, &body));
        }

        #[test]
        fn parsers_never_panic(s in ".{0,64}") {
            let _ = HmacHeader::parse(&s);
            let _ = parse_basic(&s);
            let _ = Nonce::from_b64(&s);
            let _ = verify_md5("u", &Password::new("p"), &Nonce::default(), &s);
            let _ = check_cred(&s, Some(&s), &s, "u", &Password::new("p"), &Nonce::default());
            let _ = Challenge::from_meta(&s, Some("b64"), Some(&s));
        }

        #[test]
        fn hmac_parse_structured_noise(s in "[a-zA-Z=,\" \\\\]{0,40}") {
            let _ = HmacHeader::parse(&s);
        }
    }
}
