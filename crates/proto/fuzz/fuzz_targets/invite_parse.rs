//! `Invite::parse` on arbitrary text (an invite pasted by the user, made by
//! anyone). It must never panic, and an invite that parses prints to a text
//! that parses to itself.

#![no_main]

use basic_store::Invite;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(invite) = Invite::parse(text) else { return };
    assert_eq!(Invite::parse(&invite.to_text()).as_ref(), Ok(&invite));
});
