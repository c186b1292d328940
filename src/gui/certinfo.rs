//! What the Peers view shows of a certificate: its SHA-256 fingerprint and when it expires
//! (X.509 `notAfter`, read with [`crate::tls::cert_validity_ms`]'s small DER walk: the
//! certificate is only displayed, never trusted on the strength of this code).

use rustls::pki_types::CertificateDer;

/// The certificate's `notAfter` as Unix milliseconds.
pub fn not_after_ms(der: &[u8]) -> Option<i64> {
    crate::tls::cert_validity_ms(der).map(|(_, after)| after)
}

/// Fingerprint and expiry of a certificate.
pub fn describe(cert: &CertificateDer<'_>) -> (String, Option<i64>) {
    (
        crate::tls::cert_fingerprint_sha256(cert),
        not_after_ms(cert.as_ref()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_not_after_of_a_generated_certificate() {
        let pki = crate::tls::LabPki::generate("test CA").unwrap();
        let issued = pki.issue("dms2.example", &["dms2.example"]).unwrap();
        let ms = not_after_ms(issued.chain()[0].as_ref()).expect("notAfter");
        // Lab certificates are valid for about a year from yesterday.
        let now = crate::engine::driver::now_ms();
        assert!(ms > now, "{ms} <= {now}");
        assert!(ms < now + 400 * 86_400_000, "{ms}");
    }
}
