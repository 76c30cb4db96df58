//! The decoders of `/basic/access/0` on arbitrary bytes: `AccessFrame`
//! (what an app sends a device, and what devices relay to each other:
//! an ask relayed keeps the app's body and signature), `AccessAnswer` (what
//! a device answers) and `AccessCode` (the line a user pastes into an
//! app). None may panic, and what decodes encodes to bytes that decode to
//! itself.

#![no_main]

use basic_store::{AccessAnswer, AccessCode, AccessFrame};
use libfuzzer_sys::fuzz_target;

/// The cap an app reads answers with (a response frame).
const MAX: usize = 4 << 20;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = AccessFrame::from_bytes(data) {
        assert_eq!(AccessFrame::from_bytes(&frame.to_bytes()).as_ref(), Ok(&frame));
        if let AccessFrame::Relay(relay) = frame {
            // The relayed ask is one the app could have sent itself.
            let ask = AccessFrame::Ask(relay.ask);
            assert_eq!(AccessFrame::from_bytes(&ask.to_bytes()).as_ref(), Ok(&ask));
        }
    }
    if let Ok(answer) = AccessAnswer::from_bytes(data, MAX) {
        assert_eq!(AccessAnswer::from_bytes(&answer.to_bytes(), MAX).as_ref(), Ok(&answer));
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(code) = text.parse::<AccessCode>()
    {
        assert_eq!(code.to_string().parse::<AccessCode>().as_ref(), Ok(&code));
    }
});
