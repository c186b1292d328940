//! Credentials as both ends of a session use them: each side proves itself with its own
//! name, secret and the nonce the other side issued, and checks the other side the same way
//! (OMA DM 1.2 security: client and server authenticate each other).

use crate::syncml::auth::{
    self, AuthScheme, Challenge, HmacHeader, Nonce, Password, basic_cred, md5_cred, parse_basic,
    verify_hmac, verify_md5,
};
use crate::syncml::message::{Chal, Cred, Meta, SyncHdr};

/// One side's identity: the scheme, its name and its secret.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// How this side authenticates.
    pub scheme: AuthScheme,
    /// Its user or server name (AAuthName).
    pub name: String,
    /// Its secret (AAuthSecret).
    pub secret: Password,
}

/// The result of checking the other side's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Valid.
    Accepted,
    /// None were sent: answer 407 with a challenge.
    Missing,
    /// Wrong: answer 401 with a challenge.
    Invalid,
}

impl Credentials {
    /// The `Cred` element proving this side with `nonce` (none for HMAC, which uses a header).
    pub fn cred(&self, nonce: &Nonce) -> Option<Cred> {
        let (format, data) = match self.scheme {
            AuthScheme::Basic => ("b64", basic_cred(&self.name, &self.secret)),
            AuthScheme::Md5 => ("b64", md5_cred(&self.name, &self.secret, nonce)),
            AuthScheme::Hmac => return None,
        };
        Some(Cred {
            meta: Meta {
                format: Some(format.to_owned()),
                ty: Some(self.scheme.meta_type().to_owned()),
                ..Meta::default()
            },
            data,
        })
    }

    /// The `x-syncml-hmac` header value for `body`, when the scheme is HMAC.
    pub fn hmac_header(&self, nonce: &Nonce, body: &[u8]) -> Option<String> {
        (self.scheme == AuthScheme::Hmac)
            .then(|| HmacHeader::compute(&self.name, &self.secret, nonce.as_bytes(), body).format())
    }

    /// Checks the other side's proof: `hdr.cred` for basic and md5, the HMAC header for HMAC.
    /// `self` holds the credentials the other side must present.
    pub fn verify(&self, nonce: &Nonce, hdr: &SyncHdr, hmac: Option<&str>, body: &[u8]) -> Verdict {
        match self.scheme {
            AuthScheme::Hmac => {
                let Some(value) = hmac else {
                    return Verdict::Missing;
                };
                match HmacHeader::parse(value) {
                    Ok(h) if verify_hmac(&h, &self.name, &self.secret, nonce.as_bytes(), body) => {
                        Verdict::Accepted
                    }
                    _ => Verdict::Invalid,
                }
            }
            AuthScheme::Basic | AuthScheme::Md5 => {
                let Some(cred) = &hdr.cred else {
                    return Verdict::Missing;
                };
                let scheme = cred.meta.ty.as_deref().and_then(AuthScheme::from_meta_type);
                // A LocName, when sent, must name the expected user.
                if hdr
                    .source
                    .loc_name
                    .as_deref()
                    .is_some_and(|n| n != self.name && self.scheme == AuthScheme::Md5)
                {
                    return Verdict::Invalid;
                }
                let ok = match scheme {
                    Some(AuthScheme::Basic) if self.scheme == AuthScheme::Basic => {
                        match parse_basic(&cred.data) {
                            Ok((user, pass)) => {
                                user == self.name
                                    && auth::constant_time_eq(
                                        pass.expose().as_bytes(),
                                        self.secret.expose().as_bytes(),
                                    )
                            }
                            Err(_) => false,
                        }
                    }
                    Some(AuthScheme::Md5) if self.scheme == AuthScheme::Md5 => {
                        verify_md5(&self.name, &self.secret, nonce, &cred.data)
                    }
                    _ => false,
                };
                if ok {
                    Verdict::Accepted
                } else {
                    Verdict::Invalid
                }
            }
        }
    }

    /// A challenge for this scheme with a fresh nonce.
    pub fn challenge(&self, fresh: [u8; 16]) -> (Chal, Nonce) {
        let nonce = Nonce::random_from(fresh);
        let ch = Challenge::new(self.scheme, nonce.clone());
        let chal = Chal {
            meta: Meta {
                ty: Some(ch.meta_type().to_owned()),
                format: Some(ch.format().to_owned()),
                next_nonce: Some(nonce.to_b64()),
                ..Meta::default()
            },
        };
        (chal, nonce)
    }
}

/// The nonce a `Chal` carries, if any and well-formed.
pub fn chal_nonce(chal: Option<&Chal>) -> Option<Nonce> {
    let text = chal?.meta.next_nonce.as_deref()?;
    Nonce::from_b64(text).ok()
}
