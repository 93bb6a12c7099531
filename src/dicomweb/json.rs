//! The DICOM JSON model (PS3.18 Annex F) for query results and metadata.
//!
//! Written here rather than with `dicom-json`, which inlines every binary value (pixel data
//! included) and drops encapsulated pixel data: metadata must carry a BulkDataURI for large
//! values instead (PS3.18 F.2.6), and query results come from index rows, not data sets.

use base64::Engine;
use dicom_core::dictionary::DataDictionary;
use dicom_core::header::Header;
use dicom_core::value::Value;
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;
use dicom_object::InMemDicomObject;
use serde_json::{json, Map, Value as Json};

/// Binary values longer than this go out as BulkDataURI, shorter ones inline (F.2.7).
pub const INLINE_BINARY_MAX: usize = 1024;

/// The JSON key of a tag: eight uppercase hex digits (F.2.1.1).
pub fn tag_key(tag: Tag) -> String {
    format!("{:04X}{:04X}", tag.group(), tag.element())
}

/// The VR of a standard attribute; `UN` for unknown ones.
pub fn vr_of(tag: Tag) -> VR {
    StandardDataDictionary
        .by_tag(tag)
        .and_then(|e| e.vr.exact())
        .unwrap_or(VR::UN)
}

fn number(text: &str, integer: bool) -> Option<Json> {
    let t = text.trim();
    if integer {
        t.parse::<i64>().ok().map(Json::from)
    } else {
        t.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .and_then(|f| serde_json::Number::from_f64(f).map(Json::Number))
    }
}

/// One value of a string-typed VR in its JSON form (F.2.3), `null` when empty.
fn text_value(vr: VR, text: &str) -> Json {
    let t = text.trim_end_matches([' ', '\0']);
    if t.is_empty() {
        return Json::Null;
    }
    match vr {
        VR::PN => {
            // F.2.2: component groups alphabetic=ideographic=phonetic.
            let mut groups = t.split('=');
            let mut pn = Map::new();
            for name in ["Alphabetic", "Ideographic", "Phonetic"] {
                if let Some(g) = groups.next().filter(|g| !g.is_empty()) {
                    pn.insert(name.into(), Json::from(g));
                }
            }
            Json::Object(pn)
        }
        VR::IS => number(t, true).unwrap_or_else(|| Json::from(t)),
        VR::DS => number(t, false).unwrap_or_else(|| Json::from(t)),
        _ => Json::from(t),
    }
}

/// An attribute from index text (multiple values joined with `\`).
pub fn attribute_from_text(vr: VR, text: &str) -> Json {
    let mut attr = Map::new();
    attr.insert("vr".into(), Json::from(vr.to_string()));
    if !text.is_empty() {
        let values: Vec<Json> = match vr {
            VR::US | VR::UL | VR::SS | VR::SL => text
                .split('\\')
                .map(|v| number(v, true).unwrap_or(Json::Null))
                .collect(),
            _ => text.split('\\').map(|v| text_value(vr, v)).collect(),
        };
        attr.insert("Value".into(), Json::Array(values));
    }
    Json::Object(attr)
}

/// Names where a large value can be fetched: `bulk_base` + `/` + the tag path.
#[derive(Debug, Clone)]
pub struct BulkData<'a> {
    /// `.../studies/{s}/series/{se}/instances/{i}/bulkdata`
    pub base: &'a str,
}

/// A data set (read up to, and without, Pixel Data) as a DICOM JSON object. `path` is the
/// bulk data path of the enclosing items (`tag/item/`...).
pub fn dataset_json(obj: &InMemDicomObject, bulk: &BulkData<'_>, path: &str) -> Json {
    let mut out = Map::new();
    for element in obj.iter() {
        let tag = element.tag();
        // Group length and file meta elements are not part of the JSON model.
        if tag.element() == 0 || tag.group() == 0x0002 {
            continue;
        }
        let vr = element.vr();
        let mut attr = Map::new();
        attr.insert("vr".into(), Json::from(vr.to_string()));
        let here = format!("{path}{}", tag_key(tag));
        match element.value() {
            Value::Sequence(seq) => {
                let items: Vec<Json> = seq
                    .items()
                    .iter()
                    .enumerate()
                    .map(|(i, item)| dataset_json(item, bulk, &format!("{here}/{i}/")))
                    .collect();
                if !items.is_empty() {
                    attr.insert("Value".into(), Json::Array(items));
                }
            }
            Value::PixelSequence(_) => {
                attr.insert(
                    "BulkDataURI".into(),
                    Json::from(format!("{}/{here}", bulk.base)),
                );
            }
            Value::Primitive(p) => {
                if p.multiplicity() == 0 {
                    // F.2.5: present, no value.
                } else if is_binary(vr) {
                    let bytes = p.to_bytes();
                    if bytes.len() > INLINE_BINARY_MAX {
                        attr.insert(
                            "BulkDataURI".into(),
                            Json::from(format!("{}/{here}", bulk.base)),
                        );
                    } else {
                        attr.insert(
                            "InlineBinary".into(),
                            Json::from(base64::engine::general_purpose::STANDARD.encode(&bytes)),
                        );
                    }
                } else {
                    attr.insert("Value".into(), Json::Array(primitive_values(vr, p)));
                }
            }
        }
        out.insert(tag_key(tag), Json::Object(attr));
    }
    Json::Object(out)
}

/// VRs whose values are bytes in the JSON model (F.2.7).
pub fn is_binary(vr: VR) -> bool {
    matches!(
        vr,
        VR::OB | VR::OD | VR::OF | VR::OL | VR::OV | VR::OW | VR::UN
    )
}

fn primitive_values(vr: VR, p: &dicom_core::PrimitiveValue) -> Vec<Json> {
    use dicom_core::PrimitiveValue as P;
    let finite = |f: f64| serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number);
    match p {
        P::U8(v) => v.iter().map(|x| json!(x)).collect(),
        P::U16(v) => v.iter().map(|x| json!(x)).collect(),
        P::I16(v) => v.iter().map(|x| json!(x)).collect(),
        P::U32(v) => v.iter().map(|x| json!(x)).collect(),
        P::I32(v) => v.iter().map(|x| json!(x)).collect(),
        P::U64(v) => v.iter().map(|x| json!(x)).collect(),
        P::I64(v) => v.iter().map(|x| json!(x)).collect(),
        P::F32(v) => v.iter().map(|x| finite(f64::from(*x))).collect(),
        P::F64(v) => v.iter().map(|x| finite(*x)).collect(),
        P::Tags(v) => v.iter().map(|t| Json::from(tag_key(*t))).collect(),
        _ => p.to_multi_str().iter().map(|s| text_value(vr, s)).collect(),
    }
}

/// Add an attribute to a JSON object being built.
pub fn put(obj: &mut Map<String, Json>, tag: Tag, vr: VR, text: &str) {
    obj.insert(tag_key(tag), attribute_from_text(vr, text));
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue};

    #[test]
    fn index_text_becomes_typed_json() {
        assert_eq!(
            attribute_from_text(VR::PN, "Müller^Zoë"),
            json!({"vr": "PN", "Value": [{"Alphabetic": "Müller^Zoë"}]})
        );
        assert_eq!(
            attribute_from_text(VR::IS, "12"),
            json!({"vr": "IS", "Value": [12]})
        );
        assert_eq!(
            attribute_from_text(VR::CS, "CT\\MR"),
            json!({"vr": "CS", "Value": ["CT", "MR"]})
        );
        assert_eq!(attribute_from_text(VR::DA, ""), json!({"vr": "DA"}));
        assert_eq!(
            attribute_from_text(VR::US, "512"),
            json!({"vr": "US", "Value": [512]})
        );
    }

    #[test]
    fn large_binaries_become_bulk_data_uris() {
        let mut obj = InMemDicomObject::new_empty();
        obj.put(DataElement::new(
            Tag(0x0009, 0x1010),
            VR::OB,
            PrimitiveValue::from(vec![1u8; 4096]),
        ));
        obj.put(DataElement::new(
            Tag(0x0009, 0x1011),
            VR::OB,
            PrimitiveValue::from(vec![0u8, 1]),
        ));
        obj.put(DataElement::new(
            Tag(0x0028, 0x1050),
            VR::DS,
            PrimitiveValue::from("40.5"),
        ));
        let j = dataset_json(
            &obj,
            &BulkData {
                base: "http://x/bulkdata",
            },
            "",
        );
        assert_eq!(j["00091010"]["BulkDataURI"], "http://x/bulkdata/00091010");
        assert_eq!(j["00091011"]["InlineBinary"], "AAE=");
        assert_eq!(j["00281050"]["Value"][0], 40.5);
    }
}
