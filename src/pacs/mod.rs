//! The local PACS as a source (gateway mode): its configuration, an association pool toward
//! it, C-FIND for queries, and C-GET / C-MOVE fetches that stream into the cache.

pub mod config;
