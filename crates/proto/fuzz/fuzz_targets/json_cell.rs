//! `json::check_json` on arbitrary text: the rule for JSON cell values,
//! which every replica applies to the contents of commits from peers. It
//! must never panic (nor overflow the stack on deep nesting).

#![no_main]

use basic_proto::json::check_json;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = check_json(text);
    }
});
