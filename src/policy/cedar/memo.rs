//! Decisions remembered for as long as the rules that made them.
//!
//! Cedar's answer to a request is a function of the rules, the entities and
//! the request alone: no clock, no outside state. The rules and entities are
//! fixed for one loaded policy (a reload builds new [`Rules`](super::Rules),
//! with an empty memo), so a request seen before under the same policy is
//! answered from memory. The key holds every input of the request in full,
//! never a digest of it: two requests share an answer only when they are
//! the same request.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use super::{Action, Facts, Verdict};
use crate::claims::Scope;

/// Requests remembered at most; when full, the memo starts over. Agents
/// repeat few requests, each many times: a few thousand hold them, and
/// requests that all differ cost one lookup each, never memory.
const CAPACITY: usize = 4_096;

/// Verdicts by the whole request they answer.
#[derive(Default)]
pub(super) struct Memo {
    verdicts: Mutex<HashMap<Box<[u8]>, Verdict>>,
}

impl Memo {
    /// The verdict given before to `request` for `scope`, if any.
    pub(super) fn get(&self, request: &RequestKey, scope: &Scope) -> Option<Verdict> {
        let key = request.with(scope);
        self.verdicts.lock().unwrap_or_else(PoisonError::into_inner).get(key.as_slice()).cloned()
    }

    /// Remembers the verdict on `request` for `scope`.
    pub(super) fn put(&self, request: &RequestKey, scope: &Scope, verdict: &Verdict) {
        let key = request.with(scope).into_boxed_slice();
        let mut verdicts = self.verdicts.lock().unwrap_or_else(PoisonError::into_inner);
        if verdicts.len() >= CAPACITY {
            verdicts.clear();
        }
        verdicts.insert(key, verdict.clone());
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.verdicts.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// Every input of a request but its scope, encoded without ambiguity: each
/// text is preceded by its length, each list by its count.
pub(super) struct RequestKey(Vec<u8>);

impl RequestKey {
    pub(super) fn new(agent: &str, action: Action, facts: &Facts<'_>) -> RequestKey {
        // Named field by field, so that a fact added to `Facts` does not
        // compile until it is part of the key.
        let Facts { subject, target, target_is_agent, depth, chain, parent_scopes, dpop_bound, chain_dpop_bound, ttl } =
            facts;
        let mut key = RequestKey(Vec::with_capacity(256));
        key.text(agent);
        key.0.push(match action {
            Action::Issue => 0,
            Action::Exchange => 1,
        });
        key.text(subject);
        key.text(target);
        key.0.push(u8::from(*target_is_agent));
        key.0.extend_from_slice(&depth.to_le_bytes());
        key.texts(chain);
        key.texts(parent_scopes);
        key.0.push(u8::from(*dpop_bound));
        key.0.push(u8::from(*chain_dpop_bound));
        key.0.extend_from_slice(&ttl.to_le_bytes());
        key
    }

    fn text(&mut self, text: &str) {
        self.0.extend_from_slice(&(text.len() as u64).to_le_bytes());
        self.0.extend_from_slice(text.as_bytes());
    }

    fn texts(&mut self, texts: &[&str]) {
        self.0.extend_from_slice(&(texts.len() as u64).to_le_bytes());
        for text in texts {
            self.text(text);
        }
    }

    /// The whole key: this request's inputs and `scope`.
    fn with(&self, scope: &Scope) -> Vec<u8> {
        let mut key = RequestKey(Vec::with_capacity(self.0.len() + 8 + scope.as_str().len()));
        key.0.extend_from_slice(&self.0);
        key.text(scope.as_str());
        key.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(subject: &'a str, chain: Vec<&'a str>) -> Facts<'a> {
        Facts {
            subject,
            target: "https://api.example",
            target_is_agent: false,
            depth: 1,
            chain,
            parent_scopes: vec!["read"],
            dpop_bound: false,
            chain_dpop_bound: false,
            ttl: 300,
        }
    }

    fn verdict(allowed: bool) -> Verdict {
        Verdict { allowed, reasons: vec!["rules.cedar#0".to_owned()] }
    }

    #[test]
    fn a_verdict_is_given_back_only_for_the_same_request() {
        let memo = Memo::default();
        let scope: Scope = "read".parse().unwrap();
        let asked = RequestKey::new("planner", Action::Exchange, &facts("alice", vec!["orchestrator"]));
        memo.put(&asked, &scope, &verdict(true));
        assert_eq!(memo.get(&asked, &scope), Some(verdict(true)));
        let same = RequestKey::new("planner", Action::Exchange, &facts("alice", vec!["orchestrator"]));
        assert_eq!(memo.get(&same, &scope), Some(verdict(true)));
        // Any input that differs is another request.
        let other_scope: Scope = "write".parse().unwrap();
        assert_eq!(memo.get(&asked, &other_scope), None);
        for other in [
            RequestKey::new("booker", Action::Exchange, &facts("alice", vec!["orchestrator"])),
            RequestKey::new("planner", Action::Issue, &facts("alice", vec!["orchestrator"])),
            RequestKey::new("planner", Action::Exchange, &facts("bob", vec!["orchestrator"])),
            RequestKey::new("planner", Action::Exchange, &facts("alice", vec![])),
            RequestKey::new("planner", Action::Exchange, &Facts { ttl: 299, ..facts("alice", vec!["orchestrator"]) }),
            RequestKey::new(
                "planner",
                Action::Exchange,
                &Facts { dpop_bound: true, ..facts("alice", vec!["orchestrator"]) },
            ),
        ] {
            assert_eq!(memo.get(&other, &scope), None);
        }
    }

    /// Texts are length-prefixed: moving characters from one field to the
    /// next does not make the same key.
    #[test]
    fn fields_cannot_run_into_each_other() {
        let one = RequestKey::new("ab", Action::Exchange, &facts("c", vec!["d", "e"]));
        let two = RequestKey::new("a", Action::Exchange, &facts("bc", vec!["de"]));
        assert_ne!(one.0, two.0);
    }

    #[test]
    fn a_full_memo_starts_over() {
        let memo = Memo::default();
        let scope: Scope = "read".parse().unwrap();
        for index in 0..CAPACITY + 1 {
            let subject = format!("person-{index}");
            memo.put(&RequestKey::new("planner", Action::Exchange, &facts(&subject, vec![])), &scope, &verdict(true));
        }
        assert_eq!(memo.len(), 1);
    }
}
