//! The message parser on arbitrary bytes: it must return an error or a message, never panic,
//! and a message it accepts must survive a round trip unchanged.
#![no_main]

use fleet_shared::message::{DEFAULT_MAX_MESSAGE_BYTES, parse_message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((message, _)) = parse_message(body, DEFAULT_MAX_MESSAGE_BYTES) {
        let again = parse_message(&message.to_body(), usize::MAX)
            .expect("a message the parser accepted must parse again after serialisation");
        assert_eq!(again.0, message);
    }
});
