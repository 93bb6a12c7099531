// Checks of the `command_set` fuzz target, shared by `fuzz/fuzz_targets/command_set.rs` and
// the corpus replay in `tests/fuzz_corpus.rs` (both `include!` this file, so there is one
// copy of each check).

use beeldbrug::dimse::command::{CommandSet, MAX_COMMAND_SET};

/// `CommandSet::decode` on arbitrary bytes: it must never panic, and whatever it accepts
/// must survive a round trip through `encode` (see `check_round_trip`). Returns whether the
/// bytes decoded.
pub fn check_decode(data: &[u8]) -> bool {
    CommandSet::decode(data).map(check_round_trip).is_ok()
}

/// decode(encode(c)) == c, up to what `encode` normalises on purpose: the Error Comment
/// (LO) is sent as at most 64 printable ASCII characters, and trailing padding is trimmed
/// on decode.
fn check_round_trip(decoded: CommandSet) {
    let encoded = decoded.encode();
    assert_eq!(encoded.len() % 2, 0, "odd-length command set");
    if encoded.len() > MAX_COMMAND_SET {
        // Padding can push a command set of exactly the limit over it; not a real case.
        return;
    }
    let again = CommandSet::decode(&encoded).expect("an encoded command set decodes");
    let mut expected = decoded;
    expected.error_comment = expected.error_comment.map(|c| {
        c.chars()
            .filter(|c| c.is_ascii() && !c.is_control())
            .take(64)
            .collect::<String>()
            .trim_matches(|c| c == ' ' || c == '\0')
            .to_string()
    });
    assert_eq!(again, expected);
    // Once normalised, the round trip is exact and the encoding a fixed point.
    let stable = again.encode();
    assert_eq!(CommandSet::decode(&stable).as_ref(), Ok(&again));
    assert_eq!(CommandSet::decode(&stable).map(|c| c.encode()), Ok(stable));
}
