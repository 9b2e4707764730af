use super::*;

fn texts(input: &str) -> Vec<String> {
    tokenize(input, "f").into_iter().map(|t| t.text).collect()
}

fn files(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The AKS Corefile (kube-system/coredns), as `kubectl get configmap coredns -o yaml` shows it.
const AKS: &str = r#".:53 {
    errors
    ready
    health {
      lameduck 5s
    }
    kubernetes cluster.local in-addr.arpa ip6.arpa {
      pods insecure
      fallthrough in-addr.arpa ip6.arpa
      ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf
    cache 30
    loop
    reload
    loadbalance
    import custom/*.override
}
import custom/*.server
"#;

/// A server block's keys, and its directives as (plugin, file).
type Block = (String, Vec<(String, String)>);

/// Each server block of `corefile` importing `keys`.
fn plugins(corefile: &str, keys: &[(&str, &str)]) -> Result<Vec<Block>, SyntaxError> {
    let blocks = parse("Corefile", corefile, "custom", &files(keys))?;
    Ok(blocks
        .into_iter()
        .map(|b| {
            (
                b.keys.join(","),
                b.directives.into_iter().map(|d| (d.name, d.file)).collect(),
            )
        })
        .collect())
}

#[test]
fn words_are_split_on_whitespace_and_quotes_group_them() {
    assert_eq!(texts("a b\tc\r\nd"), ["a", "b", "c", "d"]);
    assert_eq!(
        texts(r#""k8s_external" other.zone"#),
        ["k8s_external", "other.zone"]
    );
    assert_eq!(texts(r#""a b" "" c"#), ["a b", "", "c"]);
    // A quote opens only at the start of a word.
    assert_eq!(texts(r#"a"b c"#), [r#"a"b"#, "c"]);
    // A quoted word runs across lines.
    assert_eq!(texts("\"a\nb\" c"), ["a\nb", "c"]);
    // An unterminated quote runs to the end of the input.
    assert_eq!(texts("a \"b c"), ["a", "b c"]);
}

#[test]
fn backslashes_escape_only_quotes_and_only_inside_them() {
    assert_eq!(texts(r#""a\"b""#), [r#"a"b"#]);
    assert_eq!(texts(r#""a\nb""#), [r"a\nb"]);
    assert_eq!(texts(r#""a\\""#), [r"a\\"]);
    assert_eq!(texts(r"a\ b"), [r"a\", "b"]);
}

#[test]
fn comments_run_to_the_end_of_the_line_and_a_hash_inside_a_word_cuts_the_word() {
    assert_eq!(texts("a # b c\nd"), ["a", "d"]);
    // Caddy v1's lexer, which CoreDNS's fork keeps: the rest of the word is dropped, the line is not.
    assert_eq!(texts("a#b c\nd"), ["a", "c", "d"]);
    assert_eq!(texts("# k8s_external x\nlog"), ["log"]);
    assert_eq!(texts(r#""a # b" c"#), ["a # b", "c"]);
}

#[test]
fn braces_count_only_as_whole_words() {
    assert_eq!(texts("k8s_external{\n}"), ["k8s_external{", "}"]);
    assert_eq!(
        unbalanced_brace("k8s_external{\n}"),
        Some((2, "'}' without a matching '{'".into()))
    );
    assert_eq!(unbalanced_brace("a {\n b {\n }\n}"), None);
    assert_eq!(
        unbalanced_brace("a {\n b\n"),
        Some((1, "'{' is never closed".into()))
    );
    assert_eq!(unbalanced_brace("a # {\n"), None);
    assert_eq!(
        unbalanced_brace("a \"{\"\n"),
        Some((1, "'{' is never closed".into()))
    );
}

#[test]
fn tokens_know_their_line() {
    let tokens = tokenize("a\n\n  b \"c\nd\" e\nf", "f");
    let lines: Vec<usize> = tokens.iter().map(|t| t.line).collect();
    assert_eq!(lines, [1, 3, 3, 4, 5]);
}

#[test]
fn overrides_are_imported_into_the_main_block_and_servers_beside_it() {
    let blocks = plugins(
        AKS,
        &[
            ("b.override", "log\n"),
            (
                "a.override",
                "\"k8s_external\" one.local {\n  fallthrough\n}\n",
            ),
            ("x.server", "x.local:53 {\n  forward . 10.0.0.1\n}\n"),
            ("ignored.txt", "bogus {\n"),
        ],
    )
    .unwrap();
    assert_eq!(blocks.len(), 2);
    let (keys, main) = &blocks[0];
    assert_eq!(keys, ".:53");
    let tail: Vec<_> = main[main.len() - 2..].to_vec();
    // Imported in name order, each file's first word a directive.
    assert_eq!(
        tail,
        [
            ("k8s_external".to_string(), "a.override".to_string()),
            ("log".to_string(), "b.override".to_string())
        ]
    );
    assert_eq!(main[0], ("errors".to_string(), "Corefile".to_string()));
    assert_eq!(blocks[1].0, "x.local:53");
    assert_eq!(
        blocks[1].1,
        [("forward".to_string(), "x.server".to_string())]
    );
}

#[test]
fn a_file_cannot_continue_the_line_of_the_one_before() {
    // "log" ends a.override without a newline; b.override's first word is still a directive.
    let blocks = plugins(
        ".:53 {\n import custom/*.override\n}\n",
        &[("a.override", "log"), ("b.override", "errors")],
    )
    .unwrap();
    assert_eq!(blocks[0].1.len(), 2);
}

#[test]
fn arguments_and_blocks_belong_to_their_directive() {
    let blocks = plugins(
        ".:53 {\n kubernetes cluster.local {\n  pods insecure\n  fallthrough\n }\n forward . 1.1.1.1\n}\n",
        &[],
    )
    .unwrap();
    let names: Vec<&str> = blocks[0].1.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["kubernetes", "forward"]);
}

#[test]
fn imports_inside_a_plugin_block_and_snippets_expand() {
    let blocks = plugins(
        "(common) {\n errors\n cache 30\n}\n.:53 {\n import common\n forward . /etc/resolv.conf {\n  import custom/*.forward\n }\n}\n",
        &[("a.forward", "max_fails 3\n")],
    )
    .unwrap();
    assert_eq!(blocks.len(), 1);
    let names: Vec<&str> = blocks[0].1.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["errors", "cache", "forward"]);
}

#[test]
fn a_stray_closing_brace_in_an_override_is_an_error_naming_it() {
    let err = plugins(AKS, &[("bad.override", "log }\n")]).unwrap_err();
    assert_eq!(err.file, "bad.override");
    assert!(err.message.contains("Unexpected '}'"), "{err}");
}

#[test]
fn an_unclosed_block_is_an_error() {
    let err = plugins(".:53 {\n log {\n", &[]).unwrap_err();
    assert!(err.message.contains("never closed"), "{err}");
    let err = plugins(".:53 {\n log\n", &[]).unwrap_err();
    assert!(err.message.contains("never closed"), "{err}");
}

#[test]
fn a_file_that_imports_itself_fails_instead_of_looping() {
    let err = plugins(
        ".:53 {\n import custom/*.override\n}\n",
        &[("a.override", "import custom/a.override\n")],
    )
    .unwrap_err();
    assert!(err.message.contains("maximum import depth"), "{err}");
}

#[test]
fn imports_only_see_the_mounted_configmap() {
    // AKS imports relative to the Corefile; k3s with an absolute path.
    for pattern in ["custom/*.override", "/etc/coredns/custom/*.override"] {
        let corefile = format!(".:53 {{\n import {pattern}\n}}\n");
        let blocks = plugins(&corefile, &[("a.override", "log\n")]).unwrap();
        assert_eq!(blocks[0].1.len(), 1, "{pattern}");
    }
    let blocks = plugins(
        ".:53 {\n import other/*.override\n}\n",
        &[("a.override", "log\n")],
    )
    .unwrap();
    assert!(blocks[0].1.is_empty());
}
