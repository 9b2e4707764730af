//! Parses the few ARM paths the simulator serves.
//!
//! Matching is done by hand rather than with axum routes because ARM compares the fixed segments
//! (`subscriptions`, `resourceGroups`, `providers`, `Microsoft.Web`, `sites`, `slots`, `config`,
//! `appsettings`, `list`) case-insensitively, and clients do send them in varying case.

/// Which resource under a site (or slot) the path addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// `.../sites/{name}` or `.../sites/{name}/slots/{slot}`
    Site,
    /// `.../config/appsettings`
    AppSettings,
    /// `.../config/appsettings/list`
    AppSettingsList,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ArmPath<'a> {
    pub subscription: &'a str,
    pub resource_group: &'a str,
    pub name: &'a str,
    pub slot: Option<&'a str>,
    pub target: Target,
}

impl ArmPath<'_> {
    /// The RBAC action ARM checks for `method` on this path, as quoted in `AuthorizationFailed`.
    pub fn action(&self, method: &str) -> String {
        let base = if self.slot.is_some() {
            "Microsoft.Web/sites/slots"
        } else {
            "Microsoft.Web/sites"
        };
        match (self.target, method) {
            (Target::AppSettingsList, _) => format!("{base}/config/list/Action"),
            (Target::AppSettings, "GET") => format!("{base}/config/read"),
            (Target::AppSettings, _) => format!("{base}/config/write"),
            (Target::Site, "GET") => format!("{base}/read"),
            (Target::Site, "DELETE") => format!("{base}/delete"),
            (Target::Site, _) => format!("{base}/write"),
        }
    }
}

pub(crate) fn parse(path: &str) -> Option<ArmPath<'_>> {
    let segs: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    if segs.iter().any(|s| s.is_empty()) {
        return None;
    }
    let is = |i: usize, lit: &str| segs.get(i).is_some_and(|s| s.eq_ignore_ascii_case(lit));
    if !(is(0, "subscriptions")
        && is(2, "resourceGroups")
        && is(4, "providers")
        && is(5, "Microsoft.Web")
        && is(6, "sites")
        && segs.len() >= 8)
    {
        return None;
    }
    let (slot, rest) = if is(8, "slots") {
        (Some(*segs.get(9)?), &segs[10..])
    } else {
        (None, &segs[8..])
    };
    let lit = |i: usize, l: &str| rest.get(i).is_some_and(|s| s.eq_ignore_ascii_case(l));
    let target = match rest.len() {
        0 => Target::Site,
        2 if lit(0, "config") && lit(1, "appsettings") => Target::AppSettings,
        3 if lit(0, "config") && lit(1, "appsettings") && lit(2, "list") => Target::AppSettingsList,
        _ => return None,
    };
    Some(ArmPath {
        subscription: segs[1],
        resource_group: segs[3],
        name: segs[7],
        slot,
        target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sites_slots_and_config_case_insensitively() {
        let p =
            parse("/subscriptions/s/resourcegroups/RG/providers/microsoft.web/Sites/app").unwrap();
        assert_eq!(
            (p.subscription, p.resource_group, p.name, p.slot, p.target),
            ("s", "RG", "app", None, Target::Site)
        );
        let p = parse(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/app/slots/stg/config/AppSettings/list",
        )
        .unwrap();
        assert_eq!((p.slot, p.target), (Some("stg"), Target::AppSettingsList));
        assert_eq!(
            p.action("POST"),
            "Microsoft.Web/sites/slots/config/list/Action"
        );
        let p = parse("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/app/config/appsettings")
            .unwrap();
        assert_eq!((p.slot, p.target), (None, Target::AppSettings));
        assert_eq!(p.action("PUT"), "Microsoft.Web/sites/config/write");
    }

    #[test]
    fn rejects_everything_else() {
        for path in [
            "/",
            "/subscriptions/s",
            "/subscriptions/s/resourceGroups/rg",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/sites/a",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/a/config/web",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/a/slots",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/a/",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites//config/appsettings",
        ] {
            assert_eq!(parse(path), None, "{path}");
        }
    }
}
