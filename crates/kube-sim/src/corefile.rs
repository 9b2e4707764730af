//! The simulated CoreDNS's own Corefile reader: the AKS Corefile with `coredns-custom` imported, read
//! the way CoreDNS (Caddy's lexer and server-block parser) reads it, and refused where CoreDNS refuses
//! to start: unbalanced braces, an unknown directive, a plugin twice in one server block, two server
//! blocks for one zone and port, or a `k8s_external` option it does not know.
//!
//! Written for the simulation alone; it shares nothing with the operator's renderer on purpose.

use std::collections::{BTreeMap, BTreeSet};

/// The Corefile AKS deploys: `*.override` keys are imported inside `.:53`, `*.server` keys after it
/// (AKS "Customize CoreDNS" docs).
const AKS_COREFILE: &str = r#".:53 {
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

/// The directives CoreDNS v1.11 compiles in (its plugin.cfg); anything else stops it from starting.
const PLUGINS: &[&str] = &[
    "metadata",
    "geoip",
    "cancel",
    "tls",
    "timeouts",
    "reload",
    "nsid",
    "bufsize",
    "bind",
    "debug",
    "trace",
    "ready",
    "health",
    "pprof",
    "prometheus",
    "errors",
    "log",
    "dnstap",
    "local",
    "dns64",
    "acl",
    "any",
    "chaos",
    "loadbalance",
    "tsig",
    "cache",
    "rewrite",
    "header",
    "dnssec",
    "autopath",
    "minimal",
    "template",
    "transfer",
    "hosts",
    "route53",
    "azure",
    "clouddns",
    "k8s_external",
    "kubernetes",
    "file",
    "auto",
    "secondary",
    "etcd",
    "loop",
    "forward",
    "grpc",
    "erratic",
    "whoami",
    "on",
    "sign",
    "view",
];

/// k8s_external's default TTL and apex label (CoreDNS plugin/k8s_external).
const DEFAULT_TTL: u32 = 5;
const DEFAULT_APEX: &str = "dns";

/// What the simulated CoreDNS serves once it has started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corefile {
    /// The server blocks, each with its zones (normalised, with a trailing dot) and port.
    pub servers: Vec<Server>,
}

/// One server block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// `(zone, port)` of each key.
    pub keys: Vec<(String, u16)>,
    /// The block's directives, by name.
    pub plugins: BTreeSet<String>,
    /// The `k8s_external` directive, when the block has one next to `kubernetes` (it works only
    /// there).
    pub k8s_external: Option<K8sExternal>,
    /// The `hosts` directive, which CoreDNS runs before `k8s_external` (plugin.cfg order).
    pub hosts: Option<Hosts>,
}

/// A `hosts` directive with inline entries (a hosts file it names is not read: README).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hosts {
    /// The zones it answers for (the server block's by default).
    pub zones: Vec<String>,
    /// `(name, ip)` of each inline entry, names lower case and fully qualified.
    pub entries: Vec<(String, std::net::IpAddr)>,
    /// TTL of its answers (3600 by default).
    pub ttl: u32,
    /// `fallthrough` and its zones (empty: all): names it has no entry for go to the next plugin.
    pub fallthrough: Option<Vec<String>>,
}

/// A `k8s_external` directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K8sExternal {
    /// Its zones, lower case with a trailing dot.
    pub zones: Vec<String>,
    /// The apex label (`dns` by default): the SOA names `ns1.<apex>.<zone>`.
    pub apex: String,
    /// TTL of its answers.
    pub ttl: u32,
}

/// Why CoreDNS would not start with this configuration (the line is of the file it came from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    text: String,
    /// Where it comes from, for messages: `Corefile:12` or `custom/x.override:3`.
    file: String,
    line: usize,
    quoted: bool,
}

impl Token {
    fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
    /// On the same line of the same file: a directive's arguments end with its line.
    fn same_line(&self, other: &Token) -> bool {
        self.line == other.line && self.file == other.file
    }
    fn is(&self, s: &str) -> bool {
        !self.quoted && self.text == s
    }
}

/// Caddy's lexer: words separated by white space, `"quoted words"` with `\"`, `#` comments to the
/// end of the line. Braces are tokens of their own only when they stand alone.
fn lex(text: &str, file: &str) -> Result<Vec<Token>, Refusal> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(&c) = chars.peek() {
        if c == '\n' {
            line += 1;
            chars.next();
        } else if c.is_whitespace() {
            chars.next();
        } else if c == '#' {
            while chars.peek().is_some_and(|c| *c != '\n') {
                chars.next();
            }
        } else if c == '"' {
            chars.next();
            let start = line;
            let mut word = String::new();
            loop {
                match chars.next() {
                    None => {
                        return Err(Refusal(format!(
                            "{file}:{start} - Error during parsing: unterminated quoted string"
                        )))
                    }
                    Some('\\') if chars.peek() == Some(&'"') => {
                        word.push('"');
                        chars.next();
                    }
                    Some('"') => break,
                    Some(c) => {
                        if c == '\n' {
                            line += 1;
                        }
                        word.push(c);
                    }
                }
            }
            tokens.push(Token {
                text: word,
                file: file.into(),
                line: start,
                quoted: true,
            });
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
            tokens.push(Token {
                text: word,
                file: file.into(),
                line,
                quoted: false,
            });
        }
    }
    Ok(tokens)
}

/// Replaces `import custom/*.<suffix>` with the tokens of the matching keys, in file-name order as a
/// glob lists them. Other imports name files the simulation does not have.
fn expand_imports(
    tokens: Vec<Token>,
    data: &BTreeMap<String, String>,
) -> Result<Vec<Token>, Refusal> {
    let mut out = Vec::new();
    let mut iter = tokens.into_iter().peekable();
    while let Some(token) = iter.next() {
        if !token.is("import") {
            out.push(token);
            continue;
        }
        let Some(pattern) = iter.next_if(|t| t.same_line(&token)) else {
            return Err(Refusal(format!(
                "{} - Error during parsing: Wrong argument count or unexpected line ending after 'import'",
                token.at()
            )));
        };
        let suffix = pattern
            .text
            .strip_prefix("custom/*")
            .filter(|s| s.starts_with('.'));
        let Some(suffix) = suffix else {
            return Err(Refusal(format!(
                "{} - Error during parsing: the simulation has no files matching {}",
                pattern.at(),
                pattern.text
            )));
        };
        for (key, content) in data.iter().filter(|(k, _)| k.ends_with(suffix)) {
            out.extend(lex(content, &format!("custom/{key}"))?);
        }
    }
    Ok(out)
}

/// Reads the AKS Corefile with `coredns-custom`'s `data` imported, as CoreDNS would when it starts.
pub fn load(custom: &BTreeMap<String, String>) -> Result<Corefile, Refusal> {
    let tokens = expand_imports(lex(AKS_COREFILE, "Corefile")?, custom)?;
    parse(&tokens)
}

/// Loads a whole Corefile of its own (a CoreDNS Deployment that mounts one from a ConfigMap, with
/// nothing to import), as CoreDNS would.
pub fn load_corefile(corefile: &str) -> Result<Corefile, Refusal> {
    let tokens = expand_imports(lex(corefile, "Corefile")?, &BTreeMap::new())?;
    parse(&tokens)
}

fn parse(tokens: &[Token]) -> Result<Corefile, Refusal> {
    let mut servers: Vec<Server> = Vec::new();
    let mut i = 0;
    let mut seen_keys: BTreeSet<(String, u16)> = BTreeSet::new();
    while i < tokens.len() {
        // Keys up to the opening brace, on one line (commas separate keys too).
        let first = &tokens[i];
        if first.is("{") || first.is("}") {
            return Err(Refusal(format!(
                "{} - Error during parsing: Unexpected '{}', expecting a server block key",
                first.at(),
                first.text
            )));
        }
        let mut keys = Vec::new();
        while i < tokens.len() && !tokens[i].is("{") {
            if !tokens[i].same_line(first) {
                return Err(Refusal(format!(
                    "{} - Error during parsing: Expected '{{' after the server block keys",
                    tokens[i].at()
                )));
            }
            for key in tokens[i].text.split(',').filter(|k| !k.is_empty()) {
                keys.push(server_key(key, &tokens[i])?);
            }
            i += 1;
        }
        if i >= tokens.len() {
            return Err(Refusal(format!(
                "{} - Error during parsing: Expected '{{' after the server block keys",
                first.at()
            )));
        }
        i += 1; // the opening brace
        let (server, next) = parse_block(tokens, i, keys)?;
        for key in &server.keys {
            if !seen_keys.insert(key.clone()) {
                return Err(Refusal(format!(
                    "{} - Error during setup: cannot serve dns://{}:{} - zone already defined",
                    first.at(),
                    key.0,
                    key.1
                )));
            }
        }
        servers.push(server);
        i = next;
    }
    Ok(Corefile { servers })
}

fn server_key(key: &str, token: &Token) -> Result<(String, u16), Refusal> {
    let key = key.strip_prefix("dns://").unwrap_or(key);
    let (zone, port) = match key.rsplit_once(':') {
        Some((zone, port)) => {
            let port = port.parse::<u16>().map_err(|_| {
                Refusal(format!(
                    "{} - Error during parsing: invalid port in server block key {key}",
                    token.at()
                ))
            })?;
            (zone, port)
        }
        None => (key, 53),
    };
    Ok((normalize(zone), port))
}

/// A zone as CoreDNS keeps it: lower case, fully qualified.
pub fn normalize(zone: &str) -> String {
    let zone = zone.to_ascii_lowercase();
    if zone.ends_with('.') {
        zone
    } else {
        format!("{zone}.")
    }
}

/// Reads the directives of a server block from `start` (after its `{`) to its closing brace.
/// Returns the block and the index after the brace.
fn parse_block(
    tokens: &[Token],
    start: usize,
    keys: Vec<(String, u16)>,
) -> Result<(Server, usize), Refusal> {
    let mut i = start;
    let mut plugins = BTreeSet::new();
    let mut k8s_external = None;
    let mut hosts = None;
    loop {
        let Some(name) = tokens.get(i) else {
            return Err(Refusal(format!(
                "{} - Error during parsing: Unexpected EOF, a server block is not closed",
                tokens[start.saturating_sub(1)].at()
            )));
        };
        if name.is("}") {
            i += 1;
            break;
        }
        if name.is("{") {
            return Err(Refusal(format!(
                "{} - Error during parsing: Unexpected '{{'",
                name.at()
            )));
        }
        if !PLUGINS.contains(&name.text.as_str()) {
            return Err(Refusal(format!(
                "{} - Error during parsing: Unknown directive '{}'",
                name.at(),
                name.text
            )));
        }
        // CoreDNS allows a plugin once per server block (Azure/AKS#2623 for forward).
        if !plugins.insert(name.text.clone()) {
            return Err(Refusal(format!(
                "{} - Error during setup: plugin {} appears more than once in this server block",
                name.at(),
                name.text
            )));
        }
        i += 1;
        let mut args = Vec::new();
        while let Some(t) = tokens.get(i).filter(|t| t.same_line(name) && !t.is("{")) {
            if t.is("}") {
                break;
            }
            args.push(t.clone());
            i += 1;
        }
        let mut block: Vec<Vec<Token>> = Vec::new();
        if tokens
            .get(i)
            .is_some_and(|t| t.is("{") && t.same_line(name))
        {
            let (lines, next) = directive_block(tokens, i)?;
            block = lines;
            i = next;
        }
        if name.text == "k8s_external" {
            k8s_external = Some(k8s_external_directive(name, &args, &block, &keys)?);
        }
        if name.text == "hosts" {
            hosts = Some(hosts_directive(&args, &block, &keys)?);
        }
    }
    // k8s_external finds the Services through the kubernetes plugin of its own block.
    let k8s_external = k8s_external.filter(|_| plugins.contains("kubernetes"));
    Ok((
        Server {
            keys,
            plugins,
            k8s_external,
            hosts,
        },
        i,
    ))
}

/// A directive's `{ ... }` block from the brace at `open`: its lines, and the index after its `}`.
fn directive_block(tokens: &[Token], open: usize) -> Result<(Vec<Vec<Token>>, usize), Refusal> {
    let mut lines: Vec<Vec<Token>> = Vec::new();
    let mut depth = 0;
    let mut i = open + 1;
    loop {
        let Some(t) = tokens.get(i) else {
            return Err(Refusal(format!(
                "{} - Error during parsing: Unexpected EOF, a block is not closed",
                tokens[open].at()
            )));
        };
        i += 1;
        if t.is("{") {
            depth += 1;
        } else if t.is("}") {
            if depth == 0 {
                return Ok((lines, i));
            }
            depth -= 1;
            continue;
        }
        if depth > 0 || t.is("{") {
            continue;
        }
        match lines.last_mut() {
            Some(line) if line.first().is_some_and(|f| f.same_line(t)) => line.push(t.clone()),
            _ => lines.push(vec![t.clone()]),
        }
    }
}

fn k8s_external_directive(
    name: &Token,
    args: &[Token],
    block: &[Vec<Token>],
    keys: &[(String, u16)],
) -> Result<K8sExternal, Refusal> {
    let zones = if args.is_empty() {
        keys.iter().map(|(zone, _)| zone.clone()).collect()
    } else {
        args.iter().map(|t| normalize(&t.text)).collect()
    };
    let mut directive = K8sExternal {
        zones,
        apex: DEFAULT_APEX.into(),
        ttl: DEFAULT_TTL,
    };
    let err = |t: &Token, what: String| {
        Refusal(format!(
            "{} - Error during parsing: plugin/k8s_external: {what}",
            t.at()
        ))
    };
    for line in block {
        let option = &line[0];
        let values = &line[1..];
        match option.text.as_str() {
            "ttl" => {
                let value = values
                    .first()
                    .ok_or_else(|| err(option, "Wrong argument count".into()))?;
                let ttl: i64 = value
                    .text
                    .parse()
                    .map_err(|_| err(value, format!("invalid ttl {}", value.text)))?;
                if !(0..=3600).contains(&ttl) {
                    return Err(err(value, format!("ttl must be in range [0, 3600]: {ttl}")));
                }
                directive.ttl = ttl as u32;
            }
            "apex" => {
                let value = values
                    .first()
                    .ok_or_else(|| err(option, "Wrong argument count".into()))?;
                directive.apex = value.text.to_ascii_lowercase();
            }
            // Headless answers and fallthrough (CoreDNS v1.11.0+) are accepted; the simulation
            // serves neither differently (README).
            "headless" | "fallthrough" => {}
            other => return Err(err(option, format!("unknown property '{other}'"))),
        }
    }
    let _ = name;
    Ok(directive)
}

/// `hosts [FILE [ZONES...]] { IP NAME...; ttl SECONDS; no_reverse; reload DURATION; fallthrough
/// [ZONES...] }` (CoreDNS plugin/hosts); lines that are not options are hosts-file lines.
fn hosts_directive(
    args: &[Token],
    block: &[Vec<Token>],
    keys: &[(String, u16)],
) -> Result<Hosts, Refusal> {
    let zones = if args.len() > 1 {
        args[1..].iter().map(|t| normalize(&t.text)).collect()
    } else {
        keys.iter().map(|(zone, _)| zone.clone()).collect()
    };
    let mut hosts = Hosts {
        zones,
        entries: Vec::new(),
        ttl: 3600,
        fallthrough: None,
    };
    for line in block {
        let option = &line[0];
        match option.text.as_str() {
            "fallthrough" => {
                hosts.fallthrough = Some(line[1..].iter().map(|t| normalize(&t.text)).collect())
            }
            "ttl" => {
                let ttl = line
                    .get(1)
                    .and_then(|t| t.text.parse::<u32>().ok())
                    .filter(|t| *t <= 65_535)
                    .ok_or_else(|| {
                        Refusal(format!(
                            "{} - Error during parsing: plugin/hosts: ttl needs a number of seconds",
                            option.at()
                        ))
                    })?;
                hosts.ttl = ttl;
            }
            "no_reverse" | "reload" => {}
            _ => {
                // A hosts-file line: an address, then names; anything else is ignored, as in a file.
                if let Ok(ip) = option.text.parse::<std::net::IpAddr>() {
                    for name in &line[1..] {
                        hosts.entries.push((normalize(&name.text), ip));
                    }
                }
            }
        }
    }
    Ok(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn custom(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn zones(corefile: &Corefile) -> Vec<String> {
        corefile
            .servers
            .iter()
            .filter_map(|s| s.k8s_external.as_ref())
            .flat_map(|k| k.zones.clone())
            .collect()
    }

    #[test]
    fn the_aks_corefile_starts_and_serves_the_override_zones() {
        let corefile = load(&custom(&[
            ("log.override", "log\n"),
            (
                "appservicelink.override",
                "k8s_external contoso.internal b.test\n",
            ),
            (
                "internal.server",
                "internal.contoso:53 {\n    forward . 10.1.0.4\n}\n",
            ),
        ]))
        .unwrap();
        assert_eq!(zones(&corefile), ["contoso.internal.", "b.test."]);
        assert_eq!(corefile.servers.len(), 2);
        assert_eq!(
            corefile.servers[1].keys,
            [("internal.contoso.".to_string(), 53)]
        );
        let k = corefile.servers[0].k8s_external.clone().unwrap();
        assert_eq!((k.ttl, k.apex.as_str()), (5, "dns"));
    }

    #[test]
    fn options_and_quotes_are_read_as_coredns_reads_them() {
        let corefile = load(&custom(&[(
            "a.override",
            "\"k8s_external\" Zone.Test {\n  ttl 60\n  apex ns\n}\n",
        )]))
        .unwrap();
        let k = corefile.servers[0].k8s_external.clone().unwrap();
        assert_eq!(k.zones, ["zone.test."]);
        assert_eq!((k.ttl, k.apex.as_str()), (60, "ns"));
    }

    #[test]
    fn what_stops_coredns_from_starting_is_refused() {
        for (content, expect) in [
            ("k8s_external a.test {\n", "not closed"),
            ("log }\n", "Unexpected"),
            ("k8s_extrenal a.test\n", "Unknown directive 'k8s_extrenal'"),
            ("forward . 1.1.1.1\n", "more than once"),
            ("k8s_external a.test {\n ttl 4000\n}\n", "range [0, 3600]"),
            (
                "k8s_external a.test {\n colour blue\n}\n",
                "unknown property 'colour'",
            ),
            ("hosts \"unterminated\n", "unterminated"),
        ] {
            let err = load(&custom(&[("x.override", content)])).unwrap_err();
            assert!(err.0.contains(expect), "{content:?}: {err}");
            // An unclosed brace swallows the Corefile's own, so the error is the block's.
            let place = if expect == "not closed" || expect == "Unexpected" {
                "Corefile:"
            } else {
                "custom/x.override:"
            };
            assert!(err.0.starts_with(place), "{err}");
        }
        let twice = load(&custom(&[
            ("a.override", "k8s_external a.test\n"),
            ("b.override", "k8s_external b.test\n"),
        ]))
        .unwrap_err();
        assert!(
            twice.0.contains("k8s_external appears more than once"),
            "{twice}"
        );
        let same_zone = load(&custom(&[
            ("a.server", "z.test:53 {\n log\n}\n"),
            ("b.server", "z.test {\n log\n}\n"),
        ]))
        .unwrap_err();
        assert!(same_zone.0.contains("zone already defined"), "{same_zone}");
    }

    #[test]
    fn hosts_entries_and_fallthrough_are_read() {
        let corefile = load(&custom(&[(
            "h.override",
            "hosts {\n  10.9.9.9 API.shop.z.test other.z.test\n  ttl 60\n  fallthrough\n}\n",
        )]))
        .unwrap();
        let hosts = corefile.servers[0].hosts.clone().unwrap();
        assert_eq!(hosts.zones, ["."]);
        assert_eq!(hosts.ttl, 60);
        assert_eq!(hosts.fallthrough, Some(Vec::new()));
        assert_eq!(hosts.entries.len(), 2);
        assert_eq!(hosts.entries[0].0, "api.shop.z.test.");
    }

    #[test]
    fn k8s_external_without_kubernetes_serves_nothing() {
        let corefile = load(&custom(&[(
            "x.server",
            "x.test:53 {\n k8s_external x.test\n}\n",
        )]))
        .unwrap();
        assert!(zones(&corefile).is_empty());
    }
}
