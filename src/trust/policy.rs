//! The policy: one decision per query and retrieval, on every front (issue 5, item 4).
