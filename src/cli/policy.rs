//! `baton policy check|test|explain`: the policy folder on this machine,
//! checked, tested and explained by the library; this module only prints.

use std::fmt::Write as _;
use std::path::Path;

use crate::clock::UnixTime;
use crate::error::oauth::OAuthError;
use crate::policy::cases::{self, CaseResult};
use crate::policy::check::{self, Severity};
use crate::policy::explain::{Explanation, Outcome, Question};
use crate::policy::{Lifetimes, Policy};

/// `baton policy check`: every finding, then a verdict; an error if any
/// finding is one.
pub fn check(dir: &Path, lifetimes: Lifetimes, now: UnixTime) -> Result<(), String> {
    let report = check::check(dir, lifetimes, now);
    let mut out = String::new();
    if let Some((agents, resources, rules)) = report.counts {
        let _ = writeln!(
            out,
            "{}: {agents} agents, {resources} resources, {rules} rules, {} test cases",
            dir.display(),
            report.test_cases
        );
    }
    let mut errors = 0;
    let mut warnings = 0;
    for finding in &report.findings {
        match finding.severity() {
            Severity::Error => {
                errors += 1;
                let _ = writeln!(out, "error: {finding}");
            }
            Severity::Warning => {
                warnings += 1;
                let _ = writeln!(out, "warning: {finding}");
            }
        }
    }
    if report.has_errors() {
        emit(&out);
        return Err(format!("{}: {errors} errors, {warnings} warnings", dir.display()));
    }
    let _ = writeln!(out, "{}: valid ({warnings} warnings)", dir.display());
    emit(&out);
    Ok(())
}

/// `baton policy test`: runs `dir/tests/*.toml` against the folder, one line
/// a case; an error if any case fails or the folder does not load.
pub fn test(dir: &Path, lifetimes: Lifetimes, now: UnixTime) -> Result<(), String> {
    let policy = Policy::load(dir, lifetimes).map_err(|error| format!("the policy does not load: {error}"))?;
    let tests = dir.join("tests");
    let cases = cases::load_dir(&tests).map_err(|error| error.to_string())?;
    if cases.is_empty() {
        return Err(format!("no test cases in {}", tests.display()));
    }
    let (mut passed, mut failed) = (0, 0);
    let mut out = String::new();
    for case in &cases {
        let file = case.file.file_name().map(|name| name.to_string_lossy()).unwrap_or_default();
        match case.run(&policy, now) {
            CaseResult::Pass => {
                passed += 1;
                let _ = writeln!(out, "PASS  {file}: {}", case.name);
            }
            CaseResult::Fail { expected, actual } => {
                failed += 1;
                let _ =
                    writeln!(out, "FAIL  {file}: {}\n      expected: {expected}\n      actual:   {actual}", case.name);
            }
            CaseResult::Error(reason) => {
                failed += 1;
                let _ = writeln!(out, "FAIL  {file}: {}\n      the request cannot be asked: {reason}", case.name);
            }
        }
    }
    let _ = writeln!(out, "policy cases: {passed} passed, {failed} failed");
    emit(&out);
    if failed > 0 {
        return Err(format!("{failed} of {} policy test cases failed", cases.len()));
    }
    Ok(())
}

/// `baton policy explain`: a dry run against the folder, as a table or JSON.
pub fn explain(dir: &Path, lifetimes: Lifetimes, question: &Question, at: UnixTime, json: bool) -> Result<(), String> {
    let policy = Policy::load(dir, lifetimes).map_err(|error| format!("the policy does not load: {error}"))?;
    let explanation = policy.explain(question, at).map_err(|error| error.to_string())?;
    if json {
        let text = serde_json::to_string_pretty(&crate::error::oauth::explanation_json(&explanation))
            .map_err(|error| error.to_string())?;
        emit(&(text + "\n"));
    } else {
        emit(&table(question, &explanation));
    }
    Ok(())
}

/// Writes to standard output; a closed pipe (`| head`) is not worth a panic.
fn emit(text: &str) {
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
}

/// The explanation for people: the request, each scope's decision and
/// rules, then the outcome.
fn table(question: &Question, explanation: &Explanation) -> String {
    let action = serde_json::to_value(question.action).ok();
    let action = action.as_ref().and_then(|action| action.as_str()).unwrap_or("?");
    let target = explanation.target.as_deref().unwrap_or("(no target)");
    let mut out = format!("{action} by {} for {target}\n", question.agent);
    let width = explanation.scopes.iter().map(|scope| scope.scope.len()).max().unwrap_or(0);
    for scope in &explanation.scopes {
        let verdict = &scope.verdict;
        let decision = if verdict.allowed { "granted" } else { "denied " };
        let mut why = Vec::new();
        if verdict.permitted_by.is_empty() {
            why.push("no permit".to_owned());
        } else {
            why.push(format!("permitted by {}", verdict.permitted_by.join(", ")));
        }
        if !verdict.forbidden_by.is_empty() {
            why.push(format!("forbidden by {}", verdict.forbidden_by.join(", ")));
        }
        if !verdict.failed.is_empty() {
            why.push(format!("failed to evaluate: {}", verdict.failed.join(", ")));
        }
        let asked = if scope.asked { "asked" } else { "     " };
        out.push_str(&format!("  {:<width$}  {asked}  {decision}  {}\n", scope.scope, why.join("; ")));
    }
    match &explanation.outcome {
        Outcome::Granted { scopes, expires_in, approval, .. } => {
            out.push_str(&format!("result: granted {} for {expires_in} s\n", scopes.join(" ")));
            if let Some(approval) = approval {
                out.push_str(&format!(
                    "        once a person approves {} (marked by {}): until then authorization_pending\n",
                    approval.scopes.join(" "),
                    approval.marked_by.join(", ")
                ));
            }
        }
        Outcome::Refused { refusal } => {
            let error = OAuthError::from(refusal).code.as_str();
            out.push_str(&format!("result: refused: {refusal} ({error})\n"));
        }
    }
    out
}
