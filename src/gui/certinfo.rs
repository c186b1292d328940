//! What the Peers view shows of a certificate: its SHA-256 fingerprint and when it expires
//! (X.509 `notAfter`, read with a small DER walk: the certificate is only displayed, never
//! trusted on the strength of this code).

use rustls::pki_types::CertificateDer;

/// Reads one DER element at the start of `b`: (tag, contents, rest).
fn element(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, mut b) = b.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &x in &b[..n] {
            len = (len << 8) | usize::from(x);
        }
        b = &b[n..];
        len
    };
    if b.len() < len {
        return None;
    }
    Some((tag, &b[..len], &b[len..]))
}

/// The certificate's `notAfter` as Unix milliseconds.
pub fn not_after_ms(der: &[u8]) -> Option<i64> {
    let (_, cert, _) = element(der)?; // Certificate
    let (_, tbs, _) = element(cert)?; // TBSCertificate
    let mut rest = tbs;
    let (tag, _, r) = element(rest)?;
    rest = r;
    if tag == 0xa0 {
        // [0] version
        let (_, _, r) = element(rest)?; // serialNumber
        rest = r;
    }
    let (_, _, r) = element(rest)?; // signature
    let (_, _, r) = element(r)?; // issuer
    let (_, validity, _) = element(r)?;
    let (_, _, r) = element(validity)?; // notBefore
    let (tag, time, _) = element(r)?; // notAfter
    parse_time(tag, std::str::from_utf8(time).ok()?)
}

/// UTCTime (`YYMMDDHHMMSSZ`, tag 0x17) or GeneralizedTime (`YYYYMMDDHHMMSSZ`, tag 0x18).
fn parse_time(tag: u8, s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = s.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, s.get(2..)?)
        }
        0x18 => (s.get(..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    let n = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (month, day, hour, min, sec) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
    Some(days_from_civil(year, month, day) * 86_400_000 + (hour * 3600 + min * 60 + sec) * 1000)
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Fingerprint and expiry of the first certificate in a PEM file's text.
pub fn describe_pem(pem: &[u8]) -> Result<(String, Option<i64>), String> {
    let certs = crate::tls::load_certs(pem).map_err(|e| e.to_string())?;
    let cert = certs
        .first()
        .ok_or_else(|| "the file holds no certificate".to_owned())?;
    Ok(describe(cert))
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
        // Lab certificates are valid for years from now.
        let now = crate::engine::driver::now_ms();
        assert!(ms > now, "{ms} <= {now}");
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(
            parse_time(0x17, "240229120000Z"),
            Some(days_from_civil(2024, 2, 29) * 86_400_000 + 12 * 3_600_000)
        );
    }
}
