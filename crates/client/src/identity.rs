//! The app's own key: made by the app, kept where the app chooses.

use std::io::Write as _;
use std::path::Path;

use basic_proto::keys::{Principal, Role};
use basic_proto::{Party, PublicKey, SecretKey};

use crate::error::ClientError;

/// An app's identity: the key it signs its commits with and that grants
/// seal scope keys to. Its id (`app_…`) is what the user sees.
#[derive(Clone)]
pub struct AppIdentity {
    secret: SecretKey,
}

impl std::fmt::Debug for AppIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppIdentity").field("id", &self.id()).finish_non_exhaustive()
    }
}

impl AppIdentity {
    /// A new identity.
    pub fn generate() -> Self {
        Self { secret: SecretKey::generate(&mut rand::rng()) }
    }

    /// The identity whose 32 secret bytes are `seed` (as
    /// [`AppIdentity::to_bytes`] gave them), for apps that keep it themselves.
    pub fn from_bytes(seed: [u8; 32]) -> Self {
        Self { secret: SecretKey::from_seed(seed) }
    }

    /// The 32 secret bytes: whoever holds them is this app.
    pub fn to_bytes(&self) -> [u8; 32] {
        *self.secret.seed()
    }

    /// Loads the identity kept in the file at `path`, or makes one and
    /// writes it there, readable by the owner only (0600).
    pub fn load_or_create(path: &Path) -> Result<Self, ClientError> {
        load_or_create_seed(path).map(Self::from_bytes)
    }

    /// The app's id, as the user sees it (`app_…`).
    pub fn id(&self) -> String {
        Principal { role: Role::App, key: self.public() }.to_string()
    }

    /// The app's public key.
    pub fn public(&self) -> PublicKey {
        self.secret.public()
    }

    /// The app's keys, as a grant names them.
    pub fn party(&self) -> Party {
        Party::of(&self.secret)
    }

    pub(crate) fn secret(&self) -> &SecretKey {
        &self.secret
    }
}

/// The 32-byte secret seed kept in the file at `path`, or a new one
/// written there, readable by the owner only (0600).
pub(crate) fn load_or_create_seed(path: &Path) -> Result<[u8; 32], ClientError> {
    let io = |error| ClientError::Identity { path: path.to_owned(), error };
    match std::fs::read(path) {
        Ok(bytes) => {
            bytes.try_into().map_err(|_| ClientError::BadIdentity { path: path.to_owned() })
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let seed = AppIdentity::generate().to_bytes();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path).map_err(io)?;
            file.write_all(&seed).map_err(io)?;
            file.sync_all().map_err(io)?;
            Ok(seed)
        }
        Err(error) => Err(io(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_kept_private_then_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.key");
        let first = AppIdentity::load_or_create(&path).unwrap();
        let again = AppIdentity::load_or_create(&path).unwrap();
        assert_eq!(first.public(), again.public());
        assert!(first.id().starts_with("app_"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(AppIdentity::load_or_create(&path), Err(ClientError::BadIdentity { .. })));
        let bytes = first.to_bytes();
        assert_eq!(AppIdentity::from_bytes(bytes).public(), first.public());
    }
}
