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
    // 2: delegation history: peers, one row per delegation (with its state machine and
    // outbox), the append-only timeline and audit log, exchanged messages, the device journal.
    "CREATE TABLE peers (
        server_id        TEXT PRIMARY KEY NOT NULL,
        base_url         TEXT NOT NULL,
        cert_fingerprint TEXT,
        policy           TEXT NOT NULL,
        added_ms         INTEGER NOT NULL
    );
    CREATE TABLE delegations (
        id          TEXT PRIMARY KEY NOT NULL,
        role        TEXT NOT NULL,
        initiator   TEXT NOT NULL,
        peer        TEXT NOT NULL,
        dev_id      TEXT NOT NULL,
        full        INTEGER NOT NULL,
        bootstrap   INTEGER NOT NULL,
        paths       TEXT NOT NULL,  -- newline-joined
        state       TEXT NOT NULL,
        step        INTEGER NOT NULL CHECK (step BETWEEN 1 AND 8),
        live        INTEGER NOT NULL,  -- 1 while the engine must still act: non-terminal, or a running lease
        created_ms  INTEGER NOT NULL,
        updated_ms  INTEGER NOT NULL,
        reason_code INTEGER,
        reason_text TEXT,
        retry_of    TEXT,
        machine     TEXT NOT NULL,  -- JSON of the state machine
        outbox      TEXT NOT NULL   -- JSON of unsent messages
    );
    CREATE INDEX delegations_dev_id ON delegations (dev_id);
    CREATE INDEX delegations_peer ON delegations (peer);
    CREATE INDEX delegations_state ON delegations (state);
    CREATE INDEX delegations_updated_ms ON delegations (updated_ms);
    CREATE INDEX delegations_live ON delegations (created_ms) WHERE live = 1;
    CREATE TABLE events (
        seq           INTEGER PRIMARY KEY AUTOINCREMENT,
        delegation_id TEXT NOT NULL,
        at_ms         INTEGER NOT NULL,
        step          INTEGER NOT NULL,
        text          TEXT NOT NULL
    );
    CREATE INDEX events_delegation_id ON events (delegation_id);
    CREATE TRIGGER events_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only: rows cannot be changed'); END;
    CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only: rows cannot be deleted'); END;
    CREATE TABLE messages (
        seq           INTEGER PRIMARY KEY AUTOINCREMENT,
        delegation_id TEXT NOT NULL,
        at_ms         INTEGER NOT NULL,
        outgoing      INTEGER NOT NULL,
        msg_seq       INTEGER NOT NULL,
        msg_type      TEXT NOT NULL,
        xml           TEXT NOT NULL  -- already redacted of secrets
    );
    CREATE INDEX messages_delegation_id ON messages (delegation_id);
    CREATE TABLE journal (
        delegation_id TEXT NOT NULL,
        idx           INTEGER NOT NULL,
        kind          TEXT NOT NULL CHECK (kind IN ('change', 'undo')),
        command       TEXT NOT NULL,
        PRIMARY KEY (delegation_id, kind, idx)
    );
    CREATE TABLE audit (
        seq           INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms         INTEGER NOT NULL,
        actor         TEXT NOT NULL,
        action        TEXT NOT NULL,
        delegation_id TEXT,
        dev_id        TEXT,
        peer          TEXT,
        outcome       TEXT,
        detail        TEXT NOT NULL
    );
    CREATE INDEX audit_at_ms ON audit (at_ms);
    CREATE INDEX audit_dev_id ON audit (dev_id);
    CREATE INDEX audit_peer ON audit (peer);
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: rows cannot be changed'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: rows cannot be deleted'); END;",
    // 3: peers added at run time keep their pinned certificate (PEM), so they come back after
    // a restart without their file.
    "ALTER TABLE peers ADD COLUMN cert_pem TEXT;",
    // 4: fetched trees in a table of their own, so that saving a device's nonces (on every
    // message) rewrites a small row, not one with its whole tree.
    "CREATE TABLE device_trees (
        dev_id    TEXT PRIMARY KEY NOT NULL REFERENCES devices (dev_id) ON DELETE CASCADE,
        tree_tnds TEXT NOT NULL
    );
    INSERT INTO device_trees (dev_id, tree_tnds)
        SELECT dev_id, tree_tnds FROM devices WHERE tree_tnds IS NOT NULL;
    ALTER TABLE devices DROP COLUMN tree_tnds;",
    // 5: the account a delegation carries (TNDS XML, with its secrets) in a column of its
    // own, written when it changes instead of inside the machine's JSON at every transition.
    // A row written before keeps its account in the machine's JSON, which is still read.
    "ALTER TABLE delegations ADD COLUMN account TEXT;",
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
    fn version_1_upgrades_and_keeps_its_rows() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO devices (dev_id, auth_type, client_name, client_secret, server_name,
                 server_secret, client_nonce, server_nonce, enrolled_ms)
             VALUES ('IMEI:1', 'DIGEST', 'u', 'c', 's', 'x', x'00', x'00', 1)",
            [],
        )
        .unwrap();
        apply(&conn).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, latest());
        let n: i64 = conn
            .query_row("SELECT count(*) FROM devices", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        let d: i64 = conn
            .query_row("SELECT count(*) FROM delegations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(d, 0);
    }

    #[test]
    fn a_newer_database_is_refused() {
        let conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", latest() + 1)
            .unwrap();
        assert!(matches!(apply(&conn), Err(StoreError::TooNew { .. })));
    }
}
