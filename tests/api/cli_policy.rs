//! `baton policy check|test|explain` as the real binary, on the example
//! folder and on broken copies of it.

use std::path::Path;
use std::process::{Command, Output};

use crate::harness::example_policies;

/// `baton policy …` with `dir` as the policy folder, run from an empty folder
/// so that no `baton.toml` is read.
fn baton(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let cwd = tempfile::tempdir().unwrap();
    let output: Output = Command::new(env!("CARGO_BIN_EXE_baton"))
        .arg("policy")
        .args(args)
        .current_dir(cwd.path())
        .env_clear()
        .env("BATON_POLICIES_DIR", dir)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A copy of the example folder, tests included.
fn example_copy() -> tempfile::TempDir {
    let folder = tempfile::tempdir().unwrap();
    for name in ["agents.toml", "resources.toml", "travel.cedar"] {
        std::fs::copy(example_policies().join(name), folder.path().join(name)).unwrap();
    }
    std::fs::create_dir(folder.path().join("tests")).unwrap();
    std::fs::copy(example_policies().join("tests/travel.toml"), folder.path().join("tests/travel.toml")).unwrap();
    folder
}

#[test]
fn check_passes_the_example_and_fails_on_unknown_names_with_every_finding() {
    let (ok, stdout, stderr) = baton(&example_policies(), &["check"]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("4 agents, 3 resources, 8 rules, 16 test cases"), "{stdout}");
    assert!(!stdout.contains("error:") && !stdout.contains("warning:"), "{stdout}");

    let folder = example_copy();
    std::fs::write(
        folder.path().join("typos.cedar"),
        "@id(\"typo\")\npermit (principal == Agent::\"bookr\", action, resource == Scope::\"flights.bok\");\n\
         @id(\"shadowed\")\npermit (principal == Agent::\"planner\", action, resource == Scope::\"calendar.write\")\n\
         when { context.target == \"bokker\" };\n\
         @id(\"no-calendar-writes\")\nforbid (principal, action, resource == Scope::\"calendar.write\");\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = baton(folder.path(), &["check"]);
    assert!(!ok, "unknown names must fail the check: {stdout}");
    for expected in [
        "error: rule `typos.cedar#typo` names the agent `bookr`, which is not registered",
        "error: rule `typos.cedar#typo` names the scope `flights.bok`, which is not registered",
        "error: rule `typos.cedar#shadowed` names the target `bokker`, which is not registered",
        "warning: rule `typos.cedar#typo` can never match",
        "warning: rule `typos.cedar#shadowed` can never grant anything: unconditional forbid \
         `typos.cedar#no-calendar-writes`",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in:\n{stdout}");
    }
    assert!(stderr.contains("3 errors"), "{stderr}");
}

/// Cedar's own diagnostics, as a compiler's read: the file, line and column
/// of the mistake, the line itself with the span marked, and Cedar's help.
#[test]
fn check_names_the_file_line_and_column_of_a_syntax_or_schema_error() {
    let folder = example_copy();
    let broken = folder.path().join("broken.cedar");
    // Line 4, column 24: the `}` where an operand should be.
    std::fs::write(
        &broken,
        "// a rule\n@id(\"broken\")\npermit (principal, action, resource)\nwhen { context.depth > };\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = baton(folder.path(), &["check"]);
    assert!(!ok, "{stdout}");
    let expected = format!("{}:4:24: unexpected token `}}`", broken.display());
    assert!(stdout.contains(&expected), "{stdout}{stderr}");
    assert!(
        stdout.contains("    4 | when { context.depth > };\n      |                        ^ expected"),
        "{stdout}"
    );
    assert!(!stdout.contains("ParseErrors") && !stdout.contains("NonEmpty"), "no Debug dump: {stdout}");

    // A rule that parses but breaks the schema: the attribute's span.
    std::fs::write(
        &broken,
        "@id(\"broken\")\npermit (principal, action, resource)\nwhen { principal.clearance == 3 };\n",
    )
    .unwrap();
    let (ok, stdout, _) = baton(folder.path(), &["check"]);
    assert!(!ok, "{stdout}");
    assert!(stdout.contains(&format!("{}:3:8: ", broken.display())) && stdout.contains("`clearance`"), "{stdout}");
    assert!(stdout.contains("      |        ^^^^^^^^^^^^^^^^^^^"), "{stdout}");
}

#[test]
fn check_names_agents_without_owner_purpose_or_expiry() {
    let folder = example_copy();
    let agents = std::fs::read_to_string(folder.path().join("agents.toml")).unwrap()
        + "\n[[agents]]\nid = \"stray\"\nsecret_sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n";
    std::fs::write(folder.path().join("agents.toml"), agents).unwrap();
    let (ok, stdout, _) = baton(folder.path(), &["check"]);
    assert!(!ok);
    assert!(stdout.contains("error: agent `stray` has no `owner`: no one answers for it"), "{stdout}");
    for field in ["`owner`", "`purpose`", "`expires`"] {
        assert!(stdout.lines().any(|line| line.contains("`stray`") && line.contains(field)), "{field}: {stdout}");
    }
}

#[test]
fn check_warns_of_an_agent_already_past_its_expiry() {
    let folder = example_copy();
    let agents = std::fs::read_to_string(folder.path().join("agents.toml")).unwrap()
        + "\n[[agents]]\nid = \"retired\"\nowner = \"ops@example.com\"\npurpose = \"Old reports\"\n\
           expires = 2020-01-01\nsecret_sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n";
    std::fs::write(folder.path().join("agents.toml"), agents).unwrap();
    let (ok, stdout, stderr) = baton(folder.path(), &["check"]);
    let expected =
        "warning: agent `retired` expired on 2020-01-01 and gets nothing: remove it from agents.toml or renew it";
    assert!(stdout.contains(expected), "missing {expected:?} in:\n{stdout}");
    assert!(ok, "a warning does not fail the check: {stdout}{stderr}");
}

#[test]
fn test_runs_the_shipped_cases_and_fails_on_a_wrong_expectation() {
    let (ok, stdout, stderr) = baton(&example_policies(), &["test"]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("PASS  travel.toml: calendar.write never reaches the booker"), "{stdout}");
    assert!(stdout.contains("policy cases: 16 passed, 0 failed"), "{stdout}");

    // A rule change that lets calendar.write through is caught by the case.
    let folder = example_copy();
    std::fs::write(
        folder.path().join("leak.cedar"),
        "permit (principal == Agent::\"planner\", action == Action::\"exchange\", resource == Scope::\"calendar.write\") \
         when { context.target == \"booker\" };\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = baton(folder.path(), &["test"]);
    assert!(!ok);
    assert!(stdout.contains("FAIL  travel.toml: calendar.write never reaches the booker"), "{stdout}");
    assert!(stdout.contains("expected: refused: not_permitted (calendar.write)"), "{stdout}");
    assert!(stderr.contains("policy test cases failed"), "{stderr}");

    // A misspelt key in a case file is refused by name.
    let folder = example_copy();
    std::fs::write(
        folder.path().join("tests/typo.toml"),
        "[[case]]\nname = 'x'\n[case.request]\naction = 'issue'\nagent = 'orchestrator'\nscope = ['a']\n\
         [case.expect]\ngranted = []\n",
    )
    .unwrap();
    let (ok, _, stderr) = baton(folder.path(), &["test"]);
    assert!(!ok);
    assert!(stderr.contains("unknown field `scope`"), "{stderr}");
}

#[test]
fn explain_prints_each_scope_with_its_rules() {
    let (ok, stdout, stderr) = baton(
        &example_policies(),
        &[
            "explain",
            "--agent",
            "booker",
            "--subject",
            "orchestrator",
            "--target",
            "https://api.airline.example",
            "--parent-scope",
            "flights.read flights.book",
            "--scope",
            "flights.book",
            "--at",
            "2026-12-01T00:00:00Z",
        ],
    );
    assert!(ok, "{stderr}");
    let book = stdout.lines().find(|line| line.trim_start().starts_with("flights.book")).unwrap();
    assert!(book.contains("asked") && book.contains("denied"), "{stdout}");
    assert!(book.contains("permitted by travel.cedar#booker-to-airline"), "{stdout}");
    assert!(book.contains("forbidden by travel.cedar#bookings-go-through-the-planner"), "{stdout}");
    assert!(stdout.contains("result: refused: scope `flights.book` is not permitted (invalid_scope)"), "{stdout}");

    let (ok, stdout, _) = baton(
        &example_policies(),
        &["explain", "--action", "issue", "--agent", "orchestrator", "--at", "2026-12-01T00:00:00Z", "--json"],
    );
    assert!(ok);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["target"], "planner");
    assert_eq!(json["outcome"]["result"], "granted");
    assert_eq!(json["outcome"]["rules"], serde_json::json!(["travel.cedar#orchestrator-to-planner"]));
}
