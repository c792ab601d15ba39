//! The runnable examples, run as their README says, against a real broker.

use std::process::Command;

use crate::process::{example, BrokerProcess};

#[tokio::test]
async fn delegation_chain_books_through_three_agents_and_prints_the_chain() {
    let broker = BrokerProcess::start(&[]).await;
    let output = tokio::task::spawn_blocking({
        let url = broker.url.clone();
        move || Command::new(example("delegation_chain")).env("BROKER_URL", url).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("airline API: booking for orchestrator by booker (chain: booker <- planner)"), "{stdout}");
    assert!(stdout.contains("API decision: 200 OK"), "{stdout}");
    assert!(stdout.contains("act chain (newest first): booker <- planner   depth 2"), "{stdout}");
}

#[tokio::test]
async fn the_walk_script_runs_against_the_broker() {
    let broker = BrokerProcess::start(&[]).await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/three_hop_walk.sh");
    let output = tokio::task::spawn_blocking({
        let url = broker.url.clone();
        move || Command::new("bash").arg(script).env("BROKER_URL", url).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("\"sub\": \"booker\""), "{stdout}");
}
