//! The user's devices: listing, inviting, removing.

use basic_proto::keys::Role;
use serde::{Deserialize, Serialize};

use super::{Caller, Done, Op, Route, encode};
use crate::error::ApiError;
use crate::ids::{device_id, parse_principal};
use crate::node::Node;

/// `GET /v0/devices`.
#[derive(Debug, Clone, Copy)]
pub struct ListDevices;

/// One device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Its id (`dev_…`).
    pub id: String,
    /// Whether it is this device.
    pub this_device: bool,
    /// Whether it was removed (for good).
    pub removed: bool,
}

impl Op for ListDevices {
    type Output = Vec<DeviceInfo>;

    fn route(self) -> Route {
        Route::get("devices")
    }

    fn run(self, node: &Node, caller: &Caller) -> Result<Vec<DeviceInfo>, ApiError> {
        caller.require_owner()?;
        Ok(devices(node))
    }
}

/// Every device of the control log.
pub fn devices(node: &Node) -> Vec<DeviceInfo> {
    let this = node.db.device();
    node.db
        .auth_state()
        .devices()
        .iter()
        .map(|(key, device)| DeviceInfo {
            id: device_id(key),
            this_device: *key == this,
            removed: device.removed.is_some(),
        })
        .collect()
}

/// `POST /v0/devices/invite`: an invite for one new device.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Invite {
    /// How long the invite stays valid, in minutes: a whole number, which
    /// JSON may also write as `440.0`.
    #[serde(deserialize_with = "whole_number")]
    pub valid_minutes: u64,
}

/// A whole number of at least zero, written as an integer or as a number
/// with a zero fraction.
fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    if let Some(whole) = number.as_u64() {
        return Ok(whole);
    }
    match number.as_f64() {
        // Below 2^64, so the cast is exact.
        Some(real) if real >= 0.0 && real.fract() == 0.0 && real < 18_446_744_073_709_551_616.0 => {
            Ok(real as u64)
        }
        _ => Err(serde::de::Error::custom(format!("{number} is not a whole number of minutes"))),
    }
}

/// An invite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteOutput {
    /// The one-line code to give the new device (`basic init --join CODE`).
    pub invite: String,
    /// When it expires, ms since 1970.
    pub expires_at_ms: u64,
    /// The addresses it tells the new device to reach this one at.
    pub addresses: Vec<String>,
}

/// Longest validity of an invite: a week.
const MAX_INVITE_MINUTES: u64 = 7 * 24 * 60;

impl Op for Invite {
    type Output = InviteOutput;

    fn route(self) -> Route {
        Route::post("devices/invite", &self)
    }

    fn run(self, node: &Node, caller: &Caller) -> Result<InviteOutput, ApiError> {
        caller.require_owner()?;
        if self.valid_minutes == 0 || self.valid_minutes > MAX_INVITE_MINUTES {
            return Err(ApiError::bad_request(format!(
                "an invite is valid for 1 to {MAX_INVITE_MINUTES} minutes"
            )));
        }
        let invite =
            node.db.invite(invite_addresses(node), self.valid_minutes.saturating_mul(60_000))?;
        Ok(InviteOutput {
            invite: invite.to_text(),
            expires_at_ms: invite.expires_at_ms,
            addresses: invite.addresses,
        })
    }
}

/// Where the new device should reach this one: the running node's sync
/// addresses (with its peer id), as many as an invite carries, relayed ones
/// (through a pinning peer, reachable from behind a NAT) first so that no
/// crowd of local interfaces pushes them out; none when no node runs.
fn invite_addresses(node: &Node) -> Vec<String> {
    let Some(status) = &node.network else { return Vec::new() };
    reachable_addresses(&status.read().unwrap_or_else(std::sync::PoisonError::into_inner).listening)
}

/// Of the addresses a node listens on, those to hand out (in an invite or
/// an access code): as many as fit, relayed ones first.
pub(crate) fn reachable_addresses(listening: &[String]) -> Vec<String> {
    let (max_count, max_len) = basic_store::MAX_ADDRESSES;
    let fits = listening.iter().filter(|a| a.len() <= max_len);
    let (relayed, direct): (Vec<&String>, Vec<&String>) =
        fits.partition(|a| a.contains("/p2p-circuit"));
    relayed.into_iter().chain(direct).take(max_count).cloned().collect()
}

/// `DELETE /v0/devices/{id}`: removes a device for good.
#[derive(Debug, Clone)]
pub struct RemoveDevice {
    /// Its id (`dev_…`).
    pub id: String,
}

impl Op for RemoveDevice {
    type Output = Done;

    fn route(self) -> Route {
        Route::delete(format!("devices/{}", encode(&self.id)))
    }

    fn run(self, node: &Node, caller: &Caller) -> Result<Done, ApiError> {
        caller.require_owner()?;
        let key = parse_principal(Role::Device, &self.id)?;
        if key == node.db.device() {
            return Err(ApiError::conflict(
                "this is the device you are on: remove it from another of your devices",
            ));
        }
        // While this device holds the root secret (after recovery, until
        // `basic recovery confirm`), the root signs: its end decides
        // (control-log.md §6), even over a removal already made.
        let root = node.db.root_secret()?;
        let log = node.db.control_log();
        let by_root = |id: &basic_proto::control::OpId| {
            root.as_ref()
                .is_some_and(|r| log.get(id).is_some_and(|op| op.body().author == r.public()))
        };
        match node.db.auth_state().devices().get(&key) {
            None => return Err(ApiError::not_found(format!("no device {}", self.id))),
            Some(device)
                if device.removed.is_some_and(|end| root.is_none() || by_root(&end.by)) =>
            {
                return Err(ApiError::conflict(format!("{} was removed already", self.id)));
            }
            Some(_) => {}
        }
        match root {
            Some(root) => node.db.remove_device_as_root(key, root)?,
            None => node.db.remove_device(key)?,
        };
        Ok(Done {})
    }
}

#[cfg(test)]
mod tests {
    use basic_proto::keys::Principal;

    use super::*;

    #[test]
    fn id_errors_read_well_for_every_kind() {
        let key = basic_proto::SecretKey::from_seed([3; 32]).public();
        for (role, kind) in [
            (Role::User, "a user id"),
            (Role::Device, "a device id"),
            (Role::App, "an app id"),
            (Role::Pinner, "a pinning peer id"),
        ] {
            let error = parse_principal(role, "nonsense").unwrap_err().message;
            assert!(error.starts_with(&format!("\"nonsense\" is not {kind}: ")), "{error}");
            for other in [Role::User, Role::Device, Role::App, Role::Pinner] {
                if other == role {
                    continue;
                }
                let text = Principal { role: other, key }.to_string();
                let error = parse_principal(role, &text).unwrap_err().message;
                let found = match other {
                    Role::App => "an app id".to_owned(),
                    other => format!("a {} id", other.name()),
                };
                assert_eq!(error, format!("{text:?} is not {kind}: it is {found}"));
            }
        }
    }

    #[test]
    fn minutes_are_whole_numbers_however_json_writes_them() {
        let parse = |text: &str| serde_json::from_str::<Invite>(text).map(|i| i.valid_minutes);
        assert_eq!(parse(r#"{"valid_minutes": 440}"#).unwrap(), 440);
        assert_eq!(parse(r#"{"valid_minutes": 440.0}"#).unwrap(), 440);
        assert_eq!(parse(r#"{"valid_minutes": 4.4e2}"#).unwrap(), 440);
        for refused in ["440.5", "-1", "-1.0", "1e20", "\"440\"", "null"] {
            let text = format!(r#"{{"valid_minutes": {refused}}}"#);
            assert!(parse(&text).is_err(), "{text} was taken");
        }
    }
}
