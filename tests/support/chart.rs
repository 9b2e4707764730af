//! Renders charts/appservicelink with a real Helm engine through `.ci/chart.py` (helm-python-sdk),
//! installed by `.ci/run` (`pip install --ignore-requires-python -r .ci/requirements.txt`).
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

pub const CHART_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/appservicelink");
pub const NAMESPACE: &str = "appservicelink-system";
pub const RELEASE: &str = "asl";

fn chart_py(command: &str, values: &Value) -> std::process::Output {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/chart.py");
    Command::new(&python)
        .arg(script)
        .args([command, "--name", RELEASE, "--namespace", NAMESPACE])
        .arg("--values-json")
        .arg(values.to_string())
        .output()
        .unwrap_or_else(|e| panic!("{python} does not run ({e}); the chart tests need Python 3"))
}

/// The chart rendered with `values` over values.yaml, as JSON objects. Fails the test when
/// rendering fails.
pub fn render(values: Value) -> Vec<Value> {
    let out = chart_py("render", &values);
    assert!(
        out.status.success(),
        "rendering the chart with {values} failed (install the renderer with `pip install --ignore-requires-python -r .ci/requirements.txt`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

/// Why rendering with `values` fails. Fails the test when it renders.
pub fn render_error(values: Value) -> String {
    let out = chart_py("render", &values);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "the chart rendered with {values}, but should not have"
    );
    assert!(
        stderr.contains("render failed"),
        "the renderer itself failed, not the chart: {stderr}"
    );
    stderr
}

/// The rendered NOTES.txt.
pub fn notes(values: Value) -> String {
    let out = chart_py("notes", &values);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The only object of `kind`, or a failure naming what was rendered.
pub fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {kind}, rendered: {:?}",
        kinds(objects)
    );
    found[0]
}

pub fn all<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

pub fn kinds(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or("?"),
                o["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// The operator container of the Deployment.
pub fn container(objects: &[Value]) -> Value {
    let deployment = one(objects, "Deployment");
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one container");
    containers[0].clone()
}

/// The container's args.
pub fn args(objects: &[Value]) -> Vec<String> {
    container(objects)["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect()
}

/// The container's env var `name`, as its spec.
pub fn env<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}
