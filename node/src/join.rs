//! Joining a database by invite: the exchange with the inviting device.

use basic_store::{Invite, JoinRequest};

/// Sends `request` to the inviting device named in `invite` and returns the
/// database's control operations, which include the inviting device's
/// `add-device` of this one.
pub async fn exchange_join(invite: &Invite, request: &JoinRequest) -> anyhow::Result<Vec<Vec<u8>>> {
    let _ = (invite, request);
    anyhow::bail!(
        "joining needs the network layer, which this build of basic does not have yet; nothing was joined"
    )
}
