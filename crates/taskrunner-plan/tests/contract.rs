//! The contract's examples: the basic simulation request must simulate to the contract's example
//! response (with a real hash), and every field we emit must exist in the contract's schemas.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use serde_json::{Value, json};

/// The contract, from the one copy the repository keeps: the file `taskrunner-http` embeds and
/// serves (this crate cannot depend on the HTTP crate, so it reads the file).
fn contract() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../taskrunner-http/openapi/contract.yaml"
    );
    let text = std::fs::read_to_string(path).expect("the contract copy of taskrunner-http");
    serde_saphyr::from_str(&text).expect("the contract is valid YAML")
}

/// Checks `value` against an OpenAPI schema of the contract: every member we write is declared,
/// every required member is present, enums and primitive types hold.
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference.trim_start_matches("#/components/schemas/");
        return conforms(
            doc,
            &doc["components"]["schemas"][name],
            value,
            at,
            problems,
        );
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        problems.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
    let ok = match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "boolean" => value.is_boolean(),
        _ => true,
    };
    if !ok {
        problems.push(format!("{at}: expected {ty}, found {value}"));
        return;
    }
    if let (Some(props), Some(obj)) = (schema.get("properties"), value.as_object()) {
        for (k, v) in obj {
            match props.get(k) {
                Some(s) => conforms(doc, s, v, &format!("{at}.{k}"), problems),
                None => problems.push(format!("{at}.{k}: not in the contract")),
            }
        }
        for req in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !obj.contains_key(req.as_str().unwrap_or_default()) {
                problems.push(format!("{at}: missing required {req}"));
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            conforms(doc, items, v, &format!("{at}[{i}]"), problems);
        }
    }
}

#[test]
fn every_fixture_simulation_conforms_to_the_contract() {
    let doc = contract();
    let schema = json!({"$ref": "#/components/schemas/SimulationResponse"});
    let dir = format!("{}/../../fixtures/packs/ok", env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let inputs = std::fs::read_to_string(path.with_extension("inputs.json"))
            .map(|t| serde_json::from_str(&t).unwrap())
            .unwrap_or_else(|_| json!({}));
        let sim = simulate(&name, inputs);
        let mut problems = Vec::new();
        conforms(&doc, &schema, &sim, "$", &mut problems);
        assert!(problems.is_empty(), "{name}:\n{}", problems.join("\n"));
        checked += 1;
    }
    assert!(checked >= 30);
}

#[test]
fn the_checker_catches_a_stray_field() {
    let doc = contract();
    let schema = json!({"$ref": "#/components/schemas/SimulationStep"});
    let bad = json!({"id": "a", "templateId": "a", "kind": "Job", "enabled": true, "status": "Pending", "children": [], "extra": 1});
    let mut problems = Vec::new();
    conforms(&doc, &schema, &bad, "$", &mut problems);
    assert_eq!(problems.len(), 2, "{problems:?}");
}

fn simulate(file: &str, inputs: Value) -> Value {
    let path = format!(
        "{}/../../fixtures/packs/ok/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let yaml = std::fs::read_to_string(path).unwrap();
    let plan = taskrunner_plan::plan_yaml(&yaml, inputs.as_object().unwrap()).unwrap();
    serde_json::to_value(taskrunner_plan::simulate(&plan)).unwrap()
}

#[test]
fn basic_simulation_matches_the_contract_example() {
    let mut got = simulate(
        "contract-basic-simulation.yaml",
        json!({"target": "registry.example.com/app:v1.2.3"}),
    );
    let hash = got["planHash"].as_str().unwrap().to_owned();
    assert!(hash.starts_with("sha256:") && hash.len() == 71, "{hash}");
    got["planHash"] = json!("sha256:a1b2c3d4e5f6...");
    let expected = json!({
        "planHash": "sha256:a1b2c3d4e5f6...",
        "failurePolicy": {"maxAttempts": 1, "backoffSeconds": 0, "continueOnError": false},
        "steps": [{
            "id": "scan",
            "templateId": "scan",
            "kind": "Run",
            "enabled": true,
            "status": "Pending",
            "uses": "builtin:scanner",
            "children": []
        }],
        "outputs": [],
        "hasPendingApprovals": false
    });
    assert_eq!(got, expected);
}

#[test]
fn create_run_example_requires_approval() {
    let got = simulate("contract-create-run.yaml", json!({}));
    assert_eq!(got["hasPendingApprovals"], json!(true));
    let steps = got["steps"].as_array().unwrap();
    let summary: Vec<(&str, &str)> = steps
        .iter()
        .map(|s| (s["id"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [
            ("build", "Pending"),
            ("approval", "RequiresApproval"),
            ("deploy", "Pending")
        ]
    );
    assert_eq!(steps[1]["approvalId"], json!("security-review"));
    assert_eq!(
        steps[1]["gateMessage"],
        json!("Security review required before deploy")
    );
}

#[test]
fn missing_required_input_is_a_plan_error_at_its_path() {
    let path = format!(
        "{}/../../fixtures/packs/ok/contract-basic-simulation.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let yaml = std::fs::read_to_string(path).unwrap();
    let err = taskrunner_plan::plan_yaml(&yaml, &serde_json::Map::new()).unwrap_err();
    let response = err.to_response();
    assert_eq!(response["errors"][0]["path"], json!("inputs.target"));
    assert_eq!(response["errors"].as_array().unwrap().len(), 1);
}
