//! The contract every state store passes: the in-memory one, the embedded
//! one and Redis run the same cases.

use std::future::Future;
use std::sync::Arc;

use baton::claims::ScopeSet;
use baton::claims::TokenId;
use baton::clock::{Clock, SystemClock, UnixMicros, UnixTime};
use baton::store::{
    Approval, ApprovalId, ApprovalState, AuditDecision, AuditEvent, AuditFilter, Blocking, Cutoff, Decision,
    Fingerprint, Lineage, Named, Principal, Retention, StateStore, Status, Use,
};

fn jti(text: &str) -> TokenId {
    TokenId(text.to_owned())
}

fn lineage(jtis: &[&str], issued_at: UnixTime, agents: &[&str], subject: &str) -> Lineage {
    lineage_at(jtis, UnixMicros::start_of(issued_at), agents, subject)
}

fn lineage_at(jtis: &[&str], since: UnixMicros, agents: &[&str], subject: &str) -> Lineage {
    let mut principals = vec![Principal::Subject(subject.to_owned())];
    principals.extend(agents.iter().map(|agent| Principal::Agent((*agent).to_owned())));
    Lineage::at(jtis.iter().map(|text| jti(text)).collect(), since, principals)
}

/// A deprovisioning in whole seconds, as older brokers wrote them: it kills
/// every token of its second.
fn cutoff(at: UnixTime, until: UnixTime) -> Cutoff {
    Cutoff { at: UnixMicros::end_of(at), until, block: Blocking::Keep }
}

fn event(time: UnixTime, agent: &str, subject: &str, id: Option<&str>, parent: Option<&str>) -> AuditEvent {
    AuditEvent {
        time,
        decision: if id.is_some() { AuditDecision::Issued } else { AuditDecision::Refused },
        reason: None,
        action: "client_credentials".into(),
        subject: Some(subject.into()),
        agent: Some(agent.into()),
        chain: vec![],
        target: Some("t".into()),
        scopes_asked: None,
        scopes_granted: None,
        jti: id.map(jti),
        parent_jti: parent.map(jti),
        expires_at: Some(time.plus(600)),
        iat_micros: None,
        rules: vec![],
        claimed_client: None,
        client_address: None,
        approval: None,
    }
}

fn approval(id: &str, now: UnixTime, ttl: i64) -> Approval {
    Approval {
        id: ApprovalId(id.to_owned()),
        request: Fingerprint {
            subject: "orchestrator".into(),
            agent: "booker".into(),
            parent_jti: Some(jti("parent")),
            target: "https://api.airline.example".into(),
            scope: ScopeSet::parse("flights.book").unwrap(),
        },
        grant_type: "urn:ietf:params:oauth:grant-type:token-exchange".into(),
        scopes_needing_approval: ScopeSet::parse("flights.book").unwrap(),
        marked_by: vec!["resources.toml: https://api.airline.example".into()],
        approver: "travel-team@example.com".into(),
        created_at: now,
        expires_at: now.plus(ttl),
        state: ApprovalState::Pending,
        decision: None,
    }
}

/// Approvals: kept, listed while pending, moved on only from the state the
/// caller saw, and used once however many nodes race for it.
async fn approvals(store: &Arc<dyn StateStore>, tag: &str, now: UnixTime) -> Approval {
    let id = |text: &str| format!("{tag}-approval-{text}");
    assert_eq!(store.approval(&ApprovalId(id("none"))).await.unwrap(), None);
    let asked = approval(&id("a"), now, 600);
    store.create(&asked).await.unwrap();
    store.create(&approval(&id("short"), now, 1)).await.unwrap();
    assert_eq!(store.approval(&asked.id).await.unwrap(), Some(asked.clone()));
    let pending: Vec<ApprovalId> = store.pending(now).await.unwrap().into_iter().map(|a| a.id).collect();
    assert!(pending.contains(&asked.id) && pending.contains(&ApprovalId(id("short"))), "{pending:?}");
    let later: Vec<ApprovalId> = store.pending(now.plus(1)).await.unwrap().into_iter().map(|a| a.id).collect();
    assert!(later.contains(&asked.id) && !later.contains(&ApprovalId(id("short"))), "expired ones are not listed");

    // Decided once: a second decision from `pending` finds it moved on.
    let approved = Approval {
        state: ApprovalState::Approved,
        decision: Some(Decision { approver: "travel-team@example.com".into(), at: now }),
        ..asked.clone()
    };
    let denied = Approval { state: ApprovalState::Denied, ..approved.clone() };
    assert!(store.transition(ApprovalState::Pending, &approved).await.unwrap());
    assert!(!store.transition(ApprovalState::Pending, &denied).await.unwrap());
    assert_eq!(store.approval(&asked.id).await.unwrap(), Some(approved.clone()));
    let listed: Vec<ApprovalId> = store.pending(now).await.unwrap().into_iter().map(|a| a.id).collect();
    assert!(!listed.contains(&asked.id), "decided approvals are not pending");
    assert!(!store.transition(ApprovalState::Pending, &approval(&id("missing"), now, 600)).await.unwrap());

    // Used once, whoever races.
    let consumed = Approval { state: ApprovalState::Consumed, ..approved.clone() };
    let racers: Vec<_> = (0..16)
        .map(|_| {
            let (store, consumed) = (store.clone(), consumed.clone());
            tokio::spawn(async move { store.transition(ApprovalState::Approved, &consumed).await.unwrap() })
        })
        .collect();
    let mut winners = 0;
    for racer in racers {
        if racer.await.unwrap() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1, "exactly one use of an approval wins");
    assert_eq!(store.approval(&asked.id).await.unwrap().unwrap().state, ApprovalState::Consumed);

    // A fresh pending one, to find again after a reopen.
    let kept = approval(&id("kept"), now, 600);
    store.create(&kept).await.unwrap();
    kept
}

/// Runs every case against the stores `open` makes. `open` is called again
/// (after the previous store is dropped) to check that acknowledged writes
/// survive a reopen. `tag` keeps ids of separate runs on one server apart.
pub async fn run<F, Fut>(open: F, tag: &str)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn StateStore>>,
{
    let now = SystemClock.now();
    let id = |text: &str| format!("{tag}-{text}");
    let store = open().await;
    store.ping().await.unwrap();

    // Replay: once, atomically, until the entry's end.
    assert_eq!(store.use_once(&id("a"), now.plus(60), now).await.unwrap(), Use::First);
    assert_eq!(store.use_once(&id("a"), now.plus(60), now).await.unwrap(), Use::Replayed);
    assert_eq!(store.use_once(&id("b"), now.plus(60), now).await.unwrap(), Use::First);
    let racers: Vec<_> = (0..32)
        .map(|_| {
            let store = store.clone();
            let key = id("race");
            tokio::spawn(async move { store.use_once(&key, now.plus(60), now).await.unwrap() })
        })
        .collect();
    let mut firsts = 0;
    for racer in racers {
        if racer.await.unwrap() == Use::First {
            firsts += 1;
        }
    }
    assert_eq!(firsts, 1, "exactly one of concurrent uses is first");

    // Revocation cascades through the lineage.
    let (root, middle, leaf) = (id("root"), id("middle"), id("leaf"));
    let leaf_lineage = lineage(&[&leaf, &middle, &root], now, &["a1", "a2"], "s1");
    let root_lineage = lineage(&[&root], now, &["a1"], "s1");
    assert_eq!(store.check(&leaf_lineage).await.unwrap(), Status::Active);
    store.revoke(&jti(&middle), now.plus(600)).await.unwrap();
    assert_eq!(store.check(&leaf_lineage).await.unwrap(), Status::Revoked);
    assert_eq!(store.check(&lineage(&[&middle], now, &["a1"], "s1")).await.unwrap(), Status::Revoked);
    assert_eq!(store.check(&root_lineage).await.unwrap(), Status::Active);

    // Deprovisioning kills what was issued at or before it, not after.
    let agent = id("agent");
    let subject = id("subject");
    let before = lineage(&[&id("t1")], now.plus(-10), &[&agent], "someone");
    let after = lineage(&[&id("t2")], now.plus(10), &[&agent], "someone");
    store.deprovision(&Principal::Agent(agent.clone()), &cutoff(now, now.plus(3600))).await.unwrap();
    assert_eq!(store.check(&before).await.unwrap(), Status::Deprovisioned);
    assert_eq!(store.check(&after).await.unwrap(), Status::Active);
    store.deprovision(&Principal::Agent(agent.clone()), &cutoff(now.plus(-100), now.plus(3600))).await.unwrap();
    assert_eq!(store.check(&before).await.unwrap(), Status::Deprovisioned, "never moves back");
    store.deprovision(&Principal::Subject(subject.clone()), &cutoff(now, now.plus(3600))).await.unwrap();
    assert_eq!(
        store.check(&lineage(&[&id("t3")], now.plus(-1), &["other"], &subject)).await.unwrap(),
        Status::Deprovisioned
    );
    assert_eq!(store.check(&lineage(&[&id("t4")], now.plus(-1), &["other"], "nobody")).await.unwrap(), Status::Active);

    // A block kills whatever names the principal, whenever issued, until lifted.
    let blocked = id("blocked");
    let later = lineage(&[&id("t5")], now.plus(100), &[&blocked], "someone");
    store.block(&Principal::Agent(blocked.clone()), true).await.unwrap();
    assert_eq!(store.check(&later).await.unwrap(), Status::Deprovisioned);
    store.block(&Principal::Agent(blocked.clone()), false).await.unwrap();
    assert_eq!(store.check(&later).await.unwrap(), Status::Active);
    store.block(&Principal::Subject(blocked.clone()), true).await.unwrap();

    exact_cutoffs(&store, tag, now).await;
    revocation_is_told_once(&store, tag, now).await;
    issuances_by_index(&store, tag, now).await;

    // Audit: newest first, every filter.
    let (agent_a, agent_b) = (id("agent-a"), id("agent-b"));
    store.record(event(now.plus(-30), &agent_a, "s", Some(&id("e1")), None)).await.unwrap();
    store.record(event(now.plus(-20), &agent_b, "s", Some(&id("e2")), Some(&id("e1")))).await.unwrap();
    store.record(event(now.plus(-10), &agent_a, "s2", None, Some(&id("e2")))).await.unwrap();
    let of_a = store.query(&AuditFilter { agent: Some(agent_a.clone()), ..AuditFilter::default() }).await.unwrap();
    assert_eq!(of_a.len(), 2);
    assert!(of_a[0].time > of_a[1].time, "newest first");
    let by_jti = store.query(&AuditFilter { jti: Some(jti(&id("e2"))), ..AuditFilter::default() }).await.unwrap();
    assert_eq!(by_jti.len(), 1);
    assert_eq!(by_jti[0].agent.as_deref(), Some(agent_b.as_str()));
    let children =
        store.query(&AuditFilter { parent_jti: Some(jti(&id("e1"))), ..AuditFilter::default() }).await.unwrap();
    assert_eq!(children.len(), 1);
    let windowed = store
        .query(&AuditFilter {
            agent: Some(agent_a.clone()),
            since: Some(now.plus(-15)),
            until: Some(now),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(windowed.len(), 1);
    assert_eq!(windowed[0].subject.as_deref(), Some("s2"));
    let limited = store
        .query(&AuditFilter { agent: Some(agent_a.clone()), limit: Some(1), ..AuditFilter::default() })
        .await
        .unwrap();
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0].time, now.plus(-10));
    // A count ignores the limit and honours decision and action.
    let issued_of_a = AuditFilter {
        agent: Some(agent_a.clone()),
        decision: Some(AuditDecision::Issued),
        limit: Some(1),
        ..AuditFilter::default()
    };
    assert_eq!(store.count(&issued_of_a).await.unwrap(), 1);
    let all_of_a = AuditFilter { agent: Some(agent_a.clone()), limit: Some(1), ..AuditFilter::default() };
    assert_eq!(store.count(&all_of_a).await.unwrap(), 2);
    let other_action = AuditFilter { action: Some("deprovision".into()), ..all_of_a.clone() };
    assert_eq!(store.count(&other_action).await.unwrap(), 0);

    let kept = approvals(&store, tag, now).await;

    // What was acknowledged survives a reopen.
    drop(store);
    let reopened = open().await;
    assert_eq!(reopened.approval(&kept.id).await.unwrap(), Some(kept.clone()), "an approval survives a reopen");
    assert_eq!(
        reopened.approval(&ApprovalId(format!("{tag}-approval-a"))).await.unwrap().map(|a| a.state),
        Some(ApprovalState::Consumed)
    );
    assert_eq!(reopened.use_once(&id("a"), now.plus(60), now).await.unwrap(), Use::Replayed);
    assert_eq!(reopened.check(&leaf_lineage).await.unwrap(), Status::Revoked);
    assert_eq!(reopened.check(&before).await.unwrap(), Status::Deprovisioned);
    let blocked_subject = lineage(&[&id("t6")], now.plus(100), &[], &blocked);
    assert_eq!(reopened.check(&blocked_subject).await.unwrap(), Status::Deprovisioned, "a block survives a reopen");
    let kept = reopened.query(&AuditFilter { agent: Some(agent_a), ..AuditFilter::default() }).await.unwrap();
    assert_eq!(kept.len(), 2);

    // An id is forgotten once its end has passed.
    assert_eq!(reopened.use_once(&id("short"), now.plus(1), now).await.unwrap(), Use::First);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let later = SystemClock.now();
    assert_eq!(reopened.use_once(&id("short"), later.plus(60), later).await.unwrap(), Use::First);
}

/// A cut-off is exact within a second and lands with its block; a principal
/// counts from when the lineage first named it.
async fn exact_cutoffs(store: &Arc<dyn StateStore>, tag: &str, now: UnixTime) {
    let agent = format!("{tag}-exact-agent");
    let principal = Principal::Agent(agent.clone());
    let at = UnixMicros(UnixMicros::start_of(now).0 + 500_000);
    let before = lineage_at(&[&format!("{tag}-x1")], UnixMicros(at.0 - 1), &[&agent], "someone");
    let same = lineage_at(&[&format!("{tag}-x2")], at, &[&agent], "someone");
    let after = lineage_at(&[&format!("{tag}-x3")], UnixMicros(at.0 + 1), &[&agent], "someone");
    assert_eq!(store.check(&after).await.unwrap(), Status::Active);
    store.deprovision(&principal, &Cutoff { at, until: now.plus(3600), block: Blocking::Block }).await.unwrap();
    // Blocked with the cut-off: even a token issued after it is dead now.
    assert_eq!(store.check(&after).await.unwrap(), Status::Deprovisioned, "the block came with the cut-off");
    store.block(&principal, false).await.unwrap();
    assert_eq!(store.check(&after).await.unwrap(), Status::Active, "one microsecond after the cut-off lives");
    assert_eq!(store.check(&same).await.unwrap(), Status::Deprovisioned, "at the cut-off is dead");
    assert_eq!(store.check(&before).await.unwrap(), Status::Deprovisioned, "before it stays dead");
    // A child issued after the cut-off, from a parent that named the agent
    // before it: the agent counts from the parent, so the child is dead.
    let child = Lineage {
        jtis: vec![jti(&format!("{tag}-x4")), jti(&format!("{tag}-x1"))],
        principals: vec![
            Named { principal: Principal::Subject("someone".into()), since: UnixMicros(at.0 - 1) },
            Named { principal: principal.clone(), since: UnixMicros(at.0 - 1) },
            Named { principal: Principal::Agent(format!("{tag}-next")), since: UnixMicros(at.0 + 9) },
        ],
    };
    assert_eq!(store.check(&child).await.unwrap(), Status::Deprovisioned, "a child follows its ancestors");
    // Without a block the cut-off alone: nothing after it is dead.
    let quiet = Principal::Agent(format!("{tag}-quiet"));
    store.deprovision(&quiet, &Cutoff { at, until: now.plus(3600), block: Blocking::Keep }).await.unwrap();
    let later = lineage_at(&[&format!("{tag}-x5")], UnixMicros(at.0 + 1), &[&format!("{tag}-quiet")], "someone");
    assert_eq!(store.check(&later).await.unwrap(), Status::Active);
    // Lifting a block that is not there changes nothing, the cut-off included.
    let lift = |instant: i64| Cutoff { at: UnixMicros(at.0 + instant), until: now.plus(3600), block: Blocking::Lift };
    store.deprovision(&quiet, &lift(30)).await.unwrap();
    assert_eq!(store.check(&later).await.unwrap(), Status::Active, "not blocked: nothing to reinstate");

    // A reinstatement lifts the block and moves the cut-off to its own
    // instant, in one write: a token that slipped past the block check as
    // the deprovisioning landed (named after its cut-off) stays dead.
    let again = format!("{tag}-again");
    store
        .deprovision(&Principal::Agent(again.clone()), &Cutoff { at, until: now.plus(3600), block: Blocking::Block })
        .await
        .unwrap();
    let slipped = lineage_at(&[&format!("{tag}-x6")], UnixMicros(at.0 + 5), &[&again], "someone");
    let reissued = lineage_at(&[&format!("{tag}-x7")], UnixMicros(at.0 + 11), &[&again], "someone");
    assert_eq!(store.check(&reissued).await.unwrap(), Status::Deprovisioned, "blocked");
    store.deprovision(&Principal::Agent(again.clone()), &lift(10)).await.unwrap();
    assert_eq!(store.check(&slipped).await.unwrap(), Status::Deprovisioned, "issued while blocked: dead");
    assert_eq!(store.check(&reissued).await.unwrap(), Status::Active, "issued after the reinstatement");
}

/// A revocation tells whether it is the first, so that a repeated one is
/// not recorded again.
async fn revocation_is_told_once(store: &Arc<dyn StateStore>, tag: &str, now: UnixTime) {
    let once = jti(&format!("{tag}-once"));
    assert!(store.revoke(&once, now.plus(600)).await.unwrap(), "the first revocation");
    assert!(!store.revoke(&once, now.plus(900)).await.unwrap(), "a repeated one");
    assert!(!store.revoke(&once, now.plus(60)).await.unwrap());
    assert_eq!(store.check(&lineage(&[&format!("{tag}-once")], now, &[], "s")).await.unwrap(), Status::Revoked);
}

/// Issuances and children are found through indexes of issuances, whatever
/// number of refusals and revocations name the same token.
async fn issuances_by_index(store: &Arc<dyn StateStore>, tag: &str, now: UnixTime) {
    let id = |text: &str| format!("{tag}-{text}");
    let agent = id("tracer");
    let parent = id("traced");
    store.record(event(now.plus(-5), &agent, "s", Some(&parent), None)).await.unwrap();
    store.record(event(now.plus(-4), &agent, "s", Some(&id("child-1")), Some(&parent))).await.unwrap();
    // 1,100 refused exchanges of the parent and 1,001 revocation events of
    // it: more than one query's limit each.
    let refusal = event(now.plus(-3), &agent, "s", None, Some(&parent));
    let mut revocation = event(now.plus(-3), &agent, "s", Some(&parent), None);
    revocation.decision = AuditDecision::Revoked;
    let noise: Vec<AuditEvent> =
        std::iter::repeat_n(refusal, 1_100).chain(std::iter::repeat_n(revocation, 1_001)).collect();
    // Written concurrently, so that an embedded store shares its commits.
    for batch in noise.chunks(128) {
        let mut writes = tokio::task::JoinSet::new();
        for event in batch.iter().cloned() {
            let store = store.clone();
            writes.spawn(async move { store.record(event).await });
        }
        while let Some(written) = writes.join_next().await {
            written.unwrap().unwrap();
        }
    }
    store.record(event(now.plus(-2), &agent, "s", Some(&id("child-2")), Some(&parent))).await.unwrap();

    let issued = store.issued(&jti(&parent)).await.unwrap().expect("the issuance is found");
    assert_eq!((issued.decision, issued.jti), (AuditDecision::Issued, Some(jti(&parent))));
    let children = store.children(&jti(&parent), 10).await.unwrap();
    let ids: Vec<_> = children.iter().map(|child| child.jti.clone().unwrap()).collect();
    assert_eq!(ids, [jti(&id("child-1")), jti(&id("child-2"))], "oldest first, issuances only");
    assert!(children.iter().all(|child| child.decision == AuditDecision::Issued));
    let first = store.children(&jti(&parent), 1).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].jti, Some(jti(&id("child-1"))));
    assert_eq!(store.issued(&jti(&id("never"))).await.unwrap(), None);
    assert!(store.children(&jti(&id("child-2")), 10).await.unwrap().is_empty());
    // What a plain query by jti would have shown: the newest 1000 events
    // naming the token, none of them its issuance.
    let by_jti = store.query(&AuditFilter { jti: Some(jti(&parent)), ..AuditFilter::default() }).await.unwrap();
    assert!(by_jti.iter().all(|event| event.decision == AuditDecision::Revoked));
}

/// Retention: a store opened (by `open`) keeping events one second drops
/// what is older, except the issuance of a token still alive. `settle` lets
/// a store that trims on its own clock (Redis) see the events age.
pub async fn retention<F, Fut, S>(open: F, settle: S, tag: &str)
where
    F: Fn(Retention) -> Fut,
    Fut: Future<Output = Arc<dyn StateStore>>,
    S: Future<Output = ()>,
{
    let store = open(Retention::seconds(1)).await;
    let now = SystemClock.now();
    let id = |text: &str| format!("{tag}-{text}");
    let agent = id("retained");
    let old = now.plus(-10);
    store.record(event(old, &agent, "junk", None, None)).await.unwrap();
    let mut dead = event(old, &agent, "s", Some(&id("expired")), None);
    dead.expires_at = Some(now.plus(-5));
    store.record(dead).await.unwrap();
    let mut alive = event(old, &agent, "s", Some(&id("alive")), None);
    alive.expires_at = Some(now.plus(600));
    store.record(alive.clone()).await.unwrap();
    settle.await;
    // What makes each store look: an embedded store's housekeeping follows
    // its callers' clock (moved past its next pass here), the others trim as
    // events come.
    let now = SystemClock.now().plus(120);
    store.use_once(&id("tick"), now.plus(60), now).await.unwrap();
    store.record(event(now, &agent, "fresh", None, None)).await.unwrap();

    let kept = store.query(&AuditFilter { agent: Some(agent.clone()), ..AuditFilter::default() }).await.unwrap();
    assert!(kept.iter().any(|event| event.subject.as_deref() == Some("fresh")), "{kept:?}");
    assert!(!kept.iter().any(|event| event.subject.as_deref() == Some("junk")), "old junk is dropped: {kept:?}");
    assert!(!kept.iter().any(|event| event.jti == Some(jti(&id("expired")))), "{kept:?}");
    assert_eq!(store.issued(&jti(&id("alive"))).await.unwrap(), Some(alive), "a live token's issuance is kept");
    assert_eq!(store.issued(&jti(&id("expired"))).await.unwrap(), None);
}

#[tokio::test]
async fn memory_store_keeps_the_audit_retention() {
    retention(
        |retention| async move {
            Arc::new(baton::store::memory::MemoryStore::with_retention(retention)) as Arc<dyn StateStore>
        },
        async {},
        "memory",
    )
    .await;
}

#[tokio::test]
async fn memory_store_keeps_the_contract_within_one_life() {
    // The in-memory store cannot survive a reopen: it shares one instance.
    let store: Arc<dyn StateStore> = Arc::new(baton::store::memory::MemoryStore::new());
    let shared = store.clone();
    run(
        move || {
            let store = shared.clone();
            async move { store }
        },
        "memory",
    )
    .await;
}
