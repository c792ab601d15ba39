//! What was done about the inventory's agents, kept where every node that
//! shares the store sees it: each agent removed from the inventory, and each
//! agent past its expiry, is deprovisioned once (one cut-off, one audit
//! event, one metric), by whichever node claims it first, and a restart or a
//! reload does nothing twice (so it never undoes a reinstatement). A removal
//! or a retirement is recorded done only once its deprovisioning is written:
//! a node that fails or dies in between leaves it to the next claim.
//!
//! The embedded store keeps this in two files of its data folder,
//! `known-agents.json` and `retired-agents.json`; Redis, in a set and a hash
//! that scripts change atomically.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::StoreError;

/// How long a claim on a removal or a retirement holds: the node that made
/// it writes the deprovisioning within that, or, failing or gone, leaves it
/// to whichever node claims it next. It is not given back when done, so a
/// node that saw the same change a moment late cannot write it again; an
/// agent removed, put back and removed again within this is deprovisioned
/// again at the first reload or start after it.
pub const CLAIM_SECONDS: u64 = 60;

/// Where the agents' lifecycle is kept.
#[async_trait]
pub trait LifecycleStore: Send + Sync {
    /// Adds `current` to the agents known, and answers those known that
    /// `current` lacks: agents removed from the inventory, answered until
    /// their deprovisioning is written and they are forgotten.
    async fn known_agents_missing(&self, current: &BTreeSet<String>) -> Result<Vec<String>, StoreError>;

    /// Forgets `agent`: its removal is written.
    async fn forget_known(&self, agent: &str) -> Result<(), StoreError>;

    /// Whether `agent` was retired at `expires`.
    async fn is_retired(&self, agent: &str, expires: &str) -> Result<bool, StoreError>;

    /// Records `agent` as retired at `expires`.
    async fn mark_retired(&self, agent: &str, expires: &str) -> Result<(), StoreError>;

    /// Claims `work` (a removal, a retirement) for [`CLAIM_SECONDS`]: `true`
    /// for one caller in that time, so that nodes seeing the same change at
    /// once write it once.
    async fn claim(&self, work: &str) -> Result<bool, StoreError>;
}

/// The file of the agents last known, in the data folder.
pub const KNOWN_AGENTS: &str = "known-agents.json";
/// The file of the agents retired, each with its `expires`, in the data folder.
pub const RETIRED_AGENTS: &str = "retired-agents.json";

#[derive(Debug, Default)]
struct State {
    known: BTreeSet<String>,
    retired: BTreeMap<String, String>,
}

/// The lifecycle of one node's agents: in memory, and when given a folder,
/// in its two files too, so that a restart remembers it.
#[derive(Debug, Default)]
pub struct LocalLifecycle {
    folder: Option<PathBuf>,
    state: Mutex<Option<State>>,
    claims: Mutex<HashMap<String, Instant>>,
}

impl LocalLifecycle {
    /// Kept in `folder`'s two files, read on first use.
    pub fn in_folder(folder: &Path) -> LocalLifecycle {
        LocalLifecycle { folder: Some(folder.to_owned()), ..LocalLifecycle::default() }
    }

    /// Runs `change` on the state, loaded first if need be, and writes the
    /// files it changed.
    fn change<T>(&self, change: impl FnOnce(&mut State) -> T) -> Result<T, StoreError> {
        let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if guard.is_none() {
            let known = self.read(KNOWN_AGENTS)?.unwrap_or_default();
            let retired = self.read(RETIRED_AGENTS)?.unwrap_or_default();
            *guard = Some(State { known, retired });
        }
        let state = guard.get_or_insert_with(State::default);
        let (known, retired) = (state.known.clone(), state.retired.clone());
        let answer = change(state);
        let written = (if state.known == known { Ok(()) } else { self.write(KNOWN_AGENTS, &state.known) })
            .and_then(|()| if state.retired == retired { Ok(()) } else { self.write(RETIRED_AGENTS, &state.retired) });
        if let Err(error) = written {
            // Not kept: the next call reads the files again.
            *guard = None;
            return Err(error);
        }
        Ok(answer)
    }

    /// A JSON file of the folder, `None` when there is none (or no folder).
    fn read<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StoreError> {
        let Some(path) = self.folder.as_ref().map(|folder| folder.join(name)) else { return Ok(None) };
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|error| StoreError::Corrupt(format!("{}: {error}", path.display()))),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(StoreError::Io(format!("{}: {error}", path.display()))),
        }
    }

    /// Writes a JSON file of the folder beside and renames it, so that a
    /// crash never leaves half a file.
    fn write(&self, name: &str, value: &impl serde::Serialize) -> Result<(), StoreError> {
        let Some(folder) = &self.folder else { return Ok(()) };
        let json = serde_json::to_vec_pretty(value).map_err(|error| StoreError::Corrupt(error.to_string()))?;
        let io = |error: std::io::Error| StoreError::Io(format!("{}: {error}", folder.display()));
        super::data_dir::prepare(folder).map_err(io)?;
        let path = folder.join(name);
        let staging = path.with_extension("json.tmp");
        super::data_dir::write_private(&staging, &json).map_err(io)?;
        std::fs::rename(&staging, &path).map_err(io)
    }
}

#[async_trait]
impl LifecycleStore for LocalLifecycle {
    async fn known_agents_missing(&self, current: &BTreeSet<String>) -> Result<Vec<String>, StoreError> {
        self.change(|state| {
            let missing = state.known.difference(current).cloned().collect();
            state.known.extend(current.iter().cloned());
            missing
        })
    }

    async fn forget_known(&self, agent: &str) -> Result<(), StoreError> {
        self.change(|state| {
            state.known.remove(agent);
        })
    }

    async fn is_retired(&self, agent: &str, expires: &str) -> Result<bool, StoreError> {
        self.change(|state| state.retired.get(agent).is_some_and(|retired| retired == expires))
    }

    async fn mark_retired(&self, agent: &str, expires: &str) -> Result<(), StoreError> {
        self.change(|state| {
            state.retired.insert(agent.to_owned(), expires.to_owned());
        })
    }

    async fn claim(&self, work: &str) -> Result<bool, StoreError> {
        let mut claims = self.claims.lock().unwrap_or_else(PoisonError::into_inner);
        let hold = Duration::from_secs(CLAIM_SECONDS);
        claims.retain(|_, at| at.elapsed() < hold);
        if claims.contains_key(work) {
            return Ok(false);
        }
        claims.insert(work.to_owned(), Instant::now());
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|id| (*id).to_owned()).collect()
    }

    #[tokio::test]
    async fn removals_are_answered_until_forgotten_and_retirements_survive_a_restart() {
        let folder = tempfile::tempdir().unwrap();
        let lifecycle = LocalLifecycle::in_folder(folder.path());
        assert!(lifecycle.known_agents_missing(&set(&["a", "b"])).await.unwrap().is_empty());
        assert_eq!(lifecycle.known_agents_missing(&set(&["a"])).await.unwrap(), ["b"]);
        assert_eq!(lifecycle.known_agents_missing(&set(&["a"])).await.unwrap(), ["b"], "until forgotten");
        lifecycle.forget_known("b").await.unwrap();
        assert!(lifecycle.known_agents_missing(&set(&["a"])).await.unwrap().is_empty());

        assert!(lifecycle.claim("retirement:a").await.unwrap());
        assert!(!lifecycle.claim("retirement:a").await.unwrap(), "held");
        assert!(!lifecycle.is_retired("a", "2020-01-01").await.unwrap());
        lifecycle.mark_retired("a", "2020-01-01").await.unwrap();
        assert!(lifecycle.is_retired("a", "2020-01-01").await.unwrap());
        assert!(!lifecycle.is_retired("a", "2021-01-01").await.unwrap(), "a moved expiry is a new retirement");

        let restarted = LocalLifecycle::in_folder(folder.path());
        assert!(restarted.is_retired("a", "2020-01-01").await.unwrap());
        assert!(restarted.known_agents_missing(&set(&["a"])).await.unwrap().is_empty());
        let known: Vec<String> =
            serde_json::from_slice(&std::fs::read(folder.path().join(KNOWN_AGENTS)).unwrap()).unwrap();
        assert_eq!(known, ["a"]);
    }
}
