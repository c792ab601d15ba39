//! An agent's life: registered with an owner and a purpose until its
//! `expires`, and used, or not. What a security team should hear about is
//! computed here once, for `baton policy check`, `GET /admin/agents` and
//! `baton agents` alike.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::inventory::Agent;
use crate::clock::UnixTime;

/// Agents whose last day is at most this many days away are warned about.
pub const EXPIRY_WARNING_DAYS: i64 = 14;
/// Agents unused for at least this many days are warned about.
pub const IDLE_WARNING_DAYS: i64 = 30;

time::serde::format_description!(day, Date, "[year]-[month]-[day]");

/// Something about an agent that needs a person's attention. Serialized with
/// a `kind` tag (`expired`, `expires_soon`, …) for the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AgentWarning {
    /// Past its last day: it gets nothing and its tokens are dead.
    Expired {
        /// Its last day.
        #[serde(with = "day")]
        expires: time::Date,
    },
    /// Its last day is near.
    ExpiresSoon {
        /// Its last day.
        #[serde(with = "day")]
        expires: time::Date,
        /// Days from today to its last day (0: today is its last day).
        days_left: i64,
    },
    /// No audit event names it at all.
    NeverUsed,
    /// Its last use is long ago.
    Idle {
        /// When it last asked for a token.
        last_use: UnixTime,
        /// Whole days since.
        days: i64,
    },
    /// No one answers for it. The loader refuses such an agent, so this is
    /// seen only for an inventory built some other way; kept so that the
    /// list of warnings is the whole contract.
    NoOwner,
}

impl AgentWarning {
    /// Whether the warning is about the agent's registration (expiry,
    /// owner), which a policy check can see, rather than about its use.
    pub fn is_about_registration(&self) -> bool {
        match self {
            AgentWarning::Expired { .. } | AgentWarning::ExpiresSoon { .. } | AgentWarning::NoOwner => true,
            AgentWarning::NeverUsed | AgentWarning::Idle { .. } => false,
        }
    }
}

impl fmt::Display for AgentWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentWarning::Expired { expires } => {
                write!(f, "expired on {expires} and gets nothing: remove it from agents.toml or renew it")
            }
            AgentWarning::ExpiresSoon { expires, days_left: 0 } => {
                write!(f, "expires on {expires} (today is its last day)")
            }
            AgentWarning::ExpiresSoon { expires, days_left: 1 } => {
                write!(f, "expires on {expires} (tomorrow is its last day)")
            }
            AgentWarning::ExpiresSoon { expires, days_left } => {
                write!(f, "expires on {expires} ({days_left} days left)")
            }
            AgentWarning::NeverUsed => f.write_str("was never used"),
            AgentWarning::Idle { last_use, days } => write!(f, "unused for {days} days (last use {last_use})"),
            AgentWarning::NoOwner => f.write_str("has no owner: no one answers for it"),
        }
    }
}

/// The warnings about `agent` from its registration alone: expired, expiring
/// within [`EXPIRY_WARNING_DAYS`], without an owner.
pub fn registration_warnings(agent: &Agent, now: UnixTime) -> Vec<AgentWarning> {
    let mut warnings = Vec::new();
    if agent.owner.trim().is_empty() {
        warnings.push(AgentWarning::NoOwner);
    }
    if !agent.is_active(now) {
        warnings.push(AgentWarning::Expired { expires: agent.expires });
    } else if let Some(today) = now.date() {
        let days_left = (agent.expires - today).whole_days();
        if days_left <= EXPIRY_WARNING_DAYS {
            warnings.push(AgentWarning::ExpiresSoon { expires: agent.expires, days_left });
        }
    }
    warnings
}

/// Every warning about `agent`, given when it last asked for a token: those of its
/// registration, then never used or idle for [`IDLE_WARNING_DAYS`]. An
/// expired agent cannot be used, so its use is not warned about.
pub fn warnings(agent: &Agent, last_use: Option<UnixTime>, now: UnixTime) -> Vec<AgentWarning> {
    let mut warnings = registration_warnings(agent, now);
    if agent.is_active(now) {
        match last_use {
            None => warnings.push(AgentWarning::NeverUsed),
            Some(last_use) => {
                let days = now.seconds_since(last_use) / 86_400;
                if days >= IDLE_WARNING_DAYS {
                    warnings.push(AgentWarning::Idle { last_use, days });
                }
            }
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::inventory::Credentials;

    fn agent(owner: &str, expires: time::Date) -> Agent {
        Agent {
            id: "a".into(),
            owner: owner.into(),
            purpose: "tests".into(),
            expires,
            groups: Vec::new(),
            token_ttl: None,
            default_audience: None,
            credentials: Credentials::None,
            may_act_again: false,
        }
    }

    /// 2030-06-20T12:00:00Z.
    fn noon(date: time::Date) -> UnixTime {
        UnixTime(date.midnight().assume_utc().unix_timestamp() + 43_200)
    }

    #[test]
    fn expiry_is_warned_from_fourteen_days_out_and_after() {
        let today = time::macros::date!(2030 - 06 - 20);
        let now = noon(today);
        let soon = registration_warnings(&agent("o", time::macros::date!(2030 - 07 - 04)), now);
        assert_eq!(soon, [AgentWarning::ExpiresSoon { expires: time::macros::date!(2030 - 07 - 04), days_left: 14 }]);
        assert!(registration_warnings(&agent("o", time::macros::date!(2030 - 07 - 05)), now).is_empty());
        let last = registration_warnings(&agent("o", today), now);
        assert_eq!(last[0].to_string(), "expires on 2030-06-20 (today is its last day)");
        let gone = registration_warnings(&agent("o", time::macros::date!(2030 - 06 - 19)), now);
        assert_eq!(gone, [AgentWarning::Expired { expires: time::macros::date!(2030 - 06 - 19) }]);
    }

    #[test]
    fn use_is_warned_when_never_or_thirty_days_ago() {
        let now = noon(time::macros::date!(2030 - 06 - 20));
        let fine = agent("o", time::macros::date!(2031 - 01 - 01));
        assert_eq!(warnings(&fine, None, now), [AgentWarning::NeverUsed]);
        assert!(warnings(&fine, Some(now.plus(-29 * 86_400)), now).is_empty());
        let idle = warnings(&fine, Some(now.plus(-30 * 86_400)), now);
        assert_eq!(idle, [AgentWarning::Idle { last_use: now.plus(-30 * 86_400), days: 30 }]);
        let expired = agent("o", time::macros::date!(2030 - 01 - 01));
        assert_eq!(warnings(&expired, None, now).len(), 1, "an expired agent is not also warned as unused");
        assert!(
            warnings(&agent(" ", time::macros::date!(2031 - 01 - 01)), Some(now), now).contains(&AgentWarning::NoOwner)
        );
    }

    #[test]
    fn warnings_serialize_with_their_kind() {
        let warning = AgentWarning::ExpiresSoon { expires: time::macros::date!(2030 - 06 - 30), days_left: 10 };
        let json = serde_json::to_value(&warning).unwrap();
        assert_eq!(json, serde_json::json!({"kind": "expires_soon", "expires": "2030-06-30", "days_left": 10}));
        assert_eq!(serde_json::from_value::<AgentWarning>(json).unwrap(), warning);
        assert_eq!(serde_json::to_value(AgentWarning::NeverUsed).unwrap(), serde_json::json!({"kind": "never_used"}));
    }
}
