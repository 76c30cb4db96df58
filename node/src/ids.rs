//! Principals' text ids (`dev_…`, `pin_…`, …) as users see them, and
//! what a mistyped one is told.

use basic_proto::PublicKey;
use basic_proto::keys::{KeyError, Principal, Role};

use crate::error::ApiError;

/// A device's text id (`dev_…`).
pub fn device_id(key: &PublicKey) -> String {
    Principal { role: Role::Device, key: *key }.to_string()
}

/// Parses a principal id of `role`, as a 400 if it is not one.
pub fn parse_principal(role: Role, text: &str) -> Result<PublicKey, ApiError> {
    Principal::parse_as(role, text.trim())
        .map_err(|e| ApiError::bad_request(id_error(role, text, &e)))
}

/// Why `text` is not an id of `role`: `"dev_…" is not an app id: it is a
/// device id`.
pub fn id_error(role: Role, text: &str, error: &KeyError) -> String {
    let wanted = role.name();
    match error {
        KeyError::WrongKind { found, .. } => {
            format!("{text:?} is not {} {wanted} id: it is {} {found} id", a(wanted), a(found))
        }
        other => format!("{text:?} is not {} {wanted} id: {other}", a(wanted)),
    }
}

/// The article for `word` (`an app`, `a device`, `a user`).
fn a(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o']) { "an" } else { "a" }
}
