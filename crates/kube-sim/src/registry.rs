//! The resource types the server knows: the built-in ones and those registered by CustomResourceDefinitions.

use serde_json::Value;
use std::cmp::Ordering;
use std::sync::Arc;

/// One served `group/version/resource`.
#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub list_kind: String,
    pub plural: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub namespaced: bool,
    pub status_subresource: bool,
    /// Whether `metadata.generation` is maintained (custom resources, CRDs, Deployments; not Services or ConfigMaps).
    pub tracks_generation: bool,
    /// For custom resources: the version's `openAPIV3Schema` and `additionalPrinterColumns`.
    pub crd: Option<CustomResource>,
}

#[derive(Debug, Clone)]
pub struct CustomResource {
    pub schema: Value,
    pub printer_columns: Vec<Value>,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Identifies the storage shared by all versions of a resource.
    pub fn storage_key(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The schema used for merging and validation (a CRD's, or the sparse built-in one).
    pub fn schema(&self) -> Option<&Value> {
        match &self.crd {
            Some(cr) => Some(&cr.schema),
            None => crate::schema::builtin(&self.api_version(), &self.kind),
        }
    }

    pub fn is(&self, group: &str, plural: &str) -> bool {
        self.group == group && self.plural == plural
    }
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    short_names: &[&str],
    namespaced: bool,
    status_subresource: bool,
    tracks_generation: bool,
) -> ResourceType {
    ResourceType {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        list_kind: format!("{kind}List"),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        short_names: short_names.iter().map(|s| s.to_string()).collect(),
        categories: if matches!(plural, "services" | "deployments") {
            vec!["all".into()]
        } else {
            vec![]
        },
        namespaced,
        status_subresource,
        tracks_generation,
        crd: None,
    }
}

#[derive(Debug, Clone)]
pub struct Registry {
    types: Vec<Arc<ResourceType>>,
}

impl Registry {
    pub fn with_builtins() -> Self {
        let types = vec![
            builtin(
                "",
                "v1",
                "Namespace",
                "namespaces",
                &["ns"],
                false,
                true,
                false,
            ),
            builtin("", "v1", "Service", "services", &["svc"], true, true, false),
            builtin(
                "",
                "v1",
                "ConfigMap",
                "configmaps",
                &["cm"],
                true,
                false,
                false,
            ),
            builtin("", "v1", "Secret", "secrets", &[], true, false, false),
            builtin("", "v1", "Event", "events", &["ev"], true, false, false),
            builtin(
                "events.k8s.io",
                "v1",
                "Event",
                "events",
                &["ev"],
                true,
                false,
                false,
            ),
            builtin(
                "apps",
                "v1",
                "Deployment",
                "deployments",
                &["deploy"],
                true,
                true,
                true,
            ),
            builtin(
                "policy",
                "v1",
                "PodDisruptionBudget",
                "poddisruptionbudgets",
                &["pdb"],
                true,
                true,
                true,
            ),
            builtin(
                "coordination.k8s.io",
                "v1",
                "Lease",
                "leases",
                &[],
                true,
                false,
                false,
            ),
            ResourceType {
                categories: vec!["api-extensions".into()],
                ..builtin(
                    "admissionregistration.k8s.io",
                    "v1",
                    "ValidatingAdmissionPolicy",
                    "validatingadmissionpolicies",
                    &[],
                    false,
                    true,
                    true,
                )
            },
            ResourceType {
                categories: vec!["api-extensions".into()],
                ..builtin(
                    "admissionregistration.k8s.io",
                    "v1",
                    "ValidatingAdmissionPolicyBinding",
                    "validatingadmissionpolicybindings",
                    &[],
                    false,
                    false,
                    true,
                )
            },
            builtin(
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                &["crd", "crds"],
                false,
                true,
                true,
            ),
        ];
        Registry {
            types: types.into_iter().map(Arc::new).collect(),
        }
    }

    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        self.types
            .iter()
            .find(|t| t.api_version() == api_version && t.kind == kind)
            .cloned()
    }

    /// All versions served for one group, preferred (highest priority) first.
    pub fn versions(&self, group: &str) -> Vec<String> {
        let mut versions: Vec<String> = self
            .types
            .iter()
            .filter(|t| t.group == group)
            .map(|t| t.version.clone())
            .collect();
        versions.sort_by(|a, b| compare_versions(a, b));
        versions.dedup();
        versions
    }

    /// Non-core groups in registration order.
    pub fn groups(&self) -> Vec<String> {
        let mut groups: Vec<String> = Vec::new();
        for t in &self.types {
            if !t.group.is_empty() && !groups.contains(&t.group) {
                groups.push(t.group.clone());
            }
        }
        groups
    }

    pub fn resources(&self, group: &str, version: &str) -> Vec<Arc<ResourceType>> {
        self.types
            .iter()
            .filter(|t| t.group == group && t.version == version)
            .cloned()
            .collect()
    }

    /// (Re-)registers the served versions of a CRD, replacing any previous registration.
    pub fn register_crd(&mut self, crd: &Value) {
        let spec = &crd["spec"];
        let group = spec["group"].as_str().unwrap_or_default();
        let names = &spec["names"];
        let plural = names["plural"].as_str().unwrap_or_default();
        self.unregister_crd(group, plural);
        let kind = names["kind"].as_str().unwrap_or_default();
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        for version in spec["versions"].as_array().into_iter().flatten() {
            if version["served"].as_bool() != Some(true) {
                continue;
            }
            self.types.push(Arc::new(ResourceType {
                group: group.into(),
                version: version["name"].as_str().unwrap_or_default().into(),
                kind: kind.into(),
                list_kind: names["listKind"]
                    .as_str()
                    .map_or_else(|| format!("{kind}List"), String::from),
                plural: plural.into(),
                singular: names["singular"]
                    .as_str()
                    .map_or_else(|| kind.to_lowercase(), String::from),
                short_names: strings(&names["shortNames"]),
                categories: strings(&names["categories"]),
                namespaced: spec["scope"].as_str() == Some("Namespaced"),
                status_subresource: version.pointer("/subresources/status").is_some(),
                tracks_generation: true,
                crd: Some(CustomResource {
                    schema: version
                        .pointer("/schema/openAPIV3Schema")
                        .cloned()
                        .unwrap_or(Value::Null),
                    printer_columns: version["additionalPrinterColumns"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default(),
                }),
            }));
        }
    }

    pub fn unregister_crd(&mut self, group: &str, plural: &str) {
        self.types
            .retain(|t| !(t.crd.is_some() && t.is(group, plural)));
    }
}

/// Kubernetes version priority: GA before beta before alpha, higher numbers first, then anything else by name.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn parse(v: &str) -> Option<(u8, u64, u64)> {
        let rest = v.strip_prefix('v')?;
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let major: u64 = rest[..digits].parse().ok()?;
        let tail = &rest[digits..];
        let (stability, minor) = if tail.is_empty() {
            (2, 0)
        } else if let Some(n) = tail.strip_prefix("beta") {
            (1, n.parse().ok()?)
        } else if let Some(n) = tail.strip_prefix("alpha") {
            (0, n.parse().ok()?)
        } else {
            return None;
        };
        Some((stability, major, minor))
    }
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn version_priority() {
        let mut v = vec!["v1alpha1", "v2beta1", "v1", "foo", "v1beta2", "v2"];
        v.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(v, vec!["v2", "v1", "v2beta1", "v1beta2", "v1alpha1", "foo"]);
    }

    #[test]
    fn registers_served_versions_of_a_crd() {
        let mut reg = Registry::with_builtins();
        let crd = json!({"spec": {"group": "example.io", "scope": "Cluster",
        "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
        "versions": [
            {"name": "v1alpha1", "served": true, "storage": true, "subresources": {"status": {}},
             "schema": {"openAPIV3Schema": {"type": "object"}}},
            {"name": "v1beta1", "served": false, "storage": false}
        ]}});
        reg.register_crd(&crd);
        let t = reg.lookup("example.io", "v1alpha1", "widgets").unwrap();
        assert!(!t.namespaced && t.status_subresource && t.tracks_generation);
        assert_eq!(t.singular, "widget");
        assert!(reg.lookup("example.io", "v1beta1", "widgets").is_none());
        reg.unregister_crd("example.io", "widgets");
        assert!(reg.by_kind("example.io/v1alpha1", "Widget").is_none());
    }
}
