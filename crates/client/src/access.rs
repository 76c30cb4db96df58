//! Asking the user for access over the network (`/basic/access/0`,
//! `protocol-spec/apps.md`): the app sends its signed ask to one of the
//! user's devices, then polls until the user approves on any device (the
//! answer carries the control log, from which the app builds its replica),
//! denies, or lets the request expire.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use basic_net::{Multiaddr, Net, PeerId, Protocol, peer_of};
use basic_proto::Name;
use basic_proto::control::Rights;
use basic_store::{AccessAnswer, AccessAsk, AccessCode, AccessFrame, AccessPoll, now_ms};

use crate::error::ClientError;
use crate::identity::AppIdentity;

/// Time between two polls while the user has not answered.
const POLL: Duration = Duration::from_secs(1);
/// Waits between attempts to reach an unreachable device, doubling up to
/// the last.
const RETRY: [Duration; 5] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
];

/// What an app asks for: the name the user will see, and scopes
/// (namespaces) with rights.
#[derive(Debug, Clone)]
pub struct Ask {
    name: String,
    scopes: BTreeMap<Name, Rights>,
}

impl Ask {
    /// An ask under `name`, for no scope yet.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), scopes: BTreeMap::new() }
    }

    /// Also asks to read the namespace `scope`.
    pub fn read(self, scope: &str) -> Result<Self, ClientError> {
        self.scope(scope, Rights::Read)
    }

    /// Also asks to read and write the namespace `scope`.
    pub fn read_write(self, scope: &str) -> Result<Self, ClientError> {
        self.scope(scope, Rights::ReadWrite)
    }

    fn scope(mut self, scope: &str, rights: Rights) -> Result<Self, ClientError> {
        let name = Name::new(scope).map_err(|_| ClientError::BadScope(scope.into()))?;
        self.scopes.insert(name, rights);
        Ok(self)
    }
}

/// Where a request for access stands, as the app may show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessStatus {
    /// Sending the ask to a device.
    Asking(PeerId),
    /// The device holds the request: the user answers it on any of their
    /// devices (`basic app requests`, `basic app approve …`).
    Waiting(PeerId),
    /// The device cannot be reached; trying again.
    Unreachable(PeerId),
}

impl std::fmt::Display for AccessStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccessStatus::Asking(device) => write!(f, "asking the device {device} for access"),
            AccessStatus::Waiting(_) => f.write_str(
                "waiting for the user to approve (`basic app requests`, then `basic app approve ID`)",
            ),
            AccessStatus::Unreachable(device) => {
                write!(f, "cannot reach the device {device}; trying again")
            }
        }
    }
}

/// The devices an access code names, by peer id, with their addresses.
pub(crate) fn devices(code: &AccessCode) -> Result<(Vec<PeerId>, Vec<Multiaddr>), ClientError> {
    let addresses: Vec<Multiaddr> = code
        .addresses
        .iter()
        .map(|a| a.parse().map_err(|e| ClientError::BadCode(format!("address {a:?}: {e}"))))
        .collect::<Result<_, _>>()?;
    let devices: BTreeSet<PeerId> = addresses.iter().filter_map(peer_of).collect();
    if devices.is_empty() {
        return Err(ClientError::BadCode("it names no device address ending in /p2p/…".into()));
    }
    Ok((devices.into_iter().collect(), addresses))
}

/// Asks `device` for access and polls until the user answers; returns
/// the database's control operations once approved.
pub(crate) async fn exchange(
    net: &Net,
    identity: &AppIdentity,
    devices: &[PeerId],
    ask: &Ask,
    on_status: &mut (dyn FnMut(AccessStatus) + Send),
) -> Result<Vec<Vec<u8>>, ClientError> {
    let max = basic_net::Limits::default().max_response_bytes;
    // The first device that answers holds the request.
    let mut answered = None;
    'reach: for wait in RETRY.iter().copied().map(Some).chain([None]) {
        for device in devices {
            on_status(AccessStatus::Asking(*device));
            let frame = AccessFrame::Ask(AccessAsk::sign(
                identity.secret(),
                &device.to_bytes(),
                ask.name.clone(),
                ask.scopes.clone(),
                now_ms(),
            ));
            if let Ok(bytes) = net.request_on(Protocol::Access, *device, frame.to_bytes()).await {
                answered = Some((*device, bytes));
                break 'reach;
            }
            on_status(AccessStatus::Unreachable(*device));
        }
        let Some(wait) = wait else { break };
        tokio::time::sleep(wait).await;
    }
    let Some((device, mut bytes)) = answered else {
        let tried = devices.iter().map(PeerId::to_string).collect::<Vec<_>>().join(", ");
        return Err(ClientError::Unreachable(tried));
    };
    let mut failures = 0;
    // Each change of status is told once, not at every poll.
    let mut last = None;
    let mut tell = |status: AccessStatus| {
        if last.as_ref() != Some(&status) {
            last = Some(status.clone());
            on_status(status);
        }
    };
    loop {
        match AccessAnswer::from_bytes(&bytes, max)
            .map_err(|e| ClientError::BadAnswer(e.to_string()))?
        {
            AccessAnswer::Granted(ops) => return Ok(ops),
            AccessAnswer::Denied => return Err(ClientError::Denied),
            AccessAnswer::Expired => return Err(ClientError::Expired),
            AccessAnswer::Refused(refusal) => return Err(ClientError::Refused(refusal)),
            AccessAnswer::Pending => tell(AccessStatus::Waiting(device)),
        }
        loop {
            tokio::time::sleep(POLL).await;
            let poll = AccessFrame::Poll(AccessPoll::sign(
                identity.secret(),
                &device.to_bytes(),
                now_ms(),
            ));
            match net.request_on(Protocol::Access, device, poll.to_bytes()).await {
                Ok(answer) => {
                    bytes = answer;
                    failures = 0;
                    break;
                }
                Err(_) => {
                    // The device went away for a while: keep asking it,
                    // more slowly; the request waits there.
                    tell(AccessStatus::Unreachable(device));
                    let wait = RETRY[failures.min(RETRY.len() - 1)];
                    failures += 1;
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}
