//! The DM 1.2 General Package #0: the notification (trigger) a server pushes to wake a device
//! (facts sheet §2.5, gotchas 3–5).
//!
//! Layout, big-endian bits: digest 128 | version 10 | ui-mode 2 | initiator 1 | future-use 27 |
//! sessionid 16 | length-identifier 8 | server-identifier (length bytes) | vendor-specific (rest).
//!
//! The digest is `H( B64(H(server-identifier ":" password)) ":" nonce ":" B64(H(trigger)) )`,
//! H = MD5, where `trigger` is every byte after the digest. The password and nonce are the
//! DMAcc `SRVCRED` `AAuthSecret` and `AAuthData` (decoded). Sans-IO: this module only builds
//! and checks bytes.

use super::auth::{self, Password};

/// The MIME type of a DM 1.2 notification.
pub const MIME: &str = "application/vnd.syncml.notification";

/// The WSP well-known content-type code of [`MIME`] (for WAP Push).
pub const WSP_CONTENT_TYPE: u8 = 0x44;

/// The notification version we send: 11 (`0000001011`, DM 1.2.1 and libdmclient).
pub const VERSION_SENT: u16 = 11;

/// The notification versions we accept: 11, and 12 which some 1.2 texts may give.
pub const VERSIONS_ACCEPTED: [u16; 2] = [11, 12];

/// Length of the digest that opens the message.
pub const DIGEST_LEN: usize = 16;

/// Length of the fixed header after the digest (version … length-identifier).
pub const HEADER_LEN: usize = 8;

/// The largest version value the 10-bit field holds.
const VERSION_MAX: u16 = (1 << 10) - 1;

/// Errors from building, parsing or verifying a Package #0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Pkg0Error {
    /// The input is shorter than digest plus fixed header (24 bytes).
    #[error("notification too short: {len} bytes, at least 24 needed")]
    TooShort {
        /// The input length.
        len: usize,
    },
    /// The length-identifier points past the end of the input.
    #[error("server identifier of {declared} bytes runs past the end ({available} bytes left)")]
    ServerIdBeyondInput {
        /// The length the header declares.
        declared: usize,
        /// The bytes left after the header.
        available: usize,
    },
    /// The version field is neither 11 nor 12.
    #[error("unsupported notification version {version} (11 or 12 accepted)")]
    UnsupportedVersion {
        /// The version found.
        version: u16,
    },
    /// The server identifier is not UTF-8.
    #[error("server identifier is not UTF-8")]
    ServerIdNotUtf8,
    /// The server identifier is longer than the 8-bit length field allows.
    #[error("server identifier is {len} bytes, at most 255 allowed")]
    ServerIdTooLong {
        /// The identifier's length in bytes.
        len: usize,
    },
    /// The version does not fit the 10-bit field.
    #[error("version {version} does not fit in 10 bits")]
    VersionOutOfRange {
        /// The version given.
        version: u16,
    },
    /// The digest matches none of the nonce candidates.
    #[error("notification digest does not match")]
    BadDigest,
}

/// The ui-mode field: what the device should show the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UiMode {
    /// 0: not specified.
    NotSpecified,
    /// 1: run in the background.
    Background,
    /// 2: inform the user.
    Informative,
    /// 3: ask the user.
    UserInteraction,
}

impl UiMode {
    /// The 2-bit wire value.
    pub fn bits(self) -> u8 {
        match self {
            UiMode::NotSpecified => 0,
            UiMode::Background => 1,
            UiMode::Informative => 2,
            UiMode::UserInteraction => 3,
        }
    }

    /// The mode for a wire value; only the low two bits are read.
    pub fn from_bits(bits: u8) -> Self {
        match bits & 0b11 {
            0 => UiMode::NotSpecified,
            1 => UiMode::Background,
            2 => UiMode::Informative,
            _ => UiMode::UserInteraction,
        }
    }
}

/// The initiator field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Initiator {
    /// 0: the client or its user.
    Client,
    /// 1: the server.
    Server,
}

impl Initiator {
    /// The 1-bit wire value.
    pub fn bit(self) -> u8 {
        match self {
            Initiator::Client => 0,
            Initiator::Server => 1,
        }
    }

    /// The initiator for a wire value; only the low bit is read.
    pub fn from_bit(bit: u8) -> Self {
        if bit & 1 == 0 {
            Initiator::Client
        } else {
            Initiator::Server
        }
    }
}

/// The fields of a Package #0 after the digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trigger {
    /// The notification version ×10 (10-bit field); we send 11.
    pub version: u16,
    /// What the device should show the user.
    pub ui_mode: UiMode,
    /// Who initiated the session.
    pub initiator: Initiator,
    /// The session id; the SyncHdr `SessionID` must carry it (see [`session_id_text`]).
    pub session_id: u16,
    /// The server identifier (DMAcc `ServerID`), at most 255 bytes.
    pub server_id: String,
    /// The optional vendor-specific trigger body.
    pub vendor: Vec<u8>,
}

impl Trigger {
    /// The trigger we send: version 11, background, initiated by the server, no vendor body.
    pub fn new(session_id: u16, server_id: impl Into<String>) -> Self {
        Trigger {
            version: VERSION_SENT,
            ui_mode: UiMode::Background,
            initiator: Initiator::Server,
            session_id,
            server_id: server_id.into(),
            vendor: Vec::new(),
        }
    }

    /// Everything after the digest: fixed header, server id, vendor body. Fails if the server
    /// id exceeds 255 bytes or the version 10 bits. Any version that fits is written, so a
    /// test can build a message a verifier must refuse.
    pub fn trigger_bytes(&self) -> Result<Vec<u8>, Pkg0Error> {
        if self.version > VERSION_MAX {
            return Err(Pkg0Error::VersionOutOfRange {
                version: self.version,
            });
        }
        let id = self.server_id.as_bytes();
        let id_len =
            u8::try_from(id.len()).map_err(|_| Pkg0Error::ServerIdTooLong { len: id.len() })?;
        let header: u64 = (u64::from(self.version) << 54)
            | (u64::from(self.ui_mode.bits()) << 52)
            | (u64::from(self.initiator.bit()) << 51)
            | (u64::from(self.session_id) << 8)
            | u64::from(id_len);
        let mut out = Vec::with_capacity(HEADER_LEN + id.len() + self.vendor.len());
        out.extend_from_slice(&header.to_be_bytes());
        out.extend_from_slice(id);
        out.extend_from_slice(&self.vendor);
        Ok(out)
    }

    /// The whole message: the 16-byte raw digest, then [`Trigger::trigger_bytes`].
    ///
    /// `server_id_for_digest` is the name in the digest's first part: the server id (Android
    /// checks with the id from the trigger) or the `SRVCRED` `AAuthName` (libdmclient). Keep
    /// them equal for interoperability. `nonce` is the decoded `SRVCRED` `AAuthData`.
    pub fn encode(
        &self,
        server_id_for_digest: &str,
        password: &Password,
        nonce: &[u8],
    ) -> Result<Vec<u8>, Pkg0Error> {
        let trigger = self.trigger_bytes()?;
        let d = digest(server_id_for_digest, password, nonce, &trigger);
        let mut out = Vec::with_capacity(DIGEST_LEN + trigger.len());
        out.extend_from_slice(&d);
        out.extend_from_slice(&trigger);
        Ok(out)
    }
}

/// The Package #0 digest over `trigger` (every byte after the digest):
/// `H( B64(H(server_id ":" password)) ":" nonce ":" B64(H(trigger)) )`.
pub fn digest(server_id: &str, password: &Password, nonce: &[u8], trigger: &[u8]) -> [u8; 16] {
    auth::hmac_digest(server_id, password, nonce, trigger)
}

/// Parses the structure of a Package #0 without checking the digest, which is returned raw.
///
/// Refuses input shorter than 24 bytes, a version other than 11 or 12, a length-identifier
/// past the end of the input and a server id that is not UTF-8. The future-use bits are
/// ignored.
pub fn parse(bytes: &[u8]) -> Result<(Trigger, [u8; 16]), Pkg0Error> {
    let too_short = || Pkg0Error::TooShort { len: bytes.len() };
    let (digest_part, rest) = bytes.split_at_checked(DIGEST_LEN).ok_or_else(too_short)?;
    let (header_part, body) = rest.split_at_checked(HEADER_LEN).ok_or_else(too_short)?;
    let digest: [u8; 16] = digest_part.try_into().map_err(|_| too_short())?;
    let header_arr: [u8; 8] = header_part.try_into().map_err(|_| too_short())?;
    let header = u64::from_be_bytes(header_arr);

    // Each field is masked to its width before narrowing, so the casts are lossless.
    let version = ((header >> 54) & u64::from(VERSION_MAX)) as u16;
    if !VERSIONS_ACCEPTED.contains(&version) {
        return Err(Pkg0Error::UnsupportedVersion { version });
    }
    let ui_mode = UiMode::from_bits(((header >> 52) & 0b11) as u8);
    let initiator = Initiator::from_bit(((header >> 51) & 1) as u8);
    let session_id = ((header >> 8) & 0xFFFF) as u16;
    let id_len = (header & 0xFF) as usize;

    let (id, vendor) = body
        .split_at_checked(id_len)
        .ok_or(Pkg0Error::ServerIdBeyondInput {
            declared: id_len,
            available: body.len(),
        })?;
    let server_id = std::str::from_utf8(id)
        .map_err(|_| Pkg0Error::ServerIdNotUtf8)?
        .to_owned();

    Ok((
        Trigger {
            version,
            ui_mode,
            initiator,
            session_id,
            server_id,
            vendor: vendor.to_vec(),
        },
        digest,
    ))
}

/// Parses a Package #0 and checks its digest the Android way: the digest's name part is the
/// server id from the trigger. Each nonce candidate (decoded bytes) is tried in order; pass the
/// stored `SRVCRED` nonce first, then the resync nonces
/// ([`auth::Nonce::resync_candidates`]). Returns the trigger and the index of the candidate
/// that matched; none matching gives [`Pkg0Error::BadDigest`].
pub fn verify(
    bytes: &[u8],
    password: &Password,
    nonce_candidates: &[&[u8]],
) -> Result<(Trigger, usize), Pkg0Error> {
    verify_inner(bytes, None, password, nonce_candidates)
}

/// Like [`verify`], but with an explicit name in the digest's first part (libdmclient uses
/// the `SRVCRED` `AAuthName` rather than the server id from the trigger).
pub fn verify_with_digest_name(
    bytes: &[u8],
    digest_name: &str,
    password: &Password,
    nonce_candidates: &[&[u8]],
) -> Result<(Trigger, usize), Pkg0Error> {
    verify_inner(bytes, Some(digest_name), password, nonce_candidates)
}

fn verify_inner(
    bytes: &[u8],
    digest_name: Option<&str>,
    password: &Password,
    nonce_candidates: &[&[u8]],
) -> Result<(Trigger, usize), Pkg0Error> {
    let (trigger, got) = parse(bytes)?;
    let body = bytes.get(DIGEST_LEN..).unwrap_or_default();
    let name = digest_name.unwrap_or(&trigger.server_id);
    let matched = nonce_candidates
        .iter()
        .position(|nonce| auth::constant_time_eq(&digest(name, password, nonce, body), &got));
    match matched {
        Some(i) => Ok((trigger, i)),
        None => Err(Pkg0Error::BadDigest),
    }
}

/// The SyncHdr `SessionID` text for a trigger session id: upper-case hex without leading
/// zeros (`0` for zero).
pub fn session_id_text(id: u16) -> String {
    format!("{id:X}")
}

/// Reads a `SessionID` written as 1–4 hex digits (either case, leading zeros tolerated), for
/// comparison with a trigger's session id. Anything else gives `None`.
pub fn parse_session_id_text(s: &str) -> Option<u16> {
    let s = s.trim();
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syncml::auth::Nonce;
    use proptest::prelude::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn example() -> Trigger {
        Trigger {
            version: 11,
            ui_mode: UiMode::NotSpecified,
            initiator: Initiator::Server,
            session_id: 0x0001,
            server_id: "srv1".into(),
            vendor: Vec::new(),
        }
    }

    #[test]
    fn facts_sheet_example() {
        let t = example();
        assert_eq!(hex(&t.trigger_bytes().unwrap()), "02c800000000010473727631");
        let msg = t.encode("srv1", &Password::new("srvpwd"), &[0; 4]).unwrap();
        assert_eq!(hex(&msg[..16]), "dae5898ef363b771364b57ad705f79db");
        assert_eq!(hex(&msg[16..]), "02c800000000010473727631");
        let (back, d) = parse(&msg).unwrap();
        assert_eq!(back, t);
        assert_eq!(hex(&d), "dae5898ef363b771364b57ad705f79db");
        let (back, i) = verify(&msg, &Password::new("srvpwd"), &[&[0; 4]]).unwrap();
        assert_eq!((back, i), (t, 0));
    }

    #[test]
    fn new_defaults() {
        let t = Trigger::new(0xBEEF, "srv");
        assert_eq!(t.version, 11);
        assert_eq!(t.ui_mode, UiMode::Background);
        assert_eq!(t.initiator, Initiator::Server);
        assert!(t.vendor.is_empty());
        assert_eq!(MIME, "application/vnd.syncml.notification");
    }

    #[test]
    fn versions() {
        let pw = Password::new("p");
        for (v, ok) in [
            (10, false),
            (11, true),
            (12, true),
            (13, false),
            (0, false),
            (1023, false),
        ] {
            let mut t = example();
            t.version = v;
            let msg = t.encode("srv1", &pw, b"n").unwrap();
            match parse(&msg) {
                Ok((back, _)) => {
                    assert!(ok, "{v}");
                    assert_eq!(back.version, v);
                }
                Err(e) => {
                    assert!(!ok, "{v}");
                    assert_eq!(e, Pkg0Error::UnsupportedVersion { version: v });
                    assert!(e.to_string().contains(&v.to_string()));
                }
            }
            assert_eq!(verify(&msg, &pw, &[b"n"]).is_ok(), ok);
        }
        let mut t = example();
        t.version = 1024;
        assert_eq!(
            t.trigger_bytes(),
            Err(Pkg0Error::VersionOutOfRange { version: 1024 })
        );
    }

    #[test]
    fn all_fields_round_trip() {
        let t = Trigger {
            version: 12,
            ui_mode: UiMode::UserInteraction,
            initiator: Initiator::Client,
            session_id: 0xFFFF,
            server_id: "ser\u{e9}ver".into(),
            vendor: vec![1, 2, 3, 0xff],
        };
        let msg = t.encode("x", &Password::new("p"), b"").unwrap();
        assert_eq!(parse(&msg).unwrap().0, t);
        for m in [
            UiMode::NotSpecified,
            UiMode::Background,
            UiMode::Informative,
            UiMode::UserInteraction,
        ] {
            assert_eq!(UiMode::from_bits(m.bits()), m);
        }
    }

    #[test]
    fn bad_digest_refused() {
        let pw = Password::new("srvpwd");
        let mut msg = example().encode("srv1", &pw, &[0; 4]).unwrap();
        assert_eq!(
            verify(&msg, &Password::new("other"), &[&[0; 4]]),
            Err(Pkg0Error::BadDigest)
        );
        assert_eq!(verify(&msg, &pw, &[b"stored"]), Err(Pkg0Error::BadDigest));
        assert_eq!(verify(&msg, &pw, &[]), Err(Pkg0Error::BadDigest));
        // A tampered trigger byte (session id) breaks the digest.
        msg[22] ^= 1;
        assert_eq!(verify(&msg, &pw, &[&[0; 4]]), Err(Pkg0Error::BadDigest));
        // A tampered digest byte, too.
        let mut msg = example().encode("srv1", &pw, &[0; 4]).unwrap();
        msg[0] ^= 0x80;
        assert_eq!(verify(&msg, &pw, &[&[0; 4]]), Err(Pkg0Error::BadDigest));
    }

    #[test]
    fn resync_nonce_accepted_as_later_candidate() {
        let pw = Password::new("srvpwd");
        let stored = Nonce::from_bytes(b"stored-nonce");
        let [ours, libdm] = Nonce::resync_candidates();
        let cands: [&[u8]; 3] = [stored.as_bytes(), ours.as_bytes(), libdm.as_bytes()];

        let msg = example().encode("srv1", &pw, ours.as_bytes()).unwrap();
        assert_eq!(verify(&msg, &pw, &cands).unwrap().1, 1);
        let msg = example().encode("srv1", &pw, libdm.as_bytes()).unwrap();
        assert_eq!(verify(&msg, &pw, &cands).unwrap().1, 2);
        let msg = example().encode("srv1", &pw, stored.as_bytes()).unwrap();
        assert_eq!(verify(&msg, &pw, &cands).unwrap().1, 0);
    }

    #[test]
    fn digest_name_variant() {
        let pw = Password::new("srvpwd");
        let msg = example().encode("acct-name", &pw, b"n").unwrap();
        assert_eq!(verify(&msg, &pw, &[b"n"]), Err(Pkg0Error::BadDigest));
        assert_eq!(
            verify_with_digest_name(&msg, "acct-name", &pw, &[b"n"])
                .unwrap()
                .1,
            0
        );
    }

    #[test]
    fn structural_refusals() {
        let msg = example().encode("srv1", &Password::new("p"), b"n").unwrap();
        for cut in 0..24 {
            assert_eq!(parse(&msg[..cut]), Err(Pkg0Error::TooShort { len: cut }));
        }
        for cut in 24..msg.len() {
            assert_eq!(
                parse(&msg[..cut]),
                Err(Pkg0Error::ServerIdBeyondInput {
                    declared: 4,
                    available: cut - 24
                })
            );
            assert!(verify(&msg[..cut], &Password::new("p"), &[b"n"]).is_err());
        }
        let mut bad = msg.clone();
        bad[24] = 0xff;
        assert_eq!(parse(&bad), Err(Pkg0Error::ServerIdNotUtf8));

        let long = Trigger::new(1, "x".repeat(256));
        assert_eq!(
            long.trigger_bytes(),
            Err(Pkg0Error::ServerIdTooLong { len: 256 })
        );
        assert!(Trigger::new(1, "x".repeat(255)).trigger_bytes().is_ok());
    }

    #[test]
    fn session_id_mapping() {
        assert_eq!(session_id_text(0), "0");
        assert_eq!(session_id_text(1), "1");
        assert_eq!(session_id_text(0x0ABC), "ABC");
        assert_eq!(session_id_text(0xFFFF), "FFFF");
        assert_eq!(parse_session_id_text("ABC"), Some(0xABC));
        assert_eq!(parse_session_id_text("abc"), Some(0xABC));
        assert_eq!(parse_session_id_text("0001"), Some(1));
        for bad in ["", "10000", "+1", "-1", "G", "0x1", "1 2"] {
            assert_eq!(parse_session_id_text(bad), None, "{bad}");
        }
    }

    fn ui_mode() -> impl Strategy<Value = UiMode> {
        (0u8..4).prop_map(UiMode::from_bits)
    }

    proptest! {
        #[test]
        fn encode_verify_round_trip(
            version in 11u16..=12,
            ui in ui_mode(),
            init in any::<bool>(),
            session in any::<u16>(),
            server_id in "\\PC{0,60}".prop_filter("<=255 bytes", |s| s.len() <= 255),
            vendor in proptest::collection::vec(any::<u8>(), 0..64),
            pass in ".{0,16}",
            nonce in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let t = Trigger {
                version,
                ui_mode: ui,
                initiator: if init { Initiator::Server } else { Initiator::Client },
                session_id: session,
                server_id: server_id.clone(),
                vendor,
            };
            let pw = Password::new(pass);
            let msg = t.encode(&server_id, &pw, &nonce).unwrap();
            let resync = Nonce::resync();
            let cands: [&[u8]; 2] = [resync.as_bytes(), &nonce];
            let (back, i) = verify(&msg, &pw, &cands).unwrap();
            prop_assert_eq!(back, t);
            prop_assert!(i == 1 || nonce == [0u8; 4]);
            prop_assert_eq!(parse_session_id_text(&session_id_text(session)), Some(session));
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&bytes);
            let _ = verify(&bytes, &Password::new("p"), &[b"", &[0; 4]]);
        }

        #[test]
        fn parse_never_panics_near_valid(mut bytes in proptest::collection::vec(any::<u8>(), 24..64), v in 11u16..=12) {
            // Force an accepted version so the length and UTF-8 paths are exercised.
            bytes[16] = (v >> 2) as u8;
            bytes[17] = (bytes[17] & 0x3f) | (((v & 0b11) as u8) << 6);
            let _ = parse(&bytes);
        }

        #[test]
        fn session_text_parse_never_panics(s in ".{0,8}") {
            let _ = parse_session_id_text(&s);
        }
    }
}
