//! Shard sync: make the lease table match the stream. Every listed shard gets a lease,
//! parents learn their children, and leases of finished shards the stream no longer lists
//! are deleted. Lineage itself is enforced by the coordinator: a lease is not taken until
//! every parent is finished (`SHARD_END`).
//!
//! Where a new lease starts follows the KCL (2.x `HierarchicalShardSyncer`, which lists a
//! new stream with the `ShardFilter` of the initial position):
//! - a shard whose parent already has a lease continues processed lineage: TRIM_HORIZON,
//!   so nothing between the parent's end and the child's start is skipped;
//! - otherwise, for a new lineage, the initial position names its start shards: every
//!   shard for TRIM_HORIZON, the open shards for LATEST, the shards open at the time for
//!   AT_TIMESTAMP. Start shards begin at the initial position, their descendants at
//!   TRIM_HORIZON, and their closed ancestors get leases that are already finished
//!   (`SHARD_END`), so the start shards can be taken and nothing older is replayed.
//!
//! The start of a lease is decided once, when it is created; an existing lease is never
//! rewritten.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use crate::config::InitialPosition;
use crate::lease::{Checkpoint, Lease, LeaseError, LeaseStore};
use crate::source::{ShardDescription, ShardSource, SourceError};

/// What a sync changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncSummary {
    /// Shards listed.
    pub shards: usize,
    /// Leases created, in the order they were created.
    pub created: Vec<String>,
    /// Leases deleted.
    pub deleted: Vec<String>,
}

/// Why a sync failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Listing shards failed.
    #[error("cannot list shards: {0}")]
    Source(#[from] SourceError),
    /// Reading or writing leases failed.
    #[error("cannot sync leases: {0}")]
    Lease(#[from] LeaseError),
}

impl SyncError {
    /// Whether retrying cannot help: the stream is gone (or was never there), access is
    /// denied, the lease table is gone.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            SyncError::Source(SourceError::NotFound(_) | SourceError::Fatal(_))
                | SyncError::Lease(LeaseError::Fatal(_))
        )
    }
}

/// Where a new lease starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// At the initial position: a start shard of a new lineage.
    Initial,
    /// At TRIM_HORIZON: a descendant of a shard that is (or will be) processed.
    TrimHorizon,
    /// Already finished: a closed ancestor of the start shards, not replayed.
    Finished,
}

/// Which shards a new lineage starts at.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StartShards {
    /// Every shard not descended from a processed one starts at the initial position.
    Every,
    /// These shards; their closed ancestors are finished, their descendants follow.
    Only(HashSet<String>),
}

/// The stream and the lease table as this sync found them.
struct Known<'a> {
    /// Listed shards by id.
    listed: HashMap<&'a str, &'a ShardDescription>,
    /// Existing leases by key.
    leases: HashMap<&'a str, &'a Lease>,
    /// Listed shards one of whose listed descendants has a lease.
    leased_descendant: HashSet<&'a str>,
}

impl Known<'_> {
    /// The parents whose lineage is known: listed, or with a lease.
    fn parents(&self, shard: &ShardDescription) -> Vec<String> {
        shard
            .parents()
            .into_iter()
            .filter(|p| {
                self.listed.contains_key(p.as_str()) || self.leases.contains_key(p.as_str())
            })
            .collect()
    }

    /// Whether a descendant of `shard` has a lease: then `shard` itself was processed
    /// (its lease since deleted as finished, perhaps by a peer between this sync's two
    /// reads) or skipped as a closed ancestor, and is never started again.
    fn has_leased_descendant(&self, shard: &str) -> bool {
        self.leased_descendant.contains(shard)
    }

    /// A known parent already has a lease: the shard continues processed lineage.
    fn continues_leased(&self, shard: &ShardDescription) -> bool {
        self.parents(shard)
            .iter()
            .any(|p| self.leases.contains_key(p.as_str()))
    }
}

/// One sync pass. `initial` decides where the leases of a new lineage start (see the
/// module documentation); children of leased shards always start at TRIM_HORIZON.
pub async fn sync_shards(
    source: &dyn ShardSource,
    store: &dyn LeaseStore,
    initial: &InitialPosition,
) -> Result<SyncSummary, SyncError> {
    let shards = source.list_shards().await?;
    let leases = store.list().await?;
    let listed: HashMap<&str, &ShardDescription> =
        shards.iter().map(|s| (s.shard_id.as_str(), s)).collect();
    let leased: HashMap<&str, &Lease> = leases.iter().map(|l| (l.key.as_str(), l)).collect();
    let known = Known {
        leased_descendant: ancestors_of_leased(&listed, &leased),
        listed,
        leases: leased,
    };
    let mut summary = SyncSummary {
        shards: shards.len(),
        ..SyncSummary::default()
    };
    let new: Vec<&ShardDescription> = parents_first(&shards)
        .into_iter()
        .filter(|s| !known.leases.contains_key(s.shard_id.as_str()))
        .collect();
    let starts = if new.iter().all(|s| known.continues_leased(s)) {
        StartShards::Every // nothing new to decide
    } else {
        start_shards(source, initial, &shards).await?
    };
    for (shard, start) in plan(&new, &known, &starts) {
        create_lease(store, shard, start, &known, initial, &mut summary).await?;
    }
    record_children(store, &shards, &known, &summary).await?;
    delete_finished(store, &leases, &known, &mut summary).await?;
    Ok(summary)
}

/// The start shards of a new lineage for `initial`.
async fn start_shards(
    source: &dyn ShardSource,
    initial: &InitialPosition,
    shards: &[ShardDescription],
) -> Result<StartShards, SourceError> {
    match initial {
        InitialPosition::TrimHorizon => Ok(StartShards::Every),
        InitialPosition::Latest => Ok(StartShards::Only(
            shards
                .iter()
                .filter(|s| !s.is_closed())
                .map(|s| s.shard_id.clone())
                .collect(),
        )),
        // A source that cannot tell which shards were open then, or cannot be asked:
        // every shard starts AT_TIMESTAMP (the KCL's rule for a non-empty lease table).
        // That is sound, only slower: a shard closed before the time delivers nothing
        // and ends, a later one delivers every record from the time on.
        InitialPosition::AtTimestamp(at) => match source.shards_open_at(*at).await {
            Ok(Some(open)) => Ok(StartShards::Only(open.into_iter().collect())),
            Ok(None) => Ok(StartShards::Every),
            Err(SourceError::Fatal(e)) => {
                tracing::warn!(
                    "cannot list the shards open at the initial timestamp ({e}); every new shard starts at the timestamp"
                );
                Ok(StartShards::Every)
            }
            Err(e) => Err(e),
        },
    }
}

/// `shards` with every listed parent before its children, otherwise by shard id.
fn parents_first(shards: &[ShardDescription]) -> Vec<&ShardDescription> {
    let by_id: BTreeMap<&str, &ShardDescription> =
        shards.iter().map(|s| (s.shard_id.as_str(), s)).collect();
    let mut seen = HashSet::new();
    let mut order = Vec::with_capacity(shards.len());
    for shard in by_id.values().copied() {
        visit(shard, &by_id, &mut seen, &mut order);
    }
    order
}

fn visit<'a>(
    shard: &'a ShardDescription,
    by_id: &BTreeMap<&str, &'a ShardDescription>,
    seen: &mut HashSet<&'a str>,
    order: &mut Vec<&'a ShardDescription>,
) {
    if !seen.insert(shard.shard_id.as_str()) {
        return;
    }
    for parent in shard.parents() {
        if let Some(p) = by_id.get(parent.as_str()) {
            visit(p, by_id, seen, order);
        }
    }
    order.push(shard);
}

/// Where each new shard (`new`, parents first) starts, in creation order: the shards
/// that are read parents first, then the finished ancestors children first. A sync that
/// fails half-way so never leaves a finished ancestor whose children have no lease (the
/// next sync would take it for processed lineage and start them at TRIM_HORIZON).
fn plan<'a>(
    new: &[&'a ShardDescription],
    known: &Known<'_>,
    starts: &StartShards,
) -> Vec<(&'a ShardDescription, Start)> {
    let skippable = match starts {
        StartShards::Every => HashSet::new(),
        StartShards::Only(open) => closed_ancestors(open, known),
    };
    let mut planned: HashMap<&str, Start> = HashMap::new();
    let mut decided = Vec::with_capacity(new.len());
    for shard in new {
        let start = decide(shard, known, &planned, starts, &skippable);
        planned.insert(shard.shard_id.as_str(), start);
        decided.push((*shard, start));
    }
    let read = decided.iter().filter(|(_, s)| *s != Start::Finished);
    let finished = decided.iter().rev().filter(|(_, s)| *s == Start::Finished);
    read.chain(finished).copied().collect()
}

/// The listed shards with a listed descendant that has a lease.
fn ancestors_of_leased<'a>(
    listed: &HashMap<&'a str, &'a ShardDescription>,
    leased: &HashMap<&str, &Lease>,
) -> HashSet<&'a str> {
    let mut found = HashSet::new();
    let mut pending: Vec<&ShardDescription> = listed
        .iter()
        .filter(|(id, _)| leased.contains_key(*id))
        .map(|(_, shard)| *shard)
        .collect();
    while let Some(shard) = pending.pop() {
        for parent in shard.parents() {
            if let Some((id, described)) = listed.get_key_value(parent.as_str())
                && found.insert(*id)
            {
                pending.push(described);
            }
        }
    }
    found
}

/// One new shard's start, its parents already decided.
fn decide(
    shard: &ShardDescription,
    known: &Known<'_>,
    planned: &HashMap<&str, Start>,
    starts: &StartShards,
    skippable: &HashSet<&str>,
) -> Start {
    if known.has_leased_descendant(&shard.shard_id) {
        return Start::Finished;
    }
    if known.continues_leased(shard) {
        return Start::TrimHorizon;
    }
    if *starts == StartShards::Every {
        return Start::Initial;
    }
    let id = shard.shard_id.as_str();
    let follows = known.parents(shard).iter().any(|p| {
        matches!(
            planned.get(p.as_str()),
            Some(Start::Initial | Start::TrimHorizon)
        )
    });
    if follows {
        Start::TrimHorizon
    } else if skippable.contains(id) {
        Start::Finished
    } else {
        // A start shard; or, in an inconsistent listing, neither a start shard nor a
        // closed ancestor of one: start it at the position rather than mark it done.
        Start::Initial
    }
}

/// The listed, closed ancestors of the start shards that are not start shards themselves.
fn closed_ancestors<'a>(open: &HashSet<String>, known: &Known<'a>) -> HashSet<&'a str> {
    let mut stack: Vec<&ShardDescription> = open
        .iter()
        .filter_map(|id| known.listed.get(id.as_str()).copied())
        .collect();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut skippable = HashSet::new();
    while let Some(shard) = stack.pop() {
        for parent in shard.parents() {
            let Some((&id, &p)) = known.listed.get_key_value(parent.as_str()) else {
                continue;
            };
            if seen.insert(id) {
                if p.is_closed() && !open.contains(id) {
                    skippable.insert(id);
                }
                stack.push(p);
            }
        }
    }
    skippable
}

fn initial_checkpoint(initial: &InitialPosition) -> Checkpoint {
    match initial {
        InitialPosition::TrimHorizon => Checkpoint::TrimHorizon,
        InitialPosition::Latest => Checkpoint::Latest,
        InitialPosition::AtTimestamp(_) => Checkpoint::AtTimestamp,
    }
}

async fn create_lease(
    store: &dyn LeaseStore,
    shard: &ShardDescription,
    start: Start,
    known: &Known<'_>,
    initial: &InitialPosition,
    summary: &mut SyncSummary,
) -> Result<(), LeaseError> {
    let checkpoint = match start {
        Start::Initial => initial_checkpoint(initial),
        Start::TrimHorizon => Checkpoint::TrimHorizon,
        Start::Finished => Checkpoint::ShardEnd,
    };
    let mut lease = Lease::new(&shard.shard_id, checkpoint);
    lease.parent_shard_ids = known.parents(shard);
    lease.starting_hash_key = shard.starting_hash_key.clone();
    lease.ending_hash_key = shard.ending_hash_key.clone();
    if store.create_if_absent(&lease).await? {
        tracing::info!(shard = %shard.shard_id, parents = ?lease.parent_shard_ids, checkpoint = %lease.checkpoint, "created lease for shard");
        summary.created.push(shard.shard_id.clone());
    }
    Ok(())
}

/// Tell known parents their children, from the shard list (ChildShards from GetRecords
/// is only a hint).
async fn record_children(
    store: &dyn LeaseStore,
    shards: &[ShardDescription],
    known: &Known<'_>,
    summary: &SyncSummary,
) -> Result<(), LeaseError> {
    let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for shard in shards {
        for parent in known.parents(shard) {
            children
                .entry(parent)
                .or_default()
                .push(shard.shard_id.clone());
        }
    }
    for (parent, kids) in &children {
        let existing = known
            .leases
            .get(parent.as_str())
            .map(|l| l.child_shard_ids.clone());
        let created_now = summary.created.iter().any(|c| c == parent);
        if existing.is_none() && !created_now {
            continue;
        }
        let mut kids = kids.clone();
        kids.sort();
        kids.dedup();
        if existing.unwrap_or_default() != kids {
            store.set_child_shards(parent, &kids).await?;
        }
    }
    Ok(())
}

/// A finished lease whose shard is gone from the stream, and whose children all have
/// leases, has nothing left to guard.
async fn delete_finished(
    store: &dyn LeaseStore,
    leases: &[Lease],
    known: &Known<'_>,
    summary: &mut SyncSummary,
) -> Result<(), LeaseError> {
    for lease in leases {
        if known.listed.contains_key(lease.key.as_str()) || !lease.is_finished() {
            continue;
        }
        let children_leased = lease
            .child_shard_ids
            .iter()
            .all(|c| known.leases.contains_key(c.as_str()));
        if children_leased {
            match store.delete(lease).await {
                Ok(()) => {
                    tracing::info!(shard = %lease.key, "deleted the lease of a finished shard the stream no longer lists");
                    summary.deleted.push(lease.key.clone());
                }
                Err(LeaseError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// The next sync delay: `interval` ± 50 %, so workers do not list shards together.
pub fn jittered_interval(interval: Duration) -> Duration {
    interval.mul_f64(0.5 + fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::sqlite::SqliteLeaseStore;
    use crate::source::local::LocalSource;
    use crate::source::{Fetched, StartPosition};
    use std::sync::Mutex;

    /// A shard of the fake stream: its description and when it was open.
    #[derive(Debug, Clone)]
    struct FakeShard {
        description: ShardDescription,
        created_ms: i64,
        closed_ms: Option<i64>,
    }

    /// An in-memory stream that reshards on demand. It lists children before parents
    /// (as a source may), and can be told not to know which shards were open when.
    #[derive(Debug)]
    struct FakeStream {
        shards: Mutex<Vec<FakeShard>>,
        history: History,
    }

    /// What the fake says when asked which shards were open at a time.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum History {
        Known,
        Unknown,
        Refused,
    }

    impl FakeStream {
        fn new(roots: &[&str]) -> Self {
            let stream = Self {
                shards: Mutex::new(Vec::new()),
                history: History::Known,
            };
            for root in roots {
                stream.add(root, &[], 0);
            }
            stream
        }

        fn add(&self, id: &str, parents: &[&str], at: i64) {
            self.shards.lock().expect("lock").push(FakeShard {
                description: ShardDescription {
                    shard_id: id.to_string(),
                    parent_shard_id: parents.first().map(|p| p.to_string()),
                    adjacent_parent_shard_id: parents.get(1).map(|p| p.to_string()),
                    starting_hash_key: None,
                    ending_hash_key: None,
                    ending_sequence_number: None,
                },
                created_ms: at,
                closed_ms: None,
            });
        }

        fn close(&self, id: &str, at: i64) {
            let mut shards = self.shards.lock().expect("lock");
            let shard = shards
                .iter_mut()
                .find(|s| s.description.shard_id == id)
                .expect("a listed shard");
            shard.closed_ms = Some(at);
            shard.description.ending_sequence_number = Some(format!("{at}999"));
        }

        /// `parent` splits into `children` at `at`.
        fn split(&self, parent: &str, children: [&str; 2], at: i64) {
            self.close(parent, at);
            for child in children {
                self.add(child, &[parent], at);
            }
        }

        /// `parents` merge into `child` at `at`.
        fn merge(&self, parents: [&str; 2], child: &str, at: i64) {
            for parent in parents {
                self.close(parent, at);
            }
            self.add(child, &parents, at);
        }

        /// s0 and s3 at t=0; s0 splits into s1 and s2 at 100; s2 and s3 merge into s4 at
        /// 200; s1 splits into s5 and s6 at 300. Open now: s4, s5, s6.
        fn resharded() -> Self {
            let stream = Self::new(&["s0", "s3"]);
            stream.split("s0", ["s1", "s2"], 100);
            stream.merge(["s2", "s3"], "s4", 200);
            stream.split("s1", ["s5", "s6"], 300);
            stream
        }
    }

    #[async_trait::async_trait]
    impl ShardSource for FakeStream {
        fn stream_name(&self) -> &str {
            "fake"
        }

        async fn list_shards(&self) -> Result<Vec<ShardDescription>, SourceError> {
            let shards = self.shards.lock().expect("lock");
            Ok(shards.iter().rev().map(|s| s.description.clone()).collect())
        }

        async fn shards_open_at(&self, at_ms: i64) -> Result<Option<Vec<String>>, SourceError> {
            match self.history {
                History::Known => {}
                History::Unknown => return Ok(None),
                History::Refused => return Err(SourceError::Fatal("no filters here".into())),
            }
            let shards = self.shards.lock().expect("lock");
            let open = shards
                .iter()
                .filter(|s| s.created_ms <= at_ms && s.closed_ms.is_none_or(|c| c >= at_ms))
                .map(|s| s.description.shard_id.clone());
            Ok(Some(open.collect()))
        }

        async fn iterator(&self, _: &str, _: &StartPosition) -> Result<String, SourceError> {
            Err(SourceError::Fatal("the fake stream has no records".into()))
        }

        async fn fetch(&self, _: &str, _: usize) -> Result<Fetched, SourceError> {
            Err(SourceError::Fatal("the fake stream has no records".into()))
        }
    }

    async fn empty_store(dir: &tempfile::TempDir) -> SqliteLeaseStore {
        let store = SqliteLeaseStore::open(&dir.path().join("l.db"), "app").expect("open");
        store.prepare().await.expect("prepare");
        store
    }

    /// Each lease's checkpoint, by shard.
    async fn checkpoints(store: &SqliteLeaseStore) -> BTreeMap<String, Checkpoint> {
        let leases = store.list().await.expect("list");
        leases.into_iter().map(|l| (l.key, l.checkpoint)).collect()
    }

    fn expected(rows: &[(&str, Checkpoint)]) -> BTreeMap<String, Checkpoint> {
        rows.iter()
            .map(|(k, c)| (k.to_string(), c.clone()))
            .collect()
    }

    /// Every lease that is not finished can be taken: its parents are all finished.
    async fn assert_takeable_where_not_finished(store: &SqliteLeaseStore, starts: &[&str]) {
        let leases = store.list().await.expect("list");
        let finished: HashSet<&str> = leases
            .iter()
            .filter(|l| l.is_finished())
            .map(|l| l.key.as_str())
            .collect();
        let takeable: Vec<&str> = leases
            .iter()
            .filter(|l| !l.is_finished())
            .filter(|l| {
                l.parent_shard_ids
                    .iter()
                    .all(|p| finished.contains(p.as_str()))
            })
            .map(|l| l.key.as_str())
            .collect();
        assert_eq!(takeable, starts);
    }

    use Checkpoint::{AtTimestamp, Latest, ShardEnd, TrimHorizon};

    #[tokio::test]
    async fn latest_starts_at_the_open_shards_and_finishes_their_closed_ancestors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = empty_store(&dir).await;
        let stream = FakeStream::resharded();

        let summary = sync_shards(&stream, &store, &InitialPosition::Latest)
            .await
            .expect("sync");
        assert_eq!(
            checkpoints(&store).await,
            expected(&[
                ("s0", ShardEnd),
                ("s1", ShardEnd),
                ("s2", ShardEnd),
                ("s3", ShardEnd),
                ("s4", Latest),
                ("s5", Latest),
                ("s6", Latest),
            ])
        );
        assert_takeable_where_not_finished(&store, &["s4", "s5", "s6"]).await;
        // The leases that are read first; the finished ones after them, children first.
        assert_eq!(summary.created, ["s4", "s5", "s6", "s3", "s2", "s1", "s0"]);
        let s4 = store.get("s4").await.expect("get").expect("s4");
        assert_eq!(s4.parent_shard_ids, ["s2", "s3"]);
        let s0 = store.get("s0").await.expect("get").expect("s0");
        assert_eq!(s0.child_shard_ids, ["s1", "s2"]);
    }

    #[tokio::test]
    async fn at_timestamp_starts_at_the_shards_open_at_that_time() {
        // Before any reshard: the roots, with every descendant from TRIM_HORIZON.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = empty_store(&dir).await;
        let stream = FakeStream::resharded();
        sync_shards(&stream, &store, &InitialPosition::AtTimestamp(50))
            .await
            .expect("sync");
        assert_eq!(
            checkpoints(&store).await,
            expected(&[
                ("s0", AtTimestamp),
                ("s1", TrimHorizon),
                ("s2", TrimHorizon),
                ("s3", AtTimestamp),
                ("s4", TrimHorizon),
                ("s5", TrimHorizon),
                ("s6", TrimHorizon),
            ])
        );

        // After the split and the merge: s1 and s4 were open; s0, s2 and s3 had closed.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = empty_store(&dir).await;
        sync_shards(&stream, &store, &InitialPosition::AtTimestamp(250))
            .await
            .expect("sync");
        assert_eq!(
            checkpoints(&store).await,
            expected(&[
                ("s0", ShardEnd),
                ("s1", AtTimestamp),
                ("s2", ShardEnd),
                ("s3", ShardEnd),
                ("s4", AtTimestamp),
                ("s5", TrimHorizon),
                ("s6", TrimHorizon),
            ])
        );
        assert_takeable_where_not_finished(&store, &["s1", "s4"]).await;
    }

    #[tokio::test]
    async fn at_timestamp_starts_every_shard_there_when_the_source_cannot_tell_what_was_open() {
        for history in [History::Unknown, History::Refused] {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = empty_store(&dir).await;
            let mut stream = FakeStream::resharded();
            stream.history = history;
            sync_shards(&stream, &store, &InitialPosition::AtTimestamp(250))
                .await
                .expect("sync");
            let all = checkpoints(&store).await;
            assert_eq!(all.len(), 7);
            assert!(
                all.values().all(|c| *c == AtTimestamp),
                "{history:?}: {all:?}"
            );
        }
    }

    #[tokio::test]
    async fn trim_horizon_starts_at_the_roots_and_creates_parents_before_children() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = empty_store(&dir).await;
        let stream = FakeStream::resharded();
        let summary = sync_shards(&stream, &store, &InitialPosition::TrimHorizon)
            .await
            .expect("sync");
        let all = checkpoints(&store).await;
        assert_eq!(all.len(), 7);
        assert!(all.values().all(|c| *c == TrimHorizon), "{all:?}");
        assert_takeable_where_not_finished(&store, &["s0", "s3"]).await;
        let position = |id: &str| summary.created.iter().position(|c| c == id);
        for (parent, child) in [
            ("s0", "s1"),
            ("s0", "s2"),
            ("s2", "s4"),
            ("s3", "s4"),
            ("s1", "s5"),
            ("s1", "s6"),
        ] {
            assert!(
                position(parent) < position(child),
                "{parent} before {child}: {:?}",
                summary.created
            );
        }
    }

    /// A peer deletes a finished parent's lease (its shard no longer listed there) while
    /// this worker's listing still shows the shard: it must not come back unfinished.
    #[tokio::test]
    async fn a_finished_parent_deleted_by_a_peer_is_never_created_again_unfinished() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = empty_store(&dir).await;
        let stream = FakeStream::resharded();
        sync_shards(&stream, &store, &InitialPosition::TrimHorizon)
            .await
            .expect("sync");
        for key in ["s0", "s1", "s2", "s3"] {
            let lease = store.get(key).await.expect("get").expect("lease");
            let taken = store.take(&lease, "w").await.expect("take");
            let ended = store.checkpoint(&taken, &ShardEnd).await.expect("finish");
            if key == "s0" || key == "s1" {
                store.delete(&ended).await.expect("the peer's cleanup");
            }
        }
        let summary = sync_shards(&stream, &store, &InitialPosition::TrimHorizon)
            .await
            .expect("sync with the stale listing");
        let all = checkpoints(&store).await;
        for key in ["s0", "s1"] {
            assert!(
                matches!(all.get(key), None | Some(ShardEnd)),
                "{key} re-created unfinished: {all:?} ({summary:?})"
            );
        }
        assert_eq!(all.get("s5"), Some(&TrimHorizon), "{all:?}");
    }

    #[tokio::test]
    async fn children_of_a_reshard_while_running_start_at_trim_horizon() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = empty_store(&dir).await;
        let stream = FakeStream::resharded();
        sync_shards(&stream, &store, &InitialPosition::Latest)
            .await
            .expect("sync");
        assert_eq!(
            store.get("s4").await.expect("get").map(|l| l.checkpoint),
            Some(Latest)
        );

        stream.split("s4", ["s7", "s8"], 400);
        let summary = sync_shards(&stream, &store, &InitialPosition::Latest)
            .await
            .expect("sync");
        assert_eq!(summary.created, ["s7", "s8"]);
        let all = checkpoints(&store).await;
        assert_eq!(all.get("s7"), Some(&TrimHorizon));
        assert_eq!(all.get("s8"), Some(&TrimHorizon));
        assert_eq!(
            all.get("s4"),
            Some(&Latest),
            "an existing lease is never rewritten"
        );
        let s4 = store.get("s4").await.expect("get").expect("s4");
        assert_eq!(s4.child_shard_ids, ["s7", "s8"]);
        let s7 = store.get("s7").await.expect("get").expect("s7");
        assert_eq!(s7.parent_shard_ids, ["s4"]);
    }

    #[tokio::test]
    async fn a_sync_that_stopped_after_the_start_shards_finishes_their_ancestors_next_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = empty_store(&dir).await;
        for key in ["s4", "s5", "s6"] {
            assert!(
                store
                    .create_if_absent(&Lease::new(key, Latest))
                    .await
                    .expect("create")
            );
        }
        let stream = FakeStream::resharded();
        let summary = sync_shards(&stream, &store, &InitialPosition::Latest)
            .await
            .expect("sync");
        assert_eq!(summary.created, ["s3", "s2", "s1", "s0"]);
        assert_eq!(
            checkpoints(&store).await,
            expected(&[
                ("s0", ShardEnd),
                ("s1", ShardEnd),
                ("s2", ShardEnd),
                ("s3", ShardEnd),
                ("s4", Latest),
                ("s5", Latest),
                ("s6", Latest),
            ])
        );
    }

    #[tokio::test]
    async fn creates_leases_with_lineage_and_cleans_up_finished_shards() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stream = dir.path().join("stream");
        std::fs::create_dir(&stream).expect("mkdir");
        for s in [
            "shardId-000000000000",
            "shardId-000000000001",
            "shardId-000000000002",
        ] {
            std::fs::write(stream.join(format!("{s}.jsonl")), "").expect("shard");
        }
        std::fs::write(
            stream.join("shardId-000000000001.parents"),
            "shardId-000000000000\n",
        )
        .expect("parents");
        std::fs::write(
            stream.join("shardId-000000000002.parents"),
            "shardId-000000000000\n",
        )
        .expect("parents");
        let source = LocalSource::new(&stream, "s");
        let store = SqliteLeaseStore::open(&dir.path().join("l.db"), "app").expect("open");
        store.prepare().await.expect("prepare");

        let summary = sync_shards(&source, &store, &InitialPosition::Latest)
            .await
            .expect("sync");
        assert_eq!(summary.created.len(), 3);
        let leases = store.list().await.expect("list");
        assert_eq!(
            leases[0].checkpoint,
            Checkpoint::Latest,
            "root starts at the initial position"
        );
        assert_eq!(
            leases[0].child_shard_ids,
            vec![
                "shardId-000000000001".to_string(),
                "shardId-000000000002".to_string()
            ]
        );
        assert_eq!(
            leases[1].checkpoint,
            Checkpoint::TrimHorizon,
            "children start at the beginning"
        );
        assert_eq!(
            leases[1].parent_shard_ids,
            vec!["shardId-000000000000".to_string()]
        );

        // The parent finishes and disappears from the stream: its lease goes.
        let parent = store.take(&leases[0], "w").await.expect("take");
        store
            .checkpoint(&parent, &Checkpoint::ShardEnd)
            .await
            .expect("end");
        std::fs::remove_file(stream.join("shardId-000000000000.jsonl")).expect("rm");
        let summary = sync_shards(&source, &store, &InitialPosition::Latest)
            .await
            .expect("sync");
        assert_eq!(summary.deleted, vec!["shardId-000000000000".to_string()]);
        assert_eq!(store.list().await.expect("list").len(), 2);
    }
}
