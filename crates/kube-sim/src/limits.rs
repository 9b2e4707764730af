//! Size limits a real cluster enforces: the apiserver's request body limit, the object validation limits
//! of ObjectMeta, ConfigMaps and Secrets, and etcd's request size limit.

use crate::error::{ApiError, ApiResult, Cause};
use crate::registry::ResourceType;
use serde_json::Value;

/// `--max-request-bytes` of etcd, its default (1.5 MiB).
pub const ETCD_MAX_REQUEST_BYTES: usize = 1_572_864;
/// The apiserver's `MaxRequestBodyBytes`: twice etcd's limit, as JSON is bigger than the protobuf
/// stored (apiserver/pkg/server/config.go).
pub const MAX_REQUEST_BODY_BYTES: usize = 3 * 1024 * 1024;
/// `TotalAnnotationSizeLimitB` of ObjectMeta validation.
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;
/// `core.MaxSecretSize`, which ConfigMaps share.
const MAX_DATA_BYTES: usize = 1024 * 1024;

/// Refuses a request body over the limit, as `limitedReadBody` does (413).
pub fn check_request_body(len: usize) -> ApiResult<()> {
    if len > MAX_REQUEST_BODY_BYTES {
        return Err(ApiError::TooLarge(format!(
            "Request entity too large: limit is {MAX_REQUEST_BODY_BYTES}"
        )));
    }
    Ok(())
}

/// ObjectMeta and data size validation (422): annotations of every object, ConfigMap `data` plus
/// `binaryData`, Secret `data`.
pub fn validate(rt: &ResourceType, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let annotations: usize = obj["metadata"]["annotations"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
        .sum();
    if annotations > MAX_ANNOTATIONS_BYTES {
        causes.push(Cause::too_long(
            "metadata.annotations",
            MAX_ANNOTATIONS_BYTES as u64,
        ));
    }
    let values = |field: &str| -> usize {
        obj[field]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(_, v)| v.as_str().map_or(0, str::len))
            .sum()
    };
    match (rt.group.as_str(), rt.kind.as_str()) {
        // ValidateConfigMap reports the total under the field path "[]".
        ("", "ConfigMap") if values("data") + values("binaryData") > MAX_DATA_BYTES => {
            causes.push(Cause::too_long("[]", MAX_DATA_BYTES as u64));
        }
        // Secret data is base64 in JSON; the limit counts the decoded bytes.
        ("", "Secret") if values("data") / 4 * 3 > MAX_DATA_BYTES => {
            causes.push(Cause::too_long("data", MAX_DATA_BYTES as u64));
        }
        _ => {}
    }
    causes
}

/// The size of the etcd request that stores `obj`: its key and the object as the simulation stores it
/// (compact JSON; a real apiserver stores built-in kinds as protobuf, a little smaller).
pub fn etcd_request_size(rt: &ResourceType, namespace: &str, obj: &Value) -> usize {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let key = if namespace.is_empty() {
        format!("/registry/{}/{name}", rt.storage_key())
    } else {
        format!("/registry/{}/{namespace}/{name}", rt.storage_key())
    };
    key.len() + serde_json::to_vec(obj).map_or(0, |b| b.len())
}

/// etcd refuses a put over its limit; the apiserver passes the error on as a 500 without a reason
/// (kubernetes/kubernetes#112152).
pub fn check_etcd_request(rt: &ResourceType, namespace: &str, obj: &Value) -> ApiResult<()> {
    if etcd_request_size(rt, namespace, obj) > ETCD_MAX_REQUEST_BYTES {
        return Err(ApiError::Storage("etcdserver: request is too large".into()));
    }
    Ok(())
}
