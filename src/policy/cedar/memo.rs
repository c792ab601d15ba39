//! Decisions remembered for as long as the rules that made them.
//!
//! Cedar's answer to a request is a function of the rules, the entities and
//! the request alone: no clock, no outside state. The rules and entities are
//! fixed for one loaded policy (a reload builds new [`Rules`](super::Rules),
//! with an empty memo), so a request seen before under the same policy is
//! answered from memory. The key is the SHA-256 of every input of the
//! request, encoded without ambiguity: two requests share an answer only when
//! they are the same request, and an entry takes the same few bytes however
//! long the request's texts.
//!
//! Where a token's lifetime is capped by its parent's expiry, its `ttl` fact
//! changes every second, and so does its key: such requests are remembered
//! for a second at most.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use ring::digest::{digest, SHA256};

use super::{Action, Facts, Verdict};
use crate::claims::Scope;

/// Requests remembered at most; when full, the memo starts over. Agents
/// repeat few requests, each many times: a few thousand hold them. Requests
/// that all differ fill it and start it over, each costing a lookup, an
/// entry of a few dozen bytes and the rules' names that decided it.
const CAPACITY: usize = 4_096;

/// Verdicts by the digest of the whole request they answer.
#[derive(Default)]
pub(super) struct Memo {
    verdicts: Mutex<HashMap<[u8; 32], Verdict>>,
}

impl Memo {
    /// The verdict given before to `request` for `scope`, if any.
    pub(super) fn get(&self, request: &RequestKey, scope: &Scope) -> Option<Verdict> {
        let key = request.with(scope);
        self.verdicts.lock().unwrap_or_else(PoisonError::into_inner).get(&key).cloned()
    }

    /// Remembers the verdict on `request` for `scope`.
    pub(super) fn put(&self, request: &RequestKey, scope: &Scope, verdict: &Verdict) {
        let key = request.with(scope);
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

    /// The whole key: the digest of this request's inputs and `scope`.
    fn with(&self, scope: &Scope) -> [u8; 32] {
        let mut whole = RequestKey(Vec::with_capacity(self.0.len() + 8 + scope.as_str().len()));
        whole.0.extend_from_slice(&self.0);
        whole.text(scope.as_str());
        let mut key = [0; 32];
        key.copy_from_slice(digest(&SHA256, &whole.0).as_ref());
        key
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

    /// Every input of the request is part of the key: a request that differs
    /// in any one of them, each tried in turn, is another request.
    #[test]
    fn a_verdict_is_given_back_only_for_the_same_request() {
        let memo = Memo::default();
        let scope: Scope = "read".parse().unwrap();
        let base = || facts("alice", vec!["orchestrator"]);
        let asked = RequestKey::new("planner", Action::Exchange, &base());
        memo.put(&asked, &scope, &verdict(true));
        assert_eq!(memo.get(&asked, &scope), Some(verdict(true)));
        assert_eq!(memo.get(&RequestKey::new("planner", Action::Exchange, &base()), &scope), Some(verdict(true)));
        assert_eq!(memo.get(&asked, &"write".parse().unwrap()), None, "scope");
        let others: [(&str, RequestKey); 11] = [
            ("agent", RequestKey::new("booker", Action::Exchange, &base())),
            ("action", RequestKey::new("planner", Action::Issue, &base())),
            ("subject", RequestKey::new("planner", Action::Exchange, &Facts { subject: "bob", ..base() })),
            (
                "target",
                RequestKey::new("planner", Action::Exchange, &Facts { target: "https://other.example", ..base() }),
            ),
            (
                "target_is_agent",
                RequestKey::new("planner", Action::Exchange, &Facts { target_is_agent: true, ..base() }),
            ),
            ("depth", RequestKey::new("planner", Action::Exchange, &Facts { depth: 2, ..base() })),
            ("chain", RequestKey::new("planner", Action::Exchange, &Facts { chain: vec![], ..base() })),
            ("parent_scopes", RequestKey::new("planner", Action::Exchange, &Facts { parent_scopes: vec![], ..base() })),
            ("dpop_bound", RequestKey::new("planner", Action::Exchange, &Facts { dpop_bound: true, ..base() })),
            (
                "chain_dpop_bound",
                RequestKey::new("planner", Action::Exchange, &Facts { chain_dpop_bound: true, ..base() }),
            ),
            ("ttl", RequestKey::new("planner", Action::Exchange, &Facts { ttl: 299, ..base() })),
        ];
        for (field, other) in others {
            assert_eq!(memo.get(&other, &scope), None, "{field}");
        }
    }

    /// Texts are length-prefixed: moving characters from one field to the
    /// next does not make the same key.
    #[test]
    fn fields_cannot_run_into_each_other() {
        let one = RequestKey::new("ab", Action::Exchange, &facts("c", vec!["d", "e"]));
        let two = RequestKey::new("a", Action::Exchange, &facts("bc", vec!["de"]));
        assert_ne!(one.0, two.0);
        let chain = |chain| RequestKey::new("a", Action::Exchange, &facts("s", chain)).0;
        assert_ne!(chain(vec!["ab"]), chain(vec!["a", "b"]));
        assert_ne!(chain(vec!["a", ""]), chain(vec!["a"]));
        let at =
            |subject, target| RequestKey::new("a", Action::Exchange, &Facts { target, ..facts(subject, vec![]) }).0;
        assert_ne!(at("a", "bc"), at("ab", "c"));
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
