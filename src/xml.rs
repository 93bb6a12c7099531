//! The one XML reader for every message beeldbrug reads (XUA assertions, the Mitz consent
//! messages, later the XDS-I / XCA-I SOAP front): a small owned element tree, namespace
//! resolved, so callers match on namespace name and local name whatever prefixes the sender
//! chose (Namespaces in XML 1.0 §4: only those two identify an element or attribute).
//!
//! Parsing is roxmltree's, a strict XML 1.0 parser (well-formedness, namespace constraints,
//! duplicate attributes by expanded name) that never panics and never fetches anything. On top
//! of it every document is held to [`Limits`]:
//! - a size limit, checked before any parsing;
//! - no document type declaration at all, so no entity is ever declared or expanded (SOAP 1.2
//!   part 1 §5: "A SOAP message MUST NOT contain a Document Type Declaration"; SAML core
//!   assertions carry none either); only the five predefined entities and character
//!   references are resolved;
//! - a node limit (roxmltree's `nodes_limit`) and a nesting-depth limit, so neither memory nor
//!   the callers' walks over the tree grow without bound.
//!
//! XML-DSig is not done on this tree: bergshamra parses the signed bytes itself.

use std::borrow::Cow;

/// How much of a document is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest document, bytes.
    pub max_bytes: usize,
    /// Most nested elements (the document element is depth 1).
    pub max_depth: usize,
    /// Most nodes: elements, text runs, comments and processing instructions.
    pub max_nodes: u32,
}

impl Limits {
    /// Enough for any SOAP message we exchange (they nest about 10 deep and hold a few hundred
    /// nodes); the HTTP bodies that carry them are limited to the same 1 MiB.
    pub const DEFAULT: Limits = Limits {
        max_bytes: 1 << 20,
        max_depth: 64,
        max_nodes: 30_000,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    #[error("document of {size} bytes, more than the {limit} accepted")]
    TooLarge { size: usize, limit: usize },
    #[error("not UTF-8: {0}")]
    NotUtf8(#[from] std::str::Utf8Error),
    #[error("a document type declaration is not accepted")]
    Doctype,
    #[error("prefix {0:?} is not bound to a namespace")]
    UnboundPrefix(String),
    #[error("unknown entity &{0};")]
    Entity(String),
    #[error("elements nested deeper than {0}")]
    TooDeep(usize),
    #[error("more than {0} nodes")]
    TooMany(u32),
    #[error("not well-formed XML: {0}")]
    Malformed(roxmltree::Error),
}

impl From<roxmltree::Error> for XmlError {
    fn from(e: roxmltree::Error) -> Self {
        match e {
            roxmltree::Error::DtdDetected => XmlError::Doctype,
            roxmltree::Error::UnknownNamespace(prefix, _) => XmlError::UnboundPrefix(prefix),
            roxmltree::Error::UnknownEntityReference(name, _) => XmlError::Entity(name),
            other => XmlError::Malformed(other),
        }
    }
}

/// One element: its namespace name (`None` when it has none), local name, attributes
/// (namespace, local name, value; namespace declarations left out), child elements, and the
/// text directly inside it (text runs, CDATA sections and references, concatenated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    pub ns: Option<String>,
    pub name: String,
    pub attrs: Vec<(Option<String>, String, String)>,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    /// This element is `name` in namespace `ns`.
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.in_ns(ns) && self.name == name
    }

    /// This element is in namespace `ns`.
    pub fn in_ns(&self, ns: &str) -> bool {
        self.ns.as_deref() == Some(ns)
    }

    /// The expanded name in Clark notation, `{namespace}local` (or `local`), for messages.
    pub fn expanded_name(&self) -> String {
        match &self.ns {
            Some(ns) => format!("{{{ns}}}{}", self.name),
            None => self.name.clone(),
        }
    }

    /// An unqualified attribute (the form most attributes of our messages take).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(ns, local, _)| ns.is_none() && local == name)
            .map(|(_, _, v)| v.as_str())
    }

    /// An attribute in a namespace (e.g. `xsi:type`, `env:mustUnderstand`).
    pub fn attr_ns(&self, ns: &str, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, local, _)| n.as_deref() == Some(ns) && local == name)
            .map(|(_, _, v)| v.as_str())
    }

    /// The first child element `name` in namespace `ns`.
    pub fn child(&self, ns: &str, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(ns, name))
    }

    /// Every child element `name` in namespace `ns`, in document order.
    pub fn children_named<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.is(ns, name))
    }

    /// This element and every element below it, in document order.
    pub fn descendants(&self) -> impl Iterator<Item = &Element> {
        let mut stack = vec![self];
        std::iter::from_fn(move || {
            let next = stack.pop()?;
            stack.extend(next.children.iter().rev());
            Some(next)
        })
    }

    /// The text of this element, trimmed (XML Schema whiteSpace="collapse" for tokens).
    pub fn trimmed(&self) -> &str {
        self.text.trim()
    }
}

/// Parse a whole document into its document element, within [`Limits::DEFAULT`].
pub fn parse(xml: &[u8]) -> Result<Element, XmlError> {
    parse_with(xml, &Limits::DEFAULT)
}

/// The roxmltree document of `xml` within `limits`: its size, UTF-8 only (XML 1.0 §4.3.3:
/// the encoding every message we exchange uses), no DTD, at most `max_nodes` nodes.
fn read_document<'a>(xml: &'a [u8], limits: &Limits) -> Result<roxmltree::Document<'a>, XmlError> {
    if xml.len() > limits.max_bytes {
        return Err(XmlError::TooLarge {
            size: xml.len(),
            limit: limits.max_bytes,
        });
    }
    let text = std::str::from_utf8(xml)?;
    let options = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: limits.max_nodes,
        ..Default::default()
    };
    roxmltree::Document::parse_with_options(text, options).map_err(|e| match e {
        roxmltree::Error::NodesLimitReached => XmlError::TooMany(limits.max_nodes),
        other => XmlError::from(other),
    })
}

/// Parse a whole document into its document element, within `limits`. Only UTF-8 is read
/// (XML 1.0 §4.3.3: the encoding every message we exchange uses).
pub fn parse_with(xml: &[u8], limits: &Limits) -> Result<Element, XmlError> {
    let document = read_document(xml, limits)?;
    element(document.root_element(), 1, limits.max_depth)
}

/// Every element `name` in namespace `ns` at `path` below the document element (each step a
/// `(namespace, local name)` child, e.g. SOAP Header, then wsse:Security), as a document of
/// its own: its source text exactly as sent, with the namespace declarations it inherits
/// from its ancestors added to its start tag. For a signed element (an XUA assertion inside a
/// SOAP envelope) whose signature is verified on those bytes: exclusive C14N (the canonical
/// form XML-DSig uses here) depends only on the namespaces in scope, which this keeps.
/// Parsed within `limits`, with the same refusals as [`parse_with`].
pub fn extract_at(
    xml: &[u8],
    limits: &Limits,
    path: &[(&str, &str)],
    ns: &str,
    name: &str,
) -> Result<Vec<String>, XmlError> {
    let document = read_document(xml, limits)?;
    let is = |n: &roxmltree::Node<'_, '_>, (want_ns, want): (&str, &str)| {
        n.is_element() && n.tag_name().namespace() == Some(want_ns) && n.tag_name().name() == want
    };
    let mut level = vec![document.root_element()];
    for step in path {
        level = level
            .iter()
            .flat_map(|n| n.children())
            .filter(|c| is(c, *step))
            .collect();
    }
    let mut out = Vec::new();
    for node in level
        .iter()
        .flat_map(|n| n.children())
        .filter(|c| is(c, (ns, name)))
    {
        if node.ancestors().count() > limits.max_depth + 1 {
            return Err(XmlError::TooDeep(limits.max_depth));
        }
        out.push(standalone(document.input_text(), node));
    }
    Ok(out)
}

/// The source of `node` with the namespaces in scope declared on its start tag where the
/// tag does not declare them itself.
fn standalone(text: &str, node: roxmltree::Node<'_, '_>) -> String {
    let source = &text[node.range()];
    let tag_end = start_tag_end(source);
    let (tag, rest) = source.split_at(tag_end);
    let declared = |prefix: Option<&str>| {
        let attr = match prefix {
            Some(p) => format!("xmlns:{p}"),
            None => "xmlns".to_string(),
        };
        start_tag_attributes(tag).any(|a| a == attr)
    };
    let mut extra = String::new();
    for ns in node.namespaces() {
        if ns.name() == Some("xml") || declared(ns.name()) {
            continue;
        }
        match ns.name() {
            Some(p) => extra.push_str(&format!(" xmlns:{p}=\"{}\"", escape(ns.uri()))),
            None => extra.push_str(&format!(" xmlns=\"{}\"", escape(ns.uri()))),
        }
    }
    // After the element name: `<name` then the declarations.
    let name_end = tag
        .char_indices()
        .skip(1)
        .find(|(_, c)| c.is_whitespace() || *c == '>' || *c == '/')
        .map(|(i, _)| i)
        .unwrap_or(tag.len());
    format!("{}{extra}{}{rest}", &tag[..name_end], &tag[name_end..])
}

/// Where the start tag of a well-formed element source ends (after its `>`).
fn start_tag_end(source: &str) -> usize {
    let mut quote: Option<char> = None;
    for (i, c) in source.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '>') => return i + 1,
            _ => {}
        }
    }
    source.len()
}

/// The attribute names of a start tag (`<a:x p="1" q='2'>`), in order.
fn start_tag_attributes(tag: &str) -> impl Iterator<Item = &str> {
    let mut names = Vec::new();
    let mut rest = tag.trim_start_matches('<');
    // Skip the element name.
    rest = rest.trim_start_matches(|c: char| !c.is_whitespace() && c != '>' && c != '/');
    loop {
        rest = rest.trim_start();
        let Some(eq) = rest.find('=') else { break };
        if rest.starts_with('>') || rest.starts_with('/') {
            break;
        }
        names.push(rest[..eq].trim());
        rest = rest[eq + 1..].trim_start();
        let Some(q) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            break;
        };
        let Some(close) = rest[1..].find(q) else {
            break;
        };
        rest = &rest[close + 2..];
    }
    names.into_iter()
}

/// Copy one roxmltree element and what is below it; recursion stops at `max_depth`.
fn element(
    node: roxmltree::Node<'_, '_>,
    depth: usize,
    max_depth: usize,
) -> Result<Element, XmlError> {
    if depth > max_depth {
        return Err(XmlError::TooDeep(max_depth));
    }
    let tag = node.tag_name();
    let mut out = Element {
        ns: tag.namespace().map(str::to_string),
        name: tag.name().to_string(),
        attrs: node
            .attributes()
            .map(|a| {
                (
                    a.namespace().map(str::to_string),
                    a.name().to_string(),
                    a.value().to_string(),
                )
            })
            .collect(),
        ..Default::default()
    };
    for child in node.children() {
        if child.is_element() {
            out.children.push(element(child, depth + 1, max_depth)?);
        } else if let Some(text) = child.text().filter(|_| child.is_text()) {
            out.text.push_str(text);
        }
    }
    Ok(out)
}

/// Escape text for element content or a double- or single-quoted attribute value. A
/// character XML 1.0 does not allow at all (XML 1.0 section 2.2 `Char`: the C0 controls
/// but tab, newline and carriage return; U+FFFE, U+FFFF) becomes U+FFFD: it cannot be
/// escaped, and a parser's error message that quotes a peer's bytes (a NUL) would
/// otherwise make our own Fault or RegistryError unreadable.
pub fn escape(value: &str) -> Cow<'_, str> {
    if !value.chars().any(not_xml) {
        return quick_xml::escape::escape(value);
    }
    let clean: String = value
        .chars()
        .map(|c| if not_xml(c) { '\u{FFFD}' } else { c })
        .collect();
    Cow::Owned(quick_xml::escape::escape(&clean).into_owned())
}

/// Not a `Char` of XML 1.0 (surrogates cannot occur in a `str`).
fn not_xml(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{B}' | '\u{C}' | '\u{E}'..='\u{1F}' | '\u{FFFE}' | '\u{FFFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_resolve_to_namespaces() {
        let a = parse(br#"<a:x xmlns:a="urn:n" b="1"><a:y>t&amp;&#65;</a:y></a:x>"#).unwrap();
        let b = parse(br#"<x xmlns="urn:n" b="1"><y>t&amp;A</y></x>"#).unwrap();
        assert_eq!(a, b);
        assert!(a.is("urn:n", "x"));
        assert_eq!(a.attr("b"), Some("1"));
        assert_eq!(a.child("urn:n", "y").unwrap().text, "t&A");
        assert_eq!(a.expanded_name(), "{urn:n}x");
    }

    #[test]
    fn reads_attributes_text_cdata_and_unqualified_children() {
        let root = parse(
            br#"<?xml version="1.0" encoding="UTF-8"?>
<!-- a comment --><a:x xmlns:a="urn:a" xmlns:b="urn:b" b:k="1&amp;2" k="plain"><a:y>p&lt;q<![CDATA[<raw>]]>&#x41;</a:y><z/><?pi data?></a:x>"#,
        )
        .unwrap();
        assert_eq!(root.attr_ns("urn:b", "k"), Some("1&2"));
        assert_eq!(root.attr("k"), Some("plain"));
        assert_eq!(
            root.attrs.len(),
            2,
            "namespace declarations are not attributes"
        );
        assert_eq!(root.child("urn:a", "y").unwrap().text, "p<q<raw>A");
        assert_eq!(root.children[1].ns, None);
        assert_eq!(root.children[1].expanded_name(), "z");
        // A default namespace applies to elements, never to unprefixed attributes (NS §6.2).
        let d = parse(br#"<x xmlns="urn:d" a="1"/>"#).unwrap();
        assert!(d.in_ns("urn:d"));
        assert_eq!(d.attr("a"), Some("1"));
        // The xml prefix is bound without a declaration (NS §3).
        let l = parse(br#"<x xml:lang="nl"/>"#).unwrap();
        assert_eq!(
            l.attr_ns("http://www.w3.org/XML/1998/namespace", "lang"),
            Some("nl")
        );
    }

    #[test]
    fn descendants_in_document_order() {
        let root = parse(b"<a><b><c/></b><d/></a>").unwrap();
        let names: Vec<&str> = root.descendants().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
        assert_eq!(
            root.children_named("", "b").count(),
            0,
            "no namespace is not the empty namespace name"
        );
    }

    #[test]
    fn refuses_dtds_and_unknown_entities() {
        let bomb = br#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><x>&b;</x>"#;
        assert!(matches!(parse(bomb), Err(XmlError::Doctype)));
        // Even a declaration without an internal subset (it could name an external DTD).
        assert!(matches!(
            parse(br#"<!DOCTYPE x SYSTEM "http://127.0.0.1:1/x.dtd"><x/>"#),
            Err(XmlError::Doctype)
        ));
        assert!(matches!(parse(b"<x>&nope;</x>"), Err(XmlError::Entity(n)) if n == "nope"));
    }

    #[test]
    fn depth_size_and_node_limits() {
        let nested = |n: usize| "<a>".repeat(n) + &"</a>".repeat(n);
        assert!(parse(nested(64).as_bytes()).is_ok());
        assert!(matches!(
            parse(nested(65).as_bytes()),
            Err(XmlError::TooDeep(64))
        ));
        // Far deeper than a stack would take recursively: refused, no overflow.
        assert!(matches!(
            parse(nested(20_000).as_bytes()),
            Err(XmlError::TooDeep(64))
        ));
        let tight = Limits {
            max_bytes: 64,
            max_depth: 2,
            max_nodes: 4,
        };
        assert!(parse_with(b"<a><b/></a>", &tight).is_ok());
        assert!(matches!(
            parse_with(b"<a><b><c/></b></a>", &tight),
            Err(XmlError::TooDeep(2))
        ));
        assert!(matches!(
            parse_with(b"<a><b/><b/><b/><b/></a>", &tight),
            Err(XmlError::TooMany(4))
        ));
        let big = format!("<a>{}</a>", "x".repeat(64));
        assert!(matches!(
            parse_with(big.as_bytes(), &tight),
            Err(XmlError::TooLarge {
                size: 71,
                limit: 64
            })
        ));
    }

    #[test]
    fn malformed_input_gives_a_clear_error() {
        assert!(matches!(parse(b"<a:x/>"), Err(XmlError::UnboundPrefix(p)) if p == "a"));
        assert!(matches!(parse(b"\xff\xfe<x/>"), Err(XmlError::NotUtf8(_))));
        for bad in [
            &b""[..],
            b"garbage",
            b"<x><y></x>",
            b"<x/><y/>",
            b"<x>",
            b"text<x/>",
            br#"<x a="1" a="2"/>"#,
            br#"<x xmlns:p="urn:1" xmlns:q="urn:1" p:a="1" q:a="2"/>"#,
        ] {
            let err = parse(bad).unwrap_err();
            assert!(
                matches!(err, XmlError::Malformed(_)),
                "{}: {err}",
                String::from_utf8_lossy(bad)
            );
            assert!(err.to_string().starts_with("not well-formed XML: "));
        }
        let err = parse(b"<x>\n<y></x>").unwrap_err().to_string();
        assert!(err.contains("2:"), "the position is named: {err}");
    }

    #[test]
    fn extracts_an_element_with_its_inherited_namespaces() {
        let doc = br#"<e:Env xmlns:e="urn:e" xmlns:s="urn:s" xmlns:d="urn:d"><e:H><w:Sec xmlns:w="urn:w"><s:A ID="1" xmlns:x="urn:x" s:k='a>b'><s:I>t</s:I><d:v/></s:A></w:Sec></e:H></e:Env>"#;
        let found = extract_at(
            doc,
            &Limits::DEFAULT,
            &[("urn:e", "H"), ("urn:w", "Sec")],
            "urn:s",
            "A",
        )
        .unwrap();
        assert_eq!(found.len(), 1);
        let a = &found[0];
        assert!(a.starts_with("<s:A xmlns:"), "{a}");
        for inherited in [
            "xmlns:e=\"urn:e\"",
            "xmlns:w=\"urn:w\"",
            "xmlns:d=\"urn:d\"",
        ] {
            assert_eq!(a.matches(inherited).count(), 1, "{inherited}: {a}");
        }
        assert!(a.ends_with("</s:A>"), "{a}");
        assert_eq!(
            a.matches("xmlns:x=").count(),
            1,
            "declared on the tag: kept once"
        );
        let parsed = parse(a.as_bytes()).unwrap();
        assert!(parsed.is("urn:s", "A"));
        assert_eq!(parsed.attr_ns("urn:s", "k"), Some("a>b"));
        assert!(parsed.children[1].is("urn:d", "v"));
        // Elsewhere than the path: not found.
        assert!(
            extract_at(doc, &Limits::DEFAULT, &[("urn:e", "H")], "urn:s", "A")
                .unwrap()
                .is_empty()
        );
        assert!(matches!(
            extract_at(b"<!DOCTYPE x><x/>", &Limits::DEFAULT, &[], "urn:s", "A"),
            Err(XmlError::Doctype)
        ));
    }

    #[test]
    fn characters_xml_cannot_carry_become_replacement_characters() {
        let escaped = escape("a\u{0}b\u{1F}<c\td\u{FFFF}");
        assert_eq!(escaped, "a\u{FFFD}b\u{FFFD}&lt;c\td\u{FFFD}");
        let doc = format!("<x a=\"{escaped}\">{escaped}</x>");
        let root = parse(doc.as_bytes()).expect("well-formed");
        assert_eq!(root.text, "a\u{FFFD}b\u{FFFD}<c\td\u{FFFD}");
    }

    #[test]
    fn escape_round_trips() {
        let raw = r#"a<b>&"c'"#;
        let doc = format!("<x v=\"{}\">{}</x>", escape(raw), escape(raw));
        let x = parse(doc.as_bytes()).unwrap();
        assert_eq!(x.attr("v"), Some(raw));
        assert_eq!(x.text, raw);
    }
}
