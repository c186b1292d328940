//! The peer servers the store knows (table `peers`): those an operator added at run time,
//! each with its pinned certificate as PEM (schema version 3), so the engine trusts them
//! again after a restart without their certificate file. Peers from the configuration file
//! are not stored: the file stays their source.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::StoreError;

/// A stored peer server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerRow {
    /// Its ServerID.
    pub server_id: String,
    /// Its peer endpoint's base URL.
    pub base_url: String,
    /// The SHA-256 fingerprint of its pinned certificate.
    pub cert_fingerprint: Option<String>,
    /// What happens to its requests: `accept`, `decline` or `operator`.
    pub policy: String,
    /// When it was added, Unix milliseconds. Kept by later updates.
    pub added_ms: i64,
    /// Its pinned certificate, PEM.
    pub cert_pem: Option<String>,
}

/// The columns [`peer_row`] reads, in its order.
const PEER_COLUMNS: &str = "server_id, base_url, cert_fingerprint, policy, added_ms, cert_pem";

fn peer_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PeerRow> {
    Ok(PeerRow {
        server_id: r.get(0)?,
        base_url: r.get(1)?,
        cert_fingerprint: r.get(2)?,
        policy: r.get(3)?,
        added_ms: r.get(4)?,
        cert_pem: r.get(5)?,
    })
}

/// Adds a peer, or updates its address, certificate and policy (keeping `added_ms`).
pub fn upsert_peer(conn: &Connection, p: &PeerRow) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO peers (server_id, base_url, cert_fingerprint, policy, added_ms, cert_pem)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(server_id) DO UPDATE SET
             base_url = excluded.base_url, cert_fingerprint = excluded.cert_fingerprint,
             policy = excluded.policy, cert_pem = excluded.cert_pem",
        params![
            p.server_id,
            p.base_url,
            p.cert_fingerprint,
            p.policy,
            p.added_ms,
            p.cert_pem
        ],
    )?;
    Ok(())
}

/// Every stored peer, by ServerID.
pub fn peers(conn: &Connection) -> Result<Vec<PeerRow>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {PEER_COLUMNS} FROM peers ORDER BY server_id"
    ))?;
    let rows = stmt.query_map([], peer_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The stored peer with this ServerID.
pub fn peer(conn: &Connection, server_id: &str) -> Result<Option<PeerRow>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {PEER_COLUMNS} FROM peers WHERE server_id = ?1"),
            [server_id],
            peer_row,
        )
        .optional()?)
}

/// Forgets a peer; whether there was one.
pub fn delete_peer(conn: &Connection, server_id: &str) -> Result<bool, StoreError> {
    Ok(conn.execute("DELETE FROM peers WHERE server_id = ?1", [server_id])? > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        super::super::migrations::apply(&conn).unwrap();
        conn
    }

    #[test]
    fn upsert_keeps_added_ms_and_delete_forgets() {
        let conn = conn();
        let p = PeerRow {
            server_id: "dms2".into(),
            base_url: "https://dms2.example/deleg".into(),
            cert_fingerprint: None,
            policy: "operator".into(),
            added_ms: 10,
            cert_pem: None,
        };
        upsert_peer(&conn, &p).unwrap();
        upsert_peer(
            &conn,
            &PeerRow {
                server_id: "a-first".into(),
                ..p.clone()
            },
        )
        .unwrap();
        let changed = PeerRow {
            base_url: "https://dms2.example/v2".into(),
            cert_fingerprint: Some("AB:CD".into()),
            policy: "accept".into(),
            added_ms: 99,
            cert_pem: Some("-----BEGIN CERTIFICATE-----".into()),
            ..p.clone()
        };
        upsert_peer(&conn, &changed).unwrap();
        let all = peers(&conn).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].server_id, "a-first");
        let kept = PeerRow {
            added_ms: 10,
            ..changed
        };
        assert_eq!(all[1], kept);
        assert_eq!(peer(&conn, "dms2").unwrap(), Some(kept));
        assert!(delete_peer(&conn, "dms2").unwrap());
        assert!(!delete_peer(&conn, "dms2").unwrap());
        assert_eq!(peer(&conn, "dms2").unwrap(), None);
    }

    #[test]
    fn a_version_2_database_keeps_its_peers_and_gains_the_certificate_column() {
        let conn = Connection::open_in_memory().unwrap();
        let migrations = super::super::migrations::MIGRATIONS;
        conn.execute_batch(migrations[0]).unwrap();
        conn.execute_batch(migrations[1]).unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.execute(
            "INSERT INTO peers (server_id, base_url, cert_fingerprint, policy, added_ms)
             VALUES ('dms2', 'https://x', NULL, 'accept', 1)",
            [],
        )
        .unwrap();
        super::super::migrations::apply(&conn).unwrap();
        let all = peers(&conn).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].cert_pem, None);
    }
}
