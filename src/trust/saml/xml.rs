//! A small namespace-resolved element tree over quick-xml, enough to read an assertion.
//! No DTDs (an assertion with a DOCTYPE is refused: no entity expansion), bounded depth and
//! size, only the predefined entities and character references.

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

/// Largest assertion accepted, bytes.
pub const MAX_XML_BYTES: usize = 256 * 1024;
const MAX_DEPTH: usize = 32;

/// One element: namespace, local name, attributes (namespace, local name, value), children
/// and the concatenated text directly inside it.
#[derive(Debug, Clone, Default)]
pub struct Element {
    pub ns: Option<String>,
    pub name: String,
    pub attrs: Vec<(Option<String>, String, String)>,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns.as_deref() == Some(ns) && self.name == name
    }

    /// An unqualified attribute (or one in `ns`).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(ns, n, _)| ns.is_none() && n == name)
            .map(|(_, _, v)| v.as_str())
    }

    pub fn attr_ns(&self, ns: &str, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n_ns, n, _)| n_ns.as_deref() == Some(ns) && n == name)
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

    /// This element and all below it, depth first.
    pub fn descendants(&self) -> Vec<&Element> {
        let mut out = vec![self];
        let mut i = 0;
        while i < out.len() {
            let e = out[i];
            out.extend(e.children.iter());
            i += 1;
        }
        out
    }
}

/// Parse a document into its root element.
pub fn parse(xml: &str) -> Result<Element, String> {
    if xml.len() > MAX_XML_BYTES {
        return Err("document too large".into());
    }
    let mut reader = NsReader::from_str(xml);
    reader.config_mut().expand_empty_elements = true;
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let (resolved, event) = reader
            .read_resolved_event()
            .map_err(|e| format!("not well-formed XML: {e}"))?;
        let ns = match resolved {
            ResolveResult::Bound(ns) => Some(String::from_utf8_lossy(ns.as_ref()).into_owned()),
            ResolveResult::Unbound => None,
            ResolveResult::Unknown(p) => {
                return Err(format!(
                    "unbound namespace prefix {:?}",
                    String::from_utf8_lossy(&p)
                ))
            }
        };
        match event {
            Event::Start(start) => {
                if root.is_some() {
                    return Err("content after the document element".into());
                }
                if stack.len() >= MAX_DEPTH {
                    return Err("nested too deep".into());
                }
                let mut element = Element {
                    ns,
                    name: String::from_utf8_lossy(start.local_name().as_ref()).into_owned(),
                    ..Default::default()
                };
                for attr in start.attributes() {
                    let attr = attr.map_err(|e| format!("bad attribute: {e}"))?;
                    let key = attr.key;
                    if key.as_ref() == b"xmlns" || key.as_ref().starts_with(b"xmlns:") {
                        continue;
                    }
                    let (attr_ns, local) = reader.resolve_attribute(key);
                    let attr_ns = match attr_ns {
                        ResolveResult::Bound(ns) => {
                            Some(String::from_utf8_lossy(ns.as_ref()).into_owned())
                        }
                        ResolveResult::Unbound => None,
                        ResolveResult::Unknown(_) => {
                            return Err("unbound attribute prefix".into());
                        }
                    };
                    let value = attr
                        .decode_and_unescape_value(reader.decoder())
                        .map_err(|e| format!("bad attribute value: {e}"))?;
                    element.attrs.push((
                        attr_ns,
                        String::from_utf8_lossy(local.as_ref()).into_owned(),
                        value.into_owned(),
                    ));
                }
                stack.push(element);
            }
            Event::End(_) => {
                let done = stack.pop().ok_or("unbalanced end tag")?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => root = Some(done),
                }
            }
            Event::Text(text) => {
                let text = text.xml10_content().map_err(|e| format!("bad text: {e}"))?;
                match stack.last_mut() {
                    Some(e) => e.text.push_str(&text),
                    None if text.trim().is_empty() => {}
                    None => return Err("text outside the document element".into()),
                }
            }
            Event::CData(data) => {
                let data = data.decode().map_err(|e| format!("bad CDATA: {e}"))?;
                if let Some(e) = stack.last_mut() {
                    e.text.push_str(&data);
                }
            }
            Event::GeneralRef(reference) => {
                let name = reference
                    .decode()
                    .map_err(|e| format!("bad reference: {e}"))?;
                let reference = format!("&{name};");
                let resolved = quick_xml::escape::unescape(&reference)
                    .map_err(|_| "unknown entity reference".to_string())?;
                match stack.last_mut() {
                    Some(e) => e.text.push_str(&resolved),
                    None => return Err("reference outside the document element".into()),
                }
            }
            Event::DocType(_) => return Err("DOCTYPE not allowed".into()),
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::Empty(_) => return Err("unexpected empty element event".into()),
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err("unclosed element".into());
    }
    root.ok_or_else(|| "no document element".into())
}

/// Escape text for element content or a double-quoted attribute value.
pub fn escape(value: &str) -> String {
    quick_xml::escape::escape(value).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_namespaces_text_and_references() {
        let root = parse(
            r#"<?xml version="1.0"?><a:x xmlns:a="urn:a" xmlns:b="urn:b" b:k="1&amp;2"><a:y>p&lt;q&#65;</a:y><z/></a:x>"#,
        )
        .unwrap();
        assert!(root.is("urn:a", "x"));
        assert_eq!(root.attr_ns("urn:b", "k"), Some("1&2"));
        assert_eq!(root.child("urn:a", "y").unwrap().text, "p<qA");
        assert_eq!(root.children[1].ns, None);
        assert!(parse("<!DOCTYPE x [<!ENTITY e 'boom'>]><x>&e;</x>").is_err());
        assert!(parse("<x>&e;</x>").is_err());
        assert!(parse("<p:x/>").is_err());
        assert!(parse("<x></x><y/>").is_err());
    }
}
