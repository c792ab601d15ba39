//! The default single-node state store (DESIGN.md §6): one redb file,
//! `<data>/baton.redb`, that survives `kill -9` and restarts.
//!
//! Every write goes through one writer thread, which commits whatever is
//! queued in one durable transaction (group commit): concurrent callers share
//! one fsync, and each is answered only once its write is committed. Reads
//! open their own read transaction (MVCC) and never wait for the writer.
//!
//! Tables:
//! - `used` (id → until), `revoked` (jti → until), `cutoffs` (principal key
//!   → (cut-off in microseconds, until)), each with a `*_expiry` multimap
//!   (until → key), so housekeeping reads only what has expired; `blocked`
//!   (principal key). A deprovisioning writes its cut-off and its block in
//!   one transaction.
//! - `events`: (time, sequence) → the event as JSON, so newest-first and time
//!   ranges are key ranges; `events_by_{agent,subject,jti,parent_jti}`
//!   multimaps → (time, sequence), so a filtered query reads only its events.
//! - `issued_by_jti` (jti → (time, sequence)) and `issued_by_parent`
//!   (parent jti → (time, sequence)): issuance events only, so that a trace
//!   finds a token and its children whatever else names them. An issuance is
//!   indexed by its jti and its parent there alone, not in
//!   `events_by_{jti,parent_jti}` too: those keys are random, and each entry
//!   is a page the commit rewrites. A query by jti or parent reads both
//!   indexes (a file written before holds an issuance in both: it comes once).
//!   A file written so is read correctly only by this version and later ones:
//!   an older binary's queries by jti or parent would miss its issuances
//!   (traces, which read the issuance indexes, would not). One jti has one
//!   issuance: the broker makes each jti once.
//! - `meta`: the next audit sequence number, and which migrations ran.
//!
//! Housekeeping also drops audit events older than the retention (and their
//! index entries), a bounded number a pass, except the issuance or
//! revocation of a token that has not expired.
//!
//! An older file is migrated when opened: its issuance indexes are built
//! from the events, and its deprovisionings (`deprovisioned`, whole seconds)
//! move to `cutoffs` as the last microsecond of their second, so they kill
//! exactly what they killed before.
//! - `approvals`, `approvals_expiry`: see `embedded_approvals.rs`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use super::lifecycle::LocalLifecycle;
use super::sessions::LocalSessions;
use super::OneNode;
use async_trait::async_trait;
use redb::{
    Database, MultimapTable, MultimapTableDefinition, ReadableDatabase, ReadableMultimapTable, ReadableTable, Table,
    TableDefinition, WriteTransaction,
};
use tokio::sync::oneshot;

use super::{
    outlives, verdict, AuditDecision, AuditEvent, AuditFilter, AuditStore, Blocking, Cutoff, Lineage, Principal,
    ReplayStore, Retention, RevocationStore, Status, StoreError, Take, Use,
};
use crate::claims::TokenId;
use crate::clock::{UnixMicros, UnixTime};

/// The database file inside the data folder.
const FILE_NAME: &str = "baton.redb";

type Expiry = MultimapTableDefinition<'static, i64, &'static str>;
/// An audit event's key: its time, then its arrival order.
type EventKey = (i64, u64);
type EventIndex = MultimapTableDefinition<'static, &'static str, EventKey>;

const USED: TableDefinition<&str, i64> = TableDefinition::new("used");
const USED_EXPIRY: Expiry = MultimapTableDefinition::new("used_expiry");
const REVOKED: TableDefinition<&str, i64> = TableDefinition::new("revoked");
const REVOKED_EXPIRY: Expiry = MultimapTableDefinition::new("revoked_expiry");
/// Deprovisionings of an older file, in whole seconds: migrated to `CUTOFFS`.
const DEPROVISIONED: TableDefinition<&str, (i64, i64)> = TableDefinition::new("deprovisioned");
/// Principal key → (cut-off in microseconds, until).
const CUTOFFS: TableDefinition<&str, (i64, i64)> = TableDefinition::new("cutoffs");
const DEPROVISIONED_EXPIRY: Expiry = MultimapTableDefinition::new("deprovisioned_expiry");
/// Blocked principals, kept until the block is lifted.
const BLOCKED: TableDefinition<&str, ()> = TableDefinition::new("blocked");
const EVENTS: TableDefinition<EventKey, &str> = TableDefinition::new("events");
const EVENTS_BY_AGENT: EventIndex = MultimapTableDefinition::new("events_by_agent");
const EVENTS_BY_SUBJECT: EventIndex = MultimapTableDefinition::new("events_by_subject");
const EVENTS_BY_JTI: EventIndex = MultimapTableDefinition::new("events_by_jti");
const EVENTS_BY_PARENT: EventIndex = MultimapTableDefinition::new("events_by_parent_jti");
const ISSUED_BY_JTI: TableDefinition<&str, EventKey> = TableDefinition::new("issued_by_jti");
const ISSUED_BY_PARENT: EventIndex = MultimapTableDefinition::new("issued_by_parent");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_SEQUENCE: &str = "next_sequence";
/// Present once the issuance indexes cover every event of the file.
const ISSUED_INDEXED: &str = "issued_indexed";

/// The most writes one transaction takes: enough to share an fsync widely,
/// few enough that the first caller in a batch is not kept long.
const MAX_BATCH: usize = 256;
/// Seconds (of the callers' clock) between two housekeeping passes.
const SWEEP_INTERVAL: i64 = 60;
/// The most expired entries of one kind a pass removes, to bound its transaction.
const SWEEP_LIMIT: usize = 10_000;
/// Revocations and deprovisionings outlive the tokens they cover by this many
/// seconds, more than any verifier's clock leeway, so a swept entry never
/// revives a token that some verifier still accepts.
const KEEP_AFTER_EXPIRY: i64 = 300;
/// The most audit events one pass removes for retention: few enough that
/// the batch carrying the pass is not kept long. A pass that reaches it
/// leaves the next one due at once, so sweeping keeps up with any inflow.
const EVENT_SWEEP_LIMIT: usize = 2_000;
/// The most audit events one pass examines for retention.
const RETENTION_SCAN_LIMIT: usize = 2 * EVENT_SWEEP_LIMIT;
/// The page cache: the working set of one broker fits well within it.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Replay, revocation and audit state in a redb file under the data folder.
pub struct EmbeddedStore {
    path: PathBuf,
    db: Arc<Database>,
    writer: Option<WriterHandle>,
    commits: Arc<AtomicU64>,
    writer_alive: Arc<AtomicBool>,
    /// Console sessions: one node's, in memory.
    sessions: LocalSessions,
    /// The agents' lifecycle: one node's, in files of the data folder.
    lifecycle: LocalLifecycle,
}

struct WriterHandle {
    requests: mpsc::Sender<Request>,
    thread: JoinHandle<()>,
}

impl EmbeddedStore {
    /// Opens (or creates) `data_dir/baton.redb`, creating the folder if
    /// needed, and starts the writer thread. Audit events are kept for the
    /// default [`Retention`].
    pub fn open(data_dir: &Path) -> Result<EmbeddedStore, StoreError> {
        EmbeddedStore::open_with_retention(data_dir, Retention::default())
    }

    /// [`EmbeddedStore::open`], keeping audit events for `retention` (and
    /// the issuance or revocation of a token that has not expired, however
    /// old).
    pub fn open_with_retention(data_dir: &Path, retention: Retention) -> Result<EmbeddedStore, StoreError> {
        super::data_dir::prepare(data_dir)
            .map_err(|error| StoreError::Io(format!("cannot create {}: {error}", data_dir.display())))?;
        let path = data_dir.join(FILE_NAME);
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|error| StoreError::Io(format!("cannot open {}: {error}", path.display())))?;
        // redb creates the file as the umask allows.
        super::data_dir::restrict(&path)
            .map_err(|error| StoreError::Io(format!("cannot restrict {}: {error}", path.display())))?;
        create_tables(&db)?;
        let db = Arc::new(db);
        let commits = Arc::new(AtomicU64::new(0));
        let writer_alive = Arc::new(AtomicBool::new(true));
        let (requests, queue) = mpsc::channel();
        let writer = Writer {
            db: db.clone(),
            commits: commits.clone(),
            _alive: AliveFlag(writer_alive.clone()),
            sweeps: Housekeeping { next: None, retention: retention.as_seconds() },
        };
        let thread = std::thread::Builder::new()
            .name("baton-store-writer".into())
            .spawn(move || writer.run(&queue))
            .map_err(|error| StoreError::Io(format!("cannot start the store writer: {error}")))?;
        Ok(EmbeddedStore {
            path,
            db,
            writer: Some(WriterHandle { requests, thread }),
            commits,
            writer_alive,
            sessions: LocalSessions::default(),
            lifecycle: LocalLifecycle::in_folder(data_dir),
        })
    }

    /// The database, for the approvals kept in the same file.
    pub(super) fn database(&self) -> Arc<Database> {
        self.db.clone()
    }

    /// How many write transactions were committed; tests use it to show that
    /// concurrent writes share commits.
    #[doc(hidden)]
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Queues `write` for the writer and waits until it is committed. A writer
    /// that is gone, or a commit that failed, is an error: callers fail closed.
    async fn submit(&self, write: Write) -> Result<Applied, StoreError> {
        let (reply, answer) = oneshot::channel();
        let writer = self.writer.as_ref().ok_or_else(writer_gone)?;
        writer.requests.send(Request { write, reply }).map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Drop for EmbeddedStore {
    /// Closes the queue and waits for the writer to commit what is queued and
    /// let go of the file, so that it can be reopened at once.
    fn drop(&mut self) {
        if let Some(WriterHandle { requests, thread }) = self.writer.take() {
            drop(requests);
            if thread.join().is_err() {
                tracing::error!("embedded store: the writer thread panicked");
            }
        }
    }
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable("embedded store: the writer has stopped".into())
}

/// Creates every table, so that read transactions always find them, and
/// migrates what an older file holds.
fn create_tables(db: &Database) -> Result<(), StoreError> {
    let create = || -> Result<(), Failure> {
        let txn = db.begin_write()?;
        {
            let mut tables = WriteTables::open(&txn)?;
            tables.migrate()?;
        }
        txn.commit()?;
        Ok(())
    };
    create().map_err(StoreError::from)
}

impl OneNode for EmbeddedStore {
    fn sessions(&self) -> &LocalSessions {
        &self.sessions
    }

    fn lifecycle(&self) -> &LocalLifecycle {
        &self.lifecycle
    }
}

#[async_trait]
impl ReplayStore for EmbeddedStore {
    async fn use_once(&self, id: &str, until: UnixTime, now: UnixTime) -> Result<Use, StoreError> {
        match self.submit(Write::UseOnce { id: id.to_owned(), until, now }).await? {
            Applied::Used(answer) => Ok(answer),
            _ => Err(StoreError::Unavailable("embedded store: a use got no answer".into())),
        }
    }
}

#[async_trait]
impl RevocationStore for EmbeddedStore {
    async fn revoke(&self, jti: &TokenId, until: UnixTime) -> Result<bool, StoreError> {
        // A repeated revocation that would not lengthen the entry writes
        // nothing: a holder calling /revoke in a loop costs reads, not commits.
        let kept = || -> Result<Option<i64>, Failure> {
            let txn = self.db.begin_read()?;
            let revoked = txn.open_table(REVOKED)?;
            let kept = revoked.get(jti.0.as_str())?.map(|entry| entry.value());
            Ok(kept)
        };
        if kept().map_err(StoreError::from)?.is_some_and(|kept| kept >= until.0) {
            return Ok(false);
        }
        match self.submit(Write::Revoke { jti: jti.0.clone(), until }).await? {
            Applied::Revoked(first) => Ok(first),
            _ => Err(StoreError::Unavailable("embedded store: a revocation got no answer".into())),
        }
    }

    async fn deprovision(&self, principal: &Principal, cutoff: &Cutoff) -> Result<(), StoreError> {
        self.submit(Write::Deprovision { key: principal.key(), cutoff: *cutoff }).await.map(drop)
    }

    async fn block(&self, principal: &Principal, blocked: bool) -> Result<(), StoreError> {
        self.submit(Write::Block { key: principal.key(), blocked }).await.map(drop)
    }

    async fn check(&self, lineage: &Lineage) -> Result<Status, StoreError> {
        check(&self.db, lineage).map_err(StoreError::from)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // A store that can read but no longer write is not ready either.
        if !self.writer_alive.load(Ordering::Acquire) {
            return Err(writer_gone());
        }
        let read = || -> Result<(), Failure> {
            let txn = self.db.begin_read()?;
            txn.open_table(META)?.get(NEXT_SEQUENCE)?;
            Ok(())
        };
        read().map_err(StoreError::from)
    }
}

#[async_trait]
impl AuditStore for EmbeddedStore {
    async fn record(&self, event: AuditEvent) -> Result<(), StoreError> {
        // Encoded here, so that the writer's transaction only meets storage errors.
        let json = serde_json::to_string(&event).map_err(|error| StoreError::from(Failure::Json(error)))?;
        self.submit(Write::Record { event: Box::new(event), json }).await.map(drop)
    }

    async fn query(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let mut events = Vec::new();
        scan(&self.db, filter, &mut |event| {
            events.push(event);
            events.len() >= filter.limit()
        })?;
        Ok(events)
    }

    async fn count(&self, filter: &AuditFilter) -> Result<usize, StoreError> {
        let mut count = 0;
        scan(&self.db, filter, &mut |_| {
            count += 1;
            count >= AuditFilter::MAX_COUNT
        })?;
        Ok(count)
    }

    async fn issued(&self, jti: &TokenId) -> Result<Option<AuditEvent>, StoreError> {
        let read = || -> Result<Option<AuditEvent>, Failure> {
            let txn = self.db.begin_read()?;
            let Some(key) = txn.open_table(ISSUED_BY_JTI)?.get(jti.0.as_str())?.map(|entry| entry.value()) else {
                return Ok(None);
            };
            let events = txn.open_table(EVENTS)?;
            let event = events.get(key)?.map(|json| serde_json::from_str(json.value())).transpose()?;
            Ok(event)
        };
        read().map_err(StoreError::from)
    }

    async fn children(&self, parent: &TokenId, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let read = || -> Result<Vec<AuditEvent>, Failure> {
            let txn = self.db.begin_read()?;
            let events = txn.open_table(EVENTS)?;
            let index = txn.open_multimap_table(ISSUED_BY_PARENT)?;
            let mut children = Vec::new();
            // Values of a multimap come in key order: oldest first.
            for entry in index.get(parent.0.as_str())? {
                if children.len() >= limit.min(AuditFilter::MAX_LIMIT) {
                    break;
                }
                if let Some(json) = events.get(entry?.value())? {
                    children.push(serde_json::from_str(json.value())?);
                }
            }
            Ok(children)
        };
        read().map_err(StoreError::from)
    }
}

// ---------------------------------------------------------------------------
// Reads

/// One read transaction, one point lookup per jti and per principal.
fn check(db: &Database, lineage: &Lineage) -> Result<Status, Failure> {
    let txn = db.begin_read()?;
    let revoked = txn.open_table(REVOKED)?;
    for jti in &lineage.jtis {
        if revoked.get(jti.0.as_str())?.is_some() {
            return Ok(Status::Revoked);
        }
    }
    let blocked = txn.open_table(BLOCKED)?;
    let cutoffs = txn.open_table(CUTOFFS)?;
    let mut blocks = Vec::with_capacity(lineage.principals.len());
    let mut cuts = Vec::with_capacity(lineage.principals.len());
    for named in &lineage.principals {
        let key = named.principal.key();
        blocks.push(blocked.get(key.as_str())?.is_some());
        cuts.push((named.since, cutoffs.get(key.as_str())?.map(|entry| UnixMicros(entry.value().0))));
    }
    Ok(verdict(false, blocks, cuts))
}

/// Reads the most selective index the filter names (or the time range of the
/// whole log), newest first, handing `take` each matching event until it
/// wants no more.
fn scan(db: &Database, filter: &AuditFilter, take: &mut Take<'_>) -> Result<(), Failure> {
    let since = filter.since.map_or(i64::MIN, |time| time.0);
    let until = filter.until.map_or(i64::MAX, |time| time.0);
    if since > until {
        return Ok(());
    }
    let txn = db.begin_read()?;
    let events = txn.open_table(EVENTS)?;
    // Issuances are indexed by jti and by parent in their own tables.
    enum Issuances {
        ByJti,
        ByParent,
        Elsewhere,
    }
    let index = [
        (EVENTS_BY_JTI, Issuances::ByJti, filter.jti.as_ref().map(|jti| jti.0.as_str())),
        (EVENTS_BY_PARENT, Issuances::ByParent, filter.parent_jti.as_ref().map(|jti| jti.0.as_str())),
        (EVENTS_BY_AGENT, Issuances::Elsewhere, filter.agent.as_deref()),
        (EVENTS_BY_SUBJECT, Issuances::Elsewhere, filter.subject.as_deref()),
    ]
    .into_iter()
    .find_map(|(table, issuances, key)| key.map(|key| (table, issuances, key)));
    match index {
        Some((table, issuances, key)) => {
            let index = txn.open_multimap_table(table)?;
            let named = index.get(key)?.rev().map(|entry| Ok(entry?.value()));
            let by_parent = txn.open_multimap_table(ISSUED_BY_PARENT)?;
            // Read as the merge asks, like the index itself: a query that
            // wants one event reads one.
            let issued: Box<dyn Iterator<Item = Result<EventKey, Failure>> + '_> = match issuances {
                Issuances::ByJti => {
                    let one = txn.open_table(ISSUED_BY_JTI)?.get(key)?.map(|entry| entry.value());
                    Box::new(one.into_iter().map(Ok))
                }
                Issuances::ByParent => Box::new(by_parent.get(key)?.rev().map(|entry| Ok(entry?.value()))),
                Issuances::Elsewhere => Box::new(std::iter::empty()),
            };
            for entry in NewestFirst::new(named, issued) {
                let (time, sequence) = entry?;
                if time > until {
                    continue;
                }
                if time < since {
                    break;
                }
                if let Some(json) = events.get((time, sequence))? {
                    if offer(json.value(), filter, take)? {
                        break;
                    }
                }
            }
        }
        None => {
            for entry in events.range((since, 0)..=(until, u64::MAX))?.rev() {
                if offer(entry?.1.value(), filter, take)? {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// Two streams of event keys, each newest first, as one stream newest
/// first; a key in both comes once.
struct NewestFirst<A: Iterator, B: Iterator> {
    one: std::iter::Peekable<A>,
    other: std::iter::Peekable<B>,
}

impl<A, B> NewestFirst<A, B>
where
    A: Iterator<Item = Result<EventKey, Failure>>,
    B: Iterator<Item = Result<EventKey, Failure>>,
{
    fn new(one: A, other: B) -> Self {
        NewestFirst { one: one.peekable(), other: other.peekable() }
    }
}

impl<A, B> Iterator for NewestFirst<A, B>
where
    A: Iterator<Item = Result<EventKey, Failure>>,
    B: Iterator<Item = Result<EventKey, Failure>>,
{
    type Item = Result<EventKey, Failure>;

    fn next(&mut self) -> Option<Self::Item> {
        let order = match (self.one.peek(), self.other.peek()) {
            (Some(Ok(one)), Some(Ok(other))) => one.cmp(other),
            // An error first, whichever side it is on.
            (Some(Err(_)), _) | (Some(_), None) => std::cmp::Ordering::Greater,
            (_, Some(Err(_))) | (None, Some(_)) => std::cmp::Ordering::Less,
            (None, None) => return None,
        };
        match order {
            std::cmp::Ordering::Greater => self.one.next(),
            std::cmp::Ordering::Less => self.other.next(),
            std::cmp::Ordering::Equal => {
                self.other.next();
                self.one.next()
            }
        }
    }
}

/// Hands the event to `take` if it matches; true once `take` wants no more.
fn offer(json: &str, filter: &AuditFilter, take: &mut Take<'_>) -> Result<bool, Failure> {
    let event: AuditEvent = serde_json::from_str(json)?;
    Ok(filter.matches(&event) && take(event))
}

// ---------------------------------------------------------------------------
// The writer

/// A write waiting for its commit.
struct Request {
    write: Write,
    reply: oneshot::Sender<Result<Applied, StoreError>>,
}

enum Write {
    UseOnce { id: String, until: UnixTime, now: UnixTime },
    Revoke { jti: String, until: UnixTime },
    Deprovision { key: String, cutoff: Cutoff },
    Block { key: String, blocked: bool },
    Record { event: Box<AuditEvent>, json: String },
}

/// What a committed write answers.
enum Applied {
    /// A use, first or replayed.
    Used(Use),
    /// A revocation: whether the token was not revoked before.
    Revoked(bool),
    /// Anything else: the write is kept.
    Kept,
}

/// The thread that owns every write transaction.
struct Writer {
    db: Arc<Database>,
    commits: Arc<AtomicU64>,
    _alive: AliveFlag,
    sweeps: Housekeeping,
}

/// Clears the flag when the writer ends, however it ends.
struct AliveFlag(Arc<AtomicBool>);

impl Drop for AliveFlag {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Writer {
    /// Takes what is queued, commits it in one transaction and answers each
    /// caller; ends when the store closes the queue and it is drained.
    fn run(mut self, queue: &mpsc::Receiver<Request>) {
        while let Ok(first) = queue.recv() {
            let mut batch = vec![first];
            batch.extend(queue.try_iter().take(MAX_BATCH.saturating_sub(1)));
            match self.commit(&batch) {
                Ok(answers) => {
                    self.commits.fetch_add(1, Ordering::Relaxed);
                    // A caller that stopped waiting needs no answer.
                    for (request, answer) in batch.into_iter().zip(answers) {
                        let _ = request.reply.send(Ok(answer));
                    }
                }
                Err(failure) => {
                    tracing::error!(error = %failure, writes = batch.len(), "embedded store: a commit failed");
                    let error = StoreError::from(failure);
                    for request in batch {
                        let _ = request.reply.send(Err(error.clone()));
                    }
                }
            }
        }
    }

    /// Applies the writes in arrival order (so each use sees the ones before
    /// it), sweeps when due, and commits durably.
    fn commit(&mut self, batch: &[Request]) -> Result<Vec<Applied>, Failure> {
        let txn = self.db.begin_write()?;
        let mut answers = Vec::with_capacity(batch.len());
        {
            let mut tables = WriteTables::open(&txn)?;
            for request in batch {
                answers.push(tables.apply(&request.write)?);
            }
            if let Some(now) = self.sweeps.due(batch) {
                if tables.sweep(now, self.sweeps.retention)? {
                    self.sweeps.again(now);
                }
            }
            tables.finish()?;
        }
        txn.commit()?;
        Ok(answers)
    }
}

/// When to remove expired entries. The only time the store knows is the one
/// its callers pass: the `now` of `use_once`, and the time of each audit
/// event (the broker's clock, like `now`), so that a broker whose clients
/// spend no single-use ids still sweeps. Passes follow that clock.
struct Housekeeping {
    next: Option<UnixTime>,
    /// Seconds audit events are kept.
    retention: i64,
}

impl Housekeeping {
    /// The time to sweep at, if a pass is due; the first comes at once, to
    /// clear what expired while the broker was down.
    fn due(&mut self, batch: &[Request]) -> Option<UnixTime> {
        let now = batch
            .iter()
            .filter_map(|request| match &request.write {
                Write::UseOnce { now, .. } => Some(*now),
                Write::Record { event, .. } => Some(event.time),
                _ => None,
            })
            .max()?;
        if self.next.is_some_and(|next| now < next) {
            return None;
        }
        self.next = Some(now.plus(SWEEP_INTERVAL));
        Some(now)
    }

    /// A pass left old events behind: the next batch sweeps again.
    fn again(&mut self, now: UnixTime) {
        self.next = Some(now);
    }
}

/// Every table, open in one write transaction.
struct WriteTables<'txn> {
    used: Table<'txn, &'static str, i64>,
    used_expiry: MultimapTable<'txn, i64, &'static str>,
    revoked: Table<'txn, &'static str, i64>,
    revoked_expiry: MultimapTable<'txn, i64, &'static str>,
    cutoffs: Table<'txn, &'static str, (i64, i64)>,
    deprovisioned_expiry: MultimapTable<'txn, i64, &'static str>,
    blocked: Table<'txn, &'static str, ()>,
    events: Table<'txn, EventKey, &'static str>,
    by_agent: MultimapTable<'txn, &'static str, EventKey>,
    by_subject: MultimapTable<'txn, &'static str, EventKey>,
    by_jti: MultimapTable<'txn, &'static str, EventKey>,
    by_parent: MultimapTable<'txn, &'static str, EventKey>,
    issued_by_jti: Table<'txn, &'static str, EventKey>,
    issued_by_parent: MultimapTable<'txn, &'static str, EventKey>,
    /// The deprovisionings of an older file, until migrated.
    legacy_deprovisioned: Table<'txn, &'static str, (i64, i64)>,
    meta: Table<'txn, &'static str, u64>,
    /// The next audit sequence number, read once and written back once a
    /// transaction rather than once an event.
    next_sequence: u64,
    /// `next_sequence` as the transaction found it.
    first_sequence: u64,
}

impl<'txn> WriteTables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, Failure> {
        let meta = txn.open_table(META)?;
        let next_sequence = meta.get(NEXT_SEQUENCE)?.map_or(0, |entry| entry.value());
        Ok(WriteTables {
            used: txn.open_table(USED)?,
            used_expiry: txn.open_multimap_table(USED_EXPIRY)?,
            revoked: txn.open_table(REVOKED)?,
            revoked_expiry: txn.open_multimap_table(REVOKED_EXPIRY)?,
            cutoffs: txn.open_table(CUTOFFS)?,
            deprovisioned_expiry: txn.open_multimap_table(DEPROVISIONED_EXPIRY)?,
            blocked: txn.open_table(BLOCKED)?,
            events: txn.open_table(EVENTS)?,
            by_agent: txn.open_multimap_table(EVENTS_BY_AGENT)?,
            by_subject: txn.open_multimap_table(EVENTS_BY_SUBJECT)?,
            by_jti: txn.open_multimap_table(EVENTS_BY_JTI)?,
            by_parent: txn.open_multimap_table(EVENTS_BY_PARENT)?,
            issued_by_jti: txn.open_table(ISSUED_BY_JTI)?,
            issued_by_parent: txn.open_multimap_table(ISSUED_BY_PARENT)?,
            legacy_deprovisioned: txn.open_table(DEPROVISIONED)?,
            meta,
            next_sequence,
            first_sequence: next_sequence,
        })
    }

    /// Writes back what is kept in memory during the transaction, if it
    /// changed.
    fn finish(&mut self) -> Result<(), Failure> {
        if self.next_sequence != self.first_sequence {
            self.meta.insert(NEXT_SEQUENCE, self.next_sequence)?;
        }
        Ok(())
    }

    fn apply(&mut self, write: &Write) -> Result<Applied, Failure> {
        match write {
            Write::UseOnce { id, until, now } => self.use_once(id, *until, *now).map(Applied::Used),
            Write::Revoke { jti, until } => self.revoke(jti, *until).map(Applied::Revoked),
            Write::Deprovision { key, cutoff } => self.deprovision(key, cutoff).map(|()| Applied::Kept),
            Write::Block { key, blocked } => self.block(key, *blocked).map(|()| Applied::Kept),
            Write::Record { event, json } => self.record(event, json).map(|()| Applied::Kept),
        }
    }

    fn block(&mut self, key: &str, blocked: bool) -> Result<(), Failure> {
        if blocked {
            self.blocked.insert(key, ())?;
        } else {
            self.blocked.remove(key)?;
        }
        Ok(())
    }

    /// An entry whose end has passed counts as absent and is replaced.
    fn use_once(&mut self, id: &str, until: UnixTime, now: UnixTime) -> Result<Use, Failure> {
        if self.used.get(id)?.is_some_and(|entry| entry.value() > now.0) {
            return Ok(Use::Replayed);
        }
        self.used.insert(id, until.0)?;
        self.used_expiry.insert(until.0, id)?;
        Ok(Use::First)
    }

    /// A revocation is never shortened by a later one; answers whether the
    /// token was not revoked before.
    fn revoke(&mut self, jti: &str, until: UnixTime) -> Result<bool, Failure> {
        let kept = self.revoked.get(jti)?.map(|entry| entry.value());
        let end = kept.map_or(until.0, |kept| kept.max(until.0));
        if kept != Some(end) {
            self.revoked.insert(jti, end)?;
            self.revoked_expiry.insert(end, jti)?;
        }
        Ok(kept.is_none())
    }

    /// Keeps the latest cut-off and the latest `until` (a deprovisioning
    /// never moves back), and blocks or lifts the block in the same
    /// transaction.
    fn deprovision(&mut self, key: &str, cutoff: &Cutoff) -> Result<(), Failure> {
        match cutoff.block {
            Blocking::Block => {
                self.blocked.insert(key, ())?;
            }
            Blocking::Lift => {
                if self.blocked.remove(key)?.is_none() {
                    return Ok(());
                }
            }
            Blocking::Keep => {}
        }
        self.cut_off(key, cutoff.at.0, cutoff.until.0)
    }

    fn cut_off(&mut self, key: &str, at: i64, until: i64) -> Result<(), Failure> {
        let kept = self.cutoffs.get(key)?.map(|entry| entry.value());
        let (at, until) = kept.map_or((at, until), |(kept_at, kept_until)| (kept_at.max(at), kept_until.max(until)));
        self.cutoffs.insert(key, (at, until))?;
        self.deprovisioned_expiry.insert(until, key)?;
        Ok(())
    }

    /// Brings an older file up to date, once: deprovisionings kept in whole
    /// seconds become cut-offs at the last microsecond of their second, and
    /// the issuance indexes are built from the events.
    fn migrate(&mut self) -> Result<(), Failure> {
        let mut legacy = Vec::new();
        for entry in self.legacy_deprovisioned.iter()? {
            let (key, value) = entry?;
            legacy.push((key.value().to_owned(), value.value()));
        }
        for (key, (at, until)) in legacy {
            self.cut_off(&key, UnixMicros::end_of(UnixTime(at)).0, until)?;
            self.legacy_deprovisioned.remove(key.as_str())?;
        }
        if self.meta.get(ISSUED_INDEXED)?.is_none() {
            let mut issued = Vec::new();
            for entry in self.events.iter()? {
                let (key, json) = entry?;
                let event: AuditEvent = serde_json::from_str(json.value())?;
                if event.decision == AuditDecision::Issued {
                    issued.push((key.value(), event));
                }
            }
            for (key, event) in &issued {
                self.index_issuance(event, *key)?;
            }
            self.meta.insert(ISSUED_INDEXED, 1)?;
        }
        Ok(())
    }

    /// Files an issuance in the indexes a trace reads.
    fn index_issuance(&mut self, event: &AuditEvent, key: EventKey) -> Result<(), Failure> {
        if let Some(jti) = &event.jti {
            self.issued_by_jti.insert(jti.0.as_str(), key)?;
            if let Some(parent) = &event.parent_jti {
                self.issued_by_parent.insert(parent.0.as_str(), key)?;
            }
        }
        Ok(())
    }

    fn record(&mut self, event: &AuditEvent, json: &str) -> Result<(), Failure> {
        let sequence = self.next_sequence;
        self.next_sequence = sequence.saturating_add(1);
        let key = (event.time.0, sequence);
        self.events.insert(key, json)?;
        let issued = event.decision == AuditDecision::Issued;
        // An issuance's jti and parent go to the issuance indexes alone.
        let (jti, parent) = match issued {
            true => (None, None),
            false => (event.jti.as_ref(), event.parent_jti.as_ref()),
        };
        let indexes = [
            (&mut self.by_agent, event.agent.as_deref()),
            (&mut self.by_subject, event.subject.as_deref()),
            (&mut self.by_jti, jti.map(|jti| jti.0.as_str())),
            (&mut self.by_parent, parent.map(|jti| jti.0.as_str())),
        ];
        for (index, value) in indexes {
            if let Some(value) = value {
                index.insert(value, key)?;
            }
        }
        if issued {
            self.index_issuance(event, key)?;
        }
        Ok(())
    }

    /// Removes used ids past their end, revocations and deprovisionings past
    /// theirs by `KEEP_AFTER_EXPIRY`, and audit events older than
    /// `retention` seconds; answers whether old events are left for
    /// another pass.
    fn sweep(&mut self, now: UnixTime, retention: i64) -> Result<bool, Failure> {
        let used = sweep(&mut self.used, &mut self.used_expiry, now.0, |until| until)?;
        let cutoff = now.plus(-KEEP_AFTER_EXPIRY).0;
        let revoked = sweep(&mut self.revoked, &mut self.revoked_expiry, cutoff, |until| until)?;
        let deprovisioned = sweep(&mut self.cutoffs, &mut self.deprovisioned_expiry, cutoff, |(_, until)| until)?;
        let events = self.sweep_events(now, now.plus(retention.saturating_neg()))?;
        tracing::debug!(used, revoked, deprovisioned, events, "embedded store: expired entries removed");
        Ok(events >= EVENT_SWEEP_LIMIT)
    }

    /// Removes events from before `horizon`, oldest first, with their index
    /// entries, a bounded number a pass; keeps those of a token still alive
    /// at `now`, which retention never drops.
    fn sweep_events(&mut self, now: UnixTime, horizon: UnixTime) -> Result<usize, Failure> {
        let mut old = Vec::new();
        for entry in self.events.range(..(horizon.0, 0))?.take(RETENTION_SCAN_LIMIT) {
            let (key, json) = entry?;
            let event: AuditEvent = serde_json::from_str(json.value())?;
            if !outlives(&event, now) {
                old.push((key.value(), event));
            }
            if old.len() >= EVENT_SWEEP_LIMIT {
                break;
            }
        }
        for (key, event) in &old {
            self.events.remove(*key)?;
            let indexes = [
                (&mut self.by_agent, event.agent.as_deref()),
                (&mut self.by_subject, event.subject.as_deref()),
                (&mut self.by_jti, event.jti.as_ref().map(|jti| jti.0.as_str())),
                (&mut self.by_parent, event.parent_jti.as_ref().map(|jti| jti.0.as_str())),
                (&mut self.issued_by_parent, event.parent_jti.as_ref().map(|jti| jti.0.as_str())),
            ];
            for (index, value) in indexes {
                if let Some(value) = value {
                    index.remove(value, *key)?;
                }
            }
            if let Some(jti) = &event.jti {
                if self.issued_by_jti.get(jti.0.as_str())?.is_some_and(|entry| entry.value() == *key) {
                    self.issued_by_jti.remove(jti.0.as_str())?;
                }
            }
        }
        Ok(old.len())
    }
}

/// Removes the entries of `table` whose end is at or before `cutoff`, found
/// through `expiry`. An expiry entry may be stale (the entry was extended or
/// replaced since): the table's own `until` decides.
fn sweep<V>(
    table: &mut Table<'_, &'static str, V>,
    expiry: &mut MultimapTable<'_, i64, &'static str>,
    cutoff: i64,
    until_of: impl for<'a> Fn(V::SelfType<'a>) -> i64,
) -> Result<usize, Failure>
where
    V: redb::Value + 'static,
{
    let mut expired = Vec::new();
    'scan: for entry in expiry.range(..=cutoff)? {
        let (until, keys) = entry?;
        for key in keys {
            if expired.len() >= SWEEP_LIMIT {
                break 'scan;
            }
            expired.push((until.value(), key?.value().to_owned()));
        }
    }
    let mut removed = 0;
    for (until, key) in &expired {
        expiry.remove(*until, key.as_str())?;
        if table.get(key.as_str())?.is_some_and(|entry| until_of(entry.value()) <= cutoff) {
            table.remove(key.as_str())?;
            removed += 1;
        }
    }
    Ok(removed)
}

// ---------------------------------------------------------------------------
// Errors

/// What can go wrong inside the store; it reaches callers as a `StoreError`.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("database: {0}")]
    Database(#[from] redb::Error),
    #[error("audit event encoding: {0}")]
    Json(#[from] serde_json::Error),
}

/// redb has one error type per operation; each converts into `redb::Error`.
macro_rules! database_failures {
    ($($error:ty),*) => {
        $(impl From<$error> for Failure {
            fn from(error: $error) -> Self {
                Failure::Database(error.into())
            }
        })*
    };
}

database_failures!(redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

impl From<Failure> for StoreError {
    fn from(failure: Failure) -> Self {
        let detail = format!("embedded store: {failure}");
        match failure {
            Failure::Database(_) => StoreError::Io(detail),
            Failure::Json(_) => StoreError::Corrupt(detail),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AuditDecision, AuditFilter};

    fn event(time: UnixTime) -> AuditEvent {
        AuditEvent {
            time,
            decision: AuditDecision::Revoked,
            reason: None,
            action: "revoke".into(),
            subject: None,
            agent: Some("a".into()),
            chain: vec![],
            target: None,
            scopes_asked: None,
            scopes_granted: None,
            jti: None,
            parent_jti: None,
            expires_at: None,
            iat_micros: None,
            dpop_jkt: None,
            rules: vec![],
            claimed_client: None,
            client_address: None,
            by: None,
            approval: None,
            refusals: Vec::new(),
        }
    }

    fn count(store: &EmbeddedStore) -> [u64; 4] {
        use redb::ReadableTableMetadata;
        let txn = store.db.begin_read().unwrap();
        [
            txn.open_table(USED).unwrap().len().unwrap(),
            txn.open_table(REVOKED).unwrap().len().unwrap(),
            txn.open_table(CUTOFFS).unwrap().len().unwrap(),
            txn.open_table(EVENTS).unwrap().len().unwrap(),
        ]
    }

    #[tokio::test]
    async fn an_older_file_is_migrated_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        drop(EmbeddedStore::open(dir.path()).unwrap());
        // What an older release left: a whole-seconds deprovisioning, and an
        // issuance recorded before the issuance indexes.
        let mut issued = event(UnixTime(990));
        issued.decision = AuditDecision::Issued;
        issued.jti = Some(TokenId("old-token".into()));
        issued.parent_jti = Some(TokenId("old-parent".into()));
        {
            let db = Database::open(dir.path().join(FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(DEPROVISIONED).unwrap().insert("agent:x", (1000, 5000)).unwrap();
            txn.open_table(EVENTS).unwrap().insert((990, 7), serde_json::to_string(&issued).unwrap().as_str()).unwrap();
            txn.open_table(META).unwrap().remove(ISSUED_INDEXED).unwrap();
            txn.commit().unwrap();
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let named_at = |second: i64, micros: i64| {
            Lineage::at(
                vec![],
                UnixMicros(UnixMicros::start_of(UnixTime(second)).0 + micros),
                [Principal::Agent("x".into())],
            )
        };
        assert_eq!(store.check(&named_at(1000, 999_999)).await.unwrap(), Status::Deprovisioned, "its whole second");
        assert_eq!(store.check(&named_at(1001, 0)).await.unwrap(), Status::Active, "not the next");
        assert_eq!(store.issued(&TokenId("old-token".into())).await.unwrap(), Some(issued.clone()));
        assert_eq!(store.children(&TokenId("old-parent".into()), 10).await.unwrap(), vec![issued]);
        let txn = store.db.begin_read().unwrap();
        assert!(txn.open_table(DEPROVISIONED).unwrap().get("agent:x").unwrap().is_none(), "moved, not copied");
    }

    #[tokio::test]
    async fn retention_drops_old_events_with_their_index_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_with_retention(dir.path(), Retention::days(1)).unwrap();
        let day = 86_400;
        let mut old = event(UnixTime(1000));
        old.decision = AuditDecision::Issued;
        old.jti = Some(TokenId("old".into()));
        old.parent_jti = Some(TokenId("parent".into()));
        old.expires_at = Some(UnixTime(1600));
        let mut alive = old.clone();
        alive.jti = Some(TokenId("alive".into()));
        alive.expires_at = Some(UnixTime(1000 + 3 * day));
        store.record(old).await.unwrap();
        store.record(alive.clone()).await.unwrap();
        store.record(event(UnixTime(1000 + day + 500))).await.unwrap();
        // Housekeeping at 1000 + 2 days: the first event is past the day kept.
        store.use_once("tick", UnixTime(1000 + 3 * day), UnixTime(1000 + 2 * day)).await.unwrap();
        assert_eq!(count(&store)[3], 2, "the old event went, the live token's issuance stayed");
        assert_eq!(store.issued(&TokenId("old".into())).await.unwrap(), None);
        assert_eq!(store.children(&TokenId("parent".into()), 10).await.unwrap(), vec![alive]);
        let txn = store.db.begin_read().unwrap();
        let by_agent = txn.open_multimap_table(EVENTS_BY_AGENT).unwrap();
        assert_eq!(by_agent.get("a").unwrap().count(), 2, "its index entries went with it");
        let by_jti = txn.open_multimap_table(EVENTS_BY_JTI).unwrap();
        assert_eq!(by_jti.get("old").unwrap().count(), 0);
        assert!(txn.open_table(ISSUED_BY_JTI).unwrap().get("old").unwrap().is_none());
        let children = txn.open_multimap_table(ISSUED_BY_PARENT).unwrap();
        assert_eq!(children.get("parent").unwrap().count(), 1, "the live child's entry alone");
    }

    #[tokio::test]
    async fn audit_events_alone_bring_housekeeping() {
        // A broker whose clients spend no single-use ids still sweeps.
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_with_retention(dir.path(), Retention::days(1)).unwrap();
        store.record(event(UnixTime(1000))).await.unwrap();
        store.record(event(UnixTime(1000 + 2 * 86_400))).await.unwrap();
        assert_eq!(count(&store)[3], 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_keeps_up_past_one_pass() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open_with_retention(dir.path(), Retention::days(1)).unwrap());
        let old = EVENT_SWEEP_LIMIT * 2 + 10;
        let mut writes = tokio::task::JoinSet::new();
        for _ in 0..old {
            let store = store.clone();
            writes.spawn(async move { store.record(event(UnixTime(1000))).await.unwrap() });
        }
        while writes.join_next().await.is_some() {}
        // Each batch past the retention carries one bounded pass, and the
        // next batch another, until the old events are gone.
        let later = UnixTime(1000 + 2 * 86_400);
        for _ in 0..4 {
            store.record(event(later)).await.unwrap();
        }
        assert_eq!(count(&store)[3], 4);
    }

    #[tokio::test]
    async fn housekeeping_removes_what_expired_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        // The first use sweeps at once (nothing yet) and sets the next pass at 1060.
        store.use_once("old", UnixTime(1010), UnixTime(1000)).await.unwrap();
        store.use_once("live", UnixTime(5000), UnixTime(1000)).await.unwrap();
        store.revoke(&TokenId("gone".into()), UnixTime(1100)).await.unwrap();
        store.revoke(&TokenId("recent".into()), UnixTime(1900)).await.unwrap();
        let agent = Principal::Agent("x".into());
        let cutoff = Cutoff { at: UnixMicros::end_of(UnixTime(1000)), until: UnixTime(1100), block: Blocking::Keep };
        store.deprovision(&agent, &cutoff).await.unwrap();
        store.record(event(UnixTime(1000))).await.unwrap();
        assert_eq!(count(&store), [2, 2, 1, 1]);

        // Not due yet at 1059: nothing moves.
        store.use_once("other", UnixTime(5000), UnixTime(1059)).await.unwrap();
        assert_eq!(count(&store), [3, 2, 1, 1]);

        // At 2000: "old" ended, "gone" and the deprovisioning ended more than
        // KEEP_AFTER_EXPIRY ago, "recent" less than that.
        store.use_once("new", UnixTime(5000), UnixTime(2000)).await.unwrap();
        assert_eq!(count(&store), [3, 1, 0, 1]);
        assert_eq!(store.use_once("live", UnixTime(5000), UnixTime(2000)).await.unwrap(), Use::Replayed);
        let lineage = Lineage { jtis: vec![TokenId("recent".into())], principals: vec![] };
        assert_eq!(store.check(&lineage).await.unwrap(), Status::Revoked);
        assert_eq!(store.query(&AuditFilter::default()).await.unwrap().len(), 1);
    }

    /// An issuance is indexed by its jti and parent in the issuance indexes
    /// alone, and still found by a query by either, once and in time order
    /// among the other events; so is one of a file written when the general
    /// indexes held issuances too.
    #[tokio::test]
    async fn an_issuance_is_found_by_jti_and_parent_once_in_either_layout() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let token = |jti: &str| Some(TokenId(jti.into()));
        let issued = |time: i64, jti: &str| AuditEvent {
            decision: AuditDecision::Issued,
            action: "exchange".into(),
            jti: token(jti),
            parent_jti: token("parent"),
            expires_at: Some(UnixTime(2_000_000_000)),
            ..event(UnixTime(time))
        };
        let refused = |time: i64| AuditEvent {
            decision: AuditDecision::Refused,
            action: "exchange".into(),
            parent_jti: token("parent"),
            ..event(UnixTime(time))
        };
        let revoked = AuditEvent { jti: token("first"), ..event(UnixTime(1_001)) };
        for one in [refused(999), issued(1_000, "first"), revoked, refused(1_002), issued(1_003, "second")] {
            store.record(one).await.unwrap();
        }
        {
            let txn = store.db.begin_read().unwrap();
            assert_eq!(txn.open_multimap_table(EVENTS_BY_JTI).unwrap().get("first").unwrap().count(), 1);
            assert_eq!(txn.open_multimap_table(EVENTS_BY_PARENT).unwrap().get("parent").unwrap().count(), 2);
        }
        let found = |filter: AuditFilter| {
            let store = &store;
            async move {
                let found = store.query(&filter).await.unwrap();
                found.iter().map(|event| (event.time.0, event.decision)).collect::<Vec<_>>()
            }
        };
        let by_jti = AuditFilter { jti: token("first"), ..AuditFilter::default() };
        let by_parent = AuditFilter { parent_jti: token("parent"), ..AuditFilter::default() };
        let first_one = AuditFilter { limit: Some(1), ..by_parent.clone() };
        let window = AuditFilter { since: Some(UnixTime(1_000)), until: Some(UnixTime(1_002)), ..by_parent.clone() };
        let expected = [
            (by_jti, vec![(1_001, AuditDecision::Revoked), (1_000, AuditDecision::Issued)]),
            (
                by_parent,
                vec![
                    (1_003, AuditDecision::Issued),
                    (1_002, AuditDecision::Refused),
                    (1_000, AuditDecision::Issued),
                    (999, AuditDecision::Refused),
                ],
            ),
            (first_one, vec![(1_003, AuditDecision::Issued)]),
            (window, vec![(1_002, AuditDecision::Refused), (1_000, AuditDecision::Issued)]),
        ];
        for (filter, events) in &expected {
            assert_eq!(&found(filter.clone()).await, events, "{filter:?}");
        }

        // The layout of before: each issuance in the general indexes too.
        let keys: Vec<(&str, EventKey)> = {
            let txn = store.db.begin_read().unwrap();
            let issued = txn.open_table(ISSUED_BY_JTI).unwrap();
            ["first", "second"].map(|jti| (jti, issued.get(jti).unwrap().unwrap().value())).to_vec()
        };
        let txn = store.db.begin_write().unwrap();
        for (jti, key) in keys {
            txn.open_multimap_table(EVENTS_BY_JTI).unwrap().insert(jti, key).unwrap();
            txn.open_multimap_table(EVENTS_BY_PARENT).unwrap().insert("parent", key).unwrap();
        }
        txn.commit().unwrap();
        for (filter, events) in &expected {
            assert_eq!(&found(filter.clone()).await, events, "old layout: {filter:?}");
        }
    }
}
