//! The bootstrap endpoint of the Delegated server over real loopback HTTP and HTTPS: a token
//! serves its account to its device once, before its expiry, and every other request gets the
//! same empty 403. Simulated devices follow a `./BootConfig` entry, install the account with
//! its ACL, and (in a fleet) call the new server at once.

use std::sync::{Arc, Mutex};

use dmdeleg::delegation::plan::account_name;
use dmdeleg::dm::acl::Acl;
use dmdeleg::dm::mo::{BootConfigEntry, DmAcc};
use dmdeleg::dm::tnds::TndsDocument;
use dmdeleg::dm::tree::{DmTree, Principal};
use dmdeleg::dm::tree_tnds::{TNDS_XML_MIME, TndsMode};
use dmdeleg::dm::uri::{NodeUri, Target};
use dmdeleg::engine::bootstrap::{
    self, BootstrapEndpoint, BootstrapTokens, DEFAULT_TTL_MS, DEV_ID_HEADER, Refused, Served,
};
use dmdeleg::sim::device::{SimAccount, SimDevice, SimError};
use dmdeleg::syncml::auth::AuthScheme;
use tokio::sync::mpsc;

const DMS1: &str = "dms1.example";
const DMS2: &str = "dms2.example";
const DEV_A: &str = "IMEI:350000000000001";
const DEV_B: &str = "IMEI:350000000000002";
const ACL: &str =
    "Delete=dms1.example+dms2.example&Get=dms1.example+dms2.example&Replace=dms2.example";

fn acl() -> Acl {
    Acl::parse(ACL).unwrap()
}

/// DMS-2's account for a device, as its bootstrap serves it (TNDS text for `./DMAcc`).
fn dms2_account_xml(server_url: &str) -> String {
    let acc = DmAcc::new_digest(
        &account_name(DMS2),
        DMS2,
        server_url,
        ("dev", "c2"),
        (DMS2, "s2"),
    );
    TndsDocument {
        nodes: vec![acc.to_tnds_node(Some(acl()))],
        ..TndsDocument::default()
    }
    .to_xml()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn random() -> [u8; 32] {
    let mut r = [0u8; 32];
    getrandom::fill(&mut r).unwrap();
    r
}

struct Lab {
    ep: BootstrapEndpoint,
    tokens: Arc<Mutex<BootstrapTokens>>,
    served: mpsc::UnboundedReceiver<Served>,
}

impl Lab {
    async fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Lab {
        dmdeleg::tls::install_crypto_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tokens = Arc::new(Mutex::new(BootstrapTokens::new()));
        let (tx, served) = mpsc::unbounded_channel();
        let ep = bootstrap::spawn(listener, tls, tokens.clone(), tx)
            .await
            .unwrap();
        Lab { ep, tokens, served }
    }

    /// A fresh token URL for `dev_id`, living `ttl_ms`.
    fn issue(&self, dev_id: &str, ttl_ms: i64) -> String {
        let token = self.tokens.lock().unwrap().issue(
            dev_id,
            dms2_account_xml("http://127.0.0.1:2/dm"),
            now_ms(),
            ttl_ms,
            random(),
        );
        self.ep.token_url(&token)
    }
}

/// (status, Content-Type, body, number of headers) of a GET.
async fn get(
    http: &reqwest::Client,
    url: &str,
    dev_id: Option<&str>,
) -> (u16, Option<String>, Vec<u8>, Vec<String>) {
    let mut req = http.get(url);
    if let Some(d) = dev_id {
        req = req.header(DEV_ID_HEADER, d);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned());
    // Every header name except the date, which changes from one answer to the next.
    let mut names: Vec<String> = resp
        .headers()
        .keys()
        .filter(|k| *k != reqwest::header::DATE)
        .map(|k| k.as_str().to_owned())
        .collect();
    names.sort();
    let body = resp.bytes().await.unwrap().to_vec();
    (status, ct, body, names)
}

async fn refusals_and_one_use(lab: &mut Lab, http: &reqwest::Client) {
    let mut refusals = Vec::new();

    // No DevId header: refused, and the token is burnt.
    let url = lab.issue(DEV_A, DEFAULT_TTL_MS);
    refusals.push(get(http, &url, None).await);
    assert_eq!(lab.ep.last_refusal(), Some(Refused::OtherDevice));
    refusals.push(get(http, &url, Some(DEV_A)).await);
    assert_eq!(lab.ep.last_refusal(), Some(Refused::UnknownToken));

    // Another device: refused, and the token is burnt for its own device too.
    let url = lab.issue(DEV_A, DEFAULT_TTL_MS);
    refusals.push(get(http, &url, Some(DEV_B)).await);
    assert_eq!(lab.ep.last_refusal(), Some(Refused::OtherDevice));
    refusals.push(get(http, &url, Some(DEV_A)).await);
    assert_eq!(lab.ep.last_refusal(), Some(Refused::UnknownToken));

    // The right device, once.
    let url = lab.issue(DEV_A, DEFAULT_TTL_MS);
    let (status, ct, body, _) = get(http, &url, Some(DEV_A)).await;
    assert_eq!(status, 200);
    assert_eq!(ct.as_deref(), Some(TNDS_XML_MIME));
    let doc = TndsDocument::from_xml(&body).unwrap();
    assert_eq!(doc.nodes.len(), 1);
    assert_eq!(doc.nodes[0].name, account_name(DMS2));
    let served = lab.served.try_recv().expect("the use was reported");
    assert_eq!(served.dev_id, DEV_A);
    assert!(url.ends_with(&served.token));
    assert_eq!(served.account_xml.as_bytes(), &body[..]);
    refusals.push(get(http, &url, Some(DEV_A)).await);
    assert_eq!(lab.ep.last_refusal(), Some(Refused::UnknownToken));

    // Expired: a zero and a negative lifetime.
    for ttl in [0, -1_000] {
        let url = lab.issue(DEV_A, ttl);
        refusals.push(get(http, &url, Some(DEV_A)).await);
        assert_eq!(lab.ep.last_refusal(), Some(Refused::Expired));
    }

    // Not a token, not a bootstrap path, not a method that fetches.
    let bad_paths = [
        format!("{}/bootstrap/nothex", lab.ep.url),
        format!("{}/bootstrap/{}", lab.ep.url, "A".repeat(64)),
        format!("{}/bootstrap/", lab.ep.url),
        format!("{}/bootstrap", lab.ep.url),
        format!("{}/elsewhere", lab.ep.url),
        format!("{}/bootstrap/{}/more", lab.ep.url, "a".repeat(64)),
    ];
    for url in &bad_paths {
        refusals.push(get(http, url, Some(DEV_A)).await);
    }
    let live = lab.issue(DEV_A, DEFAULT_TTL_MS);
    let resp = http
        .put(&live)
        .header(DEV_ID_HEADER, DEV_A)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert!(resp.bytes().await.unwrap().is_empty());
    assert_eq!(lab.ep.last_refusal(), Some(Refused::BadRequest));
    // POST fetches too.
    let resp = http
        .post(&live)
        .header(DEV_ID_HEADER, DEV_A)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    // Every refusal looks the same: 403, no Content-Type, no body, the same headers.
    let first = refusals[0].clone();
    assert_eq!(first.0, 403);
    assert_eq!(first.1, None);
    assert!(first.2.is_empty());
    for (i, r) in refusals.iter().enumerate() {
        assert_eq!(r, &first, "refusal {i}");
    }
    assert_eq!(lab.ep.served_count(), 2);
    assert_eq!(lab.ep.refused_count(), refusals.len() as u64 + 1);
    // Every token was used up.
    assert!(lab.tokens.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_token_serves_its_device_once_and_every_refusal_looks_the_same() {
    let mut lab = Lab::start(None).await;
    assert!(lab.ep.url.starts_with("http://127.0.0.1:"));
    let http = reqwest::Client::new();
    refusals_and_one_use(&mut lab, &http).await;
}

#[tokio::test]
async fn the_same_over_https() {
    dmdeleg::tls::install_crypto_provider();
    let pki = dmdeleg::tls::LabPki::generate("bootstrap test CA").unwrap();
    let leaf = pki.issue("127.0.0.1", &["127.0.0.1"]).unwrap();
    let tls = dmdeleg::tls::server_config(leaf.chain(), leaf.key_der().unwrap()).unwrap();
    let mut lab = Lab::start(Some(tls)).await;
    assert!(lab.ep.url.starts_with("https://127.0.0.1:"));
    let http = dmdeleg::tls::reqwest_client(&[pki.ca_cert_der()], None).unwrap();
    refusals_and_one_use(&mut lab, &http).await;
    assert_eq!(lab.ep.tls_handshake_failures(), 0);

    // A device follows an HTTPS bootstrap URL with a client that trusts the lab CA.
    let mut dev = device(DEV_A);
    let url = lab.issue(DEV_A, DEFAULT_TTL_MS);
    write_boot_config(&mut dev.tree, &url);
    assert_eq!(
        dev.follow_bootstrap(&http).await.unwrap().as_deref(),
        Some(DMS2)
    );
    assert!(DmAcc::find_by_server_id(&dev.tree, DMS2).is_some());
}

#[tokio::test]
async fn dropping_the_endpoint_stops_it() {
    let lab = Lab::start(None).await;
    let url = lab.issue(DEV_A, DEFAULT_TTL_MS);
    drop(lab.ep);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let http = reqwest::Client::new();
    assert!(
        http.get(&url)
            .header(DEV_ID_HEADER, DEV_A)
            .send()
            .await
            .is_err()
    );
}

/// A simulated device managed by DMS-1.
fn device(dev_id: &str) -> SimDevice {
    SimDevice::new(
        dev_id,
        &SimAccount {
            server_id: DMS1.into(),
            server_url: "http://127.0.0.1:1/dm".into(),
            scheme: AuthScheme::Md5,
            client: ("dev".into(), "c1".into()),
            server: (DMS1.into(), "s1".into()),
        },
    )
    .unwrap()
}

/// DMS-1 writes the bootstrap config entry, as its session with the device would.
fn write_boot_config(tree: &mut DmTree, url: &str) {
    let entry = BootConfigEntry {
        name: account_name(DMS2),
        server_url: url.to_owned(),
        server_id: Some(DMS2.to_owned()),
    };
    tree.apply_tnds(
        Principal::Server(DMS1),
        &BootConfigEntry::default_root(),
        &entry.to_tnds(None),
        TndsMode::Add,
        None,
    )
    .unwrap();
}

#[tokio::test]
async fn a_device_follows_its_bootstrap_config_once() {
    let mut lab = Lab::start(None).await;
    let http = reqwest::Client::new();
    let mut dev = device(DEV_A);
    // Nothing to follow yet.
    assert_eq!(dev.follow_bootstrap(&http).await.unwrap(), None);

    let url = lab.issue(DEV_A, DEFAULT_TTL_MS);
    write_boot_config(&mut dev.tree, &url);
    let new_server = dev.follow_bootstrap(&http).await.unwrap();
    assert_eq!(new_server.as_deref(), Some(DMS2));
    assert_eq!(lab.served.try_recv().unwrap().dev_id, DEV_A);

    let acc = DmAcc::find_by_server_id(&dev.tree, DMS2).expect("the account was installed");
    assert!(!acc.dormant);
    assert_eq!(acc.server_uri(), Some("http://127.0.0.1:2/dm"));
    let node = dev.tree.find(&acc.uri().unwrap()).unwrap();
    assert_eq!(dev.tree.props(node).acl, acl());
    // The secrets are the device's alone, even for the servers the ACL lets read the account.
    let secret = Target::parse(&format!(
        "./DMAcc/{}/AppAuth/ServerSide/AAuthSecret",
        acc.name
    ))
    .unwrap();
    assert_eq!(
        dev.tree
            .get(Principal::Server(DMS2), &secret)
            .unwrap_err()
            .status()
            .0,
        405
    );
    assert_eq!(dev.bootstraps_tried(), &[url.clone()][..]);

    // A second follow does nothing: the URL was used and the account exists.
    let before = dev.tree.clone();
    assert_eq!(dev.follow_bootstrap(&http).await.unwrap(), None);
    assert_eq!(lab.ep.served_count(), 1);
    assert_eq!(lab.ep.refused_count(), 0);
    assert_eq!(
        dev.tree
            .find(&NodeUri::parse("./DMAcc").unwrap())
            .map(|id| dev.tree.child_names(id)),
        before
            .find(&NodeUri::parse("./DMAcc").unwrap())
            .map(|id| before.child_names(id))
    );
}

#[tokio::test]
async fn a_refused_bootstrap_installs_nothing_and_is_not_retried() {
    let lab = Lab::start(None).await;
    let http = reqwest::Client::new();
    let mut dev = device(DEV_B);
    // The token belongs to another device.
    let url = lab.issue(DEV_A, DEFAULT_TTL_MS);
    write_boot_config(&mut dev.tree, &url);
    let err = dev.follow_bootstrap(&http).await.unwrap_err();
    assert!(matches!(err, SimError::HttpStatus(403)), "{err}");
    assert!(!err.to_string().contains(&url), "{err}");
    assert!(DmAcc::find_by_server_id(&dev.tree, DMS2).is_none());
    assert_eq!(dev.follow_bootstrap(&http).await.unwrap(), None);
    assert_eq!(lab.ep.refused_count(), 1);

    // A URL off this machine is never fetched.
    let mut dev = device(DEV_A);
    write_boot_config(&mut dev.tree, "https://dms2.example/bootstrap/x");
    assert!(matches!(
        dev.follow_bootstrap(&http).await,
        Err(SimError::NotLoopback(_))
    ));
    assert_eq!(dev.follow_bootstrap(&http).await.unwrap(), None);
}

mod fleet {
    //! A fleet device bootstrapped by DMS-1 calls DMS-2 at once.

    use super::*;
    use dmdeleg::engine::device_endpoint::DeviceEndpointConfig;
    use dmdeleg::engine::dm_server::{DmServer, DmServerConfig};
    use dmdeleg::engine::notifier::HttpPush;
    use dmdeleg::sim::fleet::{Fleet, FleetConfig};
    use dmdeleg::store::devices::Enrolment;
    use dmdeleg::syncml::StatusCode;
    use dmdeleg::syncml::session::DeviceCommand;

    async fn server(server_id: &str) -> DmServer {
        dmdeleg::tls::install_crypto_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        DmServer::start(
            DmServerConfig {
                server_id: server_id.into(),
                endpoint: DeviceEndpointConfig::default(),
            },
            listener,
            None,
            Arc::new(HttpPush::new(reqwest::Client::new())),
        )
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fleet_device_takes_its_bootstrap_and_calls_the_new_server() {
        let dms1 = server(DMS1).await;
        let dms2 = server(DMS2).await;
        let mut lab = Lab::start(None).await;

        let cfg = FleetConfig::new(DMS1, dms1.url(), 2);
        let fleet = Fleet::start(cfg.clone(), None).await.unwrap();
        for e in cfg.enrolments(None) {
            dms1.enrol(e.to_record()).await.unwrap();
        }
        let dev = fleet.dev_ids()[0].clone();
        // DMS-2 knows the device with the credentials of the account it serves.
        dms2.enrol(
            Enrolment {
                dev_id: dev.clone(),
                auth_type: "DIGEST".into(),
                client_name: "dev".into(),
                client_secret: "c2".into(),
                server_name: DMS2.into(),
                server_secret: "s2".into(),
                push: None,
            }
            .to_record(),
        )
        .await
        .unwrap();

        // Without a bootstrap config entry, nothing changes.
        fleet.session(&dev).await.unwrap();
        assert_eq!(fleet.counts().bootstraps_ok, 0);
        assert_eq!(fleet.counts().sessions_ok, 1);

        let token = lab.tokens.lock().unwrap().issue(
            &dev,
            dms2_account_xml(dms2.url()),
            now_ms(),
            DEFAULT_TTL_MS,
            random(),
        );
        let entry = BootConfigEntry {
            name: account_name(DMS2),
            server_url: lab.ep.token_url(&token),
            server_id: Some(DMS2.to_owned()),
        };
        let rx = dms1
            .enqueue(
                &dev,
                DeviceCommand::AddTnds {
                    target: BootConfigEntry::default_root(),
                    doc: entry.to_tnds(None),
                },
            )
            .unwrap();
        let report = fleet.session(&dev).await.unwrap();
        assert!(report.completed);
        assert_eq!(rx.await.unwrap().unwrap().status, StatusCode::OK);

        let counts = fleet.counts();
        assert_eq!(counts.bootstraps_ok, 1);
        assert_eq!(counts.bootstraps_failed, 0);
        assert_eq!(counts.sessions_ok, 3, "{counts:?}");
        assert_eq!(counts.sessions_failed, 0);
        assert_eq!(dms2.stats().sessions_completed, 1);
        assert_eq!(lab.served.try_recv().unwrap().dev_id, dev);
        let tree = fleet.tree(&dev).await.unwrap();
        let acc = DmAcc::find_by_server_id(&tree, DMS2).unwrap();
        assert!(!acc.dormant);
        assert_eq!(
            tree.props(tree.find(&acc.uri().unwrap()).unwrap()).acl,
            acl()
        );
        // DMS-2 read the device's tree in its first session.
        assert!(dms2.device(&dev).unwrap().tree.is_some());

        // The next session does not fetch again.
        fleet.session(&dev).await.unwrap();
        let counts = fleet.counts();
        assert_eq!((counts.bootstraps_ok, counts.bootstraps_failed), (1, 0));
        assert_eq!(lab.ep.refused_count(), 0);
        // The other device never had an entry.
        fleet.session(&fleet.dev_ids()[1]).await.unwrap();
        assert_eq!(fleet.counts().bootstraps_ok, 1);
    }
}
