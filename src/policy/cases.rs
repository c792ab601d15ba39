//! Policy test cases (`policies/tests/*.toml`, run by `baton policy test`):
//! a token request and the decision the policy must reach for it.
//!
//! ```toml
//! [[case]]
//! name = "the booker never gets calendar.write"
//! at = 2026-12-01T00:00:00Z          # optional; now when omitted
//!
//! [case.request]                     # a dry-run Question
//! action = "exchange"
//! agent = "planner"
//! subject = "orchestrator"
//! target = "booker"
//! scopes = ["calendar.write"]
//! parent_scopes = ["calendar.read", "calendar.write"]
//!
//! [case.expect]
//! refused = "not_permitted"          # or: granted = ["…"], rules = ["…"]
//! scope = "calendar.write"
//! ```
//!
//! Unknown keys are refused by name (DESIGN.md §10), and so is an expected
//! refusal that no refusal is called: a case that can never fail is worse
//! than none.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::explain::{ExplainError, Outcome, Question};
use super::Policy;
use crate::clock::UnixTime;

/// Every code [`Refusal::code`](super::Refusal::code) gives.
pub const REFUSAL_CODES: [&str; 9] = [
    "no_target",
    "unknown_target",
    "target_deprovisioned",
    "target_not_permitted",
    "unknown_scope",
    "beyond_parent",
    "outside_target",
    "not_permitted",
    "no_lifetime",
];

/// A test file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    /// The folder or a file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file does not parse; unknown keys are named here.
    #[error("{path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A case parses but says something impossible.
    #[error("{path}: case `{case}`: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The case's name.
        case: String,
        /// What is wrong.
        reason: String,
    },
}

/// One test case.
#[derive(Debug, Clone)]
pub struct Case {
    /// The file it comes from.
    pub file: PathBuf,
    /// Its name.
    pub name: String,
    /// When to ask; now when `None`.
    pub at: Option<UnixTime>,
    /// The request.
    pub request: Question,
    /// The decision expected.
    pub expect: Expected,
}

/// The decision a case expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// A token with exactly these scopes.
    Granted {
        /// The scopes, sorted.
        scopes: Vec<String>,
        /// The permits behind them, sorted, when the case names them.
        rules: Option<Vec<String>>,
        /// The scopes that need a person's approval, sorted (empty: none),
        /// when the case names them.
        approval: Option<Vec<String>>,
    },
    /// No token, for this reason.
    Refused {
        /// A [`REFUSAL_CODES`] entry.
        code: String,
        /// The scope the refusal names, when the case names it.
        scope: Option<String>,
    },
}

/// How one case went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaseResult {
    /// The policy decided as expected.
    Pass,
    /// The policy decided otherwise.
    Fail {
        /// What the case expected, in words.
        expected: String,
        /// What the policy decided, in words.
        actual: String,
    },
    /// The request could not be put to the policy.
    Error(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(default)]
    case: Vec<CaseEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseEntry {
    name: String,
    #[serde(default)]
    at: Option<toml::value::Datetime>,
    request: Question,
    expect: ExpectEntry,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectEntry {
    #[serde(default)]
    granted: Option<Vec<String>>,
    #[serde(default)]
    rules: Option<Vec<String>>,
    #[serde(default)]
    approval: Option<Vec<String>>,
    #[serde(default)]
    refused: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

/// The `*.toml` files of `dir` (`policies/tests`), sorted; none when the
/// folder does not exist.
pub fn files(dir: &Path) -> Result<Vec<PathBuf>, CaseError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(CaseError::Read { path: dir.to_path_buf(), source }),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().and_then(|ext| ext.to_str()) == Some("toml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Reads and validates the cases of one file.
pub fn load(path: &Path) -> Result<Vec<Case>, CaseError> {
    let text = std::fs::read_to_string(path).map_err(|source| CaseError::Read { path: path.to_path_buf(), source })?;
    let file: CaseFile = toml::from_str(&text)
        .map_err(|error| CaseError::Parse { path: path.to_path_buf(), reason: error.to_string() })?;
    let mut cases = Vec::new();
    for entry in file.case {
        let invalid =
            |reason: String| CaseError::Invalid { path: path.to_path_buf(), case: entry.name.clone(), reason };
        let at = entry
            .at
            .map(|at| {
                time::OffsetDateTime::parse(&at.to_string(), &time::format_description::well_known::Rfc3339)
                    .map(|moment| UnixTime(moment.unix_timestamp()))
                    .map_err(|_| invalid(format!("`at` must be a date and time with an offset, not `{at}`")))
            })
            .transpose()?;
        let ExpectEntry { granted, rules, approval, refused, scope } = entry.expect;
        let expect =
            match (granted, refused) {
                (Some(mut scopes), None) if scope.is_none() => {
                    scopes.sort();
                    let sorted = |mut list: Vec<String>| {
                        list.sort();
                        list
                    };
                    Expected::Granted { scopes, rules: rules.map(sorted), approval: approval.map(sorted) }
                }
                (None, Some(code)) if rules.is_none() && approval.is_none() => {
                    if !REFUSAL_CODES.contains(&code.as_str()) {
                        return Err(invalid(format!(
                            "`refused = \"{code}\"` is no refusal; use one of {}",
                            REFUSAL_CODES.join(", ")
                        )));
                    }
                    Expected::Refused { code, scope }
                }
                _ => return Err(invalid(
                    "`expect` takes either `granted` (and optionally `rules`, `approval`) or `refused` (and optionally `scope`)"
                        .into(),
                )),
            };
        cases.push(Case { file: path.to_path_buf(), name: entry.name, at, request: entry.request, expect });
    }
    Ok(cases)
}

/// Every case of every file of `dir`.
pub fn load_dir(dir: &Path) -> Result<Vec<Case>, CaseError> {
    let mut cases = Vec::new();
    for path in files(dir)? {
        cases.extend(load(&path)?);
    }
    Ok(cases)
}

impl Case {
    /// Puts the request to `policy` at the case's time, or `now`.
    pub fn run(&self, policy: &Policy, now: UnixTime) -> CaseResult {
        let explanation = match policy.explain(&self.request, self.at.unwrap_or(now)) {
            Ok(explanation) => explanation,
            Err(ExplainError::Question(error)) => return CaseResult::Error(error.to_string()),
            Err(ExplainError::Policy(error)) => return CaseResult::Error(error.to_string()),
        };
        let actual = match &explanation.outcome {
            Outcome::Granted { scopes, rules, approval, .. } => {
                let mut scopes = scopes.clone();
                scopes.sort();
                let mut needed = approval.as_ref().map(|approval| approval.scopes.clone()).unwrap_or_default();
                needed.sort();
                Expected::Granted { scopes, rules: Some(rules.clone()), approval: Some(needed) }
            }
            Outcome::Refused { refusal } => {
                Expected::Refused { code: refusal.code().to_owned(), scope: refusal.scope().map(ToString::to_string) }
            }
        };
        let matches = match (&self.expect, &actual) {
            (
                Expected::Granted { scopes, rules, approval },
                Expected::Granted { scopes: granted, rules: Some(permitting), approval: Some(needed) },
            ) => {
                scopes == granted
                    && rules.as_ref().is_none_or(|rules| rules == permitting)
                    && approval.as_ref().is_none_or(|approval| approval == needed)
            }
            (Expected::Refused { code, scope }, Expected::Refused { code: refused, scope: named }) => {
                code == refused && scope.as_ref().is_none_or(|scope| Some(scope) == named.as_ref())
            }
            _ => false,
        };
        if matches {
            CaseResult::Pass
        } else {
            CaseResult::Fail { expected: self.expect.to_string(), actual: actual.to_string() }
        }
    }
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expected::Granted { scopes, rules, approval } => {
                write!(f, "granted [{}]", scopes.join(" "))?;
                if let Some(rules) = rules {
                    write!(f, " by [{}]", rules.join(", "))?;
                }
                match approval {
                    Some(approval) if !approval.is_empty() => write!(f, " once [{}] is approved", approval.join(" ")),
                    Some(_) | None => Ok(()),
                }
            }
            Expected::Refused { code, scope: Some(scope) } => write!(f, "refused: {code} ({scope})"),
            Expected::Refused { code, scope: None } => write!(f, "refused: {code}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Lifetimes, Refusal};

    const NOW: UnixTime = UnixTime(1_796_083_200);

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cases.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn example() -> Policy {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        Policy::load(&dir, Lifetimes { max_token_ttl: 3600, agent_token_ttl: 900 }).unwrap()
    }

    const CASE: &str = "[[case]]\nname = 'own token'\n[case.request]\naction = 'issue'\nagent = 'orchestrator'\n";

    #[test]
    fn a_case_can_say_which_scopes_wait_for_approval() {
        let booking = "[[case]]\nname = 'book'\n[case.request]\naction = 'exchange'\nagent = 'booker'\n\
                       subject = 'orchestrator'\ntarget = 'https://api.airline.example'\nscopes = ['flights.book']\n\
                       parent_scopes = ['flights.book']\nchain = ['planner']\n[case.expect]\ngranted = ['flights.book']\n";
        let run = |approval: &str| {
            let (_dir, path) = write(&format!("{booking}{approval}"));
            load(&path).unwrap().remove(0).run(&example(), NOW)
        };
        assert_eq!(run("approval = ['flights.book']\n"), CaseResult::Pass);
        assert!(matches!(run("approval = []\n"), CaseResult::Fail { .. }), "the example marks flights.book");
        assert_eq!(run(""), CaseResult::Pass, "not named, not checked");
    }

    #[test]
    fn unknown_keys_are_named() {
        for (text, key) in [
            (format!("{CASE}colour = 'red'\n[case.expect]\ngranted = []\n"), "colour"),
            (format!("{CASE}[case.expect]\ngranted = []\nscopes = []\n"), "scopes"),
            ("[[cases]]\nname = 'x'\n".to_owned(), "cases"),
        ] {
            let (_dir, path) = write(&text);
            let error = load(&path).unwrap_err().to_string();
            assert!(error.contains(key), "{key}: {error}");
        }
    }

    #[test]
    fn an_expectation_must_be_one_thing_that_can_happen() {
        let (_dir, path) = write(&format!("{CASE}[case.expect]\nrefused = 'nope'\n"));
        assert!(load(&path).unwrap_err().to_string().contains("is no refusal"));
        let (_dir, path) = write(&format!("{CASE}[case.expect]\nrefused = 'no_target'\ngranted = []\n"));
        assert!(matches!(load(&path), Err(CaseError::Invalid { .. })));
        let (_dir, path) = write(&format!("{CASE}[case.expect]\n"));
        assert!(matches!(load(&path), Err(CaseError::Invalid { .. })));
    }

    #[test]
    fn every_refusal_has_a_code_cases_can_name() {
        let scope = "x".parse().unwrap();
        for refusal in [
            Refusal::NoTarget,
            Refusal::UnknownTarget,
            Refusal::TargetDeprovisioned,
            Refusal::TargetNotPermitted,
            Refusal::UnknownScope(scope),
            Refusal::BeyondParent("x".parse().unwrap()),
            Refusal::OutsideTarget("x".parse().unwrap()),
            Refusal::NotPermitted("x".parse().unwrap()),
            Refusal::NoLifetime,
        ] {
            assert!(REFUSAL_CODES.contains(&refusal.code()), "{refusal:?}");
        }
    }

    #[test]
    fn a_case_passes_or_fails_on_the_decision() {
        let policy = example();
        let (_dir, path) = write(&format!(
            "{CASE}[case.expect]\ngranted = ['flights.read', 'flights.book', 'calendar.read', 'calendar.write']\n\
             rules = ['travel.cedar#orchestrator-to-planner']\n\
             [[case]]\nname = 'wrong'\n[case.request]\naction = 'issue'\nagent = 'orchestrator'\n\
             [case.expect]\nrefused = 'not_permitted'\n"
        ));
        let cases = load(&path).unwrap();
        assert_eq!(cases[0].run(&policy, NOW), CaseResult::Pass);
        let CaseResult::Fail { expected, actual } = cases[1].run(&policy, NOW) else { panic!() };
        assert_eq!(expected, "refused: not_permitted");
        assert!(actual.starts_with("granted [calendar.read calendar.write flights.book flights.read]"), "{actual}");
    }

    #[test]
    fn a_case_runs_at_its_own_time() {
        // The example agents expire on 2030-06-30; on 2030-07-01 the planner
        // is no target any more.
        let (_dir, path) = write(
            "[[case]]\nname = 'late'\nat = 2030-07-01T00:00:00Z\n[case.request]\naction = 'issue'\n\
             agent = 'orchestrator'\n[case.expect]\nrefused = 'target_deprovisioned'\n",
        );
        let cases = load(&path).unwrap();
        assert_eq!(cases[0].at, Some(UnixTime(1_909_094_400)));
        assert_eq!(cases[0].run(&example(), NOW), CaseResult::Pass);
    }

    #[test]
    fn the_shipped_cases_pass() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let cases = load_dir(&dir.join("tests")).unwrap();
        assert!(cases.len() >= 10);
        let policy = example();
        for case in &cases {
            assert_eq!(case.run(&policy, NOW), CaseResult::Pass, "{}", case.name);
        }
    }
}
