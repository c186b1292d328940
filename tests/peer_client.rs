//! The peer client against a real mutual-TLS server on 127.0.0.1, behind a loopback relay
//! that counts the TCP connections: a burst of first messages to a peer opens one connection
//! (HTTP/2 carries the rest), not one with a handshake per message; and after the peer was
//! cut off, the messages again wait for one to get through.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use dmdeleg::engine::peer_client::{Attempt, MESSAGES_PATH, PeerClient};
use dmdeleg::tls::{self, LabPki, PeerTrust};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A loopback relay in front of the peer that counts the connections it forwards, and can be
/// cut (its connections closed, new ones refused) and resumed.
struct Relay {
    url: String,
    forwarded: Arc<AtomicUsize>,
    forwarding: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().unwrap().port()
        );
        let relay = Relay {
            url,
            forwarded: Arc::default(),
            forwarding: Arc::new(AtomicBool::new(true)),
            links: Arc::default(),
        };
        let (forwarded, forwarding, links) = (
            relay.forwarded.clone(),
            relay.forwarding.clone(),
            relay.links.clone(),
        );
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !forwarding.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                forwarded.fetch_add(1, Ordering::SeqCst);
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                links.lock().unwrap().push(link);
            }
        });
        relay
    }

    fn forwarded(&self) -> usize {
        self.forwarded.load(Ordering::SeqCst)
    }

    fn cut(&self) {
        self.forwarding.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn resume(&self) {
        self.forwarding.store(true, Ordering::SeqCst);
    }
}

/// 32 messages at once; each must be accepted.
async fn burst(client: &PeerClient, url: &str) {
    let sends: Vec<_> = (0..32)
        .map(|i| {
            let client = client.clone();
            let url = url.to_owned();
            tokio::spawn(async move { client.post(&url, format!("m{i}").into_bytes()).await })
        })
        .collect();
    for s in sends {
        assert_eq!(s.await.unwrap(), Attempt::Accepted);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_first_messages_opens_one_connection() {
    tls::install_crypto_provider();
    let pki = LabPki::generate("lab CA").unwrap();
    let server = pki
        .issue("dms2.example", &["dms2.example", "127.0.0.1"])
        .unwrap();
    let me = pki.issue("dms1.example", &["dms1.example"]).unwrap();
    let trust = PeerTrust::new(&[pki.ca_cert_der()]).unwrap();
    let config =
        tls::mtls_server_config_with(server.chain(), server.key_der().unwrap(), &trust).unwrap();
    // Slow enough that the burst's messages overlap.
    let router = Router::new().route(
        MESSAGES_PATH,
        post(|| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            StatusCode::ACCEPTED
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handle = tls::serve_tls(listener, config, router).await;
    let relay = Relay::start(handle.local_addr().unwrap()).await;
    let (cert, key) = me.identity_pem();
    let client = PeerClient::new(
        tls::peer_client_builder(&trust, cert, key)
            .unwrap()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
    );

    burst(&client, &relay.url).await;
    assert_eq!(
        relay.forwarded(),
        1,
        "the first burst opened one connection"
    );
    burst(&client, &relay.url).await;
    assert_eq!(relay.forwarded(), 1, "the second burst used it");
    assert_eq!(handle.handshake_failure_count(), 0);

    // The peer is cut off: a message fails, and from then on the messages take turns again,
    // so the burst after the peer is back opens one connection too.
    relay.cut();
    assert!(matches!(
        client.post(&relay.url, b"lost".to_vec()).await,
        Attempt::Failed(_)
    ));
    relay.resume();
    burst(&client, &relay.url).await;
    assert_eq!(
        relay.forwarded(),
        2,
        "one more connection once the peer was back"
    );
}
