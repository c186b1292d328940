//! One DM server identity as a running service: its device endpoint, its enrolled devices
//! (loaded from the store at start, every change committed before it reaches a device), the
//! notifier that wakes devices with Package #0, and the per-device command queues the rest of
//! the engine feeds.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::device_endpoint::{self, DeviceEndpoint, DeviceEndpointConfig};
use super::devices::{CommandError, CommandResult, DeviceRecord, Devices, EndpointStats, Queued};
use super::notifier::{NotifyError, PushTransport};
use crate::dm::tree::DmTree;
use crate::store::{Store, StoreError};
use crate::syncml::session::DeviceCommand;

/// Why the DM server could not start or act.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DmServerError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The listening socket failed.
    #[error("cannot listen for devices: {0}")]
    Listen(String),
    /// The device is not enrolled.
    #[error("device {0} is not enrolled")]
    UnknownDevice(String),
    /// The notification failed.
    #[error(transparent)]
    Notify(#[from] NotifyError),
    /// A device list to enrol has an invalid entry (nothing was enrolled).
    #[error(transparent)]
    Invalid(#[from] crate::store::devices::ImportError),
}

/// Settings of one DM server.
#[derive(Debug, Clone)]
pub struct DmServerConfig {
    /// This server's ServerID (what devices' ACLs and DMAcc name).
    pub server_id: String,
    /// The device endpoint's settings.
    pub endpoint: DeviceEndpointConfig,
}

/// A device's DevInfo leaves (URI, value) and its push address.
pub type DeviceContact = (Vec<(String, String)>, Option<String>);

/// A running DM server.
pub struct DmServer {
    cfg: DmServerConfig,
    devices: Arc<Mutex<Devices>>,
    store: Option<Store>,
    endpoint: DeviceEndpoint,
    push: Arc<dyn PushTransport>,
}

impl std::fmt::Debug for DmServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmServer")
            .field("server_id", &self.cfg.server_id)
            .field("url", &self.endpoint.url)
            .finish()
    }
}

impl DmServer {
    /// Loads the enrolled devices from `store` (if any) and starts the device endpoint on
    /// `listener`.
    pub async fn start(
        cfg: DmServerConfig,
        listener: TcpListener,
        store: Option<Store>,
        push: Arc<dyn PushTransport>,
    ) -> Result<DmServer, DmServerError> {
        DmServer::start_with_tls(cfg, listener, store, push, None).await
    }

    /// As [`DmServer::start`], serving HTTPS with `tls` when given.
    pub async fn start_with_tls(
        cfg: DmServerConfig,
        listener: TcpListener,
        store: Option<Store>,
        push: Arc<dyn PushTransport>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<DmServer, DmServerError> {
        let mut devices = Devices::default();
        devices.set_trees_in_store(store.is_some());
        if let Some(store) = &store {
            let records = store
                .call(crate::store::devices::load_all_summaries)
                .await?;
            for r in records {
                devices.enrol(r);
            }
        }
        let devices = Arc::new(Mutex::new(devices));
        let endpoint = match tls {
            None => device_endpoint::spawn(
                listener,
                cfg.endpoint.clone(),
                devices.clone(),
                store.clone(),
            ),
            Some(tls) => {
                device_endpoint::spawn_tls(
                    listener,
                    cfg.endpoint.clone(),
                    devices.clone(),
                    store.clone(),
                    tls,
                )
                .await
            }
        }
        .map_err(|e| DmServerError::Listen(e.to_string()))?;
        Ok(DmServer {
            cfg,
            devices,
            store,
            endpoint,
            push,
        })
    }

    /// The ServerID.
    pub fn server_id(&self) -> &str {
        &self.cfg.server_id
    }

    /// The URL devices use.
    pub fn url(&self) -> &str {
        &self.endpoint.url
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Devices> {
        // A panic while holding the lock would be a bug elsewhere; the data is still usable.
        self.devices.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enrols a device: committed to the store first, then known to the endpoint.
    pub async fn enrol(&self, record: DeviceRecord) -> Result<(), DmServerError> {
        if let Some(store) = &self.store {
            let r = record.clone();
            let now = SystemTime::now();
            store
                .call(move |conn| crate::store::devices::upsert(conn, &r, now))
                .await?;
        }
        self.enrol_saved(vec![record]);
        Ok(())
    }

    /// Enrols a batch from an import file while the server runs: new devices are added,
    /// enrolled ones get the credentials and push address given and keep their nonces and
    /// inventory (as [`crate::store::devices::import`] does to a store no engine runs on).
    /// The list is checked as an import file is ([`crate::store::devices::check_entries`]).
    /// All or nothing: when the list is refused or the store refuses, the registry is as it
    /// was. Returns (added, updated).
    pub async fn import(
        &self,
        entries: &[crate::store::devices::Enrolment],
    ) -> Result<(usize, usize), DmServerError> {
        crate::store::devices::check_entries(entries)?;
        // The registry first, so no session in between saves a device with its old
        // credentials after the new ones were stored; the records are then stored whole.
        let (records, before) = {
            let mut devices = self.lock();
            let mut records = Vec::with_capacity(entries.len());
            let mut before = Vec::with_capacity(entries.len());
            for e in entries {
                let fresh = e.to_record();
                let old = devices.get(&e.dev_id).cloned();
                let rec = match &old {
                    Some(old) => DeviceRecord {
                        client: fresh.client,
                        server: fresh.server,
                        push: fresh.push,
                        ..old.clone()
                    },
                    None => fresh,
                };
                devices.enrol(rec.clone());
                records.push(rec);
                before.push((e.dev_id.clone(), old));
            }
            (records, before)
        };
        let updated = before.iter().filter(|(_, old)| old.is_some()).count();
        if let Some(store) = &self.store {
            let now = SystemTime::now();
            let saved = store
                .call(move |conn| {
                    records
                        .iter()
                        .try_for_each(|r| crate::store::devices::upsert(conn, r, now))
                })
                .await;
            if let Err(e) = saved {
                let mut devices = self.lock();
                for (dev_id, old) in before {
                    match old {
                        Some(old) => devices.enrol(old),
                        None => {
                            devices.forget(&dev_id);
                        }
                    }
                }
                return Err(e.into());
            }
        }
        Ok((entries.len() - updated, updated))
    }

    /// Forgets a device whose removal the caller has already saved: its record, and what
    /// was queued for it (whoever waited for those commands hears the session is lost).
    pub fn forget(&self, dev_id: &str) {
        self.lock().forget(dev_id);
    }

    /// Makes devices known to the endpoint whose records the caller has already saved (in a
    /// transaction of its own, e.g. with the delegation transitions that enrol them).
    pub fn enrol_saved(&self, records: Vec<DeviceRecord>) {
        let mut devices = self.lock();
        for r in records {
            devices.enrol(r);
        }
    }

    /// A copy of a device's record.
    pub fn device(&self, dev_id: &str) -> Option<DeviceRecord> {
        self.lock().get(dev_id).cloned()
    }

    /// The device's tree as last fetched: read from the store when there is one (the
    /// registry does not keep trees then), else from memory.
    pub async fn device_tree(&self, dev_id: &str) -> Result<Option<DmTree>, DmServerError> {
        let in_memory = self.lock().get(dev_id).and_then(|r| r.tree.clone());
        if in_memory.is_some() {
            return Ok(in_memory);
        }
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let id = dev_id.to_owned();
        Ok(store
            .call(move |conn| crate::store::devices::load_tree(conn, &id))
            .await?)
    }

    /// Whether the device is enrolled (cheaper than [`DmServer::device`], which copies the
    /// record).
    pub fn has_device(&self, dev_id: &str) -> bool {
        self.lock().get(dev_id).is_some()
    }

    /// A device's DevInfo leaves and push address, without its tree.
    pub fn device_contact(&self, dev_id: &str) -> Option<DeviceContact> {
        self.lock()
            .get(dev_id)
            .map(|r| (r.devinfo.clone(), r.push.clone()))
    }

    /// Reads the device's DevInfo and tree again: flags it and wakes it with a Package #0.
    pub async fn refresh_inventory(&self, dev_id: &str) -> Result<(), DmServerError> {
        if !self.lock().request_inventory(dev_id) {
            return Err(DmServerError::UnknownDevice(dev_id.to_owned()));
        }
        self.notify(dev_id).await
    }

    /// Every enrolled DevId.
    pub fn device_ids(&self) -> Vec<String> {
        self.lock().ids()
    }

    /// Queues a command for the device; the receiver gets its status and results.
    pub fn enqueue(
        &self,
        dev_id: &str,
        cmd: DeviceCommand,
    ) -> Result<oneshot::Receiver<CommandResult>, CommandError> {
        self.lock().enqueue(dev_id, cmd)
    }

    /// Queues a batch of commands that go out together; see [`Devices::enqueue_all`]. When
    /// [`Queued::needs_trigger`], wake the device with [`DmServer::notify`].
    pub fn enqueue_all(
        &self,
        dev_id: &str,
        commands: Vec<DeviceCommand>,
        follow_up: bool,
    ) -> Result<Queued, CommandError> {
        self.lock().enqueue_all(dev_id, commands, follow_up)
    }

    /// Withdraws queued commands no session has sent yet.
    pub fn cancel(&self, dev_id: &str, tags: &[u64]) -> usize {
        self.lock().cancel(dev_id, tags)
    }

    /// Sends device events (completed sessions) to `tx`.
    pub fn set_observer(
        &self,
        tx: tokio::sync::mpsc::UnboundedSender<super::devices::DeviceEvent>,
    ) {
        self.lock().set_observer(tx);
    }

    /// Wakes the device with a Package #0 so it opens a session.
    pub async fn notify(&self, dev_id: &str) -> Result<(), DmServerError> {
        let (bytes, address) = {
            let mut devices = self.lock();
            let record = devices
                .get(dev_id)
                .ok_or_else(|| DmServerError::UnknownDevice(dev_id.to_owned()))?;
            let address = record.push.clone().ok_or(NotifyError::NoAddress)?;
            let mut sid = [0u8; 2];
            // Any session id will do; a failed generator just gives session 0.
            let _ = crate::random::fill(&mut sid);
            let bytes = devices
                .trigger(dev_id, &self.cfg.server_id, u16::from_be_bytes(sid))
                .map_err(|e| NotifyError::Transport(e.to_string()))?;
            (bytes, address)
        };
        self.push.deliver(&address, bytes).await?;
        Ok(())
    }

    /// Refusal and completion counters of the device endpoint.
    pub fn stats(&self) -> EndpointStats {
        self.lock().stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::device_endpoint::DeviceEndpointConfig;
    use crate::engine::notifier::HttpPush;
    use crate::store::devices::Enrolment;

    fn entry(dev_id: &str, secret: &str, push: &str) -> Enrolment {
        Enrolment {
            dev_id: dev_id.into(),
            auth_type: "DIGEST".into(),
            client_name: dev_id.into(),
            client_secret: secret.into(),
            server_name: "dms1.example".into(),
            server_secret: format!("s-{secret}"),
            push: Some(push.into()),
        }
    }

    async fn server(store: Store) -> DmServer {
        crate::tls::install_crypto_provider();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        DmServer::start(
            DmServerConfig {
                server_id: "dms1.example".into(),
                endpoint: DeviceEndpointConfig::default(),
            },
            listener,
            Some(store),
            Arc::new(HttpPush::new(reqwest::Client::new())),
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn an_import_while_running_adds_and_updates_in_memory_and_in_the_store() {
        let dir = crate::store::TempDir::new("dm-import");
        let store = Store::start(&dir.file("store.db")).unwrap();
        let dm = server(store.clone()).await;
        dm.enrol(entry("IMEI:1", "old", "http://127.0.0.1:9/push/1").to_record())
            .await
            .unwrap();
        let nonce = dm.device("IMEI:1").unwrap().client_nonce;

        let (added, updated) = dm
            .import(&[
                entry("IMEI:1", "new", "http://127.0.0.1:9/push/one"),
                entry("IMEI:2", "two", "http://127.0.0.1:9/push/2"),
            ])
            .await
            .unwrap();
        assert_eq!((added, updated), (1, 1));
        let one = dm.device("IMEI:1").unwrap();
        assert_eq!(one.client.secret.expose(), "new");
        assert_eq!(one.push.as_deref(), Some("http://127.0.0.1:9/push/one"));
        assert_eq!(one.client_nonce, nonce, "an update keeps the nonces");
        assert!(dm.device("IMEI:2").is_some(), "known at once");
        let stored = store.call(crate::store::devices::load_all).await.unwrap();
        let one = stored.iter().find(|r| r.dev_id == "IMEI:1").unwrap();
        assert_eq!(one.client.secret.expose(), "new");
        assert_eq!(one.server.secret.expose(), "s-new");
        assert!(stored.iter().any(|r| r.dev_id == "IMEI:2"));

        // The store refuses (a trigger here): nothing changes, in memory or stored.
        store
            .call(|c| {
                c.execute_batch(
                    "CREATE TRIGGER no_more BEFORE INSERT ON devices
                     WHEN NEW.dev_id = 'IMEI:4' BEGIN SELECT RAISE(ABORT, 'full'); END;",
                )?;
                Ok(())
            })
            .await
            .unwrap();
        let refused = dm
            .import(&[
                entry("IMEI:2", "changed", "http://127.0.0.1:9/push/2"),
                entry("IMEI:3", "three", "http://127.0.0.1:9/push/3"),
                entry("IMEI:4", "four", "http://127.0.0.1:9/push/4"),
            ])
            .await;
        assert!(refused.is_err());
        assert_eq!(dm.device("IMEI:2").unwrap().client.secret.expose(), "two");
        assert!(dm.device("IMEI:3").is_none() && dm.device("IMEI:4").is_none());
        let stored = store.call(crate::store::devices::load_all).await.unwrap();
        assert_eq!(stored.len(), 2);
        let two = stored.iter().find(|r| r.dev_id == "IMEI:2").unwrap();
        assert_eq!(two.client.secret.expose(), "two");
    }

    /// A list that reaches the running engine (the control socket) is checked as an import
    /// file is: a DevId named twice, or an entry an import file could not hold, enrols
    /// nothing and says which entry is wrong.
    #[tokio::test]
    async fn an_import_while_running_refuses_what_an_import_file_may_not_hold() {
        let dir = crate::store::TempDir::new("dm-import-checked");
        let store = Store::start(&dir.file("store.db")).unwrap();
        let dm = server(store.clone()).await;
        let twice = dm
            .import(&[
                entry("IMEI:1", "one", "http://127.0.0.1:9/push/1"),
                entry("IMEI:1", "again", "http://127.0.0.1:9/push/1"),
            ])
            .await
            .unwrap_err();
        assert_eq!(
            twice.to_string(),
            "device 2 (IMEI:1): the DevId appears twice in the list"
        );
        let mut same = entry("IMEI:2", "two", "http://127.0.0.1:9/push/2");
        same.server_secret = same.client_secret.clone();
        let err = dm
            .import(&[entry("IMEI:3", "three", "http://127.0.0.1:9/push/3"), same])
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("device 2 (IMEI:2): the client and server secrets")
        );
        assert!(dm.device("IMEI:1").is_none() && dm.device("IMEI:3").is_none());
        let stored = store.call(crate::store::devices::load_all).await.unwrap();
        assert!(stored.is_empty());
    }
}
