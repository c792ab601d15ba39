//! What was done about the inventory's agents, kept where every node that
//! shares the store sees it: each agent removed from the inventory, and each
//! agent past its expiry, is deprovisioned once (one cut-off, one audit
//! event, one metric), by whichever node sees it first, and a restart or a
//! reload does nothing twice (so it never undoes a reinstatement).
//!
//! The embedded store keeps this in two files of its data folder,
//! `known-agents.json` and `retired-agents.json`; Redis, in a set and a hash
//! that scripts change atomically.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;

use super::StoreError;

/// Where the agents' lifecycle is kept.
#[async_trait]
pub trait LifecycleStore: Send + Sync {
    /// Records `current` as the agents of the inventory, answering those
    /// recorded before that `current` lacks. Each removed agent is answered
    /// once, to one caller, which deprovisions it; a caller whose
    /// deprovisioning fails gives it back ([`LifecycleStore::keep_known`]).
    async fn replace_known_agents(&self, current: &BTreeSet<String>) -> Result<Vec<String>, StoreError>;

    /// Records `agents` as known again, so that the next replacement answers
    /// them again: their deprovisioning could not be written.
    async fn keep_known(&self, agents: &[String]) -> Result<(), StoreError>;

    /// Claims the retirement of `agent`, past its `expires`: `true` for the
    /// first caller, `false` after, until its `expires` changes.
    async fn claim_retirement(&self, agent: &str, expires: &str) -> Result<bool, StoreError>;

    /// Gives back a claim whose retirement could not be written, so that the
    /// next round makes it.
    async fn release_retirement(&self, agent: &str, expires: &str) -> Result<(), StoreError>;
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
}

impl LocalLifecycle {
    /// Kept in `folder`'s two files, read on first use.
    pub fn in_folder(folder: &Path) -> LocalLifecycle {
        LocalLifecycle { folder: Some(folder.to_owned()), state: Mutex::new(None) }
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
    async fn replace_known_agents(&self, current: &BTreeSet<String>) -> Result<Vec<String>, StoreError> {
        self.change(|state| {
            let removed = state.known.difference(current).cloned().collect();
            state.known = current.clone();
            removed
        })
    }

    async fn keep_known(&self, agents: &[String]) -> Result<(), StoreError> {
        self.change(|state| state.known.extend(agents.iter().cloned()))
    }

    async fn claim_retirement(&self, agent: &str, expires: &str) -> Result<bool, StoreError> {
        self.change(|state| {
            if state.retired.get(agent).map(String::as_str) == Some(expires) {
                return false;
            }
            state.retired.insert(agent.to_owned(), expires.to_owned());
            true
        })
    }

    async fn release_retirement(&self, agent: &str, expires: &str) -> Result<(), StoreError> {
        self.change(|state| {
            if state.retired.get(agent).map(String::as_str) == Some(expires) {
                state.retired.remove(agent);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|id| (*id).to_owned()).collect()
    }

    #[tokio::test]
    async fn each_removal_and_retirement_is_answered_once_and_survives_a_restart() {
        let folder = tempfile::tempdir().unwrap();
        let lifecycle = LocalLifecycle::in_folder(folder.path());
        assert!(lifecycle.replace_known_agents(&set(&["a", "b"])).await.unwrap().is_empty());
        assert_eq!(lifecycle.replace_known_agents(&set(&["a"])).await.unwrap(), ["b"]);
        assert!(lifecycle.replace_known_agents(&set(&["a"])).await.unwrap().is_empty());
        lifecycle.keep_known(&["b".to_owned()]).await.unwrap();
        assert_eq!(lifecycle.replace_known_agents(&set(&["a"])).await.unwrap(), ["b"], "given back, answered again");

        assert!(lifecycle.claim_retirement("a", "2020-01-01").await.unwrap());
        assert!(!lifecycle.claim_retirement("a", "2020-01-01").await.unwrap());
        assert!(lifecycle.claim_retirement("a", "2021-01-01").await.unwrap(), "a moved expiry is a new retirement");
        lifecycle.release_retirement("a", "2021-01-01").await.unwrap();
        assert!(lifecycle.claim_retirement("a", "2021-01-01").await.unwrap(), "released, claimed again");

        let restarted = LocalLifecycle::in_folder(folder.path());
        assert!(!restarted.claim_retirement("a", "2021-01-01").await.unwrap());
        assert!(restarted.replace_known_agents(&set(&["a"])).await.unwrap().is_empty());
        let known: Vec<String> =
            serde_json::from_slice(&std::fs::read(folder.path().join(KNOWN_AGENTS)).unwrap()).unwrap();
        assert_eq!(known, ["a"]);
    }
}
