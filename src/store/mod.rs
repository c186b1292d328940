//! The engine's SQLite store: one file, WAL with `synchronous=FULL` (both read back after
//! setting), schema versions applied by [`migrations`], and a single writer thread that owns
//! the connection. Async callers hand it closures through a bounded channel; the writer runs
//! up to [`BATCH`] of them in one transaction, each inside a savepoint (a failing one rolls
//! back alone), commits, and only then answers each caller: nothing a caller does after the
//! answer can get ahead of the commit (group commit, DESIGN.md section 5).
//!
//! [`Store::write_behind`] is for state that can be recovered if its newest version is lost
//! (a device's session nonces, which change twice per DM session): the caller goes on as soon
//! as the job is queued and nobody waits for its commit. A group that starts with such jobs
//! waits up to [`WRITE_BEHIND_DELAY`] for company (a job that someone awaits ends the wait);
//! if it is still made only of them, it commits with `synchronous=NORMAL` (the next full
//! commit's fsync covers it). A crash can then cost the newest nonces, which the DM
//! layer recovers from (a Package #0 signed with the resync nonce, a 401 with a fresh
//! challenge). Everything else, delegation transitions first, commits with a full fsync
//! before its caller hears back.

pub mod delegations;
pub mod devices;
pub mod migrations;
pub mod peers;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

/// Most operations one transaction groups.
pub const BATCH: usize = 128;

/// How long a group made only of write-behind jobs waits for more work to share its commit
/// (a job that someone awaits ends the wait at once).
pub const WRITE_BEHIND_DELAY: std::time::Duration = std::time::Duration::from_millis(1);

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("database error: {0}")]
    Sqlite(String),
    /// The file could not be opened or set up.
    #[error("cannot open the database {path}: {reason}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A pragma did not take the value asked for.
    #[error("the database refused {pragma}={wanted} (it reports {got})")]
    Pragma {
        /// The pragma.
        pragma: &'static str,
        /// The value asked for.
        wanted: String,
        /// The value read back.
        got: String,
    },
    /// The file was written by a newer dmdeleg.
    #[error("the database is at schema version {found}, newer than this dmdeleg knows ({known})")]
    TooNew {
        /// The file's version.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
    /// A stored value cannot be read back.
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
    /// The writer thread is gone (the store was closed).
    #[error("the store is closed")]
    Closed,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e.to_string())
    }
}

/// Opens (creating if needed) the database file, sets WAL and `synchronous=FULL` and checks
/// both took, then applies the migrations.
pub fn open(path: &Path) -> Result<Connection, StoreError> {
    let open_err = |e: rusqlite::Error| StoreError::Open {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    create_private(path)?;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open_err)?;
    configure(&conn)?;
    migrations::apply(&conn)?;
    Ok(conn)
}

/// The database holds device and account secrets: a new file is made readable and writable
/// by its owner only (SQLite gives its `-wal` and `-shm` files the same mode). An existing
/// file keeps the mode its operator gave it.
fn create_private(path: &Path) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Open {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
    }
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Pragma {
            pragma: "journal_mode",
            wanted: "wal".into(),
            got: mode,
        });
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
    if sync != 2 {
        return Err(StoreError::Pragma {
            pragma: "synchronous",
            wanted: "2 (FULL)".into(),
            got: sync.to_string(),
        });
    }
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Savepoint journals (one per job in a group) stay in memory, not in temporary files.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Room for every statement the writer runs (about twenty), so none is compiled again.
    conn.set_prepared_statement_cache_capacity(64);
    // A checkpoint every 4,000 pages of log (16 MB) instead of SQLite's 1,000: the pages that
    // every group rewrites (index roots, the rows of delegations in flight) are copied into
    // the database once per checkpoint, so fewer checkpoints copy less. Lab, 5,000 devices:
    // 118 pwrites and 19.5 preads per delegation became 111 and 13.3, and the bytes written to
    // disk fell by 9 %. The log file keeps its largest size (16 MB) between checkpoints.
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
    Ok(())
}

/// Pages of write-ahead log after which a commit copies the log into the database.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 4000;

type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type Work = Box<dyn FnOnce(&mut rusqlite::Transaction<'_>) -> Reply + Send>;

/// One caller's work, and whether it is write-behind (nobody waits for its commit, and a
/// commit without fsync is enough for it).
struct Job {
    work: Work,
    write_behind: bool,
    /// After its group commits, fold the write-ahead log into the database file and say
    /// whether that completed.
    then_checkpoint: Option<oneshot::Sender<Result<bool, StoreError>>>,
}

struct Inner {
    tx: mpsc::Sender<Job>,
    path: PathBuf,
}

/// A handle to the store's writer thread; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl Store {
    /// Opens the database and starts its writer thread. The thread ends when the last handle
    /// is dropped.
    pub fn start(path: &Path) -> Result<Store, StoreError> {
        let mut conn = open(path)?;
        let (tx, mut rx) = mpsc::channel::<Job>(1024);
        let thread_err = |e: std::io::Error| StoreError::Open {
            path: path.to_owned(),
            reason: format!("cannot start the writer thread: {e}"),
        };
        // Only to wait for the channel with a time limit.
        let timer = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(thread_err)?;
        std::thread::Builder::new()
            .name("dmdeleg-store".into())
            .spawn(move || {
                // `open` set synchronous=FULL.
                let mut relaxed_now = false;
                while let Some(first) = rx.blocking_recv() {
                    let mut jobs = vec![first];
                    drain(&mut rx, &mut jobs);
                    if jobs.iter().all(|j| j.write_behind) {
                        // Nobody waits for these: let them share a commit with more work,
                        // but not keep waiting anyone who arrives meanwhile.
                        let until = tokio::time::Instant::now() + WRITE_BEHIND_DELAY;
                        while jobs.len() < BATCH {
                            // The timer is made inside the runtime that drives it.
                            let next = timer.block_on(async {
                                tokio::time::timeout_at(until, rx.recv()).await
                            });
                            let Ok(Some(job)) = next else { break };
                            let awaited = !job.write_behind;
                            jobs.push(job);
                            drain(&mut rx, &mut jobs);
                            if awaited {
                                break;
                            }
                        }
                    }
                    run_batch(&mut conn, jobs, &mut relaxed_now);
                }
            })
            .map_err(thread_err)?;
        Ok(Store {
            inner: Arc::new(Inner {
                tx,
                path: path.to_owned(),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on the writer thread inside the current group's transaction (in a savepoint of
    /// its own), and returns its result once the group has committed.
    pub async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let work: Work = Box::new(move |txn| {
            let result = savepointed(txn, f);
            Box::new(move |commit: Result<(), StoreError>| {
                // The caller may have stopped waiting; then nobody needs the answer.
                let _ = tx.send(commit.and(result));
            })
        });
        self.queue(Job {
            work,
            write_behind: false,
            then_checkpoint: None,
        })
        .await?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Folds the write-ahead log into the database file once everything queued before is
    /// committed, and empties the log (`wal_checkpoint(TRUNCATE)`): the file alone then holds
    /// every row, as a copy taken for a backup must. False when a reader kept it from
    /// completing. Run when the engine stops.
    pub async fn checkpoint(&self) -> Result<bool, StoreError> {
        let (tx, rx) = oneshot::channel();
        let work: Work = Box::new(|_| Box::new(|_| {}));
        self.queue(Job {
            work,
            write_behind: false,
            then_checkpoint: Some(tx),
        })
        .await?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues `f` for the writer thread and returns once it is queued, not committed: for
    /// state that can be recovered if the newest of it is lost (see the module doc). Jobs
    /// still run in the order they were queued, before any job queued after them. A failure
    /// is logged as `what`.
    pub async fn write_behind<F>(&self, what: &'static str, f: F) -> Result<(), StoreError>
    where
        F: FnOnce(&Connection) -> Result<(), StoreError> + Send + 'static,
    {
        let work: Work = Box::new(move |txn| {
            let result = savepointed(txn, f);
            Box::new(move |commit: Result<(), StoreError>| {
                if let Err(e) = commit.and(result) {
                    tracing::warn!(error = %e, "could not save {what}");
                }
            })
        });
        self.queue(Job {
            work,
            write_behind: true,
            then_checkpoint: None,
        })
        .await
    }

    /// Hands a job to the writer thread (waiting while its queue is full).
    async fn queue(&self, job: Job) -> Result<(), StoreError> {
        self.inner
            .tx
            .send(job)
            .await
            .map_err(|_| StoreError::Closed)
    }
}

/// Runs `f` in a savepoint of its own: what it wrote stays only if it succeeds.
///
/// The savepoint statements are prepared once per connection (a group runs one per job).
fn savepointed<T>(
    txn: &mut rusqlite::Transaction<'_>,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    txn.prepare_cached("SAVEPOINT dmdeleg_job")?.execute([])?;
    match f(txn) {
        Ok(value) => {
            txn.prepare_cached("RELEASE dmdeleg_job")?.execute([])?;
            Ok(value)
        }
        Err(e) => {
            // A failing rollback would only hide the first error; the group's transaction
            // then fails to commit, and every job in it hears so.
            let _ = txn
                .prepare_cached("ROLLBACK TO dmdeleg_job")
                .and_then(|mut s| s.execute([]));
            let _ = txn
                .prepare_cached("RELEASE dmdeleg_job")
                .and_then(|mut s| s.execute([]));
            Err(e)
        }
    }
}

/// Moves what is queued into `jobs`, up to [`BATCH`].
fn drain(rx: &mut mpsc::Receiver<Job>, jobs: &mut Vec<Job>) {
    while jobs.len() < BATCH {
        match rx.try_recv() {
            Ok(j) => jobs.push(j),
            Err(_) => break,
        }
    }
}

/// Runs one group in one transaction. `relaxed_now` is the connection's current
/// synchronous level (true: NORMAL), changed only when the group needs the other one.
fn run_batch(conn: &mut Connection, jobs: Vec<Job>, relaxed_now: &mut bool) {
    let relaxed = jobs.iter().all(|j| j.write_behind);
    if relaxed != *relaxed_now {
        // Without the level it wants, the batch still commits, with the stricter one.
        if conn
            .pragma_update(None, "synchronous", if relaxed { "NORMAL" } else { "FULL" })
            .is_ok()
        {
            *relaxed_now = relaxed;
        }
    }
    let mut txn = match conn.transaction() {
        Ok(t) => t,
        // Without a transaction nothing runs: dropping the jobs drops their reply channels,
        // so every caller gets an error instead of waiting.
        Err(_) => return,
    };
    let mut checkpoints = Vec::new();
    let replies: Vec<Reply> = jobs
        .into_iter()
        .map(|job| {
            checkpoints.extend(job.then_checkpoint);
            (job.work)(&mut txn)
        })
        .collect();
    let commit = txn.commit().map_err(StoreError::from);
    for reply in replies {
        reply(commit.clone());
    }
    for asked in checkpoints {
        let _ = asked.send(commit.clone().and_then(|()| checkpoint(conn)));
    }
}

/// `PRAGMA wal_checkpoint(TRUNCATE)`, outside any transaction: true when the whole log was
/// copied into the database file and emptied.
fn checkpoint(conn: &Connection) -> Result<bool, StoreError> {
    let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
    Ok(busy == 0)
}

/// A scratch directory for the store's tests, made empty and removed when dropped (declare it
/// before any connection or store, so they close first).
#[cfg(test)]
pub(crate) struct TempDir(PathBuf);

#[cfg(test)]
impl TempDir {
    pub(crate) fn new(name: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "dmdeleg-store-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// A file in the directory.
    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// A connection to `store.db` in the directory, opened as the engine opens it.
    pub(crate) fn open(&self) -> Connection {
        open(&self.file("store.db")).unwrap()
    }
}

#[cfg(test)]
impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store on `store.db` in `dir`, with the table `sql` makes.
    async fn store_with_table(dir: &TempDir, sql: &'static str) -> Store {
        let store = Store::start(&dir.file("store.db")).unwrap();
        store
            .call(move |c| Ok(c.execute_batch(sql)?))
            .await
            .unwrap();
        store
    }

    #[test]
    fn wal_full_sync_and_the_checkpoint_interval_are_read_back() {
        let dir = TempDir::new("pragmas");
        let conn = dir.open();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2);
        let temp: i64 = conn
            .query_row("PRAGMA temp_store", [], |r| r.get(0))
            .unwrap();
        assert_eq!(temp, 2, "savepoint journals in memory");
        let checkpoint: i64 = conn
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        assert_eq!(checkpoint, WAL_AUTOCHECKPOINT_PAGES);
    }

    #[cfg(unix)]
    #[test]
    fn a_new_database_and_its_wal_are_private_to_their_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("mode");
        let path = dir.file("secrets.db");
        let conn = open(&path).unwrap();
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        for name in ["secrets.db", "secrets.db-wal", "secrets.db-shm"] {
            let mode = std::fs::metadata(dir.file(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{name} has mode {mode:o}");
        }
        drop(conn);
        // An operator's own choice for an existing file stays.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        drop(open(&path).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
    }

    /// Jobs that share a group's transaction: one that fails after writing leaves nothing,
    /// and the others commit.
    #[tokio::test]
    async fn a_failing_job_in_a_group_leaves_nothing_and_the_others_commit() {
        let dir = TempDir::new("group");
        let store = store_with_table(&dir, "CREATE TABLE t (k TEXT PRIMARY KEY)").await;
        // Hold the writer so the next jobs queue up and run as one group.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let holder = tokio::spawn({
            let store = store.clone();
            async move { store.call(move |_| Ok(held.recv().is_ok())).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let before = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .call(|c| Ok(c.execute("INSERT INTO t VALUES ('before')", [])?))
                    .await
            }
        });
        let failing = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .call(|c| {
                        c.execute("INSERT INTO t VALUES ('failed')", [])?;
                        Err::<(), _>(StoreError::Corrupt("the job gives up".into()))
                    })
                    .await
            }
        });
        let after = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .call(|c| Ok(c.execute("INSERT INTO t VALUES ('after')", [])?))
                    .await
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        release.send(()).unwrap();
        assert_eq!(holder.await.unwrap(), Ok(true));
        assert_eq!(before.await.unwrap(), Ok(1));
        assert!(failing.await.unwrap().is_err());
        assert_eq!(after.await.unwrap(), Ok(1));
        let reader = dir.open();
        let mut stmt = reader.prepare("SELECT k FROM t ORDER BY k").unwrap();
        let keys: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(keys, ["after", "before"]);
    }

    /// After a checkpoint the database file alone holds every committed row (a copy of it
    /// is a whole backup) and the log is empty.
    #[tokio::test]
    async fn a_checkpoint_leaves_every_row_in_the_database_file() {
        let dir = TempDir::new("checkpoint");
        let store = store_with_table(&dir, "CREATE TABLE t (k TEXT PRIMARY KEY)").await;
        store
            .write_behind("a row", |c| {
                c.execute("INSERT INTO t VALUES ('behind')", [])?;
                Ok(())
            })
            .await
            .unwrap();
        let copy = |name: &str| {
            let to = dir.file(name);
            std::fs::copy(dir.file("store.db"), &to).unwrap();
            let conn = Connection::open(&to).unwrap();
            conn.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
        };
        // Before: the rows are only in the log, and a copy of the file alone has nothing.
        assert!(
            copy("before.db").is_err(),
            "the table is not in the file yet"
        );
        assert_eq!(store.checkpoint().await, Ok(true));
        let wal = std::fs::metadata(dir.file("store.db-wal")).map_or(0, |m| m.len());
        assert_eq!(wal, 0, "the log is emptied");
        assert_eq!(copy("after.db").unwrap(), 1, "the write-behind row too");
    }

    #[tokio::test]
    async fn write_behind_jobs_run_in_order_before_later_calls() {
        let dir = TempDir::new("behind");
        let store = store_with_table(&dir, "CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)").await;
        store
            .write_behind("a test row", |c| {
                c.execute("INSERT INTO t VALUES ('a', 1)", [])?;
                Ok(())
            })
            .await
            .unwrap();
        // A failing write-behind job fails alone (it is logged), and does not stop the
        // queue: the job after it sees the first one's row.
        store
            .write_behind("a row in a missing table", |c| {
                c.execute("INSERT INTO nowhere VALUES (1)", [])?;
                Ok(())
            })
            .await
            .unwrap();
        let seen = store
            .call(|c| {
                c.execute("INSERT INTO t VALUES ('b', 2)", [])?;
                Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))?)
            })
            .await
            .unwrap();
        assert_eq!(seen, 2);
        // Committed, not just queued: another connection sees both rows.
        let n: i64 = dir
            .open()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
    }
}
