//! Pending human approvals: what an approval covers, its state, and
//! the trait every state store implements so that an approval asked on one
//! broker node can be decided and used on another.
//!
//! An approval covers exactly one request, named by its [`Fingerprint`], and
//! moves `pending → approved | denied`, then `approved → consumed` when its
//! token is issued. Every move is a compare-and-set on the state, so two
//! nodes can never both consume one approval, nor an approver overrule a
//! decision already taken.
//!
//! Every store keeps, with the records and in the same atomic write:
//! - an index from a request's key ([`request_key`]) to its pending
//!   approval, so that a repeat finds it whatever the number pending, and
//!   of two identical requests racing only one creates an approval;
//! - the pending approvals of each agent by expiry, so that the per-agent
//!   cap counts only that agent's;
//! - the approvals by state (and by agent and state), newest first, so that a
//!   listing reads one page, not everything kept;
//! - a count of pending approvals per expiry second, so that `/metrics`
//!   reads at most one entry per second of the approval TTL, never the list.

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

mod in_memory;

pub(crate) use in_memory::InMemory;

use super::StoreError;
use crate::claims::{ScopeSet, TokenId};
use crate::clock::UnixTime;

/// How long an approval record is kept after it expires, in seconds: long
/// enough that a late poll is told `expired_token` rather than that the id
/// is unknown, and that a used approval is still recognised as used.
pub const KEEP_AFTER_EXPIRY: i64 = 86_400;

/// The most approvals one page of a listing holds.
pub const MAX_PAGE: usize = 200;
/// A page's size when the caller names none.
pub const DEFAULT_PAGE: usize = 50;
/// The most index entries one page reads (skipping expired pending ones or
/// records no longer kept) before it stops and hands back a cursor.
pub const SCAN_LIMIT: usize = 2000;
/// The most records or index entries past their time one write sweeps, to
/// bound its transaction.
pub const SWEEP_LIMIT: usize = 1000;

/// An approval's id: 128 random bits, base64url, like CIBA's `auth_req_id`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ApprovalId(pub String);

impl std::fmt::Display for ApprovalId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The one request an approval covers: a repeat must match it in every field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// The chain's subject.
    pub subject: String,
    /// The acting agent.
    pub agent: String,
    /// The parent token (`subject_token`'s `jti`); none for an agent's own token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_jti: Option<TokenId>,
    /// The target the token would be addressed to.
    pub target: String,
    /// Exactly the scopes the policy granted.
    pub scope: ScopeSet,
}

/// Where an approval stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    /// Waiting for the approver.
    Pending,
    /// Approved; the next matching request gets its token.
    Approved,
    /// Denied; the request is refused with `access_denied`.
    Denied,
    /// Approved and used: its token was issued.
    Consumed,
}

impl ApprovalState {
    /// The state as stored (and compared by the stores' compare-and-set).
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Denied => "denied",
            ApprovalState::Consumed => "consumed",
        }
    }

    /// The state named `text`, as [`ApprovalState::as_str`] writes it.
    pub fn parse(text: &str) -> Option<ApprovalState> {
        match text {
            "pending" => Some(ApprovalState::Pending),
            "approved" => Some(ApprovalState::Approved),
            "denied" => Some(ApprovalState::Denied),
            "consumed" => Some(ApprovalState::Consumed),
            _ => None,
        }
    }
}

/// A person's decision on an approval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Who decided.
    pub approver: String,
    /// When.
    pub at: UnixTime,
}

/// One approval, as every store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Its id.
    pub id: ApprovalId,
    /// The request it covers.
    pub request: Fingerprint,
    /// The grant type of the request (`client_credentials` or token exchange).
    pub grant_type: String,
    /// The scopes among the granted ones that need the approval.
    pub scopes_needing_approval: ScopeSet,
    /// What marked them (`resources.toml: …` or a rule id), for the approver.
    pub marked_by: Vec<String>,
    /// The one person who may decide it.
    pub approver: String,
    /// When it was asked for.
    pub created_at: UnixTime,
    /// When it stops being usable.
    pub expires_at: UnixTime,
    /// Where it stands.
    pub state: ApprovalState,
    /// The decision, once taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
}

impl Approval {
    /// Until when a store keeps the record.
    pub fn keep_until(&self) -> UnixTime {
        self.expires_at.plus(KEEP_AFTER_EXPIRY)
    }

    /// Whether it can no longer be decided or used at `now`.
    pub fn is_expired(&self, now: UnixTime) -> bool {
        now >= self.expires_at
    }

    /// The key of the request it covers, for the de-duplication index.
    pub fn request_key(&self) -> String {
        request_key(&self.grant_type, &self.request)
    }

    /// Its place in a newest-first listing.
    pub fn cursor(&self) -> Cursor {
        Cursor { created_at: self.created_at, id: self.id.clone() }
    }

    /// Whether a listing of `state` at `now` shows it: a pending one only
    /// while it can still be decided.
    pub fn is_listed_as(&self, state: ApprovalState, now: UnixTime) -> bool {
        self.state == state && (state != ApprovalState::Pending || !self.is_expired(now))
    }
}

/// The key naming one request (its grant type and every field of its
/// fingerprint): SHA-256 of their JSON, base64url. Two requests get the
/// same key only if they are the same request.
pub fn request_key(grant_type: &str, request: &Fingerprint) -> String {
    // Each field with its length in front, so that no two requests write the
    // same text; the scope set prints sorted, so equal sets print alike.
    let parent = request.parent_jti.as_ref().map_or_else(|| "-".to_owned(), |jti| format!("+{}", jti.0));
    let fields = [grant_type, &request.subject, &request.agent, &parent, &request.target, &request.scope.to_string()];
    let mut text = String::new();
    for field in fields {
        text.push_str(&format!("{}:{field};", field.len()));
    }
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()))
}

/// A place in a newest-first listing: a page lists the approvals created
/// before it (older, or as old with a smaller id). Written `<created_at>.<id>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// When the last approval listed was created.
    pub created_at: UnixTime,
    /// Its id.
    pub id: ApprovalId,
}

impl Cursor {
    /// The cursor written as `text`, if it is one.
    pub fn parse(text: &str) -> Option<Cursor> {
        let (created_at, id) = text.split_once('.')?;
        let valid_id = !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"-_".contains(&byte));
        if !valid_id {
            return None;
        }
        Some(Cursor { created_at: UnixTime(created_at.parse().ok()?), id: ApprovalId(id.to_owned()) })
    }

    /// Whether `(created_at, id)` comes after this cursor in a newest-first
    /// listing, that is, is older.
    pub fn precedes(&self, created_at: UnixTime, id: &str) -> bool {
        (created_at, id) < (self.created_at, self.id.0.as_str())
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.created_at.0, self.id.0)
    }
}

/// One page of approvals to list, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalQuery {
    /// Only approvals in this state (pending ones only while unexpired).
    pub state: ApprovalState,
    /// Only this agent's, if set.
    pub agent: Option<String>,
    /// Only those older than this place, if set (the previous page's `next`).
    pub before: Option<Cursor>,
    /// The most to list, at most [`MAX_PAGE`].
    pub limit: usize,
    /// The time that decides which pending approvals have expired.
    pub now: UnixTime,
}

impl ApprovalQuery {
    /// The first page of pending approvals at `now`.
    pub fn pending(now: UnixTime) -> ApprovalQuery {
        ApprovalQuery { state: ApprovalState::Pending, agent: None, before: None, limit: DEFAULT_PAGE, now }
    }

    /// The page size, within bounds.
    pub fn page_size(&self) -> usize {
        self.limit.clamp(1, MAX_PAGE)
    }
}

/// One page of a listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApprovalPage {
    /// The approvals, newest first.
    pub approvals: Vec<Approval>,
    /// Where the next page starts, if there may be more.
    pub next: Option<Cursor>,
}

/// What [`ApprovalStore::create`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Creation {
    /// The approval was recorded, pending.
    Created,
    /// The same request already waits for this approval: nothing recorded.
    Waiting(Box<Approval>),
    /// The agent already has as many pending approvals as allowed: nothing recorded.
    Full,
}

/// Approvals shared by every broker node.
#[async_trait]
pub trait ApprovalStore: Send + Sync {
    /// Records a new approval (in state `pending`), kept until its
    /// [`Approval::keep_until`], unless the same request (same
    /// [`Approval::request_key`]) has a pending approval not expired at
    /// `approval.created_at` ([`Creation::Waiting`]), or its agent has
    /// `max_pending_per_agent` such approvals already ([`Creation::Full`]).
    /// Atomic: of concurrent identical requests one creates, the others wait
    /// on it. `Ok(Created)` means it is durable.
    async fn create(&self, approval: &Approval, max_pending_per_agent: usize) -> Result<Creation, StoreError>;

    /// The approval with this id, if it is kept.
    async fn approval(&self, id: &ApprovalId) -> Result<Option<Approval>, StoreError>;

    /// Replaces the approval `next.id` with `next` if, and only if, its state
    /// is `from` now: atomically, so that of two concurrent moves from one
    /// state only one succeeds. Returns whether it was replaced.
    async fn transition(&self, from: ApprovalState, next: &Approval) -> Result<bool, StoreError>;

    /// One page of approvals, newest first, read through the indexes: at
    /// most [`ApprovalQuery::page_size`] of them and [`SCAN_LIMIT`] index
    /// entries, whatever the number kept.
    async fn list(&self, query: &ApprovalQuery) -> Result<ApprovalPage, StoreError>;

    /// How many approvals are pending and not expired at `now`, from the
    /// counts kept per expiry second: never reads the approvals themselves.
    async fn count_pending(&self, now: UnixTime) -> Result<u64, StoreError>;

    /// The newest pending approvals at `now`, one page of them.
    async fn pending(&self, now: UnixTime) -> Result<Vec<Approval>, StoreError> {
        Ok(self.list(&ApprovalQuery::pending(now)).await?.approvals)
    }
}

/// The name of one listing: the approvals in `state`, of `agent` if given.
/// State names hold no `/`, so the two kinds never collide.
pub(crate) fn listing(state: ApprovalState, agent: Option<&str>) -> String {
    match agent {
        Some(agent) => format!("{}/{agent}", state.as_str()),
        None => state.as_str().to_owned(),
    }
}

/// The listings an approval appears in: its state's, and its agent's in it.
pub(crate) fn listings(approval: &Approval) -> [String; 2] {
    [listing(approval.state, None), listing(approval.state, Some(&approval.request.agent))]
}

/// Builds one page from index entries offered newest first.
pub(crate) struct Pager<'a> {
    query: &'a ApprovalQuery,
    page: ApprovalPage,
    scanned: usize,
}

impl<'a> Pager<'a> {
    /// An empty page for `query`.
    pub(crate) fn new(query: &'a ApprovalQuery) -> Pager<'a> {
        Pager { query, page: ApprovalPage::default(), scanned: 0 }
    }

    /// Where the scan starts: the listing's name and the cursor, if any.
    pub(crate) fn listing(&self) -> String {
        listing(self.query.state, self.query.agent.as_deref())
    }

    /// Offers the next entry, at `at`, with its record if it is still kept.
    /// Returns whether to offer more: no once the page is full or the scan
    /// has read [`SCAN_LIMIT`] entries (the page then says where to go on).
    pub(crate) fn offer(&mut self, at: Cursor, record: Option<Approval>) -> bool {
        self.scanned += 1;
        let wanted = |approval: &Approval| {
            approval.is_listed_as(self.query.state, self.query.now)
                && self.query.agent.as_ref().is_none_or(|agent| *agent == approval.request.agent)
        };
        if let Some(approval) = record.filter(wanted) {
            self.page.approvals.push(approval);
        }
        if self.page.approvals.len() >= self.query.page_size() || self.scanned >= SCAN_LIMIT {
            self.page.next = Some(at);
            return false;
        }
        true
    }

    /// The page, once the entries are exhausted or [`Pager::offer`] said stop.
    pub(crate) fn finish(self) -> ApprovalPage {
        self.page
    }
}

/// An approval as JSON, for the stores that keep text.
pub(crate) fn encode(approval: &Approval) -> Result<String, StoreError> {
    serde_json::to_string(approval).map_err(|_| StoreError::Corrupt("an approval cannot be encoded".into()))
}

/// An approval read back from JSON.
pub(crate) fn decode(json: &str) -> Result<Approval, StoreError> {
    serde_json::from_str(json).map_err(|_| StoreError::Corrupt("an approval record is unreadable".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approval() -> Approval {
        Approval {
            id: ApprovalId("id".into()),
            request: Fingerprint {
                subject: "s".into(),
                agent: "a".into(),
                parent_jti: None,
                target: "https://api.example".into(),
                scope: ScopeSet::parse("write").unwrap(),
            },
            grant_type: "client_credentials".into(),
            scopes_needing_approval: ScopeSet::parse("write").unwrap(),
            marked_by: vec!["resources.toml: https://api.example".into()],
            approver: "owner@example.com".into(),
            created_at: UnixTime(100),
            expires_at: UnixTime(700),
            state: ApprovalState::Pending,
            decision: None,
        }
    }

    #[test]
    fn an_approval_round_trips_and_expires_at_its_end() {
        let approval = approval();
        assert_eq!(decode(&encode(&approval).unwrap()).unwrap(), approval);
        assert!(!approval.is_expired(UnixTime(699)));
        assert!(approval.is_expired(UnixTime(700)));
        assert_eq!(approval.keep_until(), UnixTime(700 + KEEP_AFTER_EXPIRY));
    }

    #[test]
    fn a_request_key_names_exactly_one_request() {
        let base = approval();
        assert_eq!(base.request_key(), approval().request_key());
        assert_eq!(base.request_key().len(), 43, "SHA-256, base64url");
        let mut other = base.clone();
        other.grant_type = "urn:ietf:params:oauth:grant-type:token-exchange".into();
        assert_ne!(base.request_key(), other.request_key());
        let mut shifted = base.clone();
        (shifted.request.subject, shifted.request.agent) = ("sa".into(), String::new());
        let mut plain = base.clone();
        plain.request.subject = "s".into();
        plain.request.agent = "aa".into();
        assert_ne!(shifted.request_key(), plain.request_key());
        let mut parent = base.clone();
        parent.request.parent_jti = Some(TokenId("-".into()));
        assert_ne!(base.request_key(), parent.request_key(), "no parent is not a parent named -");
    }

    #[test]
    fn a_cursor_round_trips_and_orders_newest_first() {
        let cursor = approval().cursor();
        assert_eq!(cursor.to_string(), "100.id");
        assert_eq!(Cursor::parse("100.id"), Some(cursor.clone()));
        for bad in ["", "100", "x.id", "100.", "100.a/b", "100.a.b"] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
        assert!(cursor.precedes(UnixTime(99), "zz"));
        assert!(cursor.precedes(UnixTime(100), "ia"));
        assert!(!cursor.precedes(UnixTime(100), "id"));
        assert!(!cursor.precedes(UnixTime(101), "a"));
    }

    #[test]
    fn a_fingerprint_differs_in_any_field() {
        let base = approval().request;
        let mut other = base.clone();
        other.parent_jti = Some(TokenId("p".into()));
        assert_ne!(base, other);
        let mut wider = base.clone();
        wider.scope = ScopeSet::parse("write read").unwrap();
        assert_ne!(base, wider);
    }
}
