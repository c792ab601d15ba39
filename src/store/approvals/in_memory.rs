//! Approvals held in memory, for [`crate::store::memory::MemoryStore`], with
//! the same indexes as the durable stores so that it answers alike.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{listings, Approval, ApprovalId, ApprovalPage, ApprovalQuery, ApprovalState, Creation, Pager, SWEEP_LIMIT};
use crate::clock::UnixTime;

/// The approvals and their indexes; the caller holds them under one lock,
/// which makes every call atomic.
#[derive(Debug, Default)]
pub(crate) struct InMemory {
    records: HashMap<ApprovalId, Approval>,
    /// (keep-until, id): records past their keeping time go first.
    kept: BTreeSet<(i64, ApprovalId)>,
    /// A request's key → its pending approval.
    requests: HashMap<String, ApprovalId>,
    /// (agent, expiry, id) of pending approvals, for the per-agent cap.
    agent_pending: BTreeSet<(String, i64, ApprovalId)>,
    /// (listing, created-at, id): each approval in its listings.
    listed: BTreeSet<(String, i64, ApprovalId)>,
    /// Expiry second → how many pending approvals expire then.
    pending_seconds: BTreeMap<i64, u64>,
}

impl InMemory {
    /// See [`super::ApprovalStore::create`].
    pub(crate) fn create(&mut self, approval: &Approval, max_pending_per_agent: usize) -> Creation {
        let now = approval.created_at;
        self.sweep(now);
        let waiting = self.requests.get(&approval.request_key()).and_then(|id| self.records.get(id));
        if let Some(waiting) = waiting.filter(|waiting| waiting.is_listed_as(ApprovalState::Pending, now)) {
            return Creation::Waiting(Box::new(waiting.clone()));
        }
        let agent = &approval.request.agent;
        let pending = self
            .agent_pending
            .range((agent.clone(), now.0.saturating_add(1), ApprovalId(String::new()))..)
            .take_while(|(of, _, _)| of == agent)
            .take(max_pending_per_agent)
            .count();
        if pending >= max_pending_per_agent {
            return Creation::Full;
        }
        self.kept.insert((approval.keep_until().0, approval.id.clone()));
        self.records.insert(approval.id.clone(), approval.clone());
        self.index(approval);
        Creation::Created
    }

    /// The approval with this id.
    pub(crate) fn approval(&self, id: &ApprovalId) -> Option<Approval> {
        self.records.get(id).cloned()
    }

    /// See [`super::ApprovalStore::transition`].
    pub(crate) fn transition(&mut self, from: ApprovalState, next: &Approval) -> bool {
        let Some(current) = self.records.get(&next.id).filter(|current| current.state == from).cloned() else {
            return false;
        };
        self.unindex(&current);
        self.index(next);
        self.records.insert(next.id.clone(), next.clone());
        true
    }

    /// See [`super::ApprovalStore::list`].
    pub(crate) fn list(&self, query: &ApprovalQuery) -> ApprovalPage {
        let mut pager = Pager::new(query);
        let listing = pager.listing();
        let start = (listing.clone(), i64::MIN, ApprovalId(String::new()));
        let end = match &query.before {
            Some(cursor) => (listing, cursor.created_at.0, cursor.id.clone()),
            // The least key after every one of this listing.
            None => (listing + "\0", i64::MIN, ApprovalId(String::new())),
        };
        for (_, created_at, id) in self.listed.range(start..end).rev() {
            let at = super::Cursor { created_at: UnixTime(*created_at), id: id.clone() };
            if !pager.offer(at, self.records.get(id).cloned()) {
                break;
            }
        }
        pager.finish()
    }

    /// See [`super::ApprovalStore::count_pending`].
    pub(crate) fn count_pending(&self, now: UnixTime) -> u64 {
        self.pending_seconds.range(now.0.saturating_add(1)..).map(|(_, count)| count).sum()
    }

    /// Adds `approval` to the indexes of its state.
    fn index(&mut self, approval: &Approval) {
        for listing in listings(approval) {
            self.listed.insert((listing, approval.created_at.0, approval.id.clone()));
        }
        if approval.state == ApprovalState::Pending {
            self.requests.insert(approval.request_key(), approval.id.clone());
            self.agent_pending.insert((approval.request.agent.clone(), approval.expires_at.0, approval.id.clone()));
            *self.pending_seconds.entry(approval.expires_at.0).or_default() += 1;
        }
    }

    /// Removes `approval` from the indexes of its state.
    fn unindex(&mut self, approval: &Approval) {
        for listing in listings(approval) {
            self.listed.remove(&(listing, approval.created_at.0, approval.id.clone()));
        }
        if approval.state == ApprovalState::Pending {
            let key = approval.request_key();
            if self.requests.get(&key) == Some(&approval.id) {
                self.requests.remove(&key);
            }
            self.agent_pending.remove(&(approval.request.agent.clone(), approval.expires_at.0, approval.id.clone()));
            if let Some(count) = self.pending_seconds.get_mut(&approval.expires_at.0) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.pending_seconds.remove(&approval.expires_at.0);
                }
            }
        }
    }

    /// Forgets records past their keeping time, and counts of seconds past,
    /// a bounded number at a time.
    fn sweep(&mut self, now: UnixTime) {
        let gone: Vec<(i64, ApprovalId)> = self
            .kept
            .range(..(now.0.saturating_add(1), ApprovalId(String::new())))
            .take(SWEEP_LIMIT)
            .cloned()
            .collect();
        for entry in gone {
            self.kept.remove(&entry);
            if let Some(record) = self.records.remove(&entry.1) {
                self.unindex(&record);
            }
        }
        let past: Vec<i64> =
            self.pending_seconds.range(..=now.0).map(|(second, _)| *second).take(SWEEP_LIMIT).collect();
        for second in past {
            self.pending_seconds.remove(&second);
        }
    }
}
