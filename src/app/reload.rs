//! Policy hot reload for `baton serve` (DESIGN.md §5): a change in the
//! policy folder, or `SIGHUP`, loads the folder whole and swaps it in; a
//! folder that does not load is refused, logged, and the policy in force
//! keeps serving. Agents gone from the new inventory are deprovisioned, as
//! they are at start.

use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::broker::Broker;
use crate::config::Config;

/// How long the folder must stay quiet before it is reloaded: one save by an
/// editor (write a copy, rename it over) or a `git checkout` is a burst of
/// events, and the folder is read once, after the burst.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// Starts watching `config.policies_dir` and listening for `SIGHUP`, and
/// reloads on either until the process ends. A folder that cannot be
/// watched is logged: `SIGHUP` still works.
pub(super) fn spawn(broker: Arc<Broker>, config: Config) -> Result<(), String> {
    // Capacity 1: a nudge that finds one waiting is already covered by it.
    let (nudge, nudges) = mpsc::channel::<()>(1);
    let from_files = nudge.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        tracing::debug!(?event, "policy folder event");
        // A watch error (a queue overflow) may hide a change: reload to be sure.
        if event.as_ref().map_or(true, |event| is_change(&event.kind)) {
            let _ = from_files.try_send(());
        }
    })
    .and_then(|mut watcher| {
        watcher.watch(&config.policies_dir, RecursiveMode::Recursive)?;
        Ok(watcher)
    });
    let watcher = match watcher {
        Ok(watcher) => Some(watcher),
        Err(error) => {
            tracing::warn!(%error, dir = %config.policies_dir.display(), "cannot watch the policy folder; reload with SIGHUP");
            None
        }
    };
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|error| format!("signal handler: {error}"))?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the policy folder");
            let _ = nudge.try_send(());
        }
    });
    tokio::spawn(async move {
        // The watcher stops when dropped: it lives as long as this loop.
        let _watcher = watcher;
        let mut nudges = nudges;
        while settled(&mut nudges, DEBOUNCE).await {
            reload(&broker, &config).await;
        }
    });
    Ok(())
}

/// Whether a file event may change what the folder loads to. Reads are not
/// changes: the reload's own reading of the folder must not trigger another.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Any | EventKind::Other => true,
        // Timestamps and permissions do not change the contents.
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
    }
}

/// Waits for a nudge, then until none has come for `quiet`. False once no
/// nudge can come any more.
async fn settled(nudges: &mut mpsc::Receiver<()>, quiet: Duration) -> bool {
    if nudges.recv().await.is_none() {
        return false;
    }
    loop {
        match tokio::time::timeout(quiet, nudges.recv()).await {
            Ok(Some(())) => continue,
            // Quiet long enough, or closed with a change still to apply.
            Err(_) | Ok(None) => return true,
        }
    }
}

/// Loads the folder off the runtime's threads, swaps it in if it loads, and
/// deprovisions the agents it no longer has.
async fn reload(broker: &Arc<Broker>, config: &Config) {
    let loading = broker.clone();
    let dir = config.policies_dir.clone();
    match tokio::task::spawn_blocking(move || loading.reload_policy(&dir)).await {
        Ok(Ok(())) => {
            let policy = broker.policy();
            tracing::info!(
                agents = policy.inventory().agents().count(),
                rules = policy.rules().len(),
                "policy reloaded"
            );
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "the policy folder does not load; the policy in force stays");
            return;
        }
        Err(error) => {
            tracing::warn!(%error, "the policy reload did not finish; the policy in force stays");
            return;
        }
    }
    match broker.deprovision_removed_agents().await {
        Ok(removed) => {
            for id in removed {
                tracing::info!(agent = %id, "agent removed from the inventory: deprovisioned");
            }
        }
        Err(error) => tracing::warn!(%error, "agents removed from the inventory not deprovisioned yet"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, MetadataKind};

    #[test]
    fn reads_and_metadata_are_not_changes() {
        assert!(is_change(&EventKind::Create(CreateKind::File)));
        assert!(is_change(&EventKind::Modify(ModifyKind::Data(DataChange::Any))));
        assert!(is_change(&EventKind::Access(AccessKind::Close(AccessMode::Write))));
        assert!(!is_change(&EventKind::Access(AccessKind::Open(AccessMode::Any))));
        assert!(!is_change(&EventKind::Access(AccessKind::Close(AccessMode::Read))));
        assert!(!is_change(&EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime))));
    }

    #[tokio::test]
    async fn a_burst_of_nudges_settles_into_one_reload() {
        let (nudge, mut nudges) = mpsc::channel(1);
        let quiet = Duration::from_millis(100);
        let burst = tokio::spawn(async move {
            for _ in 0..5 {
                let _ = nudge.try_send(());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            nudge
        });
        let started = std::time::Instant::now();
        assert!(settled(&mut nudges, quiet).await);
        // Settled only after the burst (about 100 ms) and the quiet after it.
        assert!(started.elapsed() >= Duration::from_millis(150), "{:?}", started.elapsed());
        let nudge = burst.await.unwrap();
        // Nothing left over: the next wait ends only with a new nudge or a close.
        drop(nudge);
        assert!(!settled(&mut nudges, quiet).await);
    }
}
