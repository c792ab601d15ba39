//! Approvals in the embedded store's redb file.
//!
//! Tables: `approvals` (id → the approval as JSON) and `approvals_expiry`
//! (keep-until → id), so that a sweep reads only what is past keeping, and
//! a listing of the pending ones only what has not expired.
//!
//! Approvals are few (one per person-facing decision), so their writes do
//! not go through the writer thread's group commit: each runs its own
//! durable write transaction on a blocking thread. redb serialises write
//! transactions, so a compare-and-set here is atomic with respect to every
//! other write to the file, the writer thread's included.

use std::sync::Arc;

use async_trait::async_trait;
use redb::{
    Database, MultimapTableDefinition, ReadableDatabase, ReadableMultimapTable, ReadableTable, TableDefinition,
};

use super::approvals::{decode, encode, KEEP_AFTER_EXPIRY, MAX_LISTED};
use super::embedded::EmbeddedStore;
use super::{Approval, ApprovalId, ApprovalState, ApprovalStore, StoreError};
use crate::clock::UnixTime;

const APPROVALS: TableDefinition<&str, &str> = TableDefinition::new("approvals");
const APPROVALS_EXPIRY: MultimapTableDefinition<i64, &str> = MultimapTableDefinition::new("approvals_expiry");
/// The most expired records one sweep removes, to bound its transaction.
const SWEEP_LIMIT: usize = 1000;

#[async_trait]
impl ApprovalStore for EmbeddedStore {
    async fn create(&self, approval: &Approval) -> Result<(), StoreError> {
        let json = encode(approval)?;
        let (id, keep_until, now) = (approval.id.0.clone(), approval.keep_until().0, approval.created_at.0);
        blocking(self.database(), move |db| {
            let txn = db.begin_write().map_err(failure)?;
            {
                let mut table = txn.open_table(APPROVALS).map_err(failure)?;
                let mut expiry = txn.open_multimap_table(APPROVALS_EXPIRY).map_err(failure)?;
                // Records past their keeping time go whenever a new one comes.
                let mut expired = Vec::new();
                for entry in expiry.range(..now).map_err(failure)? {
                    let (until, ids) = entry.map_err(failure)?;
                    for kept in ids {
                        expired.push((until.value(), kept.map_err(failure)?.value().to_owned()));
                    }
                    if expired.len() >= SWEEP_LIMIT {
                        break;
                    }
                }
                for (until, kept) in &expired {
                    expiry.remove(*until, kept.as_str()).map_err(failure)?;
                    table.remove(kept.as_str()).map_err(failure)?;
                }
                table.insert(id.as_str(), json.as_str()).map_err(failure)?;
                expiry.insert(keep_until, id.as_str()).map_err(failure)?;
            }
            txn.commit().map_err(failure)
        })
        .await
    }

    async fn approval(&self, id: &ApprovalId) -> Result<Option<Approval>, StoreError> {
        let id = id.0.clone();
        blocking(self.database(), move |db| {
            let txn = db.begin_read().map_err(failure)?;
            let table = match txn.open_table(APPROVALS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(error) => return Err(failure(error)),
            };
            let json = table.get(id.as_str()).map_err(failure)?;
            json.map(|json| decode(json.value())).transpose()
        })
        .await
    }

    async fn transition(&self, from: ApprovalState, next: &Approval) -> Result<bool, StoreError> {
        let json = encode(next)?;
        let id = next.id.0.clone();
        blocking(self.database(), move |db| {
            let txn = db.begin_write().map_err(failure)?;
            let replaced = {
                let mut table = txn.open_table(APPROVALS).map_err(failure)?;
                let current = match table.get(id.as_str()).map_err(failure)? {
                    Some(json) => Some(decode(json.value())?),
                    None => None,
                };
                if current.is_some_and(|current| current.state == from) {
                    table.insert(id.as_str(), json.as_str()).map_err(failure)?;
                    true
                } else {
                    false
                }
            };
            txn.commit().map_err(failure)?;
            Ok(replaced)
        })
        .await
    }

    async fn pending(&self, now: UnixTime) -> Result<Vec<Approval>, StoreError> {
        blocking(self.database(), move |db| {
            let txn = db.begin_read().map_err(failure)?;
            let table = match txn.open_table(APPROVALS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(error) => return Err(failure(error)),
            };
            let expiry = match txn.open_multimap_table(APPROVALS_EXPIRY) {
                Ok(expiry) => expiry,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(error) => return Err(failure(error)),
            };
            // Only approvals not yet expired are read: each is indexed at its
            // expiry plus the keeping time, so those are the entries past
            // now plus the keeping time (a day's decided ones are skipped).
            let unexpired = now.plus(KEEP_AFTER_EXPIRY).0.saturating_add(1);
            let mut pending = Vec::new();
            for entry in expiry.range(unexpired..).map_err(failure)? {
                let (_, ids) = entry.map_err(failure)?;
                for id in ids {
                    let id = id.map_err(failure)?;
                    let Some(json) = table.get(id.value()).map_err(failure)? else { continue };
                    let approval = decode(json.value())?;
                    if approval.state == ApprovalState::Pending && !approval.is_expired(now) {
                        pending.push(approval);
                    }
                }
            }
            pending.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            pending.truncate(MAX_LISTED);
            Ok(pending)
        })
        .await
    }
}

/// Runs a redb call on a blocking thread: a write transaction may wait for
/// the writer thread's commit, which must not hold up the async runtime.
async fn blocking<T: Send + 'static>(
    db: Arc<Database>,
    call: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(move || call(&db))
        .await
        .map_err(|_| StoreError("embedded store: an approval call did not finish".into()))?
}

fn failure(error: impl Into<redb::Error>) -> StoreError {
    StoreError(format!("embedded store: approvals: {}", error.into()))
}
