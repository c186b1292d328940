//! The TLS plumbing over real sockets on 127.0.0.1 with certificates generated here: the device
//! endpoint (server certificate only), the peer endpoint (mutual TLS 1.3), and `certs init`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::Extension;
use axum::routing::get;
use dmdeleg::tls::{
    self, LabPki, PeerCertificates, TlsError, TlsServerHandle, cert_fingerprint_sha256,
    cert_is_valid_for_name,
};
use tokio::net::TcpListener;

async fn start(
    config: std::sync::Arc<rustls::ServerConfig>,
    router: Router,
) -> (TlsServerHandle, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let handle = tls::serve_tls(listener, config, router).await;
    let addr = handle.local_addr().expect("local address");
    (handle, format!("https://127.0.0.1:{}", addr.port()))
}

/// Waits until the server has counted `n` handshake failures (they are counted by the server's
/// task, possibly just after the client saw its error).
async fn wait_failures(handle: &TlsServerHandle, n: u64) {
    for _ in 0..200 {
        if handle.handshake_failures.load(Ordering::Relaxed) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "expected {n} handshake failures, saw {} (last: {:?})",
        handle.handshake_failure_count(),
        handle.last_handshake_failure()
    );
}

#[tokio::test]
async fn device_endpoint_https() {
    tls::install_crypto_provider();
    let pki = LabPki::generate("lab CA").unwrap();
    let server = pki
        .issue("dms1.example", &["dms1.example", "127.0.0.1"])
        .unwrap();
    let config = tls::server_config(server.chain(), server.key_der().unwrap()).unwrap();
    let router = Router::new().route("/", get(|| async { "ok" }));
    let (handle, url) = start(config, router).await;

    let client = tls::reqwest_client(&[pki.ca_cert_der()], None).unwrap();
    let resp = client
        .get(&url)
        .send()
        .await
        .expect("request to trusted server");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "ok");

    // HTTP/1.1 only works as well (the server speaks both).
    let h1 = tls::reqwest_client_builder(&[pki.ca_cert_der()], None)
        .unwrap()
        .http1_only()
        .build()
        .unwrap();
    let resp = h1.get(&url).send().await.expect("HTTP/1.1 request");
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.text().await.unwrap(), "ok");

    // A client that trusts another CA refuses the server.
    let other = LabPki::generate("other CA").unwrap();
    let stranger = tls::reqwest_client(&[other.ca_cert_der()], None).unwrap();
    assert!(stranger.get(&url).send().await.is_err());
    wait_failures(&handle, 1).await;
    assert_eq!(
        handle.last_handshake_failure().as_deref(),
        Some("the client does not trust our certificate")
    );

    // A name the certificate does not carry is refused too.
    let by_name = format!("https://localhost:{}", handle.local_addr().unwrap().port());
    assert!(client.get(&by_name).send().await.is_err());
}

#[tokio::test]
async fn peer_endpoint_mutual_tls() {
    tls::install_crypto_provider();
    let pki = LabPki::generate("lab CA").unwrap();
    let server = pki
        .issue("dms1.example", &["dms1.example", "127.0.0.1"])
        .unwrap();
    let peer = pki.issue("dms2.example", &["dms2.example"]).unwrap();
    let config = tls::mtls_server_config(
        server.chain(),
        server.key_der().unwrap(),
        &[pki.ca_cert_der()],
    )
    .unwrap();
    let router = Router::new().route(
        "/whoami",
        get(|Extension(certs): Extension<PeerCertificates>| async move {
            let leaf = certs.leaf().expect("a leaf certificate");
            let name = if cert_is_valid_for_name(leaf, "dms2.example") {
                "dms2.example"
            } else {
                "someone else"
            };
            format!("{name} {}", cert_fingerprint_sha256(leaf))
        }),
    );
    let (handle, url) = start(config, router).await;
    let url = format!("{url}/whoami");

    // With a client certificate from the configured CA: accepted, and the handler sees it.
    let client = tls::reqwest_client(&[pki.ca_cert_der()], Some(peer.identity_pem())).unwrap();
    for _ in 0..2 {
        let resp = client.get(&url).send().await.expect("mutual TLS request");
        assert_eq!(resp.status(), 200);
        let body = resp.text().await.unwrap();
        assert_eq!(
            body,
            format!("dms2.example {}", cert_fingerprint_sha256(&peer.cert_der))
        );
    }
    assert_eq!(handle.handshake_failure_count(), 0);

    // Without a client certificate: refused, and the server says why.
    let anonymous = tls::reqwest_client(&[pki.ca_cert_der()], None).unwrap();
    assert!(anonymous.get(&url).send().await.is_err());
    wait_failures(&handle, 1).await;
    assert_eq!(
        handle.last_handshake_failure().as_deref(),
        Some("client sent no certificate")
    );

    // With a client certificate from an unknown CA: refused.
    let rogue_ca = LabPki::generate("rogue CA").unwrap();
    let rogue = rogue_ca.issue("dms2.example", &["dms2.example"]).unwrap();
    let impostor = tls::reqwest_client(&[pki.ca_cert_der()], Some(rogue.identity_pem())).unwrap();
    assert!(impostor.get(&url).send().await.is_err());
    wait_failures(&handle, 2).await;
    assert_eq!(
        handle.last_handshake_failure().as_deref(),
        Some("client certificate is not issued by a trusted authority")
    );

    // A client limited to TLS 1.2, even with a good certificate: refused (TLS 1.3 only).
    let old = tls::reqwest_client_builder(&[pki.ca_cert_der()], Some(peer.identity_pem()))
        .unwrap()
        .tls_version_max(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    assert!(old.get(&url).send().await.is_err());
    wait_failures(&handle, 3).await;
    assert_eq!(
        handle.last_handshake_failure().as_deref(),
        Some("the client does not offer a TLS version we accept")
    );

    // The first client still works afterwards.
    let resp = client
        .get(&url)
        .send()
        .await
        .expect("request after failures");
    assert_eq!(resp.status(), 200);

    // Dropping the handle stops the server.
    drop(handle);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let fresh = tls::reqwest_client(&[pki.ca_cert_der()], Some(peer.identity_pem())).unwrap();
    assert!(fresh.get(&url).send().await.is_err());
}

#[test]
fn mtls_config_needs_roots() {
    let pki = LabPki::generate("lab CA").unwrap();
    let server = pki.issue("dms1.example", &[]).unwrap();
    let err = tls::mtls_server_config(server.chain(), server.key_der().unwrap(), &[]).unwrap_err();
    assert!(matches!(err, TlsError::NoRoots), "{err}");
    let err = tls::reqwest_client(&[], None).unwrap_err();
    assert!(matches!(err, TlsError::NoRoots), "{err}");
    let err = tls::reqwest_client(&[pki.ca_cert_der()], Some((b"junk", b"junk"))).unwrap_err();
    assert!(err.to_string().contains("no certificate found"), "{err}");
}

#[test]
fn init_dir_writes_private_keys_and_refuses_to_overwrite() {
    let dir = std::env::temp_dir().join(format!("dmdeleg-tls-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let written = tls::init_dir(&dir, &["dms1.example", "dms2.example"]).unwrap();
    let names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "ca.pem",
            "ca.key",
            "dms1.example.pem",
            "dms1.example.key",
            "dms2.example.pem",
            "dms2.example.key"
        ]
    );

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for path in &written {
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            if path.extension().is_some_and(|e| e == "key") {
                assert_eq!(mode, 0o600, "{}", path.display());
            } else {
                assert_eq!(mode & 0o077 & !0o044, 0, "{}", path.display());
            }
        }
    }

    // The files load, and the leaf chains to the CA with the names promised.
    let ca = tls::load_certs_file(&dir.join("ca.pem")).unwrap();
    assert_eq!(ca.len(), 1);
    let leaf = tls::load_certs_file(&dir.join("dms1.example.pem")).unwrap();
    tls::load_key_file(&dir.join("dms1.example.key")).unwrap();
    tls::load_key_file(&dir.join("ca.key")).unwrap();
    for name in ["dms1.example", "localhost", "127.0.0.1", "::1"] {
        assert!(cert_is_valid_for_name(&leaf[0], name), "{name}");
    }
    let key = tls::load_key_file(&dir.join("dms1.example.key")).unwrap();
    tls::mtls_server_config(leaf, key, &ca).unwrap();

    // A second run refuses and leaves the files alone.
    let before = std::fs::read(dir.join("ca.pem")).unwrap();
    let err = tls::init_dir(&dir, &["dms1.example"]).unwrap_err();
    assert!(matches!(err, TlsError::AlreadyExists(_)), "{err}");
    assert!(err.to_string().contains("ca.pem"), "{err}");
    assert_eq!(std::fs::read(dir.join("ca.pem")).unwrap(), before);
    // Even when only one of the files is in the way, nothing new is written.
    let err = tls::init_dir(&dir, &["dms3.example", "dms1.example"]).unwrap_err();
    assert!(matches!(err, TlsError::AlreadyExists(_)), "{err}");
    assert!(!dir.join("dms3.example.pem").exists());

    assert!(matches!(
        tls::init_dir(&dir, &["../x"]),
        Err(TlsError::BadName(_))
    ));
    assert!(matches!(
        tls::init_dir(&dir, &["ca"]),
        Err(TlsError::BadName(_))
    ));

    // Errors while loading name the file.
    let err = tls::load_key_file(&dir.join("ca.pem")).unwrap_err();
    assert!(err.to_string().contains("ca.pem"), "{err}");
    assert!(matches!(err, TlsError::NoPrivateKey(_)), "{err}");

    std::fs::remove_dir_all(&dir).unwrap();
}
