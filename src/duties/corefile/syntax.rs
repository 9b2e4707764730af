//! The Corefile as CoreDNS reads it: its Caddyfile lexer and parser (the `coredns/caddy` fork of
//! Caddy v1's `caddyfile` package), far enough to tell which plugins each server block gets and
//! from which file, with `import` expanded from the keys of `coredns-custom`.
//!
//! Pure: text in, server blocks or an error out. What CoreDNS does and this module mirrors:
//! - tokens are separated by whitespace; a token starting with `"` runs to the next unescaped `"`
//!   (across lines); inside quotes `\"` is a quote and every other backslash stays; outside quotes
//!   a backslash is an ordinary character;
//! - `#` at the start of a word starts a comment up to the end of the line; inside a word it drops
//!   the rest of that word only (Caddy v1's lexer, which CoreDNS's fork keeps; Caddy v2 changed it
//!   in caddyserver/caddy#3267);
//! - `{` and `}` count only as whole tokens (`k8s_external{` is one word);
//! - a directive is the first token of a line in a server block, and takes the rest of the line
//!   plus any `{ ... }` block after it; a `}` at nesting 0 on a directive's own line is an error;
//! - `import PATTERN` at the start of a line splices in the tokens of every matching file (sorted
//!   by name, as Go's `filepath.Glob` returns them), or of a snippet `(name) { ... }`;
//! - tokens of different files are never on the same line, so a file's first token always starts
//!   a directive.
//!
//! Environment placeholders (`{$VAR}`) are left as they are: they cannot make a brace or a
//! directive name the operator cares about.

use std::collections::BTreeMap;

/// One token, where it came from, and the lines it spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The token's text, without its quotes.
    pub text: String,
    /// The file it came from (the Corefile, or a key of `coredns-custom`).
    pub file: String,
    /// The line it starts on, from 1.
    pub line: usize,
    /// Line breaks inside the token (a quoted token may span lines).
    breaks: usize,
}

/// Splits `input` into tokens as CoreDNS's lexer does. It never fails: an unterminated quote runs
/// to the end of the input, as in CoreDNS.
pub fn tokenize(input: &str, file: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut chars = input.strip_prefix('\u{feff}').unwrap_or(input).chars();
    loop {
        let mut text = String::new();
        let mut start = line;
        let (mut comment, mut quoted, mut escaped) = (false, false, false);
        // Whether the token ended (whitespace or a closing quote) rather than the input.
        let mut made = false;
        for ch in chars.by_ref() {
            if quoted {
                if !escaped {
                    if ch == '\\' {
                        escaped = true;
                        continue;
                    }
                    if ch == '"' {
                        made = true;
                        break;
                    }
                }
                if ch == '\n' {
                    line += 1;
                }
                if escaped && ch != '"' {
                    text.push('\\');
                }
                text.push(ch);
                escaped = false;
                continue;
            }
            if ch.is_whitespace() {
                if ch == '\r' {
                    continue;
                }
                if ch == '\n' {
                    line += 1;
                    comment = false;
                }
                if !text.is_empty() {
                    made = true;
                    break;
                }
                continue;
            }
            if ch == '#' {
                comment = true;
            }
            if comment {
                continue;
            }
            if text.is_empty() {
                start = line;
                if ch == '"' {
                    quoted = true;
                    continue;
                }
            }
            text.push(ch);
        }
        // At the end of the input a word (or an unterminated quoted word) is still a token.
        if !made && text.is_empty() {
            return tokens;
        }
        let breaks = text.matches('\n').count();
        tokens.push(Token {
            text,
            file: file.to_string(),
            line: start,
            breaks,
        });
        if !made {
            return tokens;
        }
    }
}

/// A plugin line of a server block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// The plugin's name, e.g. `k8s_external`.
    pub name: String,
    /// The file it came from.
    pub file: String,
    /// Its line in that file.
    pub line: usize,
}

/// One server block: its keys (e.g. `.:53`) and its directives in order, duplicates included.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerBlock {
    /// The block's addresses.
    pub keys: Vec<String>,
    /// Its directives, in the order CoreDNS reads them.
    pub directives: Vec<Directive>,
}

/// Why CoreDNS would refuse the Corefile, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file} line {line}: {message}")]
pub struct SyntaxError {
    /// The file the offending token came from.
    pub file: String,
    /// Its line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses `corefile` (named `name`) as CoreDNS does, importing from `files`: the keys of the
/// ConfigMap mounted at `dir` beside the Corefile (`custom` on AKS and k3s).
pub fn parse(
    name: &str,
    corefile: &str,
    dir: &str,
    files: &BTreeMap<String, String>,
) -> Result<Vec<ServerBlock>, SyntaxError> {
    let mut parser = Parser {
        tokens: tokenize(corefile, name),
        cursor: None,
        dir,
        files,
        snippets: BTreeMap::new(),
        expansions: 0,
        block: ServerBlock::default(),
        eof: false,
    };
    let mut blocks = Vec::new();
    while parser.next() {
        parser.block = ServerBlock::default();
        parser.eof = false;
        parser.begin()?;
        if !parser.block.keys.is_empty() {
            blocks.push(std::mem::take(&mut parser.block));
        }
    }
    Ok(blocks)
}

/// The keys of `files` a glob of one `*` matches, in name order.
fn matching<'f>(pattern: &str, files: &'f BTreeMap<String, String>) -> Vec<&'f str> {
    let matches = |name: &str| match pattern.split_once('*') {
        Some((prefix, suffix)) => {
            name.len() >= prefix.len() + suffix.len()
                && name.starts_with(prefix)
                && name.ends_with(suffix)
        }
        None => name == pattern,
    };
    files
        .keys()
        .map(String::as_str)
        .filter(|name| matches(name))
        .collect()
}

/// CoreDNS caps imports, so that a file importing itself fails instead of looping.
const MAX_EXPANSIONS: usize = 1000;

struct Parser<'a> {
    tokens: Vec<Token>,
    /// The current token; `None` before the first.
    cursor: Option<usize>,
    dir: &'a str,
    files: &'a BTreeMap<String, String>,
    snippets: BTreeMap<String, Vec<Token>>,
    expansions: usize,
    block: ServerBlock,
    eof: bool,
}

impl Parser<'_> {
    fn next(&mut self) -> bool {
        let next = self.cursor.map_or(0, |c| c + 1);
        if next < self.tokens.len() {
            self.cursor = Some(next);
            true
        } else {
            false
        }
    }

    /// Steps back one token (CoreDNS's `cursor--`), possibly to before the first.
    fn back(&mut self) {
        self.cursor = self.cursor.and_then(|c| c.checked_sub(1));
    }

    fn current(&self) -> Option<&Token> {
        self.cursor.and_then(|c| self.tokens.get(c))
    }

    fn val(&self) -> &str {
        self.current().map_or("", |t| t.text.as_str())
    }

    /// Whether the current token starts a line: the previous one is in another file, or ends on
    /// an earlier line.
    fn is_new_line(&self) -> bool {
        let Some(c) = self.cursor.filter(|c| *c >= 1) else {
            return true;
        };
        let (Some(prev), Some(cur)) = (self.tokens.get(c - 1), self.tokens.get(c)) else {
            return false;
        };
        prev.file != cur.file || prev.line + prev.breaks < cur.line
    }

    /// Moves to the next token if it is on the same line as the current one.
    fn next_arg(&mut self) -> bool {
        let Some(c) = self.cursor else {
            self.cursor = Some(0);
            return false;
        };
        match (self.tokens.get(c), self.tokens.get(c + 1)) {
            (Some(cur), Some(next))
                if cur.file == next.file && cur.line + cur.breaks == next.line =>
            {
                self.cursor = Some(c + 1);
                true
            }
            _ => false,
        }
    }

    fn error(&self, message: impl Into<String>) -> SyntaxError {
        let (file, line) = self
            .current()
            .or_else(|| self.tokens.last())
            .map_or((String::new(), 0), |t| (t.file.clone(), t.line));
        SyntaxError {
            file,
            line,
            message: message.into(),
        }
    }

    fn begin(&mut self) -> Result<(), SyntaxError> {
        if self.tokens.is_empty() {
            return Ok(());
        }
        self.addresses()?;
        if self.eof {
            return Ok(());
        }
        if let [key] = self.block.keys.as_slice() {
            if let Some(name) = key.strip_prefix('(').and_then(|k| k.strip_suffix(')')) {
                let name = name.to_string();
                if self.snippets.contains_key(&name) {
                    return Err(self.error(format!(
                        "redeclaration of previously declared snippet {name}"
                    )));
                }
                let tokens = self.snippet_tokens()?;
                self.snippets.insert(name, tokens);
                self.block.keys.clear();
                return Ok(());
            }
        }
        self.block_contents()
    }

    fn addresses(&mut self) -> Result<(), SyntaxError> {
        let mut expecting_another = false;
        loop {
            let token = self.val().to_string();
            if token == "import" && self.is_new_line() {
                self.import()?;
                continue;
            }
            if token == "{" {
                if expecting_another {
                    return Err(
                        self.error("Expected another address but had '{' - check for extra comma")
                    );
                }
                break;
            }
            if !token.is_empty() {
                let key = match token.strip_suffix(',') {
                    Some(key) => {
                        expecting_another = true;
                        key.to_string()
                    }
                    None => {
                        expecting_another = false;
                        token
                    }
                };
                self.block.keys.push(key);
            }
            let has_next = self.next();
            if expecting_another && !has_next {
                return Err(self.error("Unexpected EOF"));
            }
            if !has_next {
                self.eof = true;
                break;
            }
            if !expecting_another && self.is_new_line() {
                break;
            }
        }
        Ok(())
    }

    fn block_contents(&mut self) -> Result<(), SyntaxError> {
        let braced = self.val() == "{";
        if !braced {
            // A single server block may go without braces.
            self.back();
        }
        self.directives()?;
        if braced && self.val() != "}" {
            return Err(self.error(format!(
                "Wrong argument count or unexpected line ending after '{}': the server block {} is never closed",
                self.val(),
                self.block.keys.join(" ")
            )));
        }
        Ok(())
    }

    fn directives(&mut self) -> Result<(), SyntaxError> {
        while self.next() {
            if self.val() == "}" {
                break;
            }
            if self.val() == "import" {
                self.import()?;
                self.back();
                continue;
            }
            self.directive()?;
        }
        Ok(())
    }

    fn directive(&mut self) -> Result<(), SyntaxError> {
        let Some(start) = self.current().cloned() else {
            return Ok(());
        };
        self.block.directives.push(Directive {
            name: start.text.clone(),
            file: start.file.clone(),
            line: start.line,
        });
        let mut nesting = 0usize;
        while self.next() {
            if self.val() == "{" {
                nesting += 1;
            } else if self.is_new_line() && nesting == 0 {
                self.back();
                break;
            } else if self.val() == "}" && nesting > 0 {
                nesting -= 1;
            } else if self.val() == "}" {
                return Err(self.error(format!(
                    "Unexpected '}}' because no matching opening brace (after {})",
                    start.text
                )));
            } else if self.val() == "import" && self.is_new_line() {
                self.import()?;
                self.back();
            }
        }
        if nesting > 0 {
            return Err(SyntaxError {
                file: start.file,
                line: start.line,
                message: format!("the '{{' of {} is never closed", start.text),
            });
        }
        Ok(())
    }

    /// Replaces `import PATTERN` with the tokens it names; the cursor ends on the first of them.
    fn import(&mut self) -> Result<(), SyntaxError> {
        if !self.next_arg() {
            return Err(self.error("import needs a file, glob pattern or snippet name"));
        }
        let pattern = self.val().to_string();
        if self.next_arg() {
            return Err(self.error("Import takes only one argument (glob pattern or file)"));
        }
        if self.expansions >= MAX_EXPANSIONS {
            return Err(self.error(format!("maximum import depth ({MAX_EXPANSIONS}) exceeded")));
        }
        self.expansions += 1;
        let imported: Vec<Token> = if let Some(tokens) = self.snippets.get(&pattern) {
            tokens.clone()
        } else {
            // Only the mounted ConfigMap's files are known; anything else imports nothing here.
            let glob = pattern
                .rsplit_once('/')
                .filter(|(dir, _)| *dir == self.dir || dir.ends_with(&format!("/{}", self.dir)))
                .map(|(_, glob)| glob);
            glob.map(|glob| {
                matching(glob, self.files)
                    .into_iter()
                    .flat_map(|name| tokenize(&self.files[name], name))
                    .collect()
            })
            .unwrap_or_default()
        };
        let Some(at) = self.cursor else {
            return Ok(());
        };
        // `at` is the pattern; `at - 1` the `import`.
        let from = at.saturating_sub(1);
        self.tokens.splice(from..=at, imported);
        self.cursor = Some(from);
        Ok(())
    }

    fn snippet_tokens(&mut self) -> Result<Vec<Token>, SyntaxError> {
        if self.val() != "{" {
            return Err(self.error("a snippet needs a '{'"));
        }
        let mut depth = 1;
        let mut tokens = Vec::new();
        while self.next() {
            match self.val() {
                "}" => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(tokens);
                    }
                }
                "{" => depth += 1,
                _ => {}
            }
            if let Some(token) = self.current() {
                tokens.push(token.clone());
            }
        }
        Err(self.error("the snippet is never closed"))
    }
}

/// A file's braces on their own: an unexpected `}` or a `{` never closed, with its line. A key of
/// `coredns-custom` is spliced into the Corefile, so its braces must balance by themselves.
pub fn unbalanced_brace(text: &str) -> Option<(usize, String)> {
    let mut open: Vec<usize> = Vec::new();
    for token in tokenize(text, "") {
        match token.text.as_str() {
            "{" => open.push(token.line),
            "}" if open.pop().is_none() => {
                return Some((token.line, "'}' without a matching '{'".into()));
            }
            _ => {}
        }
    }
    open.first()
        .map(|line| (*line, "'{' is never closed".to_string()))
}

#[cfg(test)]
mod tests;
