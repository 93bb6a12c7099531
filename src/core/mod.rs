//! Core: the one query model and the one retrieve model that all fronts share.

pub mod query;
pub mod retrieve;

pub use query::{AttrKind, IndexedAttr, Level, Match, Matcher, Query, QueryKey, INDEXED_ATTRS};
pub use retrieve::{InstanceLocation, Selection};
