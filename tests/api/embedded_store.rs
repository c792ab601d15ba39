//! The embedded store against the contract, across a hard kill, and under
//! concurrent writers.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use baton::claims::TokenId;
use baton::clock::{Clock, SystemClock, UnixTime};
use baton::store::embedded::EmbeddedStore;
use baton::store::{AuditDecision, AuditEvent, AuditFilter, AuditStore, Lineage, RevocationStore, StateStore, Status};

use crate::store_contract;

/// Names the data folder of the child process `writer_child`.
const CHILD_DIR: &str = "BATON_TEST_EMBEDDED_CHILD_DIR";
/// Marks the child's acknowledgements on its stdout, among the test harness's lines.
const ACK: &str = "@ack ";

fn event(time: UnixTime, id: &str) -> AuditEvent {
    AuditEvent {
        time,
        decision: AuditDecision::Issued,
        reason: None,
        action: "client_credentials".into(),
        subject: Some("someone".into()),
        agent: Some("writer".into()),
        chain: vec![],
        target: Some("t".into()),
        scopes_asked: None,
        scopes_granted: None,
        jti: Some(TokenId(id.into())),
        parent_jti: None,
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

async fn recorded(store: &EmbeddedStore, id: &str) -> usize {
    store.query(&AuditFilter { jti: Some(TokenId(id.into())), ..AuditFilter::default() }).await.unwrap().len()
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    // A folder that does not exist yet: `open` creates it.
    let data = dir.path().join("data");
    store_contract::run(
        || {
            let data = data.clone();
            async move { Arc::new(EmbeddedStore::open(&data).unwrap()) as Arc<dyn StateStore> }
        },
        "embedded",
    )
    .await;
}

#[test]
fn acknowledged_events_survive_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "embedded_store::writer_child", "--ignored", "--nocapture"])
        .env(CHILD_DIR, &data)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_sender, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        loop {
            let mut line = String::new();
            match stdout.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                // A line cut by the kill was never a whole acknowledgement.
                Ok(_) if line.ends_with('\n') => {
                    if lines_sender.send(line).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
            }
        }
    });

    // Let the child write for about a second, and until it has acknowledged
    // plenty of both kinds, then kill it (SIGKILL) without warning.
    let mut acknowledged = Acknowledged::default();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(1)
        || acknowledged.events.len() < 200
        || acknowledged.revoked.len() < 50
    {
        assert!(started.elapsed() < Duration::from_secs(120), "the child stalled: {acknowledged:?}");
        match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => acknowledged.read(&line),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the child exited: {acknowledged:?}"),
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    // Whatever the child printed before it died was acknowledged too.
    for line in lines.try_iter() {
        acknowledged.read(&line);
    }

    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async {
        let store = EmbeddedStore::open(&data).unwrap();
        for id in &acknowledged.events {
            assert_eq!(recorded(&store, id).await, 1, "acknowledged event {id} was lost");
        }
        for jti in &acknowledged.revoked {
            let lineage = Lineage { jtis: vec![TokenId(jti.clone())], principals: vec![] };
            assert_eq!(store.check(&lineage).await.unwrap(), Status::Revoked, "acknowledged revocation {jti} was lost");
        }
    });
}

/// What the child said it had stored.
#[derive(Debug, Default)]
struct Acknowledged {
    events: Vec<String>,
    revoked: Vec<String>,
}

impl Acknowledged {
    fn read(&mut self, line: &str) {
        let Some(at) = line.find(ACK) else { return };
        let said = line[at + ACK.len()..].trim_end();
        if let Some(id) = said.strip_prefix("event ") {
            self.events.push(id.to_owned());
        } else if let Some(jti) = said.strip_prefix("revoked ") {
            self.revoked.push(jti.to_owned());
        }
    }
}

/// The child of `acknowledged_events_survive_a_kill`: writes concurrently and
/// says so as soon as each write is acknowledged, until it is killed. Does
/// nothing when run on its own.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "run by acknowledged_events_survive_a_kill as a child process"]
async fn writer_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else { return };
    let store = Arc::new(EmbeddedStore::open(&PathBuf::from(dir)).unwrap());
    let now = SystemClock.now();
    let mut writers = Vec::new();
    for writer in 0..32 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for n in 0.. {
                let id = format!("event-{writer}-{n}");
                store.record(event(now, &id)).await.unwrap();
                say(&format!("event {id}"));
            }
        }));
    }
    for writer in 0..8 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for n in 0.. {
                let jti = format!("revoked-{writer}-{n}");
                store.revoke(&TokenId(jti.clone()), now.plus(3600)).await.unwrap();
                say(&format!("revoked {jti}"));
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
}

/// One whole line straight to stdout, past the test harness's capture.
fn say(what: &str) {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{ACK}{what}").unwrap();
    stdout.flush().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_are_batched() {
    const TASKS: usize = 200;
    const EACH: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let now = SystemClock.now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0..EACH {
                    store.record(event(now, &format!("batch-{task}-{n}"))).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let writes = (TASKS * EACH) as u64;
    let commits = store.commits();
    assert!(commits * 10 <= writes, "{commits} commits for {writes} writes: writes are not batched");
    for task in 0..TASKS {
        for n in 0..EACH {
            assert_eq!(recorded(&store, &format!("batch-{task}-{n}")).await, 1);
        }
    }
    let newest = store.query(&AuditFilter::default()).await.unwrap();
    assert_eq!(newest.len(), AuditFilter::MAX_LIMIT);
    reopen_after_drop(store, dir.path()).await;
}

/// Dropping the store lets go of the file at once.
async fn reopen_after_drop(store: Arc<EmbeddedStore>, dir: &Path) {
    drop(store);
    let reopened = EmbeddedStore::open(dir).unwrap();
    assert_eq!(recorded(&reopened, "batch-0-0").await, 1);
}

#[tokio::test]
async fn embedded_store_keeps_the_audit_retention() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    crate::store_contract::retention(
        move |retention| {
            let data = data.clone();
            async move { Arc::new(EmbeddedStore::open_with_retention(&data, retention).unwrap()) as Arc<dyn StateStore> }
        },
        async {},
        "embedded",
    )
    .await;
}
