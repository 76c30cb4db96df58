//! Where this device's secrets live: the platform keystore when one is
//! reachable, else the replica's identity record (a file readable by its
//! owner only, in a directory only its owner can enter).
//!
//! The platform keystore is behind the cargo feature `keystore` (the
//! `keyring` crate: the Secret Service over D-Bus on Linux — GNOME Keyring,
//! KWallet, KeePassXC —, the macOS Keychain, the Windows Credential
//! Manager). At start, [`install`] probes it (store, read back and delete
//! a throwaway entry); if that works it becomes the store's
//! [`basic_store::secrets::SecretStore`], so new secrets go there and
//! secrets still in the file move there when the database opens. If not
//! (no feature, no D-Bus session, a locked or absent keystore), the file is
//! used, as it is without the feature. `BASIC_KEYSTORE=file` forces the
//! file; `BASIC_KEYSTORE=platform` makes an unreachable keystore an error.

use anyhow::bail;

/// The entries' service name in the keystore.
#[cfg_attr(not(feature = "keystore"), allow(dead_code))]
const SERVICE: &str = "basic";

/// Where secrets are kept, as chosen at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// The platform keystore, by name.
    Platform(String),
    /// The replica's file, and why not the platform keystore.
    File(String),
}

/// Chooses where this process keeps secrets and installs it in the store.
/// Fails only when `BASIC_KEYSTORE=platform` and no keystore is reachable.
pub fn install() -> anyhow::Result<Choice> {
    let wanted = std::env::var("BASIC_KEYSTORE").unwrap_or_default();
    let choice = match wanted.as_str() {
        "file" => Choice::File("BASIC_KEYSTORE=file".into()),
        "" | "auto" | "platform" => probe(),
        other => bail!("BASIC_KEYSTORE={other:?}: use `file`, `platform` or `auto`"),
    };
    match (&choice, wanted.as_str()) {
        (Choice::File(why), "platform") => {
            bail!("BASIC_KEYSTORE=platform, but no platform keystore is reachable: {why}")
        }
        (Choice::File(why), _) => tracing::debug!("secrets kept in the replica's file: {why}"),
        (Choice::Platform(name), _) => tracing::debug!("secrets kept in the {name}"),
    }
    Ok(choice)
}

#[cfg(not(feature = "keystore"))]
fn probe() -> Choice {
    Choice::File("this build has no platform keystore support (cargo feature `keystore`)".into())
}

#[cfg(feature = "keystore")]
fn probe() -> Choice {
    use std::sync::Arc;
    let store = platform::Platform::new();
    match store.probe() {
        Ok(()) => {
            let name = basic_store::secrets::SecretStore::name(&store).to_owned();
            basic_store::secrets::install(Arc::new(store));
            Choice::Platform(name)
        }
        Err(why) => Choice::File(why),
    }
}

#[cfg(feature = "keystore")]
mod platform {
    //! The `keyring` crate as the store's keystore.

    use basic_store::secrets::{SecretError, SecretStore};
    use keyring::{Entry, Error};

    use super::SERVICE;

    /// The platform keystore.
    #[derive(Debug)]
    pub(super) struct Platform {
        name: &'static str,
    }

    impl Platform {
        pub(super) fn new() -> Self {
            let name = if cfg!(target_os = "macos") {
                "macOS Keychain"
            } else if cfg!(windows) {
                "Windows Credential Manager"
            } else {
                "Secret Service (D-Bus)"
            };
            Self { name }
        }

        /// Stores, reads back and deletes a throwaway entry.
        pub(super) fn probe(&self) -> Result<(), String> {
            let name = format!("probe {}", std::process::id());
            let seed = [7; 32];
            self.put(&name, &seed).map_err(|e| e.to_string())?;
            let back = self.get(&name).map_err(|e| e.to_string());
            let _ = self.delete(&name);
            match back? {
                Some(read) if read == seed => Ok(()),
                _ => Err("the keystore did not give back what was stored".into()),
            }
        }
    }

    fn entry(name: &str) -> Result<Entry, SecretError> {
        Entry::new(SERVICE, name).map_err(|e| SecretError(e.to_string()))
    }

    impl SecretStore for Platform {
        fn name(&self) -> &str {
            self.name
        }

        fn get(&self, name: &str) -> Result<Option<[u8; 32]>, SecretError> {
            match entry(name)?.get_secret() {
                Ok(bytes) => <[u8; 32]>::try_from(bytes.as_slice())
                    .map(Some)
                    .map_err(|_| SecretError(format!("{name:?} is not a 32-byte key"))),
                Err(Error::NoEntry) => Ok(None),
                Err(error) => Err(SecretError(error.to_string())),
            }
        }

        fn put(&self, name: &str, seed: &[u8; 32]) -> Result<(), SecretError> {
            entry(name)?.set_secret(seed).map_err(|e| SecretError(e.to_string()))
        }

        fn delete(&self, name: &str) -> Result<(), SecretError> {
            match entry(name)?.delete_credential() {
                Ok(()) | Err(Error::NoEntry) => Ok(()),
                Err(error) => Err(SecretError(error.to_string())),
            }
        }
    }
}
