//! Shared helpers for the integration tests: a bare HTTP client, a watch reader, bounded waits, kubectl.
#![allow(dead_code)]

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use kube_sim::{SimCluster, SimOptions};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Generous bound for anything asynchronous; tests poll for conditions, never assert on timing.
pub const WAIT: Duration = Duration::from_secs(20);

pub async fn start() -> SimCluster {
    start_with(SimOptions::default()).await
}

pub async fn start_with(opts: SimOptions) -> SimCluster {
    SimCluster::start(opts).await.expect("sim starts")
}

pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: hyper::HeaderMap,
}

async fn send(
    url: &str,
    method: &str,
    path: &str,
    content_type: &str,
    accept: &str,
    body: Option<String>,
) -> hyper::Response<Incoming> {
    let authority = url.trim_start_matches("http://").to_string();
    let stream = tokio::net::TcpStream::connect(&authority)
        .await
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", authority)
        .header("content-type", content_type)
        .header("accept", accept)
        .header("user-agent", "kube-sim-tests/1.0")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .expect("request");
    sender.send_request(request).await.expect("response")
}

/// One request; the body is parsed as JSON (or `Value::String` when it is not JSON).
pub async fn call(
    url: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: Option<String>,
) -> Reply {
    call_accepting(url, method, path, content_type, "application/json", body).await
}

pub async fn call_accepting(
    url: &str,
    method: &str,
    path: &str,
    content_type: &str,
    accept: &str,
    body: Option<String>,
) -> Reply {
    let response = send(url, method, path, content_type, accept, body).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    Reply {
        status,
        body,
        headers,
    }
}

pub async fn get(sim: &SimCluster, path: &str) -> Reply {
    call(&sim.url(), "GET", path, "application/json", None).await
}

/// A GET negotiating a `meta.k8s.io/v1 Table`, as `kubectl get` does.
pub async fn get_table(sim: &SimCluster, path: &str) -> Value {
    const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    call_accepting(&sim.url(), "GET", path, "application/json", TABLE, None)
        .await
        .body
}

pub async fn post(sim: &SimCluster, path: &str, body: &Value) -> Reply {
    call(
        &sim.url(),
        "POST",
        path,
        "application/json",
        Some(body.to_string()),
    )
    .await
}

pub async fn put(sim: &SimCluster, path: &str, body: &Value) -> Reply {
    call(
        &sim.url(),
        "PUT",
        path,
        "application/json",
        Some(body.to_string()),
    )
    .await
}

pub async fn delete(sim: &SimCluster, path: &str) -> Reply {
    call(&sim.url(), "DELETE", path, "application/json", None).await
}

pub async fn merge_patch(sim: &SimCluster, path: &str, body: &Value) -> Reply {
    call(
        &sim.url(),
        "PATCH",
        path,
        "application/merge-patch+json",
        Some(body.to_string()),
    )
    .await
}

pub async fn json_patch(sim: &SimCluster, path: &str, body: &Value) -> Reply {
    call(
        &sim.url(),
        "PATCH",
        path,
        "application/json-patch+json",
        Some(body.to_string()),
    )
    .await
}

/// Server-side apply of a YAML (or JSON) document as `manager`.
pub async fn apply(sim: &SimCluster, path: &str, manager: &str, force: bool, body: &str) -> Reply {
    let sep = if path.contains('?') { '&' } else { '?' };
    let path = format!("{path}{sep}fieldManager={manager}&force={force}");
    call(
        &sim.url(),
        "PATCH",
        &path,
        "application/apply-patch+yaml",
        Some(body.to_string()),
    )
    .await
}

pub fn rv(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .expect("resourceVersion")
        .parse()
        .expect("numeric")
}

/// The managers owning `path` (e.g. `["f:spec", "f:type"]`) according to managedFields.
pub fn owners(obj: &Value, path: &[&str]) -> Vec<String> {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            path.iter()
                .try_fold(&e["fieldsV1"], |node, key| node.get(*key))
                .is_some()
        })
        .map(|e| e["manager"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Polls `check` until it returns `Some`, failing with `what` after [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {WAIT:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A streaming watch read line by line.
pub struct Watch {
    body: Incoming,
    buffer: Vec<u8>,
    pub status: u16,
}

impl Watch {
    pub async fn open(sim: &SimCluster, path: &str) -> Watch {
        let response = send(
            &sim.url(),
            "GET",
            path,
            "application/json",
            "application/json",
            None,
        )
        .await;
        let status = response.status().as_u16();
        Watch {
            body: response.into_body(),
            buffer: Vec::new(),
            status,
        }
    }

    /// The next event, or `None` when the stream ended (cleanly or not). Fails after [`WAIT`].
    pub async fn next(&mut self) -> Option<Value> {
        self.next_or_end().await.ok().flatten()
    }

    /// The next event; `Ok(None)` when the server ended the stream cleanly (the final chunk), `Err`
    /// when the connection broke off mid-stream. Fails after [`WAIT`].
    pub async fn next_or_end(&mut self) -> Result<Option<Value>, String> {
        tokio::time::timeout(WAIT, self.next_unbounded())
            .await
            .expect("a watch event within the wait bound")
    }

    async fn next_unbounded(&mut self) -> Result<Option<Value>, String> {
        loop {
            if let Some(pos) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=pos).collect();
                return Ok(Some(serde_json::from_slice(&line).expect("event is JSON")));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.buffer.extend_from_slice(data);
                    }
                }
                Some(Err(e)) => return Err(e.to_string()),
                None => return Ok(None),
            }
        }
    }

    /// The next event that is not a BOOKMARK.
    pub async fn next_change(&mut self) -> Option<Value> {
        loop {
            let event = self.next().await?;
            if event["type"] != "BOOKMARK" {
                return Some(event);
            }
        }
    }
}

/// kubectl against the sim, with its own kubeconfig and discovery cache.
pub struct Kubectl {
    dir: tempfile::TempDir,
}

pub struct KubectlOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Kubectl {
    pub fn new(sim: &SimCluster) -> Kubectl {
        let dir = tempfile::tempdir().expect("tempdir");
        sim.write_kubeconfig(&dir.path().join("kubeconfig"))
            .expect("kubeconfig");
        Kubectl { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, content).expect("write manifest");
        path
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(self.path("kubeconfig"))
            .arg("--cache-dir")
            .arg(self.path("cache"))
            .args(args)
            .env_remove("KUBECONFIG")
            .kill_on_drop(true);
        cmd
    }

    pub async fn run(&self, args: &[&str]) -> KubectlOutput {
        let output = tokio::time::timeout(WAIT, self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish within {WAIT:?}"))
            .expect("kubectl runs");
        KubectlOutput {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs and requires success, returning stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.success,
            "kubectl {args:?} failed:\nstdout: {}\nstderr: {}",
            out.stdout, out.stderr
        );
        out.stdout
    }

    pub fn spawn(&self, args: &[&str]) -> tokio::process::Child {
        self.command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl spawns")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The AppServiceLink-like CRD used across tests: cluster-scoped, status subresource, printer columns,
/// defaults, enum and a CEL rule.
pub const CRD_YAML: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: appservicelinks.appservicelink.io
spec:
  group: appservicelink.io
  scope: Cluster
  names:
    plural: appservicelinks
    singular: appservicelink
    kind: AppServiceLink
    shortNames: [asl]
  versions:
  - name: v1alpha1
    served: true
    storage: true
    subresources:
      status: {}
    additionalPrinterColumns:
    - name: Zone
      type: string
      jsonPath: .spec.dns.zone
    - name: DNS-IP
      type: string
      jsonPath: .status.dnsServerIP
    - name: Ready
      type: string
      jsonPath: .status.conditions[?(@.type=="Ready")].status
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [dns]
            properties:
              dns:
                type: object
                required: [zone]
                properties:
                  zone:
                    type: string
                    maxLength: 253
                    x-kubernetes-validations:
                    - rule: "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')"
                      message: "zone must be a DNS name"
              appServiceDnsMode:
                type: string
                default: AppSettings
                enum: [AppSettings, SiteDnsConfiguration]
          status:
            type: object
            properties:
              dnsServerIP: {type: string}
              observedGeneration: {type: integer}
              conditions:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [type]
                items:
                  type: object
                  required: [type, status]
                  properties:
                    type: {type: string}
                    status: {type: string}
                    reason: {type: string}
"#;

pub const ASL_PATH: &str = "/apis/appservicelink.io/v1alpha1/appservicelinks";

/// Creates the CRD over HTTP and waits until its resource is served.
pub async fn install_crd(sim: &SimCluster) {
    let crd: Value = serde_norway::from_str(CRD_YAML).expect("CRD yaml");
    let reply = post(
        sim,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        &crd,
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let list = get(sim, ASL_PATH).await;
    assert_eq!(list.status, 200, "{}", list.body);
}
