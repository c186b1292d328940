//! Delegation history in the store (schema versions 2 and 5): one row per delegation holding
//! its serialised state machine, its unsent messages and, apart, the account it carries
//! (written when it changes, not at every transition), the append-only timeline (`events`)
//! and audit log (`audit`), the SyncML messages exchanged with the peer, the journal of
//! device changes (and their undo). The peer servers added at run time are in [`super::peers`].
//!
//! The engine writes everything one transition produces through [`save_transitions`], in one
//! savepoint, before it performs any effect (DESIGN.md section 5: persist before any effect).
//! After a restart [`load_live`] returns the delegations the engine must pick up again. The
//! rest is read-only queries for the GUI and the CLI, and the CSV/JSON exports.
//!
//! The database refuses changes to `events` and `audit` (triggers abort any UPDATE or
//! DELETE), so the timeline and the audit log are append-only by construction.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use serde::Serialize;

use super::StoreError;

/// One delegation as stored: the summary columns the history lists and filters on, plus the
/// serialised state machine and outbox the engine restores it from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DelegationRow {
    /// The delegation's id (unique across both servers).
    pub id: String,
    /// Our role: delegating or delegated.
    pub role: String,
    /// Who started it (an operator, a policy, the peer).
    pub initiator: String,
    /// The other server's ServerID.
    pub peer: String,
    /// The device's `./DevInfo/DevId`.
    pub dev_id: String,
    /// Full delegation (true) or Partial (false).
    pub full: bool,
    /// Bootstrap Server URL approach (true) or DMAcc approach (false).
    pub bootstrap: bool,
    /// The delegated subtrees (Partial). Stored newline-joined, so a path cannot contain a
    /// newline and an empty list reads back as empty.
    pub paths: Vec<String>,
    /// The state's name.
    pub state: String,
    /// The timeline step, 1 to 8 (the database refuses any other value).
    pub step: u8,
    /// True while the engine must still act: the state is not terminal, or a lease runs.
    pub live: bool,
    /// When the delegation was first saved, Unix milliseconds. Kept by later saves.
    pub created_ms: i64,
    /// When it last changed, Unix milliseconds.
    pub updated_ms: i64,
    /// The reason code of a failure or refusal.
    pub reason_code: Option<u16>,
    /// The reason in words.
    pub reason_text: Option<String>,
    /// The delegation this one retries.
    pub retry_of: Option<String>,
    /// JSON of the state machine (empty in rows returned by [`history`]).
    pub machine: String,
    /// JSON of the messages not sent yet (empty in rows returned by [`history`]).
    pub outbox: String,
    /// The account the delegation carries (TNDS XML, secrets included) while it needs it,
    /// kept apart from `machine` so that it is written once, not at every transition. Never
    /// shown (never serialised); `None` in rows returned by [`history`], and once the
    /// delegation has purged it.
    #[serde(skip)]
    pub account: Option<String>,
}

/// One entry of a delegation's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRow {
    /// The delegation it belongs to.
    pub delegation_id: String,
    /// When, Unix milliseconds.
    pub at_ms: i64,
    /// The step it belongs to, 1 to 8.
    pub step: u8,
    /// What happened, for people.
    pub text: String,
}

/// One message exchanged with the peer server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageRow {
    /// The delegation it belongs to.
    pub delegation_id: String,
    /// When it was sent or received, Unix milliseconds.
    pub at_ms: i64,
    /// True when we sent it.
    pub outgoing: bool,
    /// The message's sequence number within the delegation.
    pub msg_seq: u32,
    /// Its type (DELEGATION_NOTIF, ...).
    pub msg_type: String,
    /// The message, with its secrets already redacted by the caller.
    pub xml: String,
}

/// Which half of the device journal an entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum JournalKind {
    /// A change made on the device.
    Change,
    /// The command that undoes a change.
    Undo,
}

impl JournalKind {
    /// The value stored in the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            JournalKind::Change => "change",
            JournalKind::Undo => "undo",
        }
    }

    /// The kind stored as `s`, if it is one.
    pub fn from_str_opt(s: &str) -> Option<JournalKind> {
        match s {
            "change" => Some(JournalKind::Change),
            "undo" => Some(JournalKind::Undo),
            _ => None,
        }
    }
}

/// One command of a delegation's device journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JournalEntry {
    /// Its position within its kind, from 0.
    pub idx: u32,
    /// Change or undo.
    pub kind: JournalKind,
    /// The command, serialised by the engine.
    pub command: String,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRow {
    /// When, Unix milliseconds.
    pub at_ms: i64,
    /// Who acted: an operator, a policy, the engine, a peer.
    pub actor: String,
    /// What was done.
    pub action: String,
    /// The delegation concerned, if any.
    pub delegation_id: Option<String>,
    /// The device concerned, if any.
    pub dev_id: Option<String>,
    /// The peer server concerned, if any.
    pub peer: Option<String>,
    /// How it ended (accepted, refused, failed, ...), if it has ended.
    pub outcome: Option<String>,
    /// Details, for people.
    pub detail: String,
}

/// Everything one transition writes, in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The delegation's new row (inserted, or replacing the old one but for `created_ms`).
    pub row: DelegationRow,
    /// Timeline entries to append, in order.
    pub events: Vec<EventRow>,
    /// Messages to append, in order.
    pub messages: Vec<MessageRow>,
    /// `Some`: replaces the delegation's whole journal. `None`: leaves it as it is.
    pub journal: Option<Vec<JournalEntry>>,
    /// Audit lines to append, in order.
    pub audit: Vec<AuditRow>,
    /// The stored outbox is already `row.outbox` (which is then not written): the engine
    /// says so when no message was queued or sent since its last save.
    pub outbox_unchanged: bool,
    /// The stored account is already `row.account` (which is then not written).
    pub account_unchanged: bool,
    /// The stored state and live flag are already `row.state` and `row.live` (which are
    /// then not written, so their indexes are left alone: SQLite rewrites the index entries
    /// of every column an UPDATE sets, changed or not).
    pub state_unchanged: bool,
}

/// Which delegations [`history`] returns. The default returns them all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    /// Only this device's.
    pub dev_id: Option<String>,
    /// Only those with this peer.
    pub peer: Option<String>,
    /// Only those in one of these states (empty: any state).
    pub states: Vec<String>,
    /// Only those last updated at or after this time, Unix milliseconds.
    pub from_ms: Option<i64>,
    /// Only those last updated at or before this time, Unix milliseconds.
    pub to_ms: Option<i64>,
    /// At most this many (the newest).
    pub limit: Option<usize>,
}

/// Which audit lines [`audit`] returns. The default returns them all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only lines about this device.
    pub dev_id: Option<String>,
    /// Only lines about this peer.
    pub peer: Option<String>,
    /// Only lines with this outcome.
    pub outcome: Option<String>,
    /// Only lines at or after this time, Unix milliseconds.
    pub from_ms: Option<i64>,
    /// Only lines at or before this time, Unix milliseconds.
    pub to_ms: Option<i64>,
    /// At most this many: the newest ones, still returned oldest first.
    pub limit: Option<usize>,
}

/// The delegation columns, in the order [`delegation_row`] reads them.
const DELEGATION_COLUMNS: &str = "id, role, initiator, peer, dev_id, full, bootstrap, paths, \
     state, step, live, created_ms, updated_ms, reason_code, reason_text, retry_of, machine, outbox, \
     account";

/// The same columns with the three large ones left out (machine and outbox read back as empty
/// strings, the account as `None`).
const SUMMARY_COLUMNS: &str = "id, role, initiator, peer, dev_id, full, bootstrap, paths, \
     state, step, live, created_ms, updated_ms, reason_code, reason_text, retry_of, '', '', NULL";

fn delegation_row(r: &Row<'_>) -> rusqlite::Result<DelegationRow> {
    let paths: String = r.get(7)?;
    Ok(DelegationRow {
        id: r.get(0)?,
        role: r.get(1)?,
        initiator: r.get(2)?,
        peer: r.get(3)?,
        dev_id: r.get(4)?,
        full: r.get(5)?,
        bootstrap: r.get(6)?,
        paths: split_paths(&paths),
        state: r.get(8)?,
        step: r.get(9)?,
        live: r.get(10)?,
        created_ms: r.get(11)?,
        updated_ms: r.get(12)?,
        reason_code: r.get(13)?,
        reason_text: r.get(14)?,
        retry_of: r.get(15)?,
        machine: r.get(16)?,
        outbox: r.get(17)?,
        account: r.get(18)?,
    })
}

fn split_paths(joined: &str) -> Vec<String> {
    if joined.is_empty() {
        Vec::new()
    } else {
        joined.split('\n').map(str::to_owned).collect()
    }
}

fn audit_row(r: &Row<'_>) -> rusqlite::Result<AuditRow> {
    Ok(AuditRow {
        at_ms: r.get(0)?,
        actor: r.get(1)?,
        action: r.get(2)?,
        delegation_id: r.get(3)?,
        dev_id: r.get(4)?,
        peer: r.get(5)?,
        outcome: r.get(6)?,
        detail: r.get(7)?,
    })
}

/// Converts a limit to SQL (`-1` is SQLite's "no limit").
fn sql_limit(limit: Option<usize>) -> i64 {
    limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX))
}

fn insert_audit(conn: &Connection, rows: &[AuditRow]) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO audit (at_ms, actor, action, delegation_id, dev_id, peer, outcome, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for a in rows {
        stmt.execute(params![
            a.at_ms,
            a.actor,
            a.action,
            a.delegation_id,
            a.dev_id,
            a.peer,
            a.outcome,
            a.detail,
        ])?;
    }
    Ok(())
}

/// Saves one transition. What a delegation is (its role, initiator, peer, device, kind,
/// paths, the delegation it retries) is fixed when it is made and written only then: an
/// update sets only what moves, so the indexes on the fixed columns are left alone.
fn save_one(conn: &Connection, t: &Transition) -> Result<(), StoreError> {
    let d = &t.row;
    // Most transitions move a stored delegation: a plain update finds it by its key once.
    // The outbox and the account are rewritten only when they changed; the state and the
    // live flag, whose indexes an update that sets them rewrites, likewise.
    let sql = if t.state_unchanged {
        "UPDATE delegations SET step = ?3, updated_ms = ?5,
             reason_code = ?6, reason_text = ?7, machine = ?8,
             outbox = CASE WHEN ?10 THEN outbox ELSE ?9 END,
             account = CASE WHEN ?12 THEN account ELSE ?11 END
         WHERE id = ?1"
    } else {
        "UPDATE delegations SET state = ?2, step = ?3, live = ?4, updated_ms = ?5,
             reason_code = ?6, reason_text = ?7, machine = ?8,
             outbox = CASE WHEN ?10 THEN outbox ELSE ?9 END,
             account = CASE WHEN ?12 THEN account ELSE ?11 END
         WHERE id = ?1"
    };
    let updated = conn.prepare_cached(sql)?.execute(params![
        d.id,
        d.state,
        d.step,
        d.live,
        d.updated_ms,
        d.reason_code,
        d.reason_text,
        d.machine,
        d.outbox,
        t.outbox_unchanged,
        d.account,
        t.account_unchanged,
    ])?;
    if updated == 0 {
        insert_delegation(conn, t)?;
    }
    save_records(conn, t)
}

/// A delegation's first row. An outbox or account said to be unchanged is the one a new
/// row starts with: no message, no account.
fn insert_delegation(conn: &Connection, t: &Transition) -> Result<(), StoreError> {
    let d = &t.row;
    let outbox = if t.outbox_unchanged { "[]" } else { &d.outbox };
    let account = if t.account_unchanged {
        None
    } else {
        d.account.as_deref()
    };
    conn.prepare_cached(
        "INSERT INTO delegations (id, role, initiator, peer, dev_id, full, bootstrap, paths,
             state, step, live, created_ms, updated_ms, reason_code, reason_text, retry_of,
             machine, outbox, account)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
             ?19)",
    )?
    .execute(params![
        d.id,
        d.role,
        d.initiator,
        d.peer,
        d.dev_id,
        d.full,
        d.bootstrap,
        d.paths.join("\n"),
        d.state,
        d.step,
        d.live,
        d.created_ms,
        d.updated_ms,
        d.reason_code,
        d.reason_text,
        d.retry_of,
        d.machine,
        outbox,
        account,
    ])?;
    Ok(())
}

/// What a transition adds beside its row: events, messages, the journal, audit lines.
fn save_records(conn: &Connection, t: &Transition) -> Result<(), StoreError> {
    let d = &t.row;
    if !t.events.is_empty() {
        let mut stmt = conn.prepare_cached(
            "INSERT INTO events (delegation_id, at_ms, step, text) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for e in &t.events {
            stmt.execute(params![e.delegation_id, e.at_ms, e.step, e.text])?;
        }
    }

    if !t.messages.is_empty() {
        let mut stmt = conn.prepare_cached(
            "INSERT INTO messages (delegation_id, at_ms, outgoing, msg_seq, msg_type, xml)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for m in &t.messages {
            stmt.execute(params![
                m.delegation_id,
                m.at_ms,
                m.outgoing,
                m.msg_seq,
                m.msg_type,
                m.xml
            ])?;
        }
    }

    if let Some(journal) = &t.journal {
        conn.prepare_cached("DELETE FROM journal WHERE delegation_id = ?1")?
            .execute(params![d.id])?;
        let mut stmt = conn.prepare_cached(
            "INSERT INTO journal (delegation_id, idx, kind, command) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for j in journal {
            stmt.execute(params![d.id, j.idx, j.kind.as_str(), j.command])?;
        }
    }

    if !t.audit.is_empty() {
        insert_audit(conn, &t.audit)?;
    }
    Ok(())
}

/// Runs `f` inside a savepoint of its own: everything it wrote stays, or (when it fails)
/// nothing does. Works both inside the writer's transaction and on a bare connection.
fn all_or_nothing(
    conn: &Connection,
    f: impl FnOnce() -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let run = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute([]));
    run("SAVEPOINT dmdeleg_delegations")?;
    match f() {
        Ok(()) => {
            run("RELEASE dmdeleg_delegations")?;
            Ok(())
        }
        Err(e) => {
            // A failing rollback would only hide the first error; the writer's own savepoint
            // (or the caller's transaction) still rolls back around us.
            let _ = run("ROLLBACK TO dmdeleg_delegations");
            let _ = run("RELEASE dmdeleg_delegations");
            Err(e)
        }
    }
}

/// Writes the transitions in order, all or nothing: each row is inserted or updated (keeping
/// the `created_ms` of its first save), its events, messages and audit lines are appended, and
/// its journal is replaced when the transition carries one.
pub fn save_transitions(conn: &Connection, ts: &[Transition]) -> Result<(), StoreError> {
    all_or_nothing(conn, || {
        for t in ts {
            save_one(conn, t)?;
        }
        Ok(())
    })
}

/// A stored delegation that no longer needs the engine, as late duplicates of its messages
/// need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedRow {
    /// The DelegationID.
    pub id: String,
    /// The peer's ServerID.
    pub peer: String,
    /// The last Seq taken from the peer.
    pub seq_in: u32,
}

/// Of `ids`, the delegations stored and no longer live. A machine that cannot be read counts
/// every Seq as taken: its messages are acknowledged and change nothing.
pub fn ended(conn: &Connection, ids: &[String]) -> Result<Vec<EndedRow>, StoreError> {
    #[derive(serde::Deserialize)]
    struct SeqIn {
        seq_in: u32,
    }
    let mut stmt =
        conn.prepare_cached("SELECT peer, machine FROM delegations WHERE id = ?1 AND live = 0")?;
    let mut out = Vec::new();
    for id in ids {
        let row = stmt
            .query_row(params![id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .optional()?;
        if let Some((peer, machine)) = row {
            let seq_in = serde_json::from_str::<SeqIn>(&machine).map_or(u32::MAX, |m| m.seq_in);
            out.push(EndedRow {
                id: id.clone(),
                peer,
                seq_in,
            });
        }
    }
    Ok(out)
}

/// The delegation of `dev_id` the engine must still act on, if any.
pub fn live_of_device(conn: &Connection, dev_id: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT id FROM delegations WHERE dev_id = ?1 AND live = 1 LIMIT 1",
            params![dev_id],
            |r| r.get(0),
        )
        .optional()?)
}

/// The delegations the engine must still act on, oldest first: what it resumes at startup.
pub fn load_live(conn: &Connection) -> Result<Vec<DelegationRow>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {DELEGATION_COLUMNS} FROM delegations WHERE live = 1 ORDER BY created_ms, id"
    ))?;
    let rows = stmt.query_map([], delegation_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One delegation, with its machine and outbox.
pub fn load(conn: &Connection, id: &str) -> Result<Option<DelegationRow>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {DELEGATION_COLUMNS} FROM delegations WHERE id = ?1"),
            params![id],
            delegation_row,
        )
        .optional()?)
}

/// A delegation's timeline, in the order it was written.
pub fn events(conn: &Connection, id: &str) -> Result<Vec<EventRow>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT delegation_id, at_ms, step, text FROM events
         WHERE delegation_id = ?1 ORDER BY seq",
    )?;
    let rows = stmt.query_map(params![id], |r| {
        Ok(EventRow {
            delegation_id: r.get(0)?,
            at_ms: r.get(1)?,
            step: r.get(2)?,
            text: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The messages a delegation exchanged, in the order they were written.
pub fn messages(conn: &Connection, id: &str) -> Result<Vec<MessageRow>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT delegation_id, at_ms, outgoing, msg_seq, msg_type, xml FROM messages
         WHERE delegation_id = ?1 ORDER BY seq",
    )?;
    let rows = stmt.query_map(params![id], |r| {
        Ok(MessageRow {
            delegation_id: r.get(0)?,
            at_ms: r.get(1)?,
            outgoing: r.get(2)?,
            msg_seq: r.get(3)?,
            msg_type: r.get(4)?,
            xml: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A delegation's device journal: the changes by position, then the undo commands by
/// position.
pub fn journal(conn: &Connection, id: &str) -> Result<Vec<JournalEntry>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT idx, kind, command FROM journal WHERE delegation_id = ?1
         ORDER BY CASE kind WHEN 'change' THEN 0 ELSE 1 END, idx",
    )?;
    let rows = stmt.query_map(params![id], |r| {
        Ok((
            r.get::<_, u32>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (idx, kind, command) = row?;
        let kind = JournalKind::from_str_opt(&kind).ok_or_else(|| {
            StoreError::Corrupt(format!("delegation {id}: journal kind {kind:?}"))
        })?;
        out.push(JournalEntry { idx, kind, command });
    }
    Ok(out)
}

/// Delegations matching the filter, newest first (by `updated_ms`, then id). The `machine` and
/// `outbox` fields are returned empty: a listing has no use for them.
pub fn history(conn: &Connection, f: &HistoryFilter) -> Result<Vec<DelegationRow>, StoreError> {
    let mut sql = format!("SELECT {SUMMARY_COLUMNS} FROM delegations WHERE 1 = 1");
    let mut args: Vec<Value> = Vec::new();
    if let Some(dev) = &f.dev_id {
        args.push(Value::Text(dev.clone()));
        sql.push_str(&format!(" AND dev_id = ?{}", args.len()));
    }
    if let Some(peer) = &f.peer {
        args.push(Value::Text(peer.clone()));
        sql.push_str(&format!(" AND peer = ?{}", args.len()));
    }
    if !f.states.is_empty() {
        let mut marks = Vec::with_capacity(f.states.len());
        for s in &f.states {
            args.push(Value::Text(s.clone()));
            marks.push(format!("?{}", args.len()));
        }
        sql.push_str(&format!(" AND state IN ({})", marks.join(", ")));
    }
    if let Some(from) = f.from_ms {
        args.push(Value::Integer(from));
        sql.push_str(&format!(" AND updated_ms >= ?{}", args.len()));
    }
    if let Some(to) = f.to_ms {
        args.push(Value::Integer(to));
        sql.push_str(&format!(" AND updated_ms <= ?{}", args.len()));
    }
    args.push(Value::Integer(sql_limit(f.limit)));
    sql.push_str(&format!(
        " ORDER BY updated_ms DESC, id DESC LIMIT ?{}",
        args.len()
    ));
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), delegation_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Audit lines matching the filter, oldest first (in the order they were written). With a
/// limit, the newest `limit` matching lines.
pub fn audit(conn: &Connection, f: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
    let mut sql = String::from(
        "SELECT at_ms, actor, action, delegation_id, dev_id, peer, outcome, detail, seq
         FROM audit WHERE 1 = 1",
    );
    let mut args: Vec<Value> = Vec::new();
    let text_filters = [
        ("dev_id", &f.dev_id),
        ("peer", &f.peer),
        ("outcome", &f.outcome),
    ];
    for (column, value) in text_filters {
        if let Some(v) = value {
            args.push(Value::Text(v.clone()));
            sql.push_str(&format!(" AND {column} = ?{}", args.len()));
        }
    }
    if let Some(from) = f.from_ms {
        args.push(Value::Integer(from));
        sql.push_str(&format!(" AND at_ms >= ?{}", args.len()));
    }
    if let Some(to) = f.to_ms {
        args.push(Value::Integer(to));
        sql.push_str(&format!(" AND at_ms <= ?{}", args.len()));
    }
    args.push(Value::Integer(sql_limit(f.limit)));
    let sql = format!(
        "SELECT * FROM ({sql} ORDER BY seq DESC LIMIT ?{}) ORDER BY seq",
        args.len()
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), audit_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Appends audit lines (for actions outside any transition: operator logins, peer edits, ...).
pub fn append_audit(conn: &Connection, rows: &[AuditRow]) -> Result<(), StoreError> {
    all_or_nothing(conn, || insert_audit(conn, rows))
}

/// How many delegations are in each state, by state name.
pub fn counts_by_state(conn: &Connection) -> Result<Vec<(String, u64)>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT state, count(*) FROM delegations GROUP BY state ORDER BY state")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (state, n) = row?;
        // count(*) is never negative.
        out.push((state, u64::try_from(n).unwrap_or(0)));
    }
    Ok(out)
}

/// Formats Unix milliseconds as RFC 3339 in UTC, with milliseconds:
/// `2023-11-14T22:13:20.123Z`.
pub fn rfc3339_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's days_from_civil, inverted).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Keeps a spreadsheet from reading a text cell as a formula (CSV injection): a cell that
/// starts with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`. Peer and
/// device supplied text reaches the exports, and operators open them in spreadsheets.
fn csv_cell(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    }
}

fn csv_opt(s: &Option<String>) -> String {
    s.as_deref().map(csv_cell).unwrap_or_default()
}

/// Writes `header` and then `records` as CSV.
fn write_csv(header: &[&str], records: impl Iterator<Item = Vec<String>>) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    // Writing to a Vec cannot fail; a record of the wrong length is a bug in this file,
    // caught by the tests.
    let _ = w.write_record(header);
    for r in records {
        let _ = w.write_record(&r);
    }
    let bytes = w.into_inner().unwrap_or_default();
    String::from_utf8(bytes).unwrap_or_default()
}

/// An audit line as exported.
#[derive(Serialize)]
struct AuditExport<'a> {
    at: String,
    at_ms: i64,
    actor: &'a str,
    action: &'a str,
    delegation_id: Option<&'a str>,
    dev_id: Option<&'a str>,
    peer: Option<&'a str>,
    outcome: Option<&'a str>,
    detail: &'a str,
}

const AUDIT_HEADER: &[&str] = &[
    "at",
    "at_ms",
    "actor",
    "action",
    "delegation_id",
    "dev_id",
    "peer",
    "outcome",
    "detail",
];

/// The audit lines as CSV with a header row: `at` (RFC 3339 UTC), `at_ms`, then the row's
/// fields. Text cells that a spreadsheet would take for a formula get a leading `'`.
pub fn audit_csv(rows: &[AuditRow]) -> String {
    write_csv(
        AUDIT_HEADER,
        rows.iter().map(|a| {
            vec![
                rfc3339_utc(a.at_ms),
                a.at_ms.to_string(),
                csv_cell(&a.actor),
                csv_cell(&a.action),
                csv_opt(&a.delegation_id),
                csv_opt(&a.dev_id),
                csv_opt(&a.peer),
                csv_opt(&a.outcome),
                csv_cell(&a.detail),
            ]
        }),
    )
}

/// The audit lines as a JSON array of objects with the same fields as [`audit_csv`] (text
/// as stored, absent values as `null`).
pub fn audit_json(rows: &[AuditRow]) -> String {
    let out: Vec<AuditExport<'_>> = rows
        .iter()
        .map(|a| AuditExport {
            at: rfc3339_utc(a.at_ms),
            at_ms: a.at_ms,
            actor: &a.actor,
            action: &a.action,
            delegation_id: a.delegation_id.as_deref(),
            dev_id: a.dev_id.as_deref(),
            peer: a.peer.as_deref(),
            outcome: a.outcome.as_deref(),
            detail: &a.detail,
        })
        .collect();
    // Serialising plain strings and numbers cannot fail.
    serde_json::to_string_pretty(&out).unwrap_or_default()
}

/// A delegation as exported: the summary, without the machine and outbox.
#[derive(Serialize)]
struct HistoryExport<'a> {
    id: &'a str,
    role: &'a str,
    peer: &'a str,
    dev_id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    approach: &'static str,
    state: &'a str,
    step: u8,
    created: String,
    updated: String,
    reason_code: Option<u16>,
    reason_text: Option<&'a str>,
    retry_of: Option<&'a str>,
}

const HISTORY_HEADER: &[&str] = &[
    "id",
    "role",
    "peer",
    "dev_id",
    "type",
    "approach",
    "state",
    "step",
    "created",
    "updated",
    "reason_code",
    "reason_text",
    "retry_of",
];

fn history_export(d: &DelegationRow) -> HistoryExport<'_> {
    HistoryExport {
        id: &d.id,
        role: &d.role,
        peer: &d.peer,
        dev_id: &d.dev_id,
        kind: if d.full { "Full" } else { "Partial" },
        approach: if d.bootstrap { "BootstrapURL" } else { "DMAcc" },
        state: &d.state,
        step: d.step,
        created: rfc3339_utc(d.created_ms),
        updated: rfc3339_utc(d.updated_ms),
        reason_code: d.reason_code,
        reason_text: d.reason_text.as_deref(),
        retry_of: d.retry_of.as_deref(),
    }
}

/// The delegations as CSV with a header row: id, role, peer, dev_id, type (Full/Partial),
/// approach (DMAcc/BootstrapURL), state, step, created and updated (RFC 3339 UTC),
/// reason_code, reason_text, retry_of. Text cells that a spreadsheet would take for a formula
/// get a leading `'`.
pub fn history_csv(rows: &[DelegationRow]) -> String {
    write_csv(
        HISTORY_HEADER,
        rows.iter().map(|d| {
            let e = history_export(d);
            vec![
                csv_cell(e.id),
                csv_cell(e.role),
                csv_cell(e.peer),
                csv_cell(e.dev_id),
                e.kind.to_owned(),
                e.approach.to_owned(),
                csv_cell(e.state),
                e.step.to_string(),
                e.created,
                e.updated,
                e.reason_code.map(|c| c.to_string()).unwrap_or_default(),
                e.reason_text.map(csv_cell).unwrap_or_default(),
                e.retry_of.map(csv_cell).unwrap_or_default(),
            ]
        }),
    )
}

/// The delegations as a JSON array of objects with the same fields as [`history_csv`] (text
/// as stored, absent values as `null`).
pub fn history_json(rows: &[DelegationRow]) -> String {
    let out: Vec<HistoryExport<'_>> = rows.iter().map(history_export).collect();
    // Serialising plain strings and numbers cannot fail.
    serde_json::to_string_pretty(&out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TempDir;

    fn row(
        id: &str,
        dev: &str,
        peer: &str,
        state: &str,
        created: i64,
        updated: i64,
    ) -> DelegationRow {
        DelegationRow {
            id: id.into(),
            role: "delegating".into(),
            initiator: "operator:alice".into(),
            peer: peer.into(),
            dev_id: dev.into(),
            full: false,
            bootstrap: false,
            paths: vec!["./Vendor/App".into(), "./DevDetail/Ext".into()],
            state: state.into(),
            step: 1,
            live: true,
            created_ms: created,
            updated_ms: updated,
            reason_code: None,
            reason_text: None,
            retry_of: None,
            machine: format!("{{\"id\":\"{id}\"}}"),
            outbox: "[]".into(),
            account: None,
        }
    }

    fn only(row: DelegationRow) -> Transition {
        Transition {
            row,
            events: Vec::new(),
            messages: Vec::new(),
            journal: None,
            audit: Vec::new(),
            outbox_unchanged: false,
            account_unchanged: false,
            state_unchanged: false,
        }
    }

    fn event(id: &str, at: i64, step: u8, text: &str) -> EventRow {
        EventRow {
            delegation_id: id.into(),
            at_ms: at,
            step,
            text: text.into(),
        }
    }

    fn audit_line(at: i64, dev: &str, peer: &str, outcome: Option<&str>, detail: &str) -> AuditRow {
        AuditRow {
            at_ms: at,
            actor: "operator:alice".into(),
            action: "delegate".into(),
            delegation_id: Some("d1".into()),
            dev_id: Some(dev.into()),
            peer: Some(peer.into()),
            outcome: outcome.map(str::to_owned),
            detail: detail.into(),
        }
    }

    fn ids(rows: &[DelegationRow]) -> Vec<&str> {
        rows.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = TempDir::new("round-trip");
        let conn = dir.open();
        let mut r = row("d1", "IMEI:1", "dms2", "AwaitResp", 1000, 1000);
        r.full = true;
        r.bootstrap = true;
        r.reason_code = Some(4001);
        r.reason_text = Some("peer said no".into());
        r.retry_of = Some("d0".into());
        let mut empty = row("d2", "IMEI:2", "dms2", "AwaitResp", 1001, 1001);
        empty.paths = Vec::new();
        save_transitions(&conn, &[only(r.clone()), only(empty.clone())]).unwrap();
        assert_eq!(load(&conn, "d1").unwrap(), Some(r));
        assert_eq!(load(&conn, "d2").unwrap(), Some(empty));
        assert_eq!(load(&conn, "nope").unwrap(), None);
    }

    #[test]
    fn ended_names_the_stored_delegations_that_no_longer_run() {
        let dir = TempDir::new("ended");
        let conn = dir.open();
        let running = row("d1", "IMEI:1", "dms2", "Running", 1000, 1000);
        let mut over = row("d2", "IMEI:2", "dms3", "Completed", 1000, 2000);
        over.live = false;
        over.machine = "{\"seq_in\":4,\"other\":true}".into();
        let mut unreadable = row("d3", "IMEI:3", "dms2", "Failed", 1000, 2000);
        unreadable.live = false;
        unreadable.machine = "not json".into();
        save_transitions(&conn, &[only(running), only(over), only(unreadable)]).unwrap();
        let ids = ["d1", "d2", "d3", "d4"].map(String::from);
        let got = ended(&conn, &ids).unwrap();
        assert_eq!(
            got,
            [
                EndedRow {
                    id: "d2".into(),
                    peer: "dms3".into(),
                    seq_in: 4
                },
                EndedRow {
                    id: "d3".into(),
                    peer: "dms2".into(),
                    seq_in: u32::MAX
                },
            ]
        );
    }

    #[test]
    fn upsert_keeps_what_the_delegation_is_and_updates_the_rest() {
        let dir = TempDir::new("upsert");
        let conn = dir.open();
        save_transitions(
            &conn,
            &[only(row("d1", "IMEI:1", "dms2", "AwaitResp", 1000, 1000))],
        )
        .unwrap();
        let mut next = row("d1", "IMEI:1", "dms2", "Failed", 5000, 2000);
        next.step = 3;
        next.live = false;
        next.reason_code = Some(3001);
        next.reason_text = Some("timeout".into());
        next.machine = "{\"v\":2}".into();
        next.outbox = "[1]".into();
        let first_paths = next.paths.clone();
        next.paths = vec!["./A".into()];
        next.peer = "dms3".into();
        save_transitions(&conn, &[only(next.clone())]).unwrap();
        let got = load(&conn, "d1").unwrap().unwrap();
        assert_eq!(got.created_ms, 1000);
        assert_eq!(
            got,
            DelegationRow {
                created_ms: 1000,
                paths: first_paths,
                peer: "dms2".into(),
                ..next
            }
        );
    }

    #[test]
    fn live_rows_load_oldest_first() {
        let dir = TempDir::new("live");
        let conn = dir.open();
        let mut done = row("a", "IMEI:1", "dms2", "Completed", 100, 200);
        done.live = false;
        save_transitions(
            &conn,
            &[
                only(row("c", "IMEI:1", "dms2", "AwaitResp", 300, 300)),
                only(done),
                only(row("b", "IMEI:2", "dms2", "Lease", 50, 400)),
            ],
        )
        .unwrap();
        let live = load_live(&conn).unwrap();
        assert_eq!(ids(&live), ["b", "c"]);
        assert!(!live[0].machine.is_empty(), "load_live returns the machine");
    }

    #[test]
    fn events_messages_and_journal_across_transitions() {
        let dir = TempDir::new("events");
        let conn = dir.open();
        let r = row("d1", "IMEI:1", "dms2", "AwaitResp", 1000, 1000);
        let msg = |seq: u32, outgoing: bool| MessageRow {
            delegation_id: "d1".into(),
            at_ms: 1000 + i64::from(seq),
            outgoing,
            msg_seq: seq,
            msg_type: "DELEGATION_NOTIF".into(),
            xml: "<x/>".into(),
        };
        let je = |idx: u32, kind: JournalKind, c: &str| JournalEntry {
            idx,
            kind,
            command: c.into(),
        };
        let first = Transition {
            row: r.clone(),
            events: vec![event("d1", 1000, 1, "sent"), event("d1", 1000, 1, "armed")],
            messages: vec![msg(1, true)],
            journal: Some(vec![
                je(0, JournalKind::Change, "add A"),
                je(1, JournalKind::Change, "add B"),
                je(0, JournalKind::Undo, "delete A"),
            ]),
            audit: vec![audit_line(1000, "IMEI:1", "dms2", None, "started")],
            outbox_unchanged: false,
            account_unchanged: false,
            state_unchanged: false,
        };
        save_transitions(&conn, &[first]).unwrap();
        let second = Transition {
            row: DelegationRow {
                step: 2,
                updated_ms: 2000,
                ..r.clone()
            },
            events: vec![event("d1", 2000, 2, "resp received")],
            messages: vec![msg(2, false)],
            journal: None,
            audit: Vec::new(),
            outbox_unchanged: false,
            account_unchanged: false,
            state_unchanged: false,
        };
        save_transitions(&conn, &[second]).unwrap();
        let texts: Vec<String> = events(&conn, "d1")
            .unwrap()
            .into_iter()
            .map(|e| e.text)
            .collect();
        assert_eq!(texts, ["sent", "armed", "resp received"]);
        assert_eq!(events(&conn, "d1").unwrap()[2].step, 2);
        assert_eq!(
            messages(&conn, "d1").unwrap(),
            vec![msg(1, true), msg(2, false)]
        );
        // `None` left the journal alone.
        assert_eq!(journal(&conn, "d1").unwrap().len(), 3);
        let third = Transition {
            journal: Some(vec![
                je(0, JournalKind::Undo, "delete C"),
                je(0, JournalKind::Change, "add C"),
            ]),
            ..only(r.clone())
        };
        save_transitions(&conn, &[third]).unwrap();
        assert_eq!(
            journal(&conn, "d1").unwrap(),
            vec![
                je(0, JournalKind::Change, "add C"),
                je(0, JournalKind::Undo, "delete C")
            ]
        );
        save_transitions(
            &conn,
            &[Transition {
                journal: Some(Vec::new()),
                ..only(r)
            }],
        )
        .unwrap();
        assert!(journal(&conn, "d1").unwrap().is_empty());
        assert_eq!(audit(&conn, &AuditFilter::default()).unwrap().len(), 1);
    }

    /// A transition that says its outbox or account did not change leaves the stored one (a
    /// new row then starts with neither); one that changed is written, a purged account too.
    #[test]
    fn an_unchanged_outbox_or_account_is_kept_and_a_changed_one_written() {
        let dir = TempDir::new("kept");
        let conn = dir.open();
        let save = |row: DelegationRow, outbox_unchanged: bool, account_unchanged: bool| {
            let t = Transition {
                outbox_unchanged,
                account_unchanged,
                ..only(row)
            };
            save_transitions(&conn, &[t]).unwrap();
            load(&conn, "d1").unwrap().unwrap()
        };
        let mut r = row("d1", "IMEI:1", "dms2", "AwaitResp", 1000, 1000);
        r.outbox = "[\"not written\"]".into();
        r.account = Some("not written".into());
        let got = save(r.clone(), true, true);
        assert_eq!((got.outbox.as_str(), got.account), ("[]", None));

        r.outbox = "[\"<MgmtTree/>\"]".into();
        r.account = Some("<MgmtTree><Node/></MgmtTree>".into());
        let got = save(r.clone(), false, false);
        assert_eq!(got, r);

        let next = DelegationRow {
            step: 3,
            machine: "{\"v\":3}".into(),
            outbox: String::new(),
            account: None,
            ..r.clone()
        };
        let got = save(next, true, true);
        assert_eq!((got.step, got.machine.as_str()), (3, "{\"v\":3}"));
        assert_eq!(got.outbox, r.outbox);
        assert_eq!(got.account, r.account);
        let listed = history(&conn, &HistoryFilter::default()).unwrap();
        assert_eq!(listed[0].account, None, "history never reads the account");

        let got = save(
            DelegationRow {
                account: None,
                ..r.clone()
            },
            true,
            false,
        );
        assert_eq!((got.outbox, got.account), (r.outbox, None));
    }

    /// A transition that says its state and live flag did not change leaves the stored ones
    /// (and the rest of the row is written); one that changed writes them.
    #[test]
    fn an_unchanged_state_is_kept_and_a_changed_one_written() {
        let dir = TempDir::new("state-kept");
        let conn = dir.open();
        let save = |row: DelegationRow, state_unchanged: bool| {
            let t = Transition {
                state_unchanged,
                ..only(row)
            };
            save_transitions(&conn, &[t]).unwrap();
            load(&conn, "d1").unwrap().unwrap()
        };
        let r = row("d1", "IMEI:1", "dms2", "AwaitResp", 1000, 1000);
        // A new row is inserted whole, whatever the flag says.
        let got = save(r.clone(), true);
        assert_eq!((got.state.as_str(), got.live), ("AwaitResp", true));

        let next = DelegationRow {
            state: "Completed".into(),
            live: false,
            step: 8,
            updated_ms: 2000,
            machine: "{\"v\":8}".into(),
            ..r.clone()
        };
        let got = save(next.clone(), true);
        assert_eq!((got.state.as_str(), got.live), ("AwaitResp", true));
        assert_eq!(
            (got.step, got.updated_ms, got.machine.as_str()),
            (8, 2000, "{\"v\":8}")
        );
        assert_eq!(
            live_of_device(&conn, "IMEI:1").unwrap().as_deref(),
            Some("d1")
        );

        let got = save(next, false);
        assert_eq!((got.state.as_str(), got.live), ("Completed", false));
        assert_eq!(live_of_device(&conn, "IMEI:1").unwrap(), None);
        let counted = counts_by_state(&conn).unwrap();
        assert!(
            counted.iter().any(|(s, n)| s == "Completed" && *n == 1),
            "{counted:?}"
        );
    }

    #[test]
    fn history_filters() {
        let dir = TempDir::new("history");
        let conn = dir.open();
        save_transitions(
            &conn,
            &[
                only(row("a", "IMEI:1", "dms2", "Completed", 100, 1000)),
                only(row("b", "IMEI:1", "dms3", "Failed", 200, 2000)),
                only(row("c", "IMEI:2", "dms2", "AwaitResp", 300, 3000)),
                only(row("d", "IMEI:2", "dms3", "Completed", 400, 3000)),
            ],
        )
        .unwrap();
        let all = history(&conn, &HistoryFilter::default()).unwrap();
        assert_eq!(ids(&all), ["d", "c", "b", "a"]);
        assert!(
            all.iter()
                .all(|r| r.machine.is_empty() && r.outbox.is_empty())
        );
        assert_eq!(all[0].paths.len(), 2);
        let f = |f: HistoryFilter| {
            ids(&history(&conn, &f).unwrap())
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            f(HistoryFilter {
                dev_id: Some("IMEI:1".into()),
                ..Default::default()
            }),
            ["b", "a"]
        );
        assert_eq!(
            f(HistoryFilter {
                peer: Some("dms2".into()),
                ..Default::default()
            }),
            ["c", "a"]
        );
        assert_eq!(
            f(HistoryFilter {
                states: vec!["Completed".into(), "Failed".into()],
                ..Default::default()
            }),
            ["d", "b", "a"]
        );
        assert_eq!(
            f(HistoryFilter {
                from_ms: Some(2000),
                to_ms: Some(2999),
                ..Default::default()
            }),
            ["b"]
        );
        assert_eq!(
            f(HistoryFilter {
                from_ms: Some(2000),
                ..Default::default()
            }),
            ["d", "c", "b"]
        );
        assert_eq!(
            f(HistoryFilter {
                to_ms: Some(1000),
                ..Default::default()
            }),
            ["a"]
        );
        assert_eq!(
            f(HistoryFilter {
                limit: Some(2),
                ..Default::default()
            }),
            ["d", "c"]
        );
        assert_eq!(
            f(HistoryFilter {
                dev_id: Some("IMEI:2".into()),
                peer: Some("dms3".into()),
                states: vec!["Completed".into()],
                limit: Some(5),
                ..Default::default()
            }),
            ["d"]
        );
        // Values are bound, never spliced into the SQL.
        assert!(
            f(HistoryFilter {
                dev_id: Some("x' OR '1'='1".into()),
                ..Default::default()
            })
            .is_empty()
        );
        assert_eq!(
            counts_by_state(&conn).unwrap(),
            vec![
                ("AwaitResp".to_owned(), 1),
                ("Completed".to_owned(), 2),
                ("Failed".to_owned(), 1)
            ]
        );
    }

    #[test]
    fn history_exports_read_back() {
        let mut a = row("a", "IMEI:1", "dms2", "Failed", 0, 951_782_400_000);
        a.full = true;
        a.reason_code = Some(3001);
        a.reason_text = Some("timed out, \"step 3\"\nretry later".into());
        let mut b = row(
            "b",
            "=cmd()",
            "dms3",
            "Completed",
            1_700_000_000_123,
            1_700_000_000_123,
        );
        b.bootstrap = true;
        b.retry_of = Some("a".into());
        let rows = [a, b];

        let csv_text = history_csv(&rows);
        let mut rdr = csv::Reader::from_reader(csv_text.as_bytes());
        assert_eq!(
            rdr.headers().unwrap().iter().collect::<Vec<_>>(),
            HISTORY_HEADER
        );
        let recs: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
        assert_eq!(recs.len(), 2);
        assert_eq!(
            recs[0].iter().collect::<Vec<_>>(),
            [
                "a",
                "delegating",
                "dms2",
                "IMEI:1",
                "Full",
                "DMAcc",
                "Failed",
                "1",
                "1970-01-01T00:00:00.000Z",
                "2000-02-29T00:00:00.000Z",
                "3001",
                "timed out, \"step 3\"\nretry later",
                ""
            ]
        );
        assert_eq!(&recs[1][3], "'=cmd()", "formula cells are neutralised");
        assert_eq!(&recs[1][4], "Partial");
        assert_eq!(&recs[1][5], "BootstrapURL");
        assert_eq!(&recs[1][8], "2023-11-14T22:13:20.123Z");
        assert_eq!(&recs[1][12], "a");
        assert!(!csv_text.contains("machine") && !csv_text.contains("outbox"));

        let json: serde_json::Value = serde_json::from_str(&history_json(&rows)).unwrap();
        let arr = json.as_array().unwrap();
        assert_eq!(arr.len(), 2);
        let keys: Vec<&str> = arr[0]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut want = HISTORY_HEADER.to_vec();
        want.sort_unstable();
        let mut keys_sorted = keys.clone();
        keys_sorted.sort_unstable();
        assert_eq!(keys_sorted, want);
        assert_eq!(arr[0]["type"], "Full");
        assert_eq!(arr[0]["reason_code"], 3001);
        assert_eq!(arr[0]["retry_of"], serde_json::Value::Null);
        assert_eq!(arr[1]["dev_id"], "=cmd()");
        assert_eq!(arr[1]["approach"], "BootstrapURL");
        assert_eq!(arr[1]["step"], 1);
        assert_eq!(arr[1]["updated"], "2023-11-14T22:13:20.123Z");

        assert_eq!(history_csv(&[]).trim_end(), HISTORY_HEADER.join(","));
        assert_eq!(history_json(&[]), "[]");
    }

    #[test]
    fn audit_filters_and_exports() {
        let dir = TempDir::new("audit");
        let conn = dir.open();
        append_audit(
            &conn,
            &[
                audit_line(1000, "IMEI:1", "dms2", Some("accepted"), "one"),
                audit_line(2000, "IMEI:2", "dms2", Some("refused"), "two, \"quoted\""),
                audit_line(3000, "IMEI:1", "dms3", None, "three"),
            ],
        )
        .unwrap();
        // A transition's audit lines come after.
        save_transitions(
            &conn,
            &[Transition {
                audit: vec![audit_line(
                    4000,
                    "IMEI:1",
                    "dms2",
                    Some("accepted"),
                    "@four",
                )],
                ..only(row("d1", "IMEI:1", "dms2", "AwaitResp", 4000, 4000))
            }],
        )
        .unwrap();
        let details = |f: AuditFilter| -> Vec<String> {
            audit(&conn, &f)
                .unwrap()
                .into_iter()
                .map(|a| a.detail)
                .collect()
        };
        assert_eq!(
            details(AuditFilter::default()),
            ["one", "two, \"quoted\"", "three", "@four"]
        );
        assert_eq!(
            details(AuditFilter {
                dev_id: Some("IMEI:1".into()),
                ..Default::default()
            }),
            ["one", "three", "@four"]
        );
        assert_eq!(
            details(AuditFilter {
                peer: Some("dms3".into()),
                ..Default::default()
            }),
            ["three"]
        );
        assert_eq!(
            details(AuditFilter {
                outcome: Some("accepted".into()),
                ..Default::default()
            }),
            ["one", "@four"]
        );
        assert_eq!(
            details(AuditFilter {
                from_ms: Some(2000),
                to_ms: Some(3000),
                ..Default::default()
            }),
            ["two, \"quoted\"", "three"]
        );
        assert_eq!(
            details(AuditFilter {
                limit: Some(2),
                ..Default::default()
            }),
            ["three", "@four"]
        );

        let rows = audit(&conn, &AuditFilter::default()).unwrap();
        let csv_text = audit_csv(&rows);
        let mut rdr = csv::Reader::from_reader(csv_text.as_bytes());
        assert_eq!(
            rdr.headers().unwrap().iter().collect::<Vec<_>>(),
            AUDIT_HEADER
        );
        let recs: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
        assert_eq!(recs.len(), 4);
        assert_eq!(&recs[0][0], "1970-01-01T00:00:01.000Z");
        assert_eq!(&recs[0][1], "1000");
        assert_eq!(&recs[1][8], "two, \"quoted\"");
        assert_eq!(&recs[2][7], "", "no outcome: empty cell");
        assert_eq!(&recs[3][8], "'@four");

        let json: serde_json::Value = serde_json::from_str(&audit_json(&rows)).unwrap();
        let arr = json.as_array().unwrap();
        assert_eq!(arr.len(), 4);
        assert_eq!(arr[1]["detail"], "two, \"quoted\"");
        assert_eq!(arr[2]["outcome"], serde_json::Value::Null);
        assert_eq!(arr[3]["detail"], "@four");
        assert_eq!(arr[3]["at_ms"], 4000);
        assert_eq!(arr[3]["dev_id"], "IMEI:1");
    }

    #[test]
    fn events_and_audit_are_append_only() {
        let dir = TempDir::new("append-only");
        let conn = dir.open();
        save_transitions(
            &conn,
            &[Transition {
                events: vec![event("d1", 1, 1, "sent")],
                audit: vec![audit_line(1, "IMEI:1", "dms2", None, "x")],
                ..only(row("d1", "IMEI:1", "dms2", "AwaitResp", 1, 1))
            }],
        )
        .unwrap();
        for sql in [
            "UPDATE events SET text = 'forged'",
            "DELETE FROM events",
            "UPDATE audit SET detail = 'forged'",
            "DELETE FROM audit",
        ] {
            let err = conn.execute(sql, []).unwrap_err().to_string();
            assert!(err.contains("append-only"), "{sql}: {err}");
        }
        assert_eq!(events(&conn, "d1").unwrap()[0].text, "sent");
        assert_eq!(
            audit(&conn, &AuditFilter::default()).unwrap()[0].detail,
            "x"
        );
    }

    #[test]
    fn a_failing_batch_writes_nothing() {
        let dir = TempDir::new("all-or-nothing");
        let conn = dir.open();
        let good = Transition {
            events: vec![event("ok", 1, 1, "sent")],
            audit: vec![audit_line(1, "IMEI:1", "dms2", None, "x")],
            ..only(row("ok", "IMEI:1", "dms2", "AwaitResp", 1, 1))
        };
        for step in [0, 9] {
            let bad = only(DelegationRow {
                step,
                ..row("bad", "IMEI:1", "dms2", "AwaitResp", 2, 2)
            });
            let err = save_transitions(&conn, &[good.clone(), bad]).unwrap_err();
            assert!(
                matches!(err, StoreError::Sqlite(ref m) if m.contains("CHECK")),
                "{err}"
            );
            assert_eq!(load(&conn, "ok").unwrap(), None);
            assert!(events(&conn, "ok").unwrap().is_empty());
            assert!(audit(&conn, &AuditFilter::default()).unwrap().is_empty());
        }
        // The connection is usable afterwards, inside a caller's transaction too.
        conn.execute_batch("BEGIN").unwrap();
        save_transitions(&conn, &[good]).unwrap();
        conn.execute_batch("COMMIT").unwrap();
        assert!(load(&conn, "ok").unwrap().is_some());
    }

    #[test]
    fn rfc3339_formatting() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_utc(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_utc(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_utc(1_709_251_199_000), "2024-02-29T23:59:59.000Z");
    }
}
