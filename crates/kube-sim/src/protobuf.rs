//! Decoding of the Kubernetes protobuf envelope for the few kinds kubectl creates through typed clients
//! (`kubectl create namespace|configmap|secret` send `application/vnd.kubernetes.protobuf`).
//! Responses are always JSON, which kubectl also accepts.

use crate::error::ApiError;
use base64::Engine as _;
use serde_json::{json, Map, Value};

const MAGIC: &[u8] = b"k8s\0";

/// One field of a protobuf message: its number and raw payload.
enum Field<'a> {
    Varint(u32, u64),
    Bytes(u32, &'a [u8]),
}

fn fields(mut buf: &[u8]) -> Result<Vec<Field<'_>>, String> {
    fn varint(buf: &mut &[u8]) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = buf.split_first().ok_or("truncated varint")?;
            *buf = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint too long".into())
    }
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let number = (key >> 3) as u32;
        match key & 7 {
            0 => out.push(Field::Varint(number, varint(&mut buf)?)),
            2 => {
                let len = varint(&mut buf)? as usize;
                if len > buf.len() {
                    return Err("truncated field".into());
                }
                let (payload, rest) = buf.split_at(len);
                out.push(Field::Bytes(number, payload));
                buf = rest;
            }
            1 => buf = buf.get(8..).ok_or("truncated fixed64")?,
            5 => buf = buf.get(4..).ok_or("truncated fixed32")?,
            other => return Err(format!("unsupported wire type {other}")),
        }
    }
    Ok(out)
}

fn string(bytes: &[u8]) -> Value {
    json!(String::from_utf8_lossy(bytes))
}

/// A `map<string, string|bytes>` entry.
fn map_entry(bytes: &[u8], value_is_bytes: bool) -> Result<(String, Value), String> {
    let (mut key, mut value) = (String::new(), Value::String(String::new()));
    for f in fields(bytes)? {
        match f {
            Field::Bytes(1, k) => key = String::from_utf8_lossy(k).into_owned(),
            Field::Bytes(2, v) if value_is_bytes => {
                value = json!(base64::engine::general_purpose::STANDARD.encode(v))
            }
            Field::Bytes(2, v) => value = string(v),
            _ => {}
        }
    }
    Ok((key, value))
}

fn insert_entry(obj: &mut Map<String, Value>, field: &str, entry: (String, Value)) {
    let map = obj.entry(field).or_insert_with(|| json!({}));
    map[entry.0] = entry.1;
}

fn push(obj: &mut Map<String, Value>, field: &str, value: Value) {
    if let Some(list) = obj.entry(field).or_insert_with(|| json!([])).as_array_mut() {
        list.push(value);
    }
}

/// The ObjectMeta fields a create request carries.
fn object_meta(bytes: &[u8]) -> Result<Value, String> {
    let mut meta = Map::new();
    for f in fields(bytes)? {
        match f {
            // proto3 writes empty strings; JSON omits them.
            Field::Bytes(_, []) => {}
            Field::Bytes(1, v) => _ = meta.insert("name".into(), string(v)),
            Field::Bytes(2, v) => _ = meta.insert("generateName".into(), string(v)),
            Field::Bytes(3, v) => _ = meta.insert("namespace".into(), string(v)),
            Field::Bytes(6, v) => _ = meta.insert("resourceVersion".into(), string(v)),
            Field::Bytes(11, v) => insert_entry(&mut meta, "labels", map_entry(v, false)?),
            Field::Bytes(12, v) => insert_entry(&mut meta, "annotations", map_entry(v, false)?),
            Field::Bytes(13, v) => push(&mut meta, "ownerReferences", owner_reference(v)?),
            Field::Bytes(14, v) => push(&mut meta, "finalizers", string(v)),
            _ => {}
        }
    }
    Ok(Value::Object(meta))
}

fn owner_reference(bytes: &[u8]) -> Result<Value, String> {
    let mut r = Map::new();
    for f in fields(bytes)? {
        match f {
            Field::Bytes(1, v) => _ = r.insert("kind".into(), string(v)),
            Field::Bytes(3, v) => _ = r.insert("name".into(), string(v)),
            Field::Bytes(4, v) => _ = r.insert("uid".into(), string(v)),
            Field::Bytes(5, v) => _ = r.insert("apiVersion".into(), string(v)),
            Field::Varint(6, v) => _ = r.insert("controller".into(), json!(v != 0)),
            Field::Varint(7, v) => _ = r.insert("blockOwnerDeletion".into(), json!(v != 0)),
            _ => {}
        }
    }
    Ok(Value::Object(r))
}

fn kind_body(kind: &str, bytes: &[u8]) -> Result<Map<String, Value>, String> {
    let mut obj = Map::new();
    for f in fields(bytes)? {
        match (kind, f) {
            (_, Field::Bytes(1, v)) => _ = obj.insert("metadata".into(), object_meta(v)?),
            ("Namespace", Field::Bytes(2, v)) => {
                let mut spec = Map::new();
                for sf in fields(v)? {
                    if let Field::Bytes(1, fin) = sf {
                        push(&mut spec, "finalizers", string(fin));
                    }
                }
                obj.insert("spec".into(), Value::Object(spec));
            }
            ("ConfigMap", Field::Bytes(2, v)) => {
                insert_entry(&mut obj, "data", map_entry(v, false)?)
            }
            ("ConfigMap", Field::Bytes(3, v)) => {
                insert_entry(&mut obj, "binaryData", map_entry(v, true)?)
            }
            ("ConfigMap", Field::Varint(4, v)) | ("Secret", Field::Varint(5, v)) => {
                _ = obj.insert("immutable".into(), json!(v != 0))
            }
            ("Secret", Field::Bytes(2, v)) => insert_entry(&mut obj, "data", map_entry(v, true)?),
            ("Secret", Field::Bytes(3, v)) => _ = obj.insert("type".into(), string(v)),
            ("Secret", Field::Bytes(4, v)) => {
                insert_entry(&mut obj, "stringData", map_entry(v, false)?)
            }
            _ => {}
        }
    }
    Ok(obj)
}

/// Decodes a protobuf request body into the JSON object it stands for.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let bad = |why: String| ApiError::BadRequest(format!("unable to decode protobuf body: {why}"));
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("missing k8s envelope".into()))?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for f in fields(envelope).map_err(bad)? {
        match f {
            Field::Bytes(1, type_meta) => {
                for tf in fields(type_meta).map_err(bad)? {
                    match tf {
                        Field::Bytes(1, v) => api_version = String::from_utf8_lossy(v).into_owned(),
                        Field::Bytes(2, v) => kind = String::from_utf8_lossy(v).into_owned(),
                        _ => {}
                    }
                }
            }
            Field::Bytes(2, v) => raw = v,
            _ => {}
        }
    }
    if !matches!(kind.as_str(), "Namespace" | "ConfigMap" | "Secret") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "kube-sim decodes protobuf only for Namespace, ConfigMap and Secret, not {kind:?}; send JSON"
        )));
    }
    let mut obj = kind_body(&kind, raw).map_err(bad)?;
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind));
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(number: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![((number << 3) | 2) as u8, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn decodes_a_namespace_like_kubectl_create_sends() {
        let meta = [
            field(1, b"demo"),
            field(11, &[field(1, b"team"), field(2, b"a")].concat()),
        ]
        .concat();
        let raw = field(1, &meta);
        let type_meta = [field(1, b"v1"), field(2, b"Namespace")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &raw)].concat();
        let obj = decode(&body).unwrap();
        assert_eq!(
            obj,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo", "labels": {"team": "a"}}})
        );
    }

    #[test]
    fn configmap_data_and_unsupported_kinds() {
        let raw = [
            field(1, &field(1, b"cm")),
            field(2, &[field(1, b"k"), field(2, b"v")].concat()),
        ]
        .concat();
        let type_meta = [field(1, b"v1"), field(2, b"ConfigMap")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &raw)].concat();
        assert_eq!(decode(&body).unwrap()["data"], json!({"k": "v"}));
        let type_meta = [field(1, b"apps/v1"), field(2, b"Deployment")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta)].concat();
        assert_eq!(decode(&body).unwrap_err().code(), 415);
    }
}
