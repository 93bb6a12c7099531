//! A small namespace-resolved element tree over quick-xml, enough to read the consent messages
//! whatever prefixes the sender chose (Namespaces in XML 1.0: only the namespace name and the
//! local name identify an element or attribute).

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

/// Most nested elements accepted (our messages nest about 10 deep).
const MAX_DEPTH: usize = 64;
/// Most elements accepted in one message.
const MAX_ELEMENTS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum DomError {
    #[error("not well-formed XML: {0}")]
    Xml(String),
    #[error("no root element")]
    NoRoot,
    #[error("more than one root element")]
    TwoRoots,
    #[error("prefix {0:?} is not bound to a namespace")]
    UnboundPrefix(String),
    #[error("a document type declaration is not accepted")]
    Doctype,
    #[error("unknown entity &{0};")]
    Entity(String),
    #[error("elements nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("more than {MAX_ELEMENTS} elements")]
    TooMany,
}

/// One element: its namespace name (empty when none), local name, attributes (namespace,
/// local name, value; namespace declarations left out), child elements and its own text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    pub ns: String,
    pub name: String,
    pub attrs: Vec<(String, String, String)>,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }

    /// An unqualified attribute (the form every attribute of our messages takes).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(ns, local, _)| ns.is_empty() && local == name)
            .map(|(_, _, v)| v.as_str())
    }

    /// An attribute in a namespace (e.g. `xsi:type`).
    pub fn attr_ns(&self, ns: &str, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, local, _)| n == ns && local == name)
            .map(|(_, _, v)| v.as_str())
    }

    pub fn child(&self, ns: &str, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(ns, name))
    }

    pub fn children_named<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.is(ns, name))
    }

    /// Every descendant (depth first, this element included) that `keep` selects.
    pub fn descendants<'a>(&'a self, keep: &dyn Fn(&Element) -> bool, out: &mut Vec<&'a Element>) {
        if keep(self) {
            out.push(self);
        }
        for c in &self.children {
            c.descendants(keep, out);
        }
    }

    /// The text of this element, trimmed (XML Schema whitespace="collapse" for tokens).
    pub fn trimmed(&self) -> &str {
        self.text.trim()
    }
}

fn xml_err(e: impl std::fmt::Display) -> DomError {
    DomError::Xml(e.to_string())
}

fn namespace(resolved: ResolveResult<'_>) -> Result<String, DomError> {
    match resolved {
        ResolveResult::Bound(ns) => Ok(String::from_utf8_lossy(ns.as_ref()).into_owned()),
        ResolveResult::Unbound => Ok(String::new()),
        ResolveResult::Unknown(prefix) => Err(DomError::UnboundPrefix(
            String::from_utf8_lossy(&prefix).into_owned(),
        )),
    }
}

fn start(
    reader: &NsReader<&[u8]>,
    ns: String,
    e: &quick_xml::events::BytesStart<'_>,
) -> Result<Element, DomError> {
    let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
    let mut attrs = Vec::new();
    for a in e.attributes().with_checks(true) {
        let a = a.map_err(xml_err)?;
        let key = a.key;
        if key.as_namespace_binding().is_some() {
            continue;
        }
        let (ans, local) = reader.resolve_attribute(key);
        let value = a
            .decode_and_unescape_value(reader.decoder())
            .map_err(xml_err)?;
        attrs.push((
            namespace(ans)?,
            String::from_utf8_lossy(local.as_ref()).into_owned(),
            value.into_owned(),
        ));
    }
    Ok(Element {
        ns,
        name,
        attrs,
        ..Default::default()
    })
}

/// Parse a whole document into its root element. Refuses a DOCTYPE (no entity expansion of
/// any kind), unbound prefixes, and documents nested or sized beyond the limits above.
pub fn parse(xml: &[u8]) -> Result<Element, DomError> {
    let mut reader = NsReader::from_reader(xml);
    reader.config_mut().expand_empty_elements = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    loop {
        let (resolved, event) = reader.read_resolved_event().map_err(xml_err)?;
        let ns = match &event {
            Event::Start(_) => namespace(resolved)?,
            _ => String::new(),
        };
        match event {
            Event::Start(e) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(DomError::TooMany);
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(DomError::TooDeep);
                }
                if root.is_some() {
                    return Err(DomError::TwoRoots);
                }
                let el = start(&reader, ns, &e)?;
                stack.push(el);
            }
            Event::End(_) => {
                let Some(done) = stack.pop() else {
                    return Err(DomError::Xml("end tag without start".into()));
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => root = Some(done),
                }
            }
            Event::Text(t) => {
                let text = t.decode().map_err(xml_err)?;
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&text),
                    None if text.trim().is_empty() => {}
                    None => return Err(DomError::Xml("text outside the root element".into())),
                }
            }
            Event::CData(t) => {
                let text = t.decode().map_err(xml_err)?;
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&text);
                }
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref().map_err(xml_err)? {
                    Some(ch) => ch.to_string(),
                    None => {
                        let name = r.decode().map_err(xml_err)?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| DomError::Entity(name.to_string()))?
                            .to_string()
                    }
                };
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&resolved);
                }
            }
            Event::DocType(_) => return Err(DomError::Doctype),
            Event::Eof => break,
            Event::Empty(_) | Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(DomError::Xml("document ends inside an element".into()));
    }
    root.ok_or(DomError::NoRoot)
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
        assert_eq!(a.child("urn:n", "y").unwrap().text, "t&A");
    }

    #[test]
    fn refuses_bad_input() {
        assert!(matches!(parse(b"<a:x/>"), Err(DomError::UnboundPrefix(_))));
        assert!(matches!(
            parse(br#"<!DOCTYPE x [<!ENTITY e "boom">]><x>&e;</x>"#),
            Err(DomError::Doctype)
        ));
        assert!(parse(b"<x><y></x>").is_err());
        assert!(matches!(parse(b""), Err(DomError::NoRoot)));
        assert!(matches!(parse(b"<x/><y/>"), Err(DomError::TwoRoots)));
        assert!(matches!(parse(b"<x>&nope;</x>"), Err(DomError::Entity(_))));
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(matches!(parse(deep.as_bytes()), Err(DomError::TooDeep)));
        assert!(parse(b"\xff\xfe<x/>").is_err());
    }
}
