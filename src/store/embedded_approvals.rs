//! Approvals in the embedded store's redb file.
//!
//! Tables:
//! - `approvals` (id → the approval as JSON) and `approvals_expiry`
//!   (keep-until → id), so that a sweep reads only what is past keeping;
//! - `approval_requests` (request key → id of its pending approval): the
//!   de-duplication index;
//! - `approvals_agent_pending` ((agent, expiry, id) → ()): an agent's
//!   pending approvals, for its cap, read from `now` on;
//! - `approvals_listed` ((listing, created-at, id) → ()): each approval in
//!   its state's listing and its agent's, read newest first one page at a time;
//! - `approvals_pending_seconds` (expiry → count): how many pending
//!   approvals expire each second, what `/metrics` reads.
//!
//! Every index changes in the write transaction that changes the record.
//! Approvals are few (one per person-facing decision), so their writes do
//! not go through the writer thread's group commit: each runs its own
//! durable write transaction on a blocking thread. redb serialises write
//! transactions, so a create or a compare-and-set here is atomic with
//! respect to every other write to the file, the writer thread's included.

use std::sync::Arc;

use async_trait::async_trait;
use redb::{
    Database, MultimapTable, MultimapTableDefinition, ReadableDatabase, ReadableMultimapTable, ReadableTable, Table,
    TableDefinition, WriteTransaction,
};

use super::approvals::{decode, encode, listings, ApprovalPage, ApprovalQuery, Creation, Cursor, Pager, SWEEP_LIMIT};
use super::embedded::EmbeddedStore;
use super::{Approval, ApprovalId, ApprovalState, ApprovalStore, StoreError};
use crate::clock::UnixTime;

/// An index entry: (listing or agent, a time, id).
type Entry = (&'static str, i64, &'static str);

const APPROVALS: TableDefinition<&str, &str> = TableDefinition::new("approvals");
const APPROVALS_EXPIRY: MultimapTableDefinition<i64, &str> = MultimapTableDefinition::new("approvals_expiry");
const APPROVAL_REQUESTS: TableDefinition<&str, &str> = TableDefinition::new("approval_requests");
const APPROVALS_AGENT_PENDING: TableDefinition<Entry, ()> = TableDefinition::new("approvals_agent_pending");
const APPROVALS_LISTED: TableDefinition<Entry, ()> = TableDefinition::new("approvals_listed");
const APPROVALS_PENDING_SECONDS: TableDefinition<i64, u64> = TableDefinition::new("approvals_pending_seconds");

/// The approval tables, open in one write transaction.
struct Tables<'txn> {
    records: Table<'txn, &'static str, &'static str>,
    expiry: MultimapTable<'txn, i64, &'static str>,
    requests: Table<'txn, &'static str, &'static str>,
    agent_pending: Table<'txn, Entry, ()>,
    listed: Table<'txn, Entry, ()>,
    pending_seconds: Table<'txn, i64, u64>,
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Tables<'txn>, StoreError> {
        Ok(Tables {
            records: txn.open_table(APPROVALS).map_err(failure)?,
            expiry: txn.open_multimap_table(APPROVALS_EXPIRY).map_err(failure)?,
            requests: txn.open_table(APPROVAL_REQUESTS).map_err(failure)?,
            agent_pending: txn.open_table(APPROVALS_AGENT_PENDING).map_err(failure)?,
            listed: txn.open_table(APPROVALS_LISTED).map_err(failure)?,
            pending_seconds: txn.open_table(APPROVALS_PENDING_SECONDS).map_err(failure)?,
        })
    }

    fn record(&self, id: &str) -> Result<Option<Approval>, StoreError> {
        match self.records.get(id).map_err(failure)? {
            Some(json) => Ok(Some(decode(json.value())?)),
            None => Ok(None),
        }
    }

    /// Adds `approval` to the indexes of its state.
    fn index(&mut self, approval: &Approval) -> Result<(), StoreError> {
        let id = approval.id.0.as_str();
        for listing in listings(approval) {
            self.listed.insert((listing.as_str(), approval.created_at.0, id), ()).map_err(failure)?;
        }
        if approval.state == ApprovalState::Pending {
            self.requests.insert(approval.request_key().as_str(), id).map_err(failure)?;
            let agent = approval.request.agent.as_str();
            self.agent_pending.insert((agent, approval.expires_at.0, id), ()).map_err(failure)?;
            let second = approval.expires_at.0;
            let count = self.pending_seconds.get(second).map_err(failure)?.map_or(0, |count| count.value());
            self.pending_seconds.insert(second, count.saturating_add(1)).map_err(failure)?;
        }
        Ok(())
    }

    /// Removes `approval` from the indexes of its state.
    fn unindex(&mut self, approval: &Approval) -> Result<(), StoreError> {
        let id = approval.id.0.as_str();
        for listing in listings(approval) {
            self.listed.remove((listing.as_str(), approval.created_at.0, id)).map_err(failure)?;
        }
        if approval.state == ApprovalState::Pending {
            let key = approval.request_key();
            let indexed = self.requests.get(key.as_str()).map_err(failure)?.is_some_and(|kept| kept.value() == id);
            if indexed {
                self.requests.remove(key.as_str()).map_err(failure)?;
            }
            let agent = approval.request.agent.as_str();
            self.agent_pending.remove((agent, approval.expires_at.0, id)).map_err(failure)?;
            let second = approval.expires_at.0;
            let count = self.pending_seconds.get(second).map_err(failure)?.map(|count| count.value());
            match count {
                Some(0 | 1) => {
                    self.pending_seconds.remove(second).map_err(failure)?;
                }
                Some(count) => {
                    self.pending_seconds.insert(second, count - 1).map_err(failure)?;
                }
                // Already swept: the second is past.
                None => {}
            }
        }
        Ok(())
    }

    /// Removes records past their keeping time, with their index entries,
    /// and the counts of seconds already past, a bounded number of each.
    /// Returns whether it removed anything.
    fn sweep(&mut self, now: UnixTime) -> Result<bool, StoreError> {
        let mut expired = Vec::new();
        for entry in self.expiry.range(..now.0.saturating_add(1)).map_err(failure)? {
            let (until, ids) = entry.map_err(failure)?;
            for kept in ids {
                expired.push((until.value(), kept.map_err(failure)?.value().to_owned()));
            }
            if expired.len() >= SWEEP_LIMIT {
                break;
            }
        }
        for (until, kept) in &expired {
            self.expiry.remove(*until, kept.as_str()).map_err(failure)?;
            if let Some(record) = self.record(kept)? {
                self.unindex(&record)?;
            }
            self.records.remove(kept.as_str()).map_err(failure)?;
        }
        let mut past = Vec::new();
        for entry in self.pending_seconds.range(..=now.0).map_err(failure)?.take(SWEEP_LIMIT) {
            past.push(entry.map_err(failure)?.0.value());
        }
        let swept = !expired.is_empty() || !past.is_empty();
        for second in past {
            self.pending_seconds.remove(second).map_err(failure)?;
        }
        Ok(swept)
    }

    /// The agent's pending approvals not expired at `now`, counted up to `limit`.
    fn pending_of(&self, agent: &str, now: UnixTime, limit: usize) -> Result<usize, StoreError> {
        let mut count = 0;
        for entry in self.agent_pending.range((agent, now.0.saturating_add(1), "")..).map_err(failure)? {
            let (key, _) = entry.map_err(failure)?;
            if key.value().0 != agent || count >= limit {
                break;
            }
            count += 1;
        }
        Ok(count)
    }
}

#[async_trait]
impl ApprovalStore for EmbeddedStore {
    async fn create(&self, approval: &Approval, max_pending_per_agent: usize) -> Result<Creation, StoreError> {
        let json = encode(approval)?;
        let approval = approval.clone();
        blocking(self.database(), move |db| {
            let now = approval.created_at;
            let txn = db.begin_write().map_err(failure)?;
            let (creation, swept) = {
                let mut tables = Tables::open(&txn)?;
                // Records past their keeping time go whenever a new one comes.
                let swept = tables.sweep(now)?;
                let waiting = match tables.requests.get(approval.request_key().as_str()).map_err(failure)? {
                    Some(id) => tables.record(id.value())?,
                    None => None,
                };
                let creation = if let Some(waiting) =
                    waiting.filter(|waiting| waiting.is_listed_as(ApprovalState::Pending, now))
                {
                    Creation::Waiting(Box::new(waiting))
                } else if tables.pending_of(&approval.request.agent, now, max_pending_per_agent)?
                    >= max_pending_per_agent
                {
                    Creation::Full
                } else {
                    let id = approval.id.0.as_str();
                    tables.records.insert(id, json.as_str()).map_err(failure)?;
                    tables.expiry.insert(approval.keep_until().0, id).map_err(failure)?;
                    tables.index(&approval)?;
                    Creation::Created
                };
                (creation, swept)
            };
            // A repeat or a refusal writes nothing: no commit (and no fsync)
            // for it, unless the sweep removed something worth keeping removed.
            if creation == Creation::Created || swept {
                txn.commit().map_err(failure)?;
            } else {
                txn.abort().map_err(failure)?;
            }
            Ok(creation)
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
        let next = next.clone();
        blocking(self.database(), move |db| {
            let txn = db.begin_write().map_err(failure)?;
            let replaced = {
                let mut tables = Tables::open(&txn)?;
                match tables.record(&next.id.0)? {
                    Some(current) if current.state == from => {
                        tables.unindex(&current)?;
                        tables.index(&next)?;
                        tables.records.insert(next.id.0.as_str(), json.as_str()).map_err(failure)?;
                        true
                    }
                    _ => false,
                }
            };
            txn.commit().map_err(failure)?;
            Ok(replaced)
        })
        .await
    }

    async fn list(&self, query: &ApprovalQuery) -> Result<ApprovalPage, StoreError> {
        let query = query.clone();
        blocking(self.database(), move |db| {
            let txn = db.begin_read().map_err(failure)?;
            let (records, listed) = match (txn.open_table(APPROVALS), txn.open_table(APPROVALS_LISTED)) {
                (Ok(records), Ok(listed)) => (records, listed),
                (Err(redb::TableError::TableDoesNotExist(_)), _) | (_, Err(redb::TableError::TableDoesNotExist(_))) => {
                    return Ok(ApprovalPage::default())
                }
                (Err(error), _) | (_, Err(error)) => return Err(failure(error)),
            };
            let mut pager = Pager::new(&query);
            let listing = pager.listing();
            // The least key after every one of this listing.
            let after = format!("{listing}\0");
            let start = (listing.as_str(), i64::MIN, "");
            let range = match &query.before {
                Some(cursor) => listed.range(start..(listing.as_str(), cursor.created_at.0, cursor.id.0.as_str())),
                None => listed.range(start..(after.as_str(), i64::MIN, "")),
            };
            for entry in range.map_err(failure)?.rev() {
                let (key, _) = entry.map_err(failure)?;
                let (_, created_at, id) = key.value();
                let record = match records.get(id).map_err(failure)? {
                    Some(json) => Some(decode(json.value())?),
                    None => None,
                };
                let at = Cursor { created_at: UnixTime(created_at), id: ApprovalId(id.to_owned()) };
                if !pager.offer(at, record) {
                    break;
                }
            }
            Ok(pager.finish())
        })
        .await
    }

    async fn count_pending(&self, now: UnixTime) -> Result<u64, StoreError> {
        blocking(self.database(), move |db| {
            let txn = db.begin_read().map_err(failure)?;
            let seconds = match txn.open_table(APPROVALS_PENDING_SECONDS) {
                Ok(seconds) => seconds,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
                Err(error) => return Err(failure(error)),
            };
            // At most one entry per second of the approval TTL, however many are pending.
            let mut total: u64 = 0;
            for entry in seconds.range(now.0.saturating_add(1)..).map_err(failure)? {
                total = total.saturating_add(entry.map_err(failure)?.1.value());
            }
            Ok(total)
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
        .map_err(|_| StoreError::Unavailable("embedded store: an approval call did not finish".into()))?
}

fn failure(error: impl Into<redb::Error>) -> StoreError {
    StoreError::Io(format!("embedded store: approvals: {}", error.into()))
}
