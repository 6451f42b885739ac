//! Shard sync: make the lease table match the stream. Every listed shard gets a lease
//! (children of a known parent start at TRIM_HORIZON so nothing between the parent's end
//! and the child's start is skipped; new root shards start at the configured position),
//! parents learn their children, and leases of finished shards the stream no longer lists
//! are deleted. Lineage itself is enforced by the coordinator: a lease is not taken until
//! every parent is finished (`SHARD_END`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use crate::lease::{Checkpoint, Lease, LeaseError, LeaseStore};
use crate::source::{ShardSource, SourceError};

/// What a sync changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncSummary {
    /// Shards listed.
    pub shards: usize,
    /// Leases created.
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

/// One sync pass.
pub async fn sync_shards(
    source: &dyn ShardSource,
    store: &dyn LeaseStore,
    initial: &Checkpoint,
) -> Result<SyncSummary, SyncError> {
    let shards = source.list_shards().await?;
    let leases = store.list().await?;
    let by_key: HashMap<&str, &Lease> = leases.iter().map(|l| (l.key.as_str(), l)).collect();
    let listed: HashSet<&str> = shards.iter().map(|s| s.shard_id.as_str()).collect();
    let mut summary = SyncSummary {
        shards: shards.len(),
        ..SyncSummary::default()
    };

    // Children by parent, from the shard list (ChildShards from GetRecords is only a hint).
    let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for shard in &shards {
        for parent in shard.parents() {
            if listed.contains(parent.as_str()) || by_key.contains_key(parent.as_str()) {
                children
                    .entry(parent)
                    .or_default()
                    .push(shard.shard_id.clone());
            }
        }
    }

    for shard in &shards {
        if by_key.contains_key(shard.shard_id.as_str()) {
            continue;
        }
        let parents: Vec<String> = shard
            .parents()
            .into_iter()
            .filter(|p| listed.contains(p.as_str()) || by_key.contains_key(p.as_str()))
            .collect();
        let checkpoint = if parents.is_empty() {
            initial.clone()
        } else {
            Checkpoint::TrimHorizon
        };
        let mut lease = Lease::new(&shard.shard_id, checkpoint);
        lease.parent_shard_ids = parents;
        lease.starting_hash_key = shard.starting_hash_key.clone();
        lease.ending_hash_key = shard.ending_hash_key.clone();
        if store.create_if_absent(&lease).await? {
            tracing::info!(shard = %shard.shard_id, parents = ?lease.parent_shard_ids, checkpoint = %lease.checkpoint, "created lease for shard");
            summary.created.push(shard.shard_id.clone());
        }
    }

    for (parent, kids) in &children {
        let known = by_key
            .get(parent.as_str())
            .map(|l| l.child_shard_ids.clone());
        let created_now = summary.created.iter().any(|c| c == parent);
        if known.is_none() && !created_now {
            continue;
        }
        let mut kids = kids.clone();
        kids.sort();
        kids.dedup();
        if known.unwrap_or_default() != kids {
            store.set_child_shards(parent, &kids).await?;
        }
    }

    // A finished lease whose shard is gone from the stream, and whose children all have
    // leases, has nothing left to guard.
    for lease in &leases {
        if listed.contains(lease.key.as_str()) || !lease.is_finished() {
            continue;
        }
        let children_leased = lease
            .child_shard_ids
            .iter()
            .all(|c| by_key.contains_key(c.as_str()));
        if children_leased {
            match store.delete(lease).await {
                Ok(()) => {
                    tracing::info!(shard = %lease.key, "deleted the lease of a finished shard the stream no longer lists");
                    summary.deleted.push(lease.key.clone());
                }
                Err(LeaseError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(summary)
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

        let summary = sync_shards(&source, &store, &Checkpoint::Latest)
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
        let summary = sync_shards(&source, &store, &Checkpoint::Latest)
            .await
            .expect("sync");
        assert_eq!(summary.deleted, vec!["shardId-000000000000".to_string()]);
        assert_eq!(store.list().await.expect("list").len(), 2);
    }
}
