use super::*;

fn cost(rule: &str, scope: Value) -> u64 {
    match estimate(rule, &scope) {
        Ok(checked) => checked.cost(),
        Err(e) => panic!("{rule}: {e}"),
    }
}

fn error(rule: &str, scope: Value) -> String {
    match estimate(rule, &scope) {
        Ok(_) => panic!("{rule} type-checked"),
        Err(e) => e,
    }
}

#[test]
fn a_regex_costs_the_string_traversal_times_the_pattern_length() {
    // maxLength 10 is 40 bytes: ceil(41 * 0.1) = 5; the pattern '^abc$' is 5 long: ceil(5 * 0.25) = 2;
    // plus 1 for `self`.
    assert_eq!(
        cost(
            "self.matches('^abc$')",
            json!({"type": "string", "maxLength": 10})
        ),
        11
    );
    // Unbounded, the string is the largest request less its quotes: ceil(3145727 * 0.1) * 2 + 1.
    assert_eq!(
        cost("self.matches('^abc$')", json!({"type": "string"})),
        314_573 * 2 + 1
    );
    // An enum bounds a string by its longest value (9): ceil(10 * 0.1) * 2 + 1.
    assert_eq!(
        cost(
            "self.matches('^abc$')",
            json!({"type": "string", "enum": ["ab", "abcdefghi"]})
        ),
        2 + 1
    );
}

#[test]
fn a_comprehension_costs_each_element_once() {
    let list = json!({"type": "object", "properties": {
        "items": {"type": "array", "maxItems": 10, "items": {"type": "string", "maxLength": 5}}}});
    // range (self.items: 1 + 1) + accumulator start (0) + result (1) + 10 * (condition 2 + step 4).
    assert_eq!(
        cost("self.items.all(x, x.size() > 0)", list.clone()),
        2 + 1 + 10 * 6
    );
    // Unbounded lists hold as many of their smallest item ("", 2 bytes and a comma) as a request does.
    let unbounded = json!({"type": "array", "items": {"type": "string", "maxLength": 5}});
    assert_eq!(
        cost("self.all(x, x.size() > 0)", unbounded),
        1 + 1 + 1_048_575 * 6
    );
}

#[test]
fn equality_and_presence() {
    let obj = json!({"type": "object", "properties": {
        "a": {"type": "string", "maxLength": 20}, "n": {"type": "integer"}}});
    // `==` traverses the shorter side: the literal, 3 long: ceil(0.3) = 1; `self.a` is 1 + 1.
    assert_eq!(cost("self.a == 'abc'", obj.clone()), 3);
    // has(): the presence test costs 1 on top of `self`.
    assert_eq!(cost("has(self.a)", obj.clone()), 2);
    assert_eq!(cost("self.n > 3 && has(self.a)", obj), 3 + 2);
}

#[test]
fn rules_are_type_checked_against_the_schema() {
    let obj = json!({"type": "object", "properties": {"a": {"type": "string"}, "my-field": {"type": "integer"}}});
    assert!(error("self.b == 'x'", obj.clone()).contains("undefined field 'b'"));
    assert!(error("has(self.b)", obj.clone()).contains("undefined field 'b'"));
    assert!(error("size(self.a) > nope", obj.clone()).contains("undeclared reference to 'nope'"));
    assert!(
        error("self.a.frobnicate()", obj.clone()).contains("undeclared reference to 'frobnicate'")
    );
    assert!(error("self.a.x == 1", obj.clone()).contains("does not support field selection"));
    assert!(
        error("self.my__dash__field.matches('x')", obj.clone()).contains("no matching overload")
    );
    assert_eq!(cost("self.my__dash__field > 1", obj), 1 + 2);
}

fn crd_causes(schema: Value) -> Vec<String> {
    check_schema(&schema, "spec.validation.openAPIV3Schema")
        .causes
        .iter()
        .map(Cause::to_line)
        .collect()
}

#[test]
fn a_rule_inside_an_unbounded_list_breaks_the_budget() {
    let schema = |bounds: Value| {
        let mut name = json!({"type": "string",
            "x-kubernetes-validations": [{"rule": "self.matches('^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$')"}]});
        let mut list = json!({"type": "array", "items": {"type": "object", "properties": {}}});
        if let Some(max) = bounds["maxLength"].as_u64() {
            name["maxLength"] = max.into();
        }
        if let Some(max) = bounds["maxItems"].as_u64() {
            list["maxItems"] = max.into();
        }
        list["items"]["properties"]["name"] = name;
        json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {"targets": list}}}})
    };
    let causes = crd_causes(schema(json!({})));
    assert_eq!(causes.len(), 2, "{causes:#?}");
    assert_eq!(
        causes[0],
        "spec.validation.openAPIV3Schema.properties[spec].properties[targets].items.properties[name].x-kubernetes-validations[0].rule: Forbidden: estimated rule cost exceeds budget by factor of more than 100x (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
    );
    assert_eq!(
        causes[1],
        "spec.validation.openAPIV3Schema: Forbidden: x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema exceeds budget by factor of more than 100x (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
    );
    // Bounding only the string is not enough while the list is unbounded: 261 per name, times the
    // 1,048,576 names a request can hold.
    assert_eq!(crd_causes(schema(json!({"maxLength": 63}))).len(), 2);
    assert!(crd_causes(schema(json!({"maxLength": 63, "maxItems": 100}))).is_empty());
}

#[test]
fn the_factor_is_worded_like_the_apiserver() {
    assert!(cost_message("x", 12_000_000, 10_000_000).contains("factor of 1.200000x"));
    assert!(cost_message("x", 25_000_000, 10_000_000).contains("factor of 2.5x"));
    assert!(cost_message("x", 2_000_000_000, 10_000_000).contains("factor of more than 100x"));
}

#[test]
fn non_bool_rules_and_non_string_messages_are_refused() {
    let schema = json!({"type": "object", "properties": {"a": {"type": "string", "maxLength": 5,
        "x-kubernetes-validations": [
            {"rule": "self + 'x'"},
            {"rule": "self == 'x'", "messageExpression": "size(self)"}]}}});
    let causes = crd_causes(schema);
    assert!(causes[0].ends_with("x-kubernetes-validations[0].rule: Invalid value: \"self + 'x'\": cel expression must evaluate to a bool"), "{causes:#?}");
    assert!(causes[1].ends_with("x-kubernetes-validations[1].messageExpression: Invalid value: \"size(self)\": must evaluate to a string"), "{causes:#?}");
}

#[test]
fn the_resource_root_sees_only_name_and_generate_name_of_metadata() {
    let root = with_type_and_object_meta(&json!({"type": "object", "properties": {}}));
    assert!(estimate("self.metadata.name.startsWith('a')", &root).is_ok());
    assert!(error("self.metadata.labels.size() > 0", root).contains("undefined field 'labels'"));
}
