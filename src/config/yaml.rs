//! YAML front end: runs the event stream through twemproxy's three pre-validation passes
//! (one document; no directives, explicit markers, flow collections, anchors, aliases or
//! tags; the `pool: {key: scalar, ..., one block sequence}` shape) and yields a raw model
//! that keeps key order and duplicates. Values are not interpreted here.
//!
//! walnut: the top-level key `walnut` is not a pool but a mapping of walnut's own settings,
//! and walnut's own nested directives ([`TREE_DIRECTIVES`]: `tls:`, `users:`, …) take any
//! block or flow YAML (mappings, sequences, scalars) up to [`MAX_TREE_DEPTH`] levels, read
//! into a [`RawNode`]. Everything twemproxy knows keeps twemproxy's shape rules.

use saphyr_parser::{Event, Parser, Span};

use super::text::one_line;
use super::ConfigError;

/// A scalar as written, with its 1-based position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Scalar {
    pub text: String,
    pub line: usize,
    pub col: usize,
}

/// The value of one pool directive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RawValue {
    Scalar(Scalar),
    /// A block sequence: twemproxy applies the directive to each item in turn.
    Seq(Vec<Scalar>),
    /// The whole value of one of walnut's nested directives ([`TREE_DIRECTIVES`]).
    Tree(RawNode),
}

/// Any YAML value under one of walnut's nested directives, with its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RawNode {
    Scalar(Scalar),
    Seq {
        items: Vec<RawNode>,
        line: usize,
        col: usize,
    },
    /// Keys in file order, duplicates kept (the directive's parser reports them).
    Map {
        entries: Vec<(Scalar, RawNode)>,
        line: usize,
        col: usize,
    },
}

impl RawNode {
    /// `(line N, column M)` of where the node starts.
    pub fn position(&self) -> String {
        let (line, col) = match self {
            RawNode::Scalar(s) => (s.line, s.col),
            RawNode::Seq { line, col, .. } | RawNode::Map { line, col, .. } => (*line, *col),
        };
        position(line, col)
    }

    /// What the node is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            RawNode::Scalar(s) if s.text.is_empty() => "an empty value",
            RawNode::Scalar(_) => "a scalar",
            RawNode::Seq { .. } => "a sequence",
            RawNode::Map { .. } => "a mapping",
        }
    }
}

/// Pool directives of walnut's own whose values are nested YAML (read whole as a
/// [`RawNode`]); flow collections (`[a, b]`, `{k: v}`) are allowed inside them.
pub(crate) const TREE_DIRECTIVES: [&str; 4] = ["tls", "server_tls", "users", "sentinels"];

/// How deep a nested directive's value may go; deeper is an error, never a deep recursion.
pub(crate) const MAX_TREE_DEPTH: usize = 8;

/// One `key: value` line of a pool, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RawEntry {
    pub key: Scalar,
    pub value: RawValue,
}

/// One pool, in file order, directives kept in file order (duplicates included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RawPool {
    pub name: Scalar,
    pub entries: Vec<RawEntry>,
}

/// The value of one walnut setting: a scalar, or what else it was (for messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RawSettingValue {
    Scalar(Scalar),
    /// "a sequence", "a mapping", ...
    Other(&'static str),
}

/// One `key: value` of the `walnut:` mapping, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RawSetting {
    pub key: Scalar,
    pub value: RawSettingValue,
}

/// One top-level `walnut:` mapping (walnut's own settings), entries in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RawSettings {
    pub entries: Vec<RawSetting>,
}

/// The reserved top-level key of walnut's own settings.
pub(crate) const SETTINGS_KEY: &str = "walnut";

/// The whole document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RawDoc {
    pub pools: Vec<RawPool>,
    /// Every top-level `walnut:` mapping, in file order (more than one is an error).
    pub settings: Vec<RawSettings>,
}

type Events<'a> = Vec<(Event<'a>, Span)>;

/// Reads `text` into the raw model, or returns every structural problem found.
pub(crate) fn read(text: &str, file: &str) -> Result<RawDoc, Vec<ConfigError>> {
    let events = collect_events(text, file).map_err(|e| vec![e])?;

    let documents = events
        .iter()
        .filter(|(ev, _)| matches!(ev, Event::DocumentStart(_)))
        .count();
    if documents != 1 {
        return Err(vec![ConfigError(format!(
            "conf: '{file}' must contain only 1 document; found {documents} documents"
        ))]);
    }

    let chars: Vec<char> = text.chars().collect();
    let token_errors = check_tokens(&events, &chars, file);
    if !token_errors.is_empty() {
        return Err(token_errors);
    }

    let mut walker = Walker {
        ev: &events,
        file,
        errs: Vec::new(),
    };
    let doc = walker.document();
    if walker.errs.is_empty() {
        Ok(doc)
    } else {
        Err(walker.errs)
    }
}

/// Runs the YAML parser to the end; a syntax error becomes a `ConfigError` with its position.
fn collect_events<'a>(text: &'a str, file: &str) -> Result<Events<'a>, ConfigError> {
    // The parser is not expected to panic, but a configuration must never bring the
    // process down with a panic: treat one as a syntax error.
    let result = std::panic::catch_unwind(|| {
        let mut out = Vec::new();
        for item in Parser::new_from_str(text) {
            match item {
                Ok(pair) => out.push(pair),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    });
    match result {
        Ok(Ok(events)) => Ok(events),
        Ok(Err(e)) => Err(ConfigError(format!(
            "conf: '{file}' is not valid YAML: {} {}",
            one_line(e.info()),
            position(e.marker().line(), e.marker().col() + 1)
        ))),
        Err(_) => Err(ConfigError(format!(
            "conf: '{file}' is not valid YAML: the YAML parser failed"
        ))),
    }
}

fn position(line: usize, col: usize) -> String {
    format!("(line {line}, column {col})")
}

fn span_pos(span: &Span) -> String {
    position(span.start.line(), span.start.col() + 1)
}

/// The character at a parser character index, if any.
fn char_at(chars: &[char], index: usize) -> Option<char> {
    chars.get(index).copied()
}

/// `conf_validate_tokens`: everything beyond plain block YAML is disallowed.
fn check_tokens(events: &Events<'_>, chars: &[char], file: &str) -> Vec<ConfigError> {
    let mut errs = Vec::new();
    let mut push = |what: &str, pos: String| {
        errs.push(ConfigError(format!(
            "conf: '{file}' {what} is disallowed {pos}"
        )));
    };
    // One entry per open collection: whether it is (inside) a flow collection.
    let mut in_flow: Vec<bool> = Vec::new();
    let mut tree = TreeTracker::default();

    for (ev, span) in events {
        let start = span.start.index();
        let parent_flow = in_flow.last().copied().unwrap_or(false);
        let flow_allowed = tree.step(ev);
        match ev {
            Event::DocumentStart(true) => {
                for (line, name) in directives_before(chars, start) {
                    let what = match name.as_str() {
                        "YAML" => "version directive token (3)",
                        "TAG" => "tag directive token (4)",
                        _ => "directive token",
                    };
                    push(what, position(line, 1));
                }
                push("document start token (5)", span_pos(span));
            }
            Event::DocumentEnd => {
                let explicit = (0..3).all(|k| char_at(chars, start + k) == Some('.'));
                if explicit {
                    push("document end token (6)", span_pos(span));
                }
            }
            Event::Alias(_) => push("alias token (18)", span_pos(span)),
            Event::Scalar(_, _, anchor, tag) => {
                if *anchor != 0 {
                    push("anchor token (19)", span_pos(span));
                }
                if tag.is_some() {
                    push("tag token (20)", span_pos(span));
                }
            }
            Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag) => {
                let is_seq = matches!(ev, Event::SequenceStart(..));
                let opener = if is_seq { '[' } else { '{' };
                let flow = char_at(chars, start) == Some(opener);
                if flow && !parent_flow && !flow_allowed {
                    if is_seq {
                        push("flow sequence start token (10)", span_pos(span));
                    } else {
                        push("flow mapping start token (12)", span_pos(span));
                    }
                }
                if *anchor != 0 {
                    push("anchor token (19)", span_pos(span));
                }
                if tag.is_some() {
                    push("tag token (20)", span_pos(span));
                }
                in_flow.push(flow || parent_flow);
            }
            Event::SequenceEnd | Event::MappingEnd => {
                in_flow.pop();
            }
            _ => {}
        }
    }
    errs
}

/// Follows the collections open in the event stream, to tell whether an event lies inside
/// the value of one of walnut's nested directives (a pool's [`TREE_DIRECTIVES`] key), where
/// flow collections are allowed.
#[derive(Default)]
struct TreeTracker {
    /// One entry per open collection.
    open: Vec<TreeFrame>,
}

struct TreeFrame {
    mapping: bool,
    /// In a mapping: the next node is a key.
    key_next: bool,
    /// The last key read in this mapping, when it is a tree directive's name.
    tree_key: bool,
    /// This collection lies inside a tree directive's value.
    inside_tree: bool,
}

impl TreeTracker {
    /// Takes one event; true when it lies inside a tree directive's value.
    fn step(&mut self, ev: &Event<'_>) -> bool {
        match ev {
            Event::Scalar(text, ..) => {
                let depth = self.open.len();
                if let Some(top) = self.open.last_mut() {
                    if top.mapping && top.key_next {
                        top.key_next = false;
                        // Depth 2: the keys of a pool's mapping.
                        top.tree_key = depth == 2 && TREE_DIRECTIVES.contains(&text.as_ref());
                        return top.inside_tree;
                    }
                    let inside = top.inside_tree || top.tree_key;
                    top.key_next = top.mapping;
                    return inside;
                }
                false
            }
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                let mut inside = false;
                if let Some(top) = self.open.last_mut() {
                    let as_value = !(top.mapping && top.key_next);
                    inside = top.inside_tree || (as_value && top.tree_key);
                    if top.mapping {
                        // A collection as a key (an error later) or as a value: the node
                        // after it is the other one.
                        top.key_next = as_value;
                        if !as_value {
                            top.tree_key = false;
                        }
                    }
                }
                self.open.push(TreeFrame {
                    mapping: matches!(ev, Event::MappingStart(..)),
                    key_next: true,
                    tree_key: false,
                    inside_tree: inside,
                });
                inside
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.open.pop();
                false
            }
            _ => false,
        }
    }
}

/// `%NAME ...` lines before an explicit `---` at character index `end`: (1-based line, NAME).
fn directives_before(chars: &[char], end: usize) -> Vec<(usize, String)> {
    let region: String = chars.iter().take(end).collect();
    region
        .split('\n')
        .enumerate()
        .filter_map(|(n, line)| {
            let rest = line.strip_prefix('%')?;
            let name: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
            Some((n + 1, name))
        })
        .collect()
}

/// `conf_validate_structure`, on the event list, without recursion.
struct Walker<'a, 'e> {
    ev: &'a [(Event<'e>, Span)],
    file: &'a str,
    errs: Vec<ConfigError>,
}

impl Walker<'_, '_> {
    fn event(&self, i: usize) -> Option<&Event<'_>> {
        self.ev.get(i).map(|(e, _)| e)
    }

    fn pos(&self, i: usize) -> String {
        match self.ev.get(i) {
            Some((_, span)) => span_pos(span),
            None => String::from("(end of file)"),
        }
    }

    fn scalar(&self, i: usize) -> Option<Scalar> {
        match self.ev.get(i) {
            Some((Event::Scalar(text, ..), span)) => Some(Scalar {
                text: text.to_string(),
                line: span.start.line(),
                col: span.start.col() + 1,
            }),
            _ => None,
        }
    }

    /// What the node at `i` is, for messages.
    fn kind(&self, i: usize) -> &'static str {
        match self.event(i) {
            Some(Event::Scalar(text, ..)) if text.is_empty() => "an empty value",
            Some(Event::Scalar(..)) => "a scalar",
            Some(Event::SequenceStart(..)) => "a sequence",
            Some(Event::MappingStart(..)) => "a mapping",
            Some(Event::Alias(..)) => "an alias",
            _ => "nothing",
        }
    }

    /// The index just past the node starting at `i`.
    fn skip(&self, i: usize) -> usize {
        match self.event(i) {
            Some(Event::SequenceStart(..) | Event::MappingStart(..)) => {
                let mut depth = 0usize;
                for (j, (ev, _)) in self.ev.iter().enumerate().skip(i) {
                    match ev {
                        Event::SequenceStart(..) | Event::MappingStart(..) => depth += 1,
                        Event::SequenceEnd | Event::MappingEnd => {
                            depth = depth.saturating_sub(1);
                            if depth == 0 {
                                return j + 1;
                            }
                        }
                        _ => {}
                    }
                }
                self.ev.len()
            }
            Some(_) => i + 1,
            None => self.ev.len(),
        }
    }

    /// True when `i` closes the current collection (or the events ran out).
    fn at_end(&self, i: usize) -> bool {
        matches!(
            self.event(i),
            None | Some(
                Event::MappingEnd | Event::SequenceEnd | Event::DocumentEnd | Event::StreamEnd
            )
        )
    }

    fn error(&mut self, at: usize, twemproxy: &str, why: &str) {
        let msg = format!("conf: '{}' {twemproxy}: {why} {}", self.file, self.pos(at));
        self.errs.push(ConfigError(msg));
    }

    fn document(&mut self) -> RawDoc {
        let mut doc = RawDoc {
            pools: Vec::new(),
            settings: Vec::new(),
        };
        let Some(start) = self
            .ev
            .iter()
            .position(|(e, _)| matches!(e, Event::DocumentStart(_)))
        else {
            return doc;
        };
        let root = start + 1;
        match self.event(root) {
            Some(Event::MappingStart(..)) => {}
            Some(Event::SequenceStart(..)) => {
                self.error(
                    root,
                    "has sequence at depth 0 instead of 2",
                    "the top level must be a mapping of pool names, not a sequence",
                );
                return doc;
            }
            _ => {
                let why = format!(
                    "the top level must be a mapping of pool names, not {}",
                    self.kind(root)
                );
                self.error(root, "has invalid empty \"key:\" at depth 0", &why);
                return doc;
            }
        }

        let mut i = root + 1;
        while !self.at_end(i) {
            let key = i;
            let value = self.skip(key);
            i = self.skip(value);
            let name = match self.event(key) {
                Some(Event::Scalar(..)) => self.scalar(key),
                Some(Event::SequenceStart(..)) => {
                    self.error(
                        key,
                        "has sequence at depth 1 instead of 2",
                        "a pool name must be a scalar, not a sequence",
                    );
                    None
                }
                _ => {
                    let why = format!("a pool name must be a scalar, not {}", self.kind(key));
                    self.error(key, "has more than one \"key:value\" at depth 1", &why);
                    None
                }
            };
            let Some(name) = name else { continue };
            if name.text == SETTINGS_KEY {
                if let Some(settings) = self.settings(value) {
                    doc.settings.push(settings);
                }
                continue;
            }
            match self.event(value) {
                Some(Event::MappingStart(..)) => doc.pools.push(self.pool(name, key, value)),
                Some(Event::SequenceStart(..)) => {
                    let why = format!(
                        "pool '{}' must be a mapping of directives, not a sequence",
                        one_line(&name.text)
                    );
                    self.error(value, "has sequence at depth 1 instead of 2", &why);
                }
                _ => {
                    let why = format!(
                        "pool '{}' must be a mapping of directives, not {}",
                        one_line(&name.text),
                        self.kind(value)
                    );
                    self.error(value, "has invalid mapping \"key:\" at depth 1", &why);
                }
            }
        }
        doc
    }

    /// The value of the top-level `walnut:` key, at `start`: a mapping of settings whose
    /// names are scalars. Values are kept whatever they are; they are checked later.
    fn settings(&mut self, start: usize) -> Option<RawSettings> {
        if !matches!(self.event(start), Some(Event::MappingStart(..))) {
            let msg = format!(
                "conf: '{}' top-level key \"{SETTINGS_KEY}\" must be a mapping of walnut settings, not {} {}",
                self.file,
                self.kind(start),
                self.pos(start)
            );
            self.errs.push(ConfigError(msg));
            return None;
        }
        let mut entries = Vec::new();
        let mut i = start + 1;
        while !self.at_end(i) {
            let key_at = i;
            let value_at = self.skip(key_at);
            i = self.skip(value_at);
            let Some(key) = self.scalar(key_at) else {
                let msg = format!(
                    "conf: '{}' top-level key \"{SETTINGS_KEY}\" has {} where a setting name is expected {}",
                    self.file,
                    self.kind(key_at),
                    self.pos(key_at)
                );
                self.errs.push(ConfigError(msg));
                continue;
            };
            let value = match self.scalar(value_at) {
                Some(value) => RawSettingValue::Scalar(value),
                None => RawSettingValue::Other(self.kind(value_at)),
            };
            entries.push(RawSetting { key, value });
        }
        Some(RawSettings { entries })
    }

    /// One pool body: the mapping starting at `start`, named by the scalar at `name_at`.
    fn pool(&mut self, name: Scalar, name_at: usize, start: usize) -> RawPool {
        let pool = one_line(&name.text);
        let mut entries = Vec::new();
        let mut seq_key: Option<String> = None;
        let mut scalar_servers = false;

        let mut i = start + 1;
        while !self.at_end(i) {
            let key_at = i;
            let value_at = self.skip(key_at);
            i = self.skip(value_at);
            let key = match self.event(key_at) {
                Some(Event::Scalar(..)) => self.scalar(key_at),
                Some(Event::SequenceStart(..)) => {
                    let why =
                        format!("pool '{pool}' has a sequence where a directive name is expected");
                    self.error(key_at, "has invalid \"key:value\" at depth 2", &why);
                    None
                }
                _ => {
                    let why = format!(
                        "pool '{pool}' has {} where a directive name is expected",
                        self.kind(key_at)
                    );
                    self.error(key_at, "has a depth greater than 2", &why);
                    None
                }
            };
            let Some(key) = key else { continue };
            let directive = one_line(&key.text);

            if TREE_DIRECTIVES.contains(&key.text.as_str()) {
                if let Some(node) = self.node(&pool, &directive, value_at, 1) {
                    entries.push(RawEntry {
                        key,
                        value: RawValue::Tree(node),
                    });
                }
                continue;
            }
            match self.event(value_at) {
                Some(Event::Scalar(..)) => {
                    if key.text == "servers" {
                        scalar_servers = true;
                    }
                    if let Some(value) = self.scalar(value_at) {
                        entries.push(RawEntry {
                            key,
                            value: RawValue::Scalar(value),
                        });
                    }
                }
                Some(Event::SequenceStart(..)) => {
                    if let Some(first) = &seq_key {
                        let why = format!(
                            "pool '{pool}' has a sequence under both \"{first}\" and \"{directive}\""
                        );
                        self.error(value_at, "has more than one sequence directive", &why);
                        continue;
                    }
                    seq_key = Some(directive.clone());
                    let items = self.sequence(&pool, &directive, value_at);
                    entries.push(RawEntry {
                        key,
                        value: RawValue::Seq(items),
                    });
                }
                _ => {
                    let why = format!(
                        "directive \"{directive}\" of pool '{pool}' must be a scalar or a block sequence of scalars, not {}",
                        self.kind(value_at)
                    );
                    self.error(value_at, "has a depth greater than 2", &why);
                }
            }
        }

        if seq_key.is_none() {
            let why = if scalar_servers {
                format!(
                    "pool '{pool}': \"servers\" must be a block sequence (one \"- host:port:weight [name]\" per line), not a scalar"
                )
            } else {
                format!("pool '{pool}' has no \"servers:\" block sequence")
            };
            self.error(name_at, "missing sequence directive at depth 2", &why);
        }

        RawPool { name, entries }
    }

    /// The node starting at `at`, `depth` levels below its directive (bounded by
    /// [`MAX_TREE_DEPTH`], so a hostile file cannot recurse deeply).
    fn node(&mut self, pool: &str, directive: &str, at: usize, depth: usize) -> Option<RawNode> {
        let (line, col) = match self.ev.get(at) {
            Some((_, span)) => (span.start.line(), span.start.col() + 1),
            None => (0, 0),
        };
        let collection = matches!(
            self.event(at),
            Some(Event::SequenceStart(..) | Event::MappingStart(..))
        );
        if collection && depth > MAX_TREE_DEPTH {
            let why = format!(
                "directive \"{directive}\" of pool '{pool}' nests deeper than {MAX_TREE_DEPTH} levels"
            );
            self.error(at, "has a depth greater than 2", &why);
            return None;
        }
        match self.event(at) {
            Some(Event::Scalar(..)) => self.scalar(at).map(RawNode::Scalar),
            Some(Event::SequenceStart(..)) => {
                let mut items = Vec::new();
                let mut i = at + 1;
                while !self.at_end(i) {
                    let item = i;
                    i = self.skip(item);
                    items.extend(self.node(pool, directive, item, depth + 1));
                }
                Some(RawNode::Seq { items, line, col })
            }
            Some(Event::MappingStart(..)) => {
                let mut entries = Vec::new();
                let mut i = at + 1;
                while !self.at_end(i) {
                    let key_at = i;
                    let value_at = self.skip(key_at);
                    i = self.skip(value_at);
                    let Some(key) = self.scalar(key_at) else {
                        let why = format!(
                            "directive \"{directive}\" of pool '{pool}' has {} where a key is expected",
                            self.kind(key_at)
                        );
                        self.error(key_at, "has a depth greater than 2", &why);
                        continue;
                    };
                    if let Some(value) = self.node(pool, directive, value_at, depth + 1) {
                        entries.push((key, value));
                    }
                }
                Some(RawNode::Map { entries, line, col })
            }
            _ => {
                let why = format!(
                    "directive \"{directive}\" of pool '{pool}' has {} as a value",
                    self.kind(at)
                );
                self.error(at, "has a depth greater than 2", &why);
                None
            }
        }
    }

    /// The items of the sequence starting at `start`; only scalars are allowed.
    fn sequence(&mut self, pool: &str, directive: &str, start: usize) -> Vec<Scalar> {
        let mut items = Vec::new();
        let mut i = start + 1;
        while !self.at_end(i) {
            let at = i;
            i = self.skip(at);
            match self.event(at) {
                Some(Event::Scalar(..)) => items.extend(self.scalar(at)),
                Some(Event::SequenceStart(..)) => {
                    let why =
                        format!("directive \"{directive}\" of pool '{pool}' has a nested sequence");
                    self.error(at, "has more than one sequence directive", &why);
                }
                _ => {
                    let why = format!(
                        "directive \"{directive}\" of pool '{pool}' has {} as an entry",
                        self.kind(at)
                    );
                    self.error(at, "has a depth greater than 2", &why);
                }
            }
        }
        items
    }
}
