//! The contract every state store passes: the in-memory one, the embedded
//! one and Redis run the same cases.

use std::future::Future;
use std::sync::Arc;

use baton::claims::ScopeSet;
use baton::claims::TokenId;
use baton::clock::{Clock, SystemClock, UnixMicros, UnixTime};
use baton::store::approvals::{ApprovalQuery, Creation, DEFAULT_PAGE, MAX_PAGE};
use baton::store::{
    Approval, ApprovalId, ApprovalState, AuditDecision, AuditEvent, AuditFilter, Blocking, Cutoff, Decision,
    Fingerprint, Lineage, Named, Principal, Retention, SessionKey, SessionRecord, StateStore, Status, Use,
};

fn jti(text: &str) -> TokenId {
    TokenId(text.to_owned())
}

fn lineage(jtis: &[&str], issued_at: UnixTime, agents: &[&str], subject: &str) -> Lineage {
    lineage_at(jtis, UnixMicros::start_of(issued_at), agents, subject)
}

fn lineage_at(jtis: &[&str], since: UnixMicros, agents: &[&str], subject: &str) -> Lineage {
    let mut principals = vec![Principal::Subject(subject.into())];
    principals.extend(agents.iter().map(|agent| Principal::Agent((*agent).into())));
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
        dpop_jkt: None,
        rules: vec![],
        claimed_client: None,
        client_address: None,
        by: None,
        approval: None,
        refusals: Vec::new(),
    }
}

fn approval(id: &str, now: UnixTime, ttl: i64) -> Approval {
    Approval {
        id: ApprovalId(id.to_owned()),
        request: Fingerprint {
            subject: "orchestrator".into(),
            agent: "booker".into(),
            // A parent per approval: each is its own request, not a repeat.
            parent_jti: Some(jti(&format!("parent-of-{id}"))),
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
    store.create(&asked, 20).await.unwrap();
    store.create(&approval(&id("short"), now, 1), 20).await.unwrap();
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
    store.create(&kept, 20).await.unwrap();
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

    // The agents' lifecycle: removals answered until forgotten, retirements
    // recorded, and each claimed by one of concurrent callers.
    let (a, b) = (id("agent-a"), id("agent-b"));
    let known = |ids: &[&String]| ids.iter().map(|id| (*id).clone()).collect::<std::collections::BTreeSet<String>>();
    store.known_agents_missing(&known(&[&a, &b])).await.unwrap();
    assert_eq!(store.known_agents_missing(&known(&[&a])).await.unwrap(), std::slice::from_ref(&b));
    assert_eq!(store.known_agents_missing(&known(&[&a])).await.unwrap(), std::slice::from_ref(&b), "until forgotten");
    store.forget_known(&b).await.unwrap();
    assert!(store.known_agents_missing(&known(&[&a])).await.unwrap().is_empty());
    let claims: Vec<_> = (0..16)
        .map(|_| {
            let (store, work) = (store.clone(), format!("retire:{a}"));
            tokio::spawn(async move { store.claim(&work).await.unwrap() })
        })
        .collect();
    let mut won = 0;
    for claim in claims {
        won += usize::from(claim.await.unwrap());
    }
    assert_eq!(won, 1, "exactly one of concurrent claims holds");
    assert!(!store.is_retired(&a, "2020-01-01").await.unwrap());
    store.mark_retired(&a, "2020-01-01").await.unwrap();
    assert!(store.is_retired(&a, "2020-01-01").await.unwrap());
    assert!(!store.is_retired(&a, "2021-01-01").await.unwrap(), "a moved expiry is a new retirement");

    // Console sessions: kept under their key until they end; closed at once.
    let key = SessionKey::of(&id("session"));
    let session = SessionRecord {
        csrf: id("csrf"),
        who: "admin token".into(),
        admitted_by: "admin:0".into(),
        expires_at: now.plus(60),
    };
    assert_eq!(store.session(&key, now).await.unwrap(), None);
    store.open_session(&key, &session, now).await.unwrap();
    assert_eq!(store.session(&key, now).await.unwrap(), Some(session.clone()));
    assert_eq!(store.session(&key, now.plus(60)).await.unwrap(), None, "ended at its time");
    assert_eq!(store.session(&SessionKey::of(&id("other")), now).await.unwrap(), None);
    store.close_session(&key).await.unwrap();
    assert_eq!(store.session(&key, now).await.unwrap(), None);

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
    store.deprovision(&Principal::Agent(agent.clone().into()), &cutoff(now, now.plus(3600))).await.unwrap();
    assert_eq!(store.check(&before).await.unwrap(), Status::Deprovisioned);
    assert_eq!(store.check(&after).await.unwrap(), Status::Active);
    store.deprovision(&Principal::Agent(agent.clone().into()), &cutoff(now.plus(-100), now.plus(3600))).await.unwrap();
    assert_eq!(store.check(&before).await.unwrap(), Status::Deprovisioned, "never moves back");
    store.deprovision(&Principal::Subject(subject.clone().into()), &cutoff(now, now.plus(3600))).await.unwrap();
    assert_eq!(
        store.check(&lineage(&[&id("t3")], now.plus(-1), &["other"], &subject)).await.unwrap(),
        Status::Deprovisioned
    );
    assert_eq!(store.check(&lineage(&[&id("t4")], now.plus(-1), &["other"], "nobody")).await.unwrap(), Status::Active);

    // A block kills whatever names the principal, whenever issued, until lifted.
    let blocked = id("blocked");
    let later = lineage(&[&id("t5")], now.plus(100), &[&blocked], "someone");
    store.block(&Principal::Agent(blocked.clone().into()), true).await.unwrap();
    assert_eq!(store.check(&later).await.unwrap(), Status::Deprovisioned);
    store.block(&Principal::Agent(blocked.clone().into()), false).await.unwrap();
    assert_eq!(store.check(&later).await.unwrap(), Status::Active);
    store.block(&Principal::Subject(blocked.clone().into()), true).await.unwrap();

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
    let principal = Principal::Agent(agent.clone().into());
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
            Named { principal: Principal::Agent(format!("{tag}-next").into()), since: UnixMicros(at.0 + 9) },
        ],
    };
    assert_eq!(store.check(&child).await.unwrap(), Status::Deprovisioned, "a child follows its ancestors");
    // Without a block the cut-off alone: nothing after it is dead.
    let quiet = Principal::Agent(format!("{tag}-quiet").into());
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
        .deprovision(
            &Principal::Agent(again.clone().into()),
            &Cutoff { at, until: now.plus(3600), block: Blocking::Block },
        )
        .await
        .unwrap();
    let slipped = lineage_at(&[&format!("{tag}-x6")], UnixMicros(at.0 + 5), &[&again], "someone");
    let reissued = lineage_at(&[&format!("{tag}-x7")], UnixMicros(at.0 + 11), &[&again], "someone");
    assert_eq!(store.check(&reissued).await.unwrap(), Status::Deprovisioned, "blocked");
    store.deprovision(&Principal::Agent(again.clone().into()), &lift(10)).await.unwrap();
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
    let old = now.plus(-1000);
    store.record(event(old, &agent, "junk", None, None)).await.unwrap();
    let mut dead = event(old, &agent, "s", Some(&id("expired")), None);
    // Expired longer ago than any store's margin past a token's end.
    dead.expires_at = Some(now.plus(-500));
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

// ---- Approval indexes: de-duplication, the per-agent cap, paged listing and
// the pending count, the same on every store.

/// A pending approval of `agent` for its own request number `request`,
/// created at `created_at` for `ttl` seconds.
fn asked(id: &str, agent: &str, request: usize, created_at: UnixTime, ttl: i64) -> Approval {
    let mut asked = approval(id, created_at, ttl);
    asked.request.agent = agent.to_owned();
    asked.request.parent_jti = Some(jti(&format!("{agent}-parent-{request}")));
    asked
}

/// Every page of `query`, following `next`, checking each page's bound.
async fn every_page(store: &Arc<dyn StateStore>, query: ApprovalQuery) -> Vec<Approval> {
    let mut listed: Vec<Approval> = Vec::new();
    let mut query = query;
    for _ in 0..100 {
        let page = store.list(&query).await.unwrap();
        assert!(page.approvals.len() <= query.limit, "a page holds at most its limit");
        listed.extend(page.approvals);
        match page.next {
            Some(next) => query.before = Some(next),
            None => return listed,
        }
    }
    panic!("the listing did not end");
}

/// With 1,100 approvals pending (past the old listing's 1,000), a repeat of
/// any request is resolved through the index to its approval; the listing
/// reads newest first, a bounded page at a time, by state and by agent; the
/// count follows every creation, decision and expiry.
pub async fn approval_indexes(store: Arc<dyn StateStore>, now: UnixTime) {
    const MANY: usize = 1_100;
    const CAP: usize = 20;
    // 110 agents with 10 each, one second apart in groups of 100.
    let agent_of = |index: usize| format!("agent-{}", index % 110);
    let creations = (0..MANY).map(|index| {
        let store = store.clone();
        let approval = asked(&format!("many-{index:04}"), &agent_of(index), index, now.plus((index / 100) as i64), 600);
        async move { store.create(&approval, CAP).await.unwrap() }
    });
    // A few at a time: the embedded store serialises its writes anyway.
    let created: Vec<Creation> = futures_util::StreamExt::collect(futures_util::StreamExt::buffer_unordered(
        futures_util::stream::iter(creations),
        8,
    ))
    .await;
    assert!(created.iter().all(|creation| *creation == Creation::Created), "distinct requests are created");
    let later = now.plus(20);
    assert_eq!(store.count_pending(later).await.unwrap(), MANY as u64);

    // A repeat (a new id, the same request) gets the waiting approval, first and last alike.
    for index in [0, 550, MANY - 1] {
        let repeat = asked("repeat", &agent_of(index), index, later, 600);
        match store.create(&repeat, CAP).await.unwrap() {
            Creation::Waiting(waiting) => assert_eq!(waiting.id.0, format!("many-{index:04}")),
            other => panic!("a repeat of request {index} was {other:?}"),
        }
    }
    assert_eq!(store.approval(&ApprovalId("repeat".into())).await.unwrap(), None, "nothing recorded for a repeat");
    assert_eq!(store.count_pending(later).await.unwrap(), MANY as u64);

    // Newest first, in bounded pages, every one listed once.
    let first = store.list(&ApprovalQuery::pending(later)).await.unwrap();
    assert_eq!(first.approvals.len(), DEFAULT_PAGE);
    assert_eq!(first.approvals[0].id.0, "many-1099", "the newest comes first");
    let all = every_page(&store, ApprovalQuery { limit: MAX_PAGE, ..ApprovalQuery::pending(later) }).await;
    assert_eq!(all.len(), MANY);
    assert!(all.windows(2).all(|pair| (pair[0].created_at, &pair[0].id) > (pair[1].created_at, &pair[1].id)));
    // By agent: only its own, newest first.
    let of_agent = ApprovalQuery { agent: Some(agent_of(7)), limit: 3, ..ApprovalQuery::pending(later) };
    let mine = every_page(&store, of_agent).await;
    assert_eq!(mine.len(), 10);
    assert!(mine.iter().all(|approval| approval.request.agent == agent_of(7)));
    assert_eq!(mine[0].id.0, "many-0997");

    // Decided: out of the pending listing and count, into its state's.
    let decided = store.approval(&ApprovalId("many-0007".into())).await.unwrap().unwrap();
    let denied = Approval {
        state: ApprovalState::Denied,
        decision: Some(Decision { approver: "someone".into(), at: later }),
        ..decided.clone()
    };
    assert!(store.transition(ApprovalState::Pending, &denied).await.unwrap());
    assert_eq!(store.count_pending(later).await.unwrap(), MANY as u64 - 1);
    let pending_of_agent = ApprovalQuery { agent: Some(agent_of(7)), ..ApprovalQuery::pending(later) };
    assert_eq!(store.list(&pending_of_agent).await.unwrap().approvals.len(), 9);
    let denied_listing = ApprovalQuery { state: ApprovalState::Denied, ..ApprovalQuery::pending(later) };
    assert_eq!(store.list(&denied_listing).await.unwrap().approvals, vec![denied.clone()]);
    // The same request asked again after its decision is a new approval.
    let again = asked("many-0007-again", &agent_of(7), 7, later, 600);
    assert_eq!(store.create(&again, CAP).await.unwrap(), Creation::Created);
    assert_eq!(store.count_pending(later).await.unwrap(), MANY as u64);

    // Expired: out of the count and the pending listing (the first group
    // expires at now + 600, the last at now + 610).
    let expired_first = now.plus(600);
    assert_eq!(store.count_pending(expired_first).await.unwrap(), MANY as u64 - 100 + 1);
    let after_all = now.plus(611);
    assert_eq!(store.count_pending(after_all).await.unwrap(), 1, "only the one asked again at +20");
    let left = store.list(&ApprovalQuery::pending(after_all)).await.unwrap();
    assert_eq!(left.approvals.iter().map(|a| a.id.0.as_str()).collect::<Vec<_>>(), ["many-0007-again"]);
    // An expired request asked again is a new approval too.
    let renewed = asked("many-0000-renewed", &agent_of(0), 0, after_all, 600);
    assert_eq!(store.create(&renewed, CAP).await.unwrap(), Creation::Created);
}

/// The cap counts an agent's pending approvals only: past it a new request
/// is refused, a repeat still waits, other agents are served, and a decision
/// or an expiry makes room.
pub async fn approval_cap(store: Arc<dyn StateStore>, now: UnixTime) {
    const CAP: usize = 3;
    for request in 0..CAP {
        let approval = asked(&format!("capped-{request}"), "capped", request, now, 600);
        assert_eq!(store.create(&approval, CAP).await.unwrap(), Creation::Created);
    }
    let one_more = asked("capped-3", "capped", 3, now, 600);
    assert_eq!(store.create(&one_more, CAP).await.unwrap(), Creation::Full);
    assert_eq!(store.approval(&one_more.id).await.unwrap(), None, "nothing recorded past the cap");
    match store.create(&asked("capped-repeat", "capped", 1, now, 600), CAP).await.unwrap() {
        Creation::Waiting(waiting) => assert_eq!(waiting.id.0, "capped-1"),
        other => panic!("a repeat at the cap was {other:?}"),
    }
    let other_agent = asked("uncapped-0", "uncapped", 0, now, 600);
    assert_eq!(store.create(&other_agent, CAP).await.unwrap(), Creation::Created);

    // A decision makes room.
    let first = store.approval(&ApprovalId("capped-0".into())).await.unwrap().unwrap();
    let approved = Approval {
        state: ApprovalState::Approved,
        decision: Some(Decision { approver: "someone".into(), at: now }),
        ..first
    };
    assert!(store.transition(ApprovalState::Pending, &approved).await.unwrap());
    assert_eq!(store.create(&one_more, CAP).await.unwrap(), Creation::Created);
    let fifth = asked("capped-4", "capped", 4, now.plus(1), 600);
    assert_eq!(store.create(&fifth, CAP).await.unwrap(), Creation::Full);
    // An expiry makes room.
    let later = asked("capped-5", "capped", 5, now.plus(600), 600);
    assert_eq!(store.create(&later, CAP).await.unwrap(), Creation::Created);
}

/// Identical requests racing: one creates, every other waits on it.
pub async fn approval_race(store: Arc<dyn StateStore>, now: UnixTime) {
    let racers: Vec<_> = (0..16)
        .map(|racer| {
            let store = store.clone();
            let approval = asked(&format!("racer-{racer}"), "racing", 0, now, 600);
            tokio::spawn(async move { store.create(&approval, 20).await.unwrap() })
        })
        .collect();
    let mut created = Vec::new();
    let mut waited_on = Vec::new();
    for racer in racers {
        match racer.await.unwrap() {
            Creation::Created => created.push(()),
            Creation::Waiting(waiting) => waited_on.push(waiting.id),
            Creation::Full => panic!("one request is not past the cap"),
        }
    }
    assert_eq!(created.len(), 1, "exactly one of identical requests creates an approval");
    assert_eq!(waited_on.len(), 15);
    let listed = store.list(&ApprovalQuery { agent: Some("racing".into()), ..ApprovalQuery::pending(now) }).await;
    let listed = listed.unwrap().approvals;
    assert_eq!(listed.len(), 1);
    assert!(waited_on.iter().all(|id| *id == listed[0].id));
}

async fn approval_contract(store: Arc<dyn StateStore>) -> UnixTime {
    let now = SystemClock.now();
    approval_indexes(store.clone(), now).await;
    approval_cap(store.clone(), now).await;
    approval_race(store, now).await;
    now
}

/// After a reopen, the indexes are there: a repeat still finds its approval,
/// and the count and the listing still see it.
async fn approval_indexes_survive_a_reopen(store: Arc<dyn StateStore>, now: UnixTime) {
    match store.create(&asked("racer-again", "racing", 0, now, 600), 20).await.unwrap() {
        Creation::Waiting(waiting) => assert!(waiting.id.0.starts_with("racer-"), "{waiting:?}"),
        other => panic!("a repeat after a reopen was {other:?}"),
    }
    let racing = ApprovalQuery { agent: Some("racing".into()), ..ApprovalQuery::pending(now) };
    assert_eq!(store.list(&racing).await.unwrap().approvals.len(), 1);
    assert!(store.count_pending(now).await.unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_indexes_approvals() {
    approval_contract(Arc::new(baton::store::memory::MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_indexes_approvals() {
    let dir = tempfile::tempdir().unwrap();
    let open = || Arc::new(baton::store::embedded::EmbeddedStore::open(&dir.path().join("data")).unwrap());
    let now = approval_contract(open()).await;
    approval_indexes_survive_a_reopen(open(), now).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_indexes_approvals() {
    let server = crate::redis_server::RedisServer::start();
    let connect =
        || async { Arc::new(baton::store::redis::RedisStore::connect(&server.url(), "baton:").await.unwrap()) };
    let now = approval_contract(connect().await).await;
    approval_indexes_survive_a_reopen(connect().await, now).await;
}
