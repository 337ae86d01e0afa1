//! Mapping between dotted field paths (`vip[0].backend[1].address`) and
//! positions in the TOML text, using `toml_edit`'s spans.

use std::ops::Range;
use toml_edit::{Array, ArrayOfTables, ImDocument, InlineTable, Item, Table, TableLike, Value};

/// One step of a dotted path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// A node of the parsed document, normalised over its representations
/// (standard vs. inline tables, arrays of tables vs. inline arrays).
#[derive(Clone, Copy)]
enum Node<'a> {
    Table(&'a Table),
    Inline(&'a InlineTable),
    Tables(&'a ArrayOfTables),
    Array(&'a Array),
    Scalar(&'a Value),
}

impl<'a> Node<'a> {
    fn from_item(item: &'a Item) -> Option<Self> {
        match item {
            Item::None => None,
            Item::Table(t) => Some(Node::Table(t)),
            Item::ArrayOfTables(a) => Some(Node::Tables(a)),
            Item::Value(v) => Some(Node::from_value(v)),
        }
    }

    fn from_value(v: &'a Value) -> Self {
        match v {
            Value::Array(a) => Node::Array(a),
            Value::InlineTable(t) => Node::Inline(t),
            other => Node::Scalar(other),
        }
    }

    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Table(t) => t.span(),
            Node::Inline(t) => t.span(),
            Node::Tables(a) => a.span(),
            Node::Array(a) => a.span(),
            Node::Scalar(v) => v.span(),
        }
    }

    fn table_like(self) -> Option<&'a dyn TableLike> {
        match self {
            Node::Table(t) => Some(t),
            Node::Inline(t) => Some(t),
            _ => None,
        }
    }

    /// Child by key: (span of the key, the child).
    fn get(self, key: &str) -> Option<(Option<Range<usize>>, Node<'a>)> {
        let (k, item) = self.table_like()?.get_key_value(key)?;
        Some((k.span(), Node::from_item(item)?))
    }

    fn index(self, i: usize) -> Option<Node<'a>> {
        match self {
            Node::Tables(a) => a.get(i).map(Node::Table),
            Node::Array(a) => a.get(i).map(Node::from_value),
            _ => None,
        }
    }

    /// All children with their path step and key span.
    fn children(self) -> Vec<(Seg, Option<Range<usize>>, Node<'a>)> {
        let mut out = Vec::new();
        if let Some(t) = self.table_like() {
            for (k, item) in t.iter() {
                if let Some(n) = Node::from_item(item) {
                    out.push((Seg::Key(k.to_string()), t.key(k).and_then(|k| k.span()), n));
                }
            }
            return out;
        }
        match self {
            Node::Tables(a) => {
                for (i, t) in a.iter().enumerate() {
                    out.push((Seg::Index(i), None, Node::Table(t)));
                }
            }
            Node::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    out.push((Seg::Index(i), None, Node::from_value(v)));
                }
            }
            _ => {}
        }
        out
    }
}

fn parse_path(path: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    if path.is_empty() {
        return segs;
    }
    for part in path.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            segs.push(Seg::Key(name.to_string()));
        }
        while let Some(stripped) = rest.strip_prefix('[') {
            let Some(end) = stripped.find(']') else { break };
            if let Ok(i) = stripped[..end].parse() {
                segs.push(Seg::Index(i));
            }
            rest = &stripped[end + 1..];
        }
    }
    segs
}

/// Renders path steps as `a[0].b`.
fn render_path(segs: &[Seg]) -> String {
    let mut s = String::new();
    for seg in segs {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => {
                s.push('[');
                s.push_str(&i.to_string());
                s.push(']');
            }
        }
    }
    s
}

/// Finds positions of field paths in one configuration text.
pub(crate) struct Locator<'t> {
    text: &'t str,
    doc: Option<ImDocument<&'t str>>,
}

impl<'t> Locator<'t> {
    /// Parses `text` for spans; if it is not valid TOML every path maps to 1:1.
    pub(crate) fn new(text: &'t str) -> Self {
        Locator {
            text,
            doc: ImDocument::parse(text).ok(),
        }
    }

    /// 1-based (line, column in characters) of a byte offset.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        position(self.text, offset)
    }

    /// Byte span of the value at `path`; if the path does not exist (a key
    /// left at its default, a missing table), the span of its deepest
    /// existing ancestor. `None` when not even the first step exists.
    pub(crate) fn span_of(&self, path: &str) -> Option<Range<usize>> {
        let doc = self.doc.as_ref()?;
        let mut node = Node::Table(doc.as_table());
        let mut best = None;
        for seg in parse_path(path) {
            let (key_span, next) = match &seg {
                Seg::Key(k) => match node.get(k) {
                    Some(x) => x,
                    None => break,
                },
                Seg::Index(i) => match node.index(*i) {
                    Some(n) => (None, n),
                    None => break,
                },
            };
            if let Some(s) = next.span().or(key_span) {
                best = Some(s);
            }
            node = next;
        }
        best
    }

    /// 1-based (line, column) of the value at `path`, see [`Self::span_of`];
    /// 1:1 when nothing of the path exists.
    pub(crate) fn locate(&self, path: &str) -> (usize, usize) {
        match self.span_of(path) {
            Some(s) => self.position(s.start),
            None => (1, 1),
        }
    }

    /// Dotted path of the innermost key or value whose span contains
    /// `offset`, or `None` if the text does not parse or no key matches.
    pub(crate) fn path_at(&self, offset: usize) -> Option<String> {
        let doc = self.doc.as_ref()?;
        let mut best: Option<(usize, usize, Vec<Seg>)> = None;
        let mut stack = Vec::new();
        search(Node::Table(doc.as_table()), offset, &mut stack, &mut best);
        best.map(|(_, _, segs)| render_path(&segs))
    }
}

fn contains(span: &Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset < span.end.max(span.start + 1)
}

/// Depth-first search for the smallest span containing `offset` (ties go to
/// the deeper path). Children are not pruned by their parent's span because
/// `[[a.b]]` tables live outside the span of their `[[a]]` parent.
fn search(
    node: Node<'_>,
    offset: usize,
    stack: &mut Vec<Seg>,
    best: &mut Option<(usize, usize, Vec<Seg>)>,
) {
    for (seg, key_span, child) in node.children() {
        stack.push(seg);
        for span in [key_span, child.span()].into_iter().flatten() {
            if contains(&span, offset) {
                let len = span.end.saturating_sub(span.start);
                let better = match best {
                    None => true,
                    Some((blen, bdepth, _)) => {
                        len < *blen || (len == *blen && stack.len() > *bdepth)
                    }
                };
                if better {
                    *best = Some((len, stack.len(), stack.clone()));
                }
            }
        }
        search(child, offset, stack, best);
        stack.pop();
    }
}

/// 1-based (line, column in characters) of a byte offset into `text`.
pub(crate) fn position(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Best-effort dotted path for a position in text that is not valid TOML:
/// the table header in force at `offset` plus the key on that line, if any.
pub(crate) fn guess_path(text: &str, offset: usize) -> String {
    let (line_no, _) = position(text, offset);
    let mut counts: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut current = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = strip_comment(raw).trim();
        let is_last = i + 1 == line_no;
        if let Some(inner) = line.strip_prefix("[[") {
            let name = inner.split(']').next().unwrap_or("");
            let resolved = resolve_header(name, &counts);
            let count = counts.entry(resolved.clone()).or_insert(0);
            *count += 1;
            current = format!("{resolved}[{}]", *count - 1);
            if is_last {
                return if resolved.is_empty() {
                    "(document)".into()
                } else {
                    current
                };
            }
        } else if let Some(inner) = line.strip_prefix('[') {
            let name = inner.split(']').next().unwrap_or("");
            current = resolve_header(name, &counts);
            if is_last {
                return if current.is_empty() {
                    "(document)".into()
                } else {
                    current
                };
            }
        } else if is_last {
            if let Some((key, _)) = line.split_once('=') {
                let key = clean_key(key);
                if !key.is_empty() {
                    return if current.is_empty() {
                        key
                    } else {
                        format!("{current}.{key}")
                    };
                }
            }
            break;
        }
    }
    if current.is_empty() {
        "(document)".into()
    } else {
        current
    }
}

fn strip_comment(line: &str) -> &str {
    // Good enough for locating errors: a `#` outside a basic string.
    let mut in_str = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' | '\'' => in_str = !in_str,
            '#' if !in_str => return &line[..i],
            _ => {}
        }
    }
    line
}

fn clean_key(key: &str) -> String {
    key.split('.')
        .map(|k| k.trim().trim_matches(|c| c == '"' || c == '\''))
        .collect::<Vec<_>>()
        .join(".")
}

/// `vip.backend` → `vip[N].backend` where N is the latest `[[vip]]`.
fn resolve_header(name: &str, counts: &std::collections::HashMap<String, usize>) -> String {
    let cleaned = clean_key(name);
    let parts: Vec<&str> = cleaned.split('.').collect();
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(part);
        if i + 1 < parts.len() {
            if let Some(&n) = counts.get(&out) {
                if n > 0 {
                    out.push_str(&format!("[{}]", n - 1));
                }
            }
        }
    }
    out
}
