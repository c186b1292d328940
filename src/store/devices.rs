//! Enrolled devices in the store, and the import format operators enrol them with
//! (`dmdeleg devices import FILE`, CSV or TOML).
//!
//! Secrets are stored as given: the database file is the server's credential store and must be
//! readable by the service's own user only (the package installs it under /var/lib with 0600).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Deserialize;

use super::StoreError;
use crate::dm::tnds::TndsDocument;
use crate::dm::tree::{DmTree, Principal, TreeLimits};
use crate::dm::uri::{NodeUri, TndsSelection};
use crate::engine::devices::DeviceRecord;
use crate::syncml::auth::{AuthScheme, Nonce, Password};
use crate::syncml::session::creds::Credentials;

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn tree_text(tree: &DmTree) -> Option<String> {
    // A tree of the root alone is no tree to keep.
    tree.child_ids(tree.root()).next()?;
    tree.export_tnds_xml(
        Principal::Device,
        &NodeUri::root(),
        &NodeUri::root(),
        &TndsSelection::ALL,
    )
    .ok()
}

/// Writes (inserts or replaces) a device's whole record. A record without a tree keeps the
/// tree saved before (the engine does not hold trees in memory once saved).
pub fn upsert(conn: &Connection, rec: &DeviceRecord, now: SystemTime) -> Result<(), StoreError> {
    let devinfo =
        serde_json::to_string(&rec.devinfo).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    // Prepared once per connection: an enrolment or inventory saves many devices in a row.
    conn.prepare_cached(
        "INSERT INTO devices (dev_id, auth_type, client_name, client_secret, server_name,
             server_secret, client_nonce, server_nonce, push, devinfo, last_seen_ms,
             needs_inventory, enrolled_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT(dev_id) DO UPDATE SET
             auth_type = excluded.auth_type, client_name = excluded.client_name,
             client_secret = excluded.client_secret, server_name = excluded.server_name,
             server_secret = excluded.server_secret, client_nonce = excluded.client_nonce,
             server_nonce = excluded.server_nonce, push = excluded.push,
             devinfo = excluded.devinfo,
             last_seen_ms = excluded.last_seen_ms, needs_inventory = excluded.needs_inventory",
    )?
    .execute(params![
        rec.dev_id,
        rec.client.scheme.aauth_type(),
        rec.client.name,
        rec.client.secret.expose(),
        rec.server.name,
        rec.server.secret.expose(),
        rec.client_nonce.as_bytes(),
        rec.server_nonce.as_bytes(),
        rec.push,
        devinfo,
        rec.last_seen.map(ms),
        rec.needs_inventory,
        ms(now),
    ])?;
    if let Some(text) = rec.tree.as_ref().and_then(tree_text) {
        conn.prepare_cached(
            "INSERT INTO device_trees (dev_id, tree_tnds) VALUES (?1, ?2)
             ON CONFLICT(dev_id) DO UPDATE SET tree_tnds = excluded.tree_tnds",
        )?
        .execute(params![rec.dev_id, text])?;
    }
    Ok(())
}

/// Un-enrols a device: its row and its saved tree go; the delegations and the audit that
/// name it stay. False when it was not enrolled.
pub fn remove(conn: &Connection, dev_id: &str) -> Result<bool, StoreError> {
    // The tree explicitly too, whatever the connection's foreign-key setting.
    conn.execute(
        "DELETE FROM device_trees WHERE dev_id = ?1",
        params![dev_id],
    )?;
    Ok(conn.execute("DELETE FROM devices WHERE dev_id = ?1", params![dev_id])? > 0)
}

/// The audit line of an operator's [`remove`].
pub fn removal_audit(dev_id: &str, at_ms: i64) -> super::delegations::AuditRow {
    super::delegations::AuditRow {
        at_ms,
        actor: "operator".to_owned(),
        action: "remove device".to_owned(),
        delegation_id: None,
        dev_id: Some(dev_id.to_owned()),
        peer: None,
        outcome: None,
        detail: format!("un-enrolled {dev_id}: its credentials and tree are gone"),
    }
}

/// Records the nonces as they now stand.
pub fn update_nonces(
    conn: &Connection,
    dev_id: &str,
    client: &Nonce,
    server: &Nonce,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE devices SET client_nonce = ?2, server_nonce = ?3 WHERE dev_id = ?1",
    )?
    .execute(params![dev_id, client.as_bytes(), server.as_bytes()])?;
    Ok(())
}

/// Every enrolled device, with its tree.
pub fn load_all(conn: &Connection) -> Result<Vec<DeviceRecord>, StoreError> {
    load(conn, true)
}

/// Every enrolled device with its tree's summary but not the tree (what a running engine
/// keeps in memory).
pub fn load_all_summaries(conn: &Connection) -> Result<Vec<DeviceRecord>, StoreError> {
    load(conn, false)
}

/// A device's saved tree; `None` when it has none (or is not enrolled).
pub fn load_tree(conn: &Connection, dev_id: &str) -> Result<Option<DmTree>, StoreError> {
    let text: Option<Option<String>> = conn
        .query_row(
            "SELECT tree_tnds FROM device_trees WHERE dev_id = ?1",
            params![dev_id],
            |r| r.get(0),
        )
        .optional()?;
    text.flatten()
        .map(|xml| parse_tree(dev_id, &xml))
        .transpose()
}

fn parse_tree(dev_id: &str, xml: &str) -> Result<DmTree, StoreError> {
    let doc = TndsDocument::from_xml(xml.as_bytes())
        .map_err(|e| StoreError::Corrupt(format!("device {dev_id}: tree: {e}")))?;
    DmTree::from_tnds(&doc, TreeLimits::default())
        .map_err(|e| StoreError::Corrupt(format!("device {dev_id}: tree: {e}")))
}

fn load(conn: &Connection, with_trees: bool) -> Result<Vec<DeviceRecord>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT d.dev_id, d.auth_type, d.client_name, d.client_secret, d.server_name,
                d.server_secret, d.client_nonce, d.server_nonce, d.push, d.devinfo, t.tree_tnds,
                d.last_seen_ms, d.needs_inventory
         FROM devices d LEFT JOIN device_trees t ON t.dev_id = d.dev_id
         ORDER BY d.dev_id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, Vec<u8>>(6)?,
            r.get::<_, Vec<u8>>(7)?,
            r.get::<_, Option<String>>(8)?,
            r.get::<_, String>(9)?,
            r.get::<_, Option<String>>(10)?,
            r.get::<_, Option<i64>>(11)?,
            r.get::<_, bool>(12)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (dev_id, auth, cn, cs, sn, ss, cnonce, snonce, push, devinfo, tree, seen, inv) = row?;
        let scheme = AuthScheme::from_aauth_type(&auth)
            .ok_or_else(|| StoreError::Corrupt(format!("device {dev_id}: auth type {auth}")))?;
        let devinfo: Vec<(String, String)> = if devinfo.is_empty() {
            Vec::new()
        } else {
            serde_json::from_str(&devinfo)
                .map_err(|e| StoreError::Corrupt(format!("device {dev_id}: DevInfo: {e}")))?
        };
        let tree = tree.map(|xml| parse_tree(&dev_id, &xml)).transpose()?;
        let summary = tree.as_ref().map(crate::engine::devices::TreeSummary::of);
        let tree = if with_trees { tree } else { None };
        out.push(DeviceRecord {
            dev_id,
            client: Credentials {
                scheme,
                name: cn,
                secret: Password::new(cs),
            },
            client_nonce: Nonce::from_bytes(cnonce),
            server: Credentials {
                scheme,
                name: sn,
                secret: Password::new(ss),
            },
            server_nonce: Nonce::from_bytes(snonce),
            push,
            devinfo,
            tree,
            summary,
            last_seen: seen.map(|m| UNIX_EPOCH + Duration::from_millis(m.max(0) as u64)),
            needs_inventory: inv,
        });
    }
    Ok(out)
}

/// True when the device is enrolled.
pub fn exists(conn: &Connection, dev_id: &str) -> Result<bool, StoreError> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM devices WHERE dev_id = ?1",
            params![dev_id],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// One device as an operator lists it for enrolment.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Enrolment {
    /// `./DevInfo/DevId`.
    pub dev_id: String,
    /// BASIC, DIGEST or HMAC (the DMAcc AAuthType), used both ways.
    pub auth_type: String,
    /// The device's user name (CLCRED AAuthName).
    pub client_name: String,
    /// The device's secret (CLCRED AAuthSecret).
    pub client_secret: String,
    /// The server's name towards this device (SRVCRED AAuthName); usually the ServerID.
    pub server_name: String,
    /// The server's secret towards this device (SRVCRED AAuthSecret).
    pub server_secret: String,
    /// Where Package #0 reaches the device.
    #[serde(default)]
    pub push: Option<String>,
}

/// Why an import file was refused. Nothing is enrolled when any line is bad.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The file is neither valid CSV nor valid TOML of the expected shape.
    #[error("{0}")]
    Parse(String),
    /// A device entry is invalid.
    #[error("device {index} ({dev_id}): {reason}")]
    Invalid {
        /// 1-based position in the file.
        index: usize,
        /// Its DevId.
        dev_id: String,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Deserialize)]
struct TomlFile {
    #[serde(default)]
    device: Vec<Enrolment>,
}

/// Parses an import file: TOML (`[[device]]` tables) when `toml` is true, else CSV with a
/// header row naming the fields (dev_id, auth_type, client_name, client_secret, server_name,
/// server_secret, push). Every entry is checked; duplicates are refused.
pub fn parse_import(text: &str, toml: bool) -> Result<Vec<Enrolment>, ImportError> {
    let entries: Vec<Enrolment> = if toml {
        toml::from_str::<TomlFile>(text)
            .map_err(|e| ImportError::Parse(format!("not a valid TOML device list: {e}")))?
            .device
    } else {
        let mut rdr = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let mut v = Vec::new();
        for (i, row) in rdr.deserialize::<Enrolment>().enumerate() {
            v.push(row.map_err(|e| ImportError::Parse(format!("CSV row {}: {e}", i + 2)))?);
        }
        v
    };
    check_entries(&entries)?;
    Ok(entries)
}

/// Checks a device list as an import file's is checked: each entry complete and valid, no
/// DevId twice. Whoever enrols a list checks it first: [`parse_import`] does, and so does the
/// running engine for a list that reaches it by other ways (the control socket).
pub fn check_entries(entries: &[Enrolment]) -> Result<(), ImportError> {
    let mut seen = std::collections::HashSet::new();
    for (i, e) in entries.iter().enumerate() {
        let bad = |reason: &str| ImportError::Invalid {
            index: i + 1,
            dev_id: e.dev_id.clone(),
            reason: reason.to_owned(),
        };
        if e.dev_id.trim().is_empty() {
            return Err(bad("the DevId is empty"));
        }
        if AuthScheme::from_aauth_type(e.auth_type.trim()).is_none() {
            return Err(bad("auth_type must be BASIC, DIGEST or HMAC"));
        }
        if e.client_name.is_empty() || e.server_name.is_empty() {
            return Err(bad("client_name and server_name are required"));
        }
        if e.auth_type.trim() == "BASIC"
            && (e.client_name.contains(':') || e.server_name.contains(':'))
        {
            return Err(bad(
                "with BASIC authentication a user name cannot contain `:`",
            ));
        }
        if e.client_secret.is_empty() || e.server_secret.is_empty() {
            return Err(bad("client_secret and server_secret are required"));
        }
        if e.client_secret == e.server_secret {
            return Err(bad(
                "the client and server secrets must differ (the spec asks for one per side)",
            ));
        }
        if let Some(p) = &e.push
            && reqwest::Url::parse(p).is_err()
        {
            return Err(bad("push is not a valid URL"));
        }
        if !seen.insert(e.dev_id.as_str()) {
            return Err(bad("the DevId appears twice in the list"));
        }
    }
    Ok(())
}

impl Enrolment {
    /// The engine record for this entry (new devices start with the resync nonce).
    pub fn to_record(&self) -> DeviceRecord {
        let scheme = AuthScheme::from_aauth_type(self.auth_type.trim()).unwrap_or(AuthScheme::Md5);
        DeviceRecord::new(
            &self.dev_id,
            Credentials {
                scheme,
                name: self.client_name.clone(),
                secret: Password::new(self.client_secret.clone()),
            },
            Credentials {
                scheme,
                name: self.server_name.clone(),
                secret: Password::new(self.server_secret.clone()),
            },
            self.push.clone(),
        )
    }
}

/// Enrols every entry in one transaction: all or nothing. Devices already enrolled keep their
/// nonces and inventory; their credentials and push address are updated. Returns (added,
/// updated).
pub fn import(
    conn: &mut Connection,
    entries: &[Enrolment],
    now: SystemTime,
) -> Result<(usize, usize), StoreError> {
    let tx = conn.transaction()?;
    let mut added = 0;
    let mut updated = 0;
    for e in entries {
        let rec = e.to_record();
        if exists(&tx, &e.dev_id)? {
            tx.execute(
                "UPDATE devices SET auth_type = ?2, client_name = ?3, client_secret = ?4,
                     server_name = ?5, server_secret = ?6, push = ?7
                 WHERE dev_id = ?1",
                params![
                    rec.dev_id,
                    rec.client.scheme.aauth_type(),
                    rec.client.name,
                    rec.client.secret.expose(),
                    rec.server.name,
                    rec.server.secret.expose(),
                    rec.push,
                ],
            )?;
            updated += 1;
        } else {
            upsert(&tx, &rec, now)?;
            added += 1;
        }
    }
    tx.commit()?;
    Ok((added, updated))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "dev_id,auth_type,client_name,client_secret,server_name,server_secret,push
IMEI:1, DIGEST, u1, cs1, dms1, ss1, http://127.0.0.1:9/push/IMEI:1
IMEI:2,HMAC,u2,cs2,dms1,ss2,
";

    #[test]
    fn csv_and_toml_imports_round_trip_through_the_store() {
        let entries = parse_import(CSV, false).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].push, None);
        let toml_text = r#"
[[device]]
dev_id = "IMEI:3"
auth_type = "BASIC"
client_name = "u3"
client_secret = "cs3"
server_name = "dms1"
server_secret = "ss3"
"#;
        let more = parse_import(toml_text, true).unwrap();
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::migrations::apply(&conn).unwrap();
        assert_eq!(
            import(&mut conn, &entries, SystemTime::now()).unwrap(),
            (2, 0)
        );
        assert_eq!(import(&mut conn, &more, SystemTime::now()).unwrap(), (1, 0));
        assert_eq!(
            import(&mut conn, &entries, SystemTime::now()).unwrap(),
            (0, 2)
        );
        let all = load_all(&conn).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].dev_id, "IMEI:1");
        assert_eq!(all[0].client.secret.expose(), "cs1");
        assert_eq!(all[1].client.scheme, AuthScheme::Hmac);
        assert_eq!(all[2].client.scheme, AuthScheme::Basic);
        update_nonces(
            &conn,
            "IMEI:1",
            &Nonce::from_bytes(b"c".to_vec()),
            &Nonce::from_bytes(b"s".to_vec()),
        )
        .unwrap();
        let again = load_all(&conn).unwrap();
        assert_eq!(again[0].client_nonce.as_bytes(), b"c");
    }

    #[test]
    fn bad_entries_are_refused_with_their_position() {
        let dup = format!("{CSV}IMEI:1,DIGEST,u,a,dms1,b,\n");
        let err = parse_import(&dup, false).unwrap_err();
        assert!(err.to_string().contains("device 3 (IMEI:1)"), "{err}");
        let bad_auth = CSV.replace("HMAC", "KERBEROS");
        assert!(
            parse_import(&bad_auth, false)
                .unwrap_err()
                .to_string()
                .contains("auth_type")
        );
        let same = CSV.replace("cs2", "ss2");
        assert!(parse_import(&same, false).is_err());
        assert!(parse_import("not = [valid", true).is_err());
        let short = "dev_id,auth_type\nIMEI:1,DIGEST\n";
        let err = parse_import(short, false).unwrap_err();
        assert!(err.to_string().contains("CSV row 2"), "{err}");
    }

    #[test]
    fn trees_live_in_their_own_table_and_survive_records_saved_without_them() {
        let conn = Connection::open_in_memory().unwrap();
        super::super::migrations::apply(&conn).unwrap();
        let entries = parse_import(CSV, false).unwrap();
        let mut rec = entries[0].to_record();
        let mut tree = DmTree::new();
        crate::dm::mo::DmAcc::new_digest(
            "a",
            "dms1",
            "http://127.0.0.1:9/dm",
            ("u", "c"),
            ("s", "t"),
        )
        .install(&mut tree, None)
        .unwrap();
        rec.set_tree(Some(tree.clone()));
        let now = SystemTime::now();
        upsert(&conn, &rec, now).unwrap();
        // Saved again without the tree (as the engine does once it dropped it), and with
        // new nonces: the tree stays.
        rec.tree = None;
        upsert(&conn, &rec, now).unwrap();
        update_nonces(
            &conn,
            &rec.dev_id,
            &Nonce::from_bytes(vec![1; 16]),
            &Nonce::from_bytes(vec![2; 16]),
        )
        .unwrap();
        let back = load_tree(&conn, &rec.dev_id).unwrap().expect("the tree");
        assert!(back.same_as(&tree), "{:?}", back.diff(&tree));
        let summaries = load_all_summaries(&conn).unwrap();
        let r = summaries.iter().find(|r| r.dev_id == rec.dev_id).unwrap();
        assert!(r.tree.is_none());
        assert_eq!(r.summary.as_ref().map(|s| s.nodes), Some(tree.len()));
        assert_eq!(
            r.summary.as_ref().map(|s| s.accounts.clone()),
            Some(vec![("dms1".to_owned(), false)])
        );
        assert_eq!(r.server_nonce.as_bytes(), &[2; 16]);
        assert!(load_tree(&conn, "IMEI:2").unwrap().is_none());
        assert!(load_tree(&conn, "IMEI:unknown").unwrap().is_none());
    }
}
