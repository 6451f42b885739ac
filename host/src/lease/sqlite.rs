//! The SQLite lease store: the same conditional-write semantics as DynamoDB, in one file
//! that several shoal processes on one machine can share (WAL mode, busy timeout), with
//! the holder's writes (renew, checkpoint, release) on a connection and thread of their own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::{BatchExtent, Checkpoint, Lease, LeaseError, LeaseStore};

/// How long a writer waits for another process's transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Leases of one application in an SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteLeaseStore {
    path: PathBuf,
    application: String,
    /// Renewals, checkpoints and releases: what a holder writes to keep its leases.
    holder: Lane,
    /// Everything else (listing, takes, hand-off requests, shard sync), so a long read
    /// or a busy wait here never delays a renewal.
    coordinator: Lane,
}

const COLUMNS: &str = "lease_key, lease_owner, lease_counter, checkpoint, checkpoint_sub, owner_switches, \
                       parent_shard_ids, child_shard_ids, starting_hash_key, ending_hash_key, extra, handoff_to, pending_batch";

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// One connection on a thread of its own: calls run in order, off the async runtime and
/// off tokio's blocking pool (which guest work also uses).
#[derive(Debug, Clone)]
struct Lane {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Lane {
    fn open(path: &Path, name: &str) -> Result<Self, LeaseError> {
        let mut conn = Connection::open(path).map_err(|e| {
            LeaseError::Fatal(format!(
                "cannot open lease database {}: {e}",
                path.display()
            ))
        })?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(fatal)?;
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(format!("shoal-sqlite-{name}"))
            .spawn(move || {
                // Ends when every store clone (every sender) is dropped.
                while let Ok(job) = queue.recv() {
                    job(&mut conn);
                }
            })
            .map_err(|e| LeaseError::Fatal(format!("cannot start the lease store thread: {e}")))?;
        Ok(Self { jobs })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, LeaseError> + Send + 'static,
    ) -> Result<T, LeaseError> {
        let (done, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |conn| {
                let _ = done.send(f(conn));
            }))
            .map_err(|_| LeaseError::Fatal("the lease store thread has stopped".into()))?;
        result
            .await
            .map_err(|_| LeaseError::Fatal("the lease store thread dropped a call".into()))?
    }
}

impl SqliteLeaseStore {
    /// Open (creating) the database file for `application`'s leases.
    pub fn open(path: &Path, application: &str) -> Result<Self, LeaseError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| LeaseError::Fatal(format!("cannot create {}: {e}", dir.display())))?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            application: application.to_string(),
            holder: Lane::open(path, "holder")?,
            coordinator: Lane::open(path, "coordinator")?,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` on the coordinator's connection.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &str) -> Result<T, LeaseError> + Send + 'static,
    ) -> Result<T, LeaseError> {
        let app = self.application.clone();
        self.coordinator.run(move |conn| f(conn, &app)).await
    }

    /// Run `f` on the holder's connection (renew, checkpoint, release).
    async fn as_holder<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &str) -> Result<T, LeaseError> + Send + 'static,
    ) -> Result<T, LeaseError> {
        let app = self.application.clone();
        self.holder.run(move |conn| f(conn, &app)).await
    }
}

fn fatal(e: rusqlite::Error) -> LeaseError {
    LeaseError::Fatal(e.to_string())
}

/// Busy/locked databases are transient; everything else is fatal.
fn classify(e: rusqlite::Error) -> LeaseError {
    match &e {
        rusqlite::Error::SqliteFailure(err, _)
            if matches!(
                err.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            LeaseError::Transient(e.to_string())
        }
        _ => LeaseError::Fatal(e.to_string()),
    }
}

fn to_json(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

fn row_to_lease(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Lease, String>> {
    let key: String = row.get(0)?;
    let checkpoint: String = row.get(3)?;
    let sub: i64 = row.get(4)?;
    let parents: String = row.get(6)?;
    let children: String = row.get(7)?;
    let extra: String = row.get(10)?;
    let pending_batch: Option<String> = row.get(12)?;
    let counter: i64 = row.get(2)?;
    let switches: i64 = row.get(5)?;
    Ok((|| {
        Ok(Lease {
            owner: row.get(1).map_err(|e| e.to_string())?,
            counter: u64::try_from(counter)
                .map_err(|_| format!("lease {key}: negative counter"))?,
            checkpoint: Checkpoint::from_attributes(&checkpoint, u64::try_from(sub).unwrap_or(0))
                .map_err(|e| format!("lease {key}: {e}"))?,
            owner_switches_since_checkpoint: u64::try_from(switches).unwrap_or(0),
            parent_shard_ids: serde_json::from_str(&parents)
                .map_err(|e| format!("lease {key}: parents: {e}"))?,
            child_shard_ids: serde_json::from_str(&children)
                .map_err(|e| format!("lease {key}: children: {e}"))?,
            starting_hash_key: row.get(8).map_err(|e| e.to_string())?,
            ending_hash_key: row.get(9).map_err(|e| e.to_string())?,
            extra: serde_json::from_str(&extra).map_err(|e| format!("lease {key}: extra: {e}"))?,
            handoff_to: row.get(11).map_err(|e| e.to_string())?,
            pending_batch: pending_batch.as_deref().and_then(|v| {
                BatchExtent::from_attribute(v)
                    .map_err(
                        |e| tracing::warn!(lease = %key, "ignoring the stored pending batch: {e}"),
                    )
                    .ok()
            }),
            key: key.clone(),
        })
    })())
}

fn read_one(conn: &Connection, app: &str, key: &str) -> Result<Option<Lease>, LeaseError> {
    let found = conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM leases WHERE application = ?1 AND lease_key = ?2"),
            params![app, key],
            row_to_lease,
        )
        .optional()
        .map_err(classify)?;
    match found {
        None => Ok(None),
        Some(Ok(lease)) => Ok(Some(lease)),
        Some(Err(e)) => Err(LeaseError::Fatal(e)),
    }
}

/// Run a conditional update; zero rows changed means the condition failed (or the lease
/// is gone). Returns the lease as stored afterwards.
fn conditional(
    conn: &Connection,
    app: &str,
    key: &str,
    sql: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Lease, LeaseError> {
    let changed = conn.execute(sql, args).map_err(classify)?;
    if changed == 0 {
        return match read_one(conn, app, key)? {
            Some(_) => Err(LeaseError::Conflict {
                key: key.to_string(),
            }),
            None => Err(LeaseError::NotFound {
                key: key.to_string(),
            }),
        };
    }
    read_one(conn, app, key)?.ok_or_else(|| LeaseError::NotFound {
        key: key.to_string(),
    })
}

/// A database made before `pending_batch` existed gets the column (empty: no batch
/// pending). Another process may add it at the same moment: that is success too.
fn add_pending_batch_column(conn: &Connection) -> Result<(), LeaseError> {
    let has_column = conn
        .prepare("SELECT 1 FROM pragma_table_info('leases') WHERE name = 'pending_batch'")
        .and_then(|mut stmt| stmt.exists([]))
        .map_err(classify)?;
    if has_column {
        return Ok(());
    }
    match conn.execute("ALTER TABLE leases ADD COLUMN pending_batch TEXT", []) {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("duplicate column") => Ok(()),
        Err(e) => Err(classify(e)),
    }
}

fn counter(lease: &Lease) -> i64 {
    i64::try_from(lease.counter).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl LeaseStore for SqliteLeaseStore {
    async fn prepare(&self) -> Result<(), LeaseError> {
        self.with(|conn, _| {
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(classify)?;
            // Checkpoints are the consumer's durable state: survive power loss too.
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(classify)?;
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS leases (
                    application TEXT NOT NULL,
                    lease_key TEXT NOT NULL,
                    lease_owner TEXT,
                    lease_counter INTEGER NOT NULL,
                    checkpoint TEXT NOT NULL,
                    checkpoint_sub INTEGER NOT NULL DEFAULT 0,
                    owner_switches INTEGER NOT NULL DEFAULT 0,
                    parent_shard_ids TEXT NOT NULL DEFAULT '[]',
                    child_shard_ids TEXT NOT NULL DEFAULT '[]',
                    starting_hash_key TEXT,
                    ending_hash_key TEXT,
                    extra TEXT NOT NULL DEFAULT '{}',
                    handoff_to TEXT,
                    pending_batch TEXT,
                    PRIMARY KEY (application, lease_key)
                )",
            )
            .map_err(classify)?;
            add_pending_batch_column(conn)
        })
        .await?;
        // `synchronous` is per connection: the holder's writes are the checkpoints.
        self.as_holder(|conn, _| {
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(classify)
        })
        .await
    }

    async fn list(&self) -> Result<Vec<Lease>, LeaseError> {
        self.with(|conn, app| {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM leases WHERE application = ?1 ORDER BY lease_key"
                ))
                .map_err(classify)?;
            let rows = stmt
                .query_map(params![app], row_to_lease)
                .map_err(classify)?;
            let mut leases = Vec::new();
            for row in rows {
                leases.push(row.map_err(classify)?.map_err(LeaseError::Fatal)?);
            }
            Ok(leases)
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<Lease>, LeaseError> {
        let key = key.to_string();
        self.with(move |conn, app| read_one(conn, app, &key)).await
    }

    async fn create_if_absent(&self, lease: &Lease) -> Result<bool, LeaseError> {
        let lease = lease.clone();
        self.with(move |conn, app| {
            let changed = conn
                .execute(
                    "INSERT OR IGNORE INTO leases (application, lease_key, lease_owner, lease_counter, checkpoint, checkpoint_sub,
                        owner_switches, parent_shard_ids, child_shard_ids, starting_hash_key, ending_hash_key, extra)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                    params![
                        app,
                        lease.key,
                        lease.owner,
                        counter(&lease),
                        lease.checkpoint.as_attribute(),
                        i64::try_from(lease.checkpoint.sub_sequence()).unwrap_or(i64::MAX),
                        i64::try_from(lease.owner_switches_since_checkpoint).unwrap_or(0),
                        to_json(&lease.parent_shard_ids),
                        to_json(&lease.child_shard_ids),
                        lease.starting_hash_key,
                        lease.ending_hash_key,
                        serde_json::to_string(&lease.extra).unwrap_or_else(|_| "{}".into()),
                    ],
                )
                .map_err(classify)?;
            Ok(changed == 1)
        })
        .await
    }

    async fn renew(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        let (key, owner, expected) = (lease.key.clone(), lease.owner.clone(), counter(lease));
        self.as_holder(move |conn, app| {
            conditional(
                conn,
                app,
                &key,
                "UPDATE leases SET lease_counter = lease_counter + 1
                 WHERE application = ?1 AND lease_key = ?2 AND lease_owner IS ?3 AND lease_counter = ?4",
                &[&app, &key, &owner, &expected],
            )
        })
        .await
    }

    async fn take(&self, lease: &Lease, owner: &str) -> Result<Lease, LeaseError> {
        let (key, expected, new_owner) = (lease.key.clone(), counter(lease), owner.to_string());
        self.with(move |conn, app| {
            conditional(
                conn,
                app,
                &key,
                "UPDATE leases SET lease_counter = lease_counter + 1,
                    owner_switches = owner_switches + (CASE WHEN lease_owner IS NULL OR lease_owner = ?3 THEN 0 ELSE 1 END),
                    lease_owner = ?3, handoff_to = NULL
                 WHERE application = ?1 AND lease_key = ?2 AND lease_counter = ?4",
                &[&app, &key, &new_owner, &expected],
            )
        })
        .await
    }

    async fn checkpoint(
        &self,
        lease: &Lease,
        checkpoint: &Checkpoint,
    ) -> Result<Lease, LeaseError> {
        let (key, owner, expected) = (lease.key.clone(), lease.owner.clone(), counter(lease));
        let value = checkpoint.as_attribute().to_string();
        let sub = i64::try_from(checkpoint.sub_sequence()).unwrap_or(i64::MAX);
        self.as_holder(move |conn, app| {
            conditional(
                conn,
                app,
                &key,
                "UPDATE leases SET lease_counter = lease_counter + 1, checkpoint = ?5, checkpoint_sub = ?6, owner_switches = 0
                 WHERE application = ?1 AND lease_key = ?2 AND lease_owner IS ?3 AND lease_counter = ?4",
                &[&app, &key, &owner, &expected, &value, &sub],
            )
        })
        .await
    }

    async fn prepare_batch(
        &self,
        lease: &Lease,
        checkpoint: &Checkpoint,
        extent: &BatchExtent,
    ) -> Result<Lease, LeaseError> {
        let (key, owner, expected) = (lease.key.clone(), lease.owner.clone(), counter(lease));
        let value = checkpoint.as_attribute().to_string();
        let sub = i64::try_from(checkpoint.sub_sequence()).unwrap_or(i64::MAX);
        let extent = extent.as_attribute();
        self.as_holder(move |conn, app| {
            conditional(
                conn,
                app,
                &key,
                "UPDATE leases SET lease_counter = lease_counter + 1,
                    owner_switches = CASE WHEN checkpoint = ?5 AND checkpoint_sub = ?6 THEN owner_switches ELSE 0 END,
                    checkpoint = ?5, checkpoint_sub = ?6, pending_batch = ?7
                 WHERE application = ?1 AND lease_key = ?2 AND lease_owner IS ?3 AND lease_counter = ?4",
                &[&app, &key, &owner, &expected, &value, &sub, &extent],
            )
        })
        .await
    }

    async fn release(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        let (key, owner, expected) = (lease.key.clone(), lease.owner.clone(), counter(lease));
        self.as_holder(move |conn, app| {
            conditional(
                conn,
                app,
                &key,
                "UPDATE leases SET lease_counter = lease_counter + 1, lease_owner = NULL
                 WHERE application = ?1 AND lease_key = ?2 AND lease_owner IS ?3 AND lease_counter = ?4",
                &[&app, &key, &owner, &expected],
            )
        })
        .await
    }

    async fn request_handoff(&self, lease: &Lease, requester: &str) -> Result<(), LeaseError> {
        let (key, owner, expected, requester) = (
            lease.key.clone(),
            lease.owner.clone(),
            counter(lease),
            requester.to_string(),
        );
        self.with(move |conn, app| {
            conditional(
                conn,
                app,
                &key,
                "UPDATE leases SET handoff_to = ?5
                 WHERE application = ?1 AND lease_key = ?2 AND lease_owner IS ?3 AND lease_counter = ?4",
                &[&app, &key, &owner, &expected, &requester],
            )
            .map(|_| ())
        })
        .await
    }

    async fn set_child_shards(&self, key: &str, children: &[String]) -> Result<(), LeaseError> {
        let (key, children) = (key.to_string(), to_json(children));
        self.with(move |conn, app| {
            let changed = conn
                .execute(
                    "UPDATE leases SET child_shard_ids = ?3 WHERE application = ?1 AND lease_key = ?2",
                    params![app, key, children],
                )
                .map_err(classify)?;
            if changed == 0 { Err(LeaseError::NotFound { key }) } else { Ok(()) }
        })
        .await
    }

    async fn delete(&self, lease: &Lease) -> Result<(), LeaseError> {
        let (key, expected) = (lease.key.clone(), counter(lease));
        self.with(move |conn, app| {
            let changed = conn
                .execute(
                    "DELETE FROM leases WHERE application = ?1 AND lease_key = ?2 AND lease_counter = ?3",
                    params![app, key, expected],
                )
                .map_err(classify)?;
            if changed == 0 {
                return match read_one(conn, app, &key)? {
                    Some(_) => Err(LeaseError::Conflict { key }),
                    None => Ok(()),
                };
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store(dir: &Path, app: &str) -> SqliteLeaseStore {
        let store = SqliteLeaseStore::open(&dir.join("leases.db"), app).expect("open");
        store.prepare().await.expect("prepare");
        store
    }

    /// Stores on one file open, read and close beside each other in one process (the two
    /// lanes of every store, a tool listing leases beside a running consumer). SQLite
    /// 3.51.1's unix VFS took two mutexes in opposite orders when one connection closed
    /// while another took its closing lock, and a process hung forever this way.
    #[test]
    fn stores_on_one_file_open_and_close_side_by_side_without_deadlock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("leases.db");
        let (done, finished) = std::sync::mpsc::channel();
        for thread in 0..3 {
            let (path, done) = (path.clone(), done.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                for round in 0..300 {
                    let store = SqliteLeaseStore::open(&path, "app").expect("open");
                    runtime.block_on(async {
                        store.prepare().await.expect("prepare");
                        let lease =
                            Lease::new(&format!("shard-{thread}-{round}"), Checkpoint::TrimHorizon);
                        store.create_if_absent(&lease).await.expect("create");
                        store.list().await.expect("list");
                    });
                }
                let _ = done.send(thread);
            });
        }
        for _ in 0..3 {
            finished
                .recv_timeout(Duration::from_secs(120))
                .expect("every thread finishes: one that hangs here is a lock-order deadlock");
        }
    }

    /// The pending batch is written with the checkpoint, fenced, read back, kept by later
    /// checkpoints; a database made before the column existed gets it on `prepare`.
    #[tokio::test]
    async fn a_pending_batch_is_stored_fenced_and_added_to_an_older_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            // The table as it was before `pending_batch`, with a lease in it.
            let conn = Connection::open(dir.path().join("leases.db")).expect("open");
            conn.execute_batch(
                "CREATE TABLE leases (application TEXT NOT NULL, lease_key TEXT NOT NULL,
                    lease_owner TEXT, lease_counter INTEGER NOT NULL, checkpoint TEXT NOT NULL,
                    checkpoint_sub INTEGER NOT NULL DEFAULT 0, owner_switches INTEGER NOT NULL DEFAULT 0,
                    parent_shard_ids TEXT NOT NULL DEFAULT '[]', child_shard_ids TEXT NOT NULL DEFAULT '[]',
                    starting_hash_key TEXT, ending_hash_key TEXT, extra TEXT NOT NULL DEFAULT '{}',
                    handoff_to TEXT, PRIMARY KEY (application, lease_key));
                 INSERT INTO leases (application, lease_key, lease_counter, checkpoint)
                    VALUES ('app', 'shardId-0', 0, 'TRIM_HORIZON');",
            )
            .expect("old schema");
        }
        let leases = store(dir.path(), "app").await;
        let old = leases.get("shardId-0").await.expect("get").expect("kept");
        assert_eq!(old.pending_batch, None);
        let a = leases.take(&old, "worker-a").await.expect("take");
        let extent = BatchExtent::from_attribute("10/0 19/3").expect("extent");
        let a = leases
            .prepare_batch(&a, &Checkpoint::TrimHorizon, &extent)
            .await
            .expect("prepare");
        assert_eq!((a.pending_batch.as_ref(), a.counter), (Some(&extent), 2));
        let seq = Checkpoint::Sequence {
            sequence: "19".into(),
            sub_sequence: 3,
        };
        let a = leases.checkpoint(&a, &seq).await.expect("checkpoint");
        assert_eq!(
            a.pending_batch.as_ref(),
            Some(&extent),
            "a checkpoint keeps it"
        );
        let b = leases.take(&a, "worker-b").await.expect("steal");
        assert_eq!(
            b.pending_batch.as_ref(),
            Some(&extent),
            "the next holder reads it"
        );
        assert!(matches!(
            leases.prepare_batch(&a, &seq, &extent).await,
            Err(LeaseError::Conflict { .. })
        ));
        // Reopened: the column is there, and `prepare` again is harmless.
        let again = store(dir.path(), "app").await;
        assert_eq!(again.get("shardId-0").await.expect("get"), Some(b.clone()));
    }

    #[tokio::test]
    async fn conditional_writes_fence_a_lease() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path(), "app").await;
        let lease = Lease::new("shardId-0", Checkpoint::TrimHorizon);
        assert!(store.create_if_absent(&lease).await.expect("create"));
        assert!(!store.create_if_absent(&lease).await.expect("exists"));

        let a = store.take(&lease, "worker-a").await.expect("take");
        // Taking an unowned lease is not an owner switch (KCL counts only real hand-overs).
        assert_eq!(
            (
                a.owner.as_deref(),
                a.counter,
                a.owner_switches_since_checkpoint
            ),
            (Some("worker-a"), 1, 0)
        );
        let a = store.renew(&a).await.expect("renew");
        assert_eq!(a.counter, 2);

        // worker-b takes it with the counter it saw: worker-a is fenced out.
        let b = store.take(&a, "worker-b").await.expect("steal");
        assert_eq!(b.owner_switches_since_checkpoint, 1);
        assert_eq!(
            store.renew(&a).await,
            Err(LeaseError::Conflict {
                key: "shardId-0".into()
            })
        );
        let seq = Checkpoint::Sequence {
            sequence: "42".into(),
            sub_sequence: 1,
        };
        assert!(matches!(
            store.checkpoint(&a, &seq).await,
            Err(LeaseError::Conflict { .. })
        ));
        assert!(matches!(
            store.release(&a).await,
            Err(LeaseError::Conflict { .. })
        ));

        store
            .request_handoff(&b, "worker-c")
            .await
            .expect("request");
        let asked = store.get("shardId-0").await.expect("get").expect("lease");
        assert_eq!(
            (asked.handoff_to.as_deref(), asked.counter),
            (Some("worker-c"), b.counter),
            "a request does not bump the counter"
        );
        let b = store.renew(&b).await.expect("the owner keeps renewing");
        let b = store.checkpoint(&b, &seq).await.expect("checkpoint");
        assert_eq!(
            (b.checkpoint.clone(), b.owner_switches_since_checkpoint),
            (seq, 0)
        );
        let released = store.release(&b).await.expect("release");
        // Released after a hand-off request: reserved for the requester until taken.
        assert_eq!(
            (released.owner.as_deref(), released.handoff_to.as_deref()),
            (None, Some("worker-c"))
        );
        assert_eq!(
            store.get("shardId-0").await.expect("get"),
            Some(released.clone())
        );
        let c = store
            .take(&released, "worker-c")
            .await
            .expect("requester takes it");
        assert_eq!(c.handoff_to, None, "a take clears the request");
        store.delete(&b).await.expect_err("stale counter");
        store.delete(&c).await.expect("delete");
        assert_eq!(store.list().await.expect("list"), vec![]);
    }

    #[tokio::test]
    async fn applications_share_a_file_without_seeing_each_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        let one = store(dir.path(), "one").await;
        let two = store(dir.path(), "two").await;
        let mut lease = Lease::new("shardId-1", Checkpoint::Latest);
        lease.parent_shard_ids = vec!["shardId-0".into()];
        lease.extra.insert("custom".into(), "kept".into());
        one.create_if_absent(&lease).await.expect("create");
        assert_eq!(two.list().await.expect("list"), vec![]);
        assert_eq!(one.list().await.expect("list"), vec![lease.clone()]);
        one.set_child_shards("shardId-1", &["shardId-2".into(), "shardId-3".into()])
            .await
            .expect("children");
        let got = one.get("shardId-1").await.expect("get").expect("exists");
        assert_eq!(
            got.child_shard_ids,
            vec!["shardId-2".to_string(), "shardId-3".to_string()]
        );
        assert_eq!(got.extra.get("custom").map(String::as_str), Some("kept"));
    }
}
