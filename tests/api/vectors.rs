//! Data-driven cases from `tests/vectors/exchange/*.json`, each naming the
//! clause it checks. A case runs against the example policies after the
//! three-hop walk; `subject_token` names one of its tokens (`root`, `hop1`,
//! `hop2`) or is given literally. A case with `approved_by` must first answer
//! `authorization_pending`; that person approves, and the request is
//! repeated with `approval_id` before `expect` is checked.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::harness::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    rfc: String,
    description: String,
    /// The example agent authenticating with its dev secret; none when absent.
    agent: Option<String>,
    /// `root`, `hop1`, `hop2`, or a literal token; omitted for client credentials.
    subject_token: Option<String>,
    #[serde(default)]
    params: Map<String, Value>,
    /// The approver who approves the request before it is repeated (people's approval).
    approved_by: Option<String>,
    expect: Expect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    status: u16,
    error: Option<String>,
    scope: Option<String>,
    aud: Option<String>,
    issued_token_type: Option<String>,
}

#[tokio::test]
async fn exchange_vectors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/exchange");
    let mut paths: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|entry| entry.unwrap().path()).collect();
    paths.sort();
    assert!(paths.len() >= 10, "vectors missing from {}", dir.display());
    for path in paths {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let vector: Vector =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let harness = Harness::new();
        let [root, hop1, hop2] = harness.walk().await;
        let mut form: Vec<(String, String)> = Vec::new();
        if let Some(subject) = &vector.subject_token {
            let token = match subject.as_str() {
                "root" => root.clone(),
                "hop1" => hop1.clone(),
                "hop2" => hop2.clone(),
                literal => literal.to_owned(),
            };
            form.push(("grant_type".into(), EXCHANGE.into()));
            form.push(("subject_token".into(), token));
            form.push(("subject_token_type".into(), ACCESS_TOKEN.into()));
        }
        for (key, value) in &vector.params {
            let value = value.as_str().unwrap_or_else(|| panic!("{name}: params are strings"));
            form.retain(|(existing, _)| existing != key);
            form.push((key.clone(), value.to_owned()));
        }
        let send = |form: Vec<(String, String)>| {
            let (harness, agent) = (&harness, vector.agent.clone());
            async move {
                let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                match &agent {
                    Some(agent) => harness.as_agent(agent, &pairs).await,
                    None => harness.token(None, &pairs).await,
                }
            }
        };
        let mut response = send(form.clone()).await;
        if let Some(approver) = &vector.approved_by {
            let context = format!("{name}: asked first: {}", response.body);
            assert_eq!(response.body["error"], "authorization_pending", "{context}");
            let id = response.body["approval_id"].as_str().unwrap().to_owned();
            harness
                .broker
                .decide_approval(
                    &baton::store::ApprovalId(id.clone()),
                    approver,
                    true,
                    &baton::admin::Operator::AdminApi,
                )
                .await
                .unwrap();
            form.push(("approval_id".into(), id));
            response = send(form).await;
        }
        let context = format!("{name} ({}: {}): {}", vector.rfc, vector.description, response.body);
        assert_eq!(response.status.as_u16(), vector.expect.status, "{context}");
        assert_eq!(response.headers["cache-control"], "no-store", "{context}");
        match &vector.expect.error {
            Some(error) => {
                assert_eq!(response.body["error"], error.as_str(), "{context}");
                assert!(response.body.get("access_token").is_none(), "{context}");
            }
            None => {
                let claims = json_of(response.token());
                if let Some(scope) = &vector.expect.scope {
                    assert_eq!(response.body["scope"], scope.as_str(), "{context}");
                    assert_eq!(claims["scope"], scope.as_str(), "{context}");
                }
                if let Some(kind) = &vector.expect.issued_token_type {
                    assert_eq!(response.body["issued_token_type"], kind.as_str(), "{context}");
                }
                if let Some(aud) = &vector.expect.aud {
                    assert_eq!(claims["aud"], aud.as_str(), "{context}");
                }
            }
        }
    }
}
