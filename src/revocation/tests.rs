//! Who may revoke a token (DESIGN.md §10, RFC 7009 §2.1), without HTTP.

use super::holds;
use crate::claims::{Actor, Claims, Delegation, Hop, ScopeSet, TokenId};
use crate::clock::UnixTime;
use crate::ids::AgentId;

/// A token `client_id` obtained for `aud`, on `sub`'s authority, with no
/// ancestors yet.
fn claims(sub: &str, aud: &str, client_id: &str) -> Claims {
    Claims {
        iss: "https://baton.example".into(),
        sub: sub.into(),
        aud: aud.into(),
        client_id: client_id.into(),
        scope: ScopeSet::parse("flights.read").unwrap(),
        iat: UnixTime(1_000),
        exp: UnixTime(1_600),
        jti: TokenId(format!("{client_id}-for-{aud}")),
        act: None,
        may_act: None,
        cnf: None,
        delegation: Delegation::default(),
    }
}

/// An ancestor that `agent` obtained for `aud`, as a descendant records it.
fn hop(agent: &str, aud: &str) -> Hop {
    claims("orchestrator", aud, agent).as_hop()
}

/// orchestrator → planner → booker → airline API: the booker's token for
/// the API, two hops down from the orchestrator's own.
fn booker_for_api() -> Claims {
    let mut token = claims("orchestrator", "https://api.airline.example", "booker");
    token.act = Some(Actor { sub: "booker".into(), act: Some(Box::new(Actor { sub: "planner".into(), act: None })) });
    token.delegation.depth = 2;
    token.delegation.hops = vec![hop("orchestrator", "planner"), hop("planner", "booker")];
    token
}

/// RFC 7009 §2.1: the client the token was issued to (`client_id`).
#[test]
fn the_client_a_token_was_issued_to_may_revoke_it() {
    assert!(holds(&AgentId::new("booker"), &booker_for_api()));
    assert!(holds(&AgentId::new("orchestrator"), &claims("orchestrator", "planner", "orchestrator")));
}

/// DESIGN.md §10: the agent a token is addressed to (`aud`) holds it too.
#[test]
fn the_agent_a_token_is_addressed_to_may_revoke_it() {
    let root = claims("orchestrator", "planner", "orchestrator");
    assert!(holds(&AgentId::new("planner"), &root));
    let mut for_agent = booker_for_api();
    for_agent.aud = "auditor".into();
    assert!(holds(&AgentId::new("auditor"), &for_agent));
}

/// DESIGN.md §10: the holder of any ancestor, the agent that obtained it
/// or the one it was addressed to, may revoke its descendants.
#[test]
fn the_holder_of_any_ancestor_may_revoke_it() {
    let token = booker_for_api();
    // The root's agent obtained an ancestor and appears nowhere else.
    assert!(holds(&AgentId::new("orchestrator"), &token));
    // An ancestor was addressed to an agent that is nowhere else in the path.
    let mut redirected = claims("orchestrator", "https://api.airline.example", "booker");
    redirected.delegation.hops = vec![hop("orchestrator", "relay")];
    assert!(holds(&AgentId::new("relay"), &redirected));
    // An agent that obtained a middle ancestor, and was addressed by none.
    let mut middle = claims("orchestrator", "https://api.airline.example", "booker");
    middle.delegation.hops = vec![hop("orchestrator", "planner"), hop("courier", "booker")];
    assert!(holds(&AgentId::new("courier"), &middle));
}

/// RFC 7009 §2.1, DESIGN.md §10: anyone else is refused, a name that
/// differs only in case or spacing included, and so is a person whose
/// authority the token carries (`sub`) but who holds no token of its path.
#[test]
fn no_one_else_may_revoke_it() {
    let token = booker_for_api();
    for stranger in ["mallory", "Booker", "booker ", "", "https://api.calendar.example"] {
        assert!(!holds(&AgentId::new(stranger), &token), "{stranger:?}");
    }
    let mut persons = booker_for_api();
    persons.sub = "alice@example.com".into();
    assert!(!holds(&AgentId::new("alice@example.com"), &persons));
}
