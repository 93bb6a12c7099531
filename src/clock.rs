//! The wall clock, in the two forms records and queues keep it. One place, so that a record's
//! time and a queue's due time come from the same clock (and a test can see where it is read).

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Now, UTC, RFC 3339: the time of audit records, stored instances and queued jobs.
pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Now, in Unix seconds: due times, cache ages, token validity.
pub fn unix_seconds() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}
