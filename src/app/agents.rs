//! The agents the inventory no longer has, or that passed their expiry,
//! deprovisioned once: what was done is kept in the data folder, so that a
//! restart or a reload records nothing twice (and never undoes a
//! reinstatement).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use crate::broker::Broker;

/// The agents of the inventory last loaded, kept in `data_dir/known-agents.json`:
/// those missing from the inventory now are deprovisioned, and the file then
/// holds the agents of this inventory.
pub async fn deprovision_removed_agents(broker: &Broker, data_dir: &Path) -> Result<Vec<String>, String> {
    let path = data_dir.join("known-agents.json");
    let known: Vec<String> = read_json(&path)?.unwrap_or_default();
    let removed = broker.deprovision_removed_agents(&known).await.map_err(|error| error.to_string())?;
    // Only the agents of this inventory: one removed is deprovisioned once,
    // not again at every reload (which would undo a reinstatement).
    let all: BTreeSet<String> = broker.policy().inventory().agents().map(|agent| agent.id.clone()).collect();
    write_json(data_dir, &path, &all)?;
    Ok(removed)
}

/// Retires the agents of the inventory past their `expires` (see
/// [`Broker::retire_expired_agents`]) that are not retired yet. Those
/// retired are kept in `data_dir/retired-agents.json` with the `expires`
/// they were retired at, so that a restart writes no second deprovisioning,
/// audit event or metric for them, while an agent whose `expires` was moved
/// is retired again once it passes the new one.
pub async fn retire_expired_agents(broker: &Broker, data_dir: &Path) -> Result<Vec<String>, String> {
    let path = data_dir.join("retired-agents.json");
    let recorded: BTreeMap<String, String> = read_json(&path)?.unwrap_or_default();
    let policy = broker.policy();
    let expires_now = |id: &str| policy.inventory().agent(id).map(|agent| agent.expires.to_string());
    // Retired at the `expires` the inventory still gives: done. An agent
    // whose `expires` moved, or that is gone, is dropped.
    let mut done: BTreeMap<String, String> = recorded
        .iter()
        .filter(|(id, expires)| expires_now(id).as_ref() == Some(*expires))
        .map(|(id, expires)| (id.clone(), expires.clone()))
        .collect();
    let ids: HashSet<String> = done.keys().cloned().collect();
    let retired = broker.retire_expired_agents(&ids).await.map_err(|error| error.to_string())?;
    done.extend(retired.iter().filter_map(|id| Some((id.clone(), expires_now(id)?))));
    if done != recorded {
        write_json(data_dir, &path, &done)?;
    }
    Ok(retired)
}

/// A JSON file of the data folder, `None` when there is none yet.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|error| format!("{}: {error}", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(format!("{}: {error}", path.display())),
    }
}

/// Writes a JSON file of the data folder beside and renames it, so that a
/// crash never leaves half a file.
fn write_json(data_dir: &Path, path: &Path, value: &impl serde::Serialize) -> Result<(), String> {
    let json = serde_json::to_vec_pretty(value).map_err(|error| error.to_string())?;
    crate::store::data_dir::prepare(data_dir).map_err(|error| format!("{}: {error}", data_dir.display()))?;
    let staging = path.with_extension("json.tmp");
    crate::store::data_dir::write_private(&staging, &json)
        .map_err(|error| format!("{}: {error}", staging.display()))?;
    std::fs::rename(&staging, path).map_err(|error| format!("{}: {error}", path.display()))
}
