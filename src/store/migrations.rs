//! Schema versions, applied in order and recorded in `PRAGMA user_version` (the way cargo
//! versions its SQLite files). Rule: never remove or reorder a migration; add a new one.

use rusqlite::Connection;

use super::StoreError;

/// Every migration, oldest first. Version N is the state after the first N.
pub const MIGRATIONS: &[&str] = &[
    // 1: enrolled devices, with credentials both ways, nonces, DevInfo and the fetched tree.
    "CREATE TABLE devices (
        dev_id          TEXT PRIMARY KEY NOT NULL,
        auth_type       TEXT NOT NULL,
        client_name     TEXT NOT NULL,
        client_secret   TEXT NOT NULL,
        server_name     TEXT NOT NULL,
        server_secret   TEXT NOT NULL,
        client_nonce    BLOB NOT NULL,
        server_nonce    BLOB NOT NULL,
        push            TEXT,
        devinfo         TEXT NOT NULL DEFAULT '',
        tree_tnds       TEXT,
        last_seen_ms    INTEGER,
        needs_inventory INTEGER NOT NULL DEFAULT 1,
        enrolled_ms     INTEGER NOT NULL
    );",
];

/// The newest schema version this build knows.
pub fn latest() -> i64 {
    MIGRATIONS.len() as i64
}

/// Brings the database to the latest version in one exclusive transaction.
pub fn apply(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN EXCLUSIVE")?;
    let result = (|| {
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > latest() {
            return Err(StoreError::TooNew {
                found: version,
                known: latest(),
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            conn.execute_batch(sql)?;
            conn.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => {
            conn.execute_batch("COMMIT")?;
            Ok(())
        }
        Err(e) => {
            // The rollback's own failure would only hide the first error.
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrate_twice() {
        let conn = Connection::open_in_memory().unwrap();
        apply(&conn).unwrap();
        apply(&conn).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, latest());
    }

    #[test]
    fn a_newer_database_is_refused() {
        let conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", latest() + 1)
            .unwrap();
        assert!(matches!(apply(&conn), Err(StoreError::TooNew { .. })));
    }
}
