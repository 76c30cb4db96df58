//! The user's flows over a database: pairing a new device, recovering
//! with the recovery secret, apps asking for access, export and import.

pub(crate) mod access;
pub(crate) mod apps;
pub(crate) mod export;
pub(crate) mod pairing;
pub mod recovery;
