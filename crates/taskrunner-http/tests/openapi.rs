//! The served OpenAPI document (SPEC §6.4): the embedded contract is the reference one (when a
//! reference copy is at hand), the served document contains every path, schema and enum of the
//! contract unchanged, and the endpoints answer with ETags, 304s and signatures.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

use axum::body::Body;
use common::*;
use serde_json::Value;

/// Where the reference contract is, if anywhere: `TASKRUNNER_CONTRACT` (it must then be
/// readable). The repository reads nothing outside itself, so without it the comparison is
/// skipped.
fn reference_contract() -> Option<PathBuf> {
    std::env::var_os("TASKRUNNER_CONTRACT").map(PathBuf::from)
}

#[test]
fn the_embedded_contract_is_the_shared_one() {
    let Some(path) = reference_contract() else {
        eprintln!(
            "skipped: set TASKRUNNER_CONTRACT to compare the embedded copy with the reference contract"
        );
        return;
    };
    let reference = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the reference contract {} cannot be read: {e}",
            path.display()
        )
    });
    assert!(
        reference == taskrunner_http::CONTRACT_YAML,
        "crates/taskrunner-http/openapi/contract.yaml differs from {}: copy it again",
        path.display()
    );
}

/// `served` contains `contract`: every key with a value containing the contract's, lists
/// starting with the contract's items; `enum` and `required` lists exactly equal.
fn contains(served: &Value, contract: &Value, at: &str, problems: &mut Vec<String>) {
    match (served, contract) {
        (Value::Object(s), Value::Object(c)) => {
            for (key, value) in c {
                let here = format!("{at}/{key}");
                match s.get(key) {
                    None => problems.push(format!("{here} is missing")),
                    Some(v) if key == "enum" || key == "required" => {
                        if v != value {
                            problems.push(format!("{here} changed: {v} != {value}"));
                        }
                    }
                    Some(v) => contains(v, value, &here, problems),
                }
            }
        }
        (Value::Array(s), Value::Array(c)) => {
            if s.len() < c.len() {
                problems.push(format!("{at} lost items"));
                return;
            }
            for (i, (sv, cv)) in s.iter().zip(c).enumerate() {
                contains(sv, cv, &format!("{at}/{i}"), problems);
            }
        }
        (s, c) if s == c => {}
        (s, c) => problems.push(format!("{at} changed: {s} != {c}")),
    }
}

#[test]
fn the_served_spec_keeps_the_contract_unchanged() {
    let served = taskrunner_http::ServedSpec::build("test", None).unwrap();
    let mut problems = Vec::new();
    contains(&served.document, contract(), "", &mut problems);
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(served.document["openapi"], "3.1.0");
    assert_eq!(
        served.document["info"]["version"],
        contract()["info"]["version"]
    );
    // The extensions are there.
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi",
        "/openapi.json",
    ] {
        assert!(served.document["paths"][path]["get"].is_object(), "{path}");
    }
    assert!(served.document["paths"]["/v1/task-runner/runs"]["get"].is_object());
    let step = &served.document["components"]["schemas"]["RunStateStep"]["properties"];
    assert!(step["templateId"].is_object() && step["parentStepId"].is_object());
}

#[test]
fn every_ref_of_the_served_spec_resolves() {
    let served = taskrunner_http::ServedSpec::build("test", None).unwrap();
    fn walk(v: &Value, root: &Value, bad: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(r)) = o.get("$ref") {
                    let pointer = r.strip_prefix('#').unwrap_or(r);
                    if root.pointer(pointer).is_none() {
                        bad.push(r.clone());
                    }
                }
                o.values().for_each(|x| walk(x, root, bad));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, root, bad)),
            _ => {}
        }
    }
    let mut bad = Vec::new();
    walk(&served.document, &served.document, &mut bad);
    assert!(bad.is_empty(), "{bad:?}");
}

#[tokio::test]
async fn documents_have_etags_and_answer_304() {
    let app = app().await;
    for (uri, content_type) in [
        ("/openapi", "application/yaml"),
        ("/openapi.json", "application/json"),
    ] {
        let a = get(&app.router, uri).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.header("content-type"), Some(content_type));
        let etag = a.header("etag").unwrap().to_owned();
        assert_eq!(
            etag,
            format!("\"{}\"", taskrunner_store::sha256_hex(&a.bytes))
        );
        let again = send(
            &app.router,
            req("GET", uri)
                .header("if-none-match", &etag)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(again.status, 304);
        assert!(again.bytes.is_empty());
        let other = send(
            &app.router,
            req("GET", uri)
                .header("if-none-match", "\"nope\"")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(other.status, 200);
    }
    let json: Value = get(&app.router, "/openapi.json").await.json();
    assert_eq!(json["info"]["version"], "0.1.0-draft");
}

#[tokio::test]
async fn well_known_describes_and_signs_the_yaml() {
    let app = app().await;
    let yaml = get(&app.router, "/openapi").await;
    let a = get(&app.router, "/.well-known/openapi").await;
    assert_eq!(a.status, 200);
    let body = a.json();
    assert_schema("OpenApiMetadata", &body);
    assert_eq!(body["specUrl"], "/openapi");
    assert_eq!(body["version"], "0.1.0-draft");
    assert_eq!(body["etag"], yaml.header("etag").unwrap());
    assert_eq!(a.header("etag"), yaml.header("etag"));
    let signature = format!("sha256:{}", taskrunner_store::sha256_hex(&yaml.bytes));
    assert_eq!(body["signature"], signature.as_str());
    assert_eq!(a.header("x-signature"), Some(signature.as_str()));

    let signed = app_with(std::sync::Arc::new(taskrunner_auth::NoAuth), |c| {
        c.spec_signing_key = Some([9; 32]);
        c.build_version = "20260101.1".into();
    })
    .await;
    let body = get(&signed.router, "/.well-known/openapi").await.json();
    assert!(body["signature"].as_str().unwrap().starts_with("ed25519:"));
    assert_eq!(body["buildVersion"], "20260101.1");
}

/// The overlay's request examples are runnable here (they feed contract testing with real runs).
#[tokio::test]
async fn the_overlay_examples_run() {
    let app = app().await;
    let served = taskrunner_http::ServedSpec::build("test", None).unwrap();
    for (path, want) in [
        ("/v1/task-runner/simulations", 200),
        ("/v1/task-runner/runs", 201),
    ] {
        let example = served.document["paths"][path]["post"]["requestBody"]["content"]
            ["application/json"]["examples"]["runnable-here"]["value"]
            .clone();
        let a = post(&app.router, path, &example).await;
        assert_eq!(
            a.status,
            want,
            "{path}: {}",
            String::from_utf8_lossy(&a.bytes)
        );
    }
}
