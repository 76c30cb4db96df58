//! Where each record lives in the keyspace.
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `c` | commit id | the commit's bytes |
//! | `l` | author · seq (8 bytes, big-endian) | ids of the commits at that position (32 bytes each; two or more: a fork) |
//! | `h` | author | the author's log head ([`crate::replica::Head`]) |
//! | `f` | author · seq | empty: a fork at that position |
//! | `u` | scope · epoch · commit id | empty: stored, not yet readable (no key) |
//! | `x` | commit id | empty: signed but unreadable with its key |
//! | `o` | control operation id | the operation's bytes |
//! | `q` | app key (a request from before: its id) | a pending app access request |
//! | `d` | app key | how an app's last request ended: denied or expired, and when |
//! | `k` | access ask id | the ask's `issued_ms` (8 bytes): an ask answered already (replays are refused) |
//! | `v` | invite token | expiry (ms, 8 bytes): an unused device invite |
//! | `n` | app key | the name the app gave when it asked for access |
//! | `a` | app key | the secret seed of a custodial app (one that uses this node's API) |
//! | `z` | commit id | empty: stored, but not authorised by the control log |
//! | `p` | apply-at time (ms, 8 bytes, big-endian) · commit id | a commit held back: stamped too far ahead |
//! | `r` | table · row key | the row's merge state ([`crate::storage::rows`]) |
//! | `m` | name | replica metadata |
//!
//! Names are prefixed by their length byte, so one table's prefix is never
//! a prefix of another's.

use basic_proto::{CommitId, KeyCache, KeyPart, Name, PublicKey, RowKey, ScopeId};

/// Commits by id.
pub const COMMIT: u8 = b'c';
/// Log index: author, seq, id.
pub const LOG: u8 = b'l';
/// Log heads by author.
pub const HEAD: u8 = b'h';
/// Detected forks.
pub const FORK: u8 = b'f';
/// Commits waiting for a key.
pub const UNOPENED: u8 = b'u';
/// Commits whose content could not be read with the right key.
pub const UNREADABLE: u8 = b'x';
/// Control operations.
pub const CONTROL: u8 = b'o';
/// Unused device invites.
pub const INVITE: u8 = b'v';
/// Pending app access requests.
pub const REQUEST: u8 = b'q';
/// How app requests ended (denied, expired), by app.
pub const ANSWERED: u8 = b'd';
/// Ids of asks answered already, for refusing replays.
pub const ASKED: u8 = b'k';
/// App names, from their access requests.
pub const APP_NAME: u8 = b'n';
/// Custodial apps' secrets: the keys this node signs their writes with.
pub const CUSTODIAL: u8 = b'a';
/// Commits the control log does not authorise.
pub const REJECTED: u8 = b'z';
/// Commits held back until their stamp is near enough.
pub const HELD: u8 = b'p';
/// Row states.
pub const ROW: u8 = b'r';
/// Metadata.
pub const META: u8 = b'm';
/// What each author's log holds in each scope, for sync.
pub const SUMMARY: u8 = b'y';

fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + parts.iter().map(|p| p.len()).sum::<usize>());
    out.push(prefix);
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

fn name_bytes(name: &Name) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + name.as_str().len());
    // Names are at most 64 bytes (basic_proto::value::MAX_NAME_LEN).
    out.push(name.as_str().len() as u8);
    out.extend_from_slice(name.as_str().as_bytes());
    out
}

/// `c` · id.
pub fn commit(id: &CommitId) -> Vec<u8> {
    key(COMMIT, &[&id.0])
}

/// `l` · author: every log entry of one author.
pub fn log_author(author: &PublicKey) -> Vec<u8> {
    key(LOG, &[author.as_bytes()])
}

/// `l` · author · seq: the ids at one position of a log.
pub fn log_position(author: &PublicKey, seq: u64) -> Vec<u8> {
    key(LOG, &[author.as_bytes(), &seq.to_be_bytes()])
}

/// The id at the end of an index key.
pub fn id_suffix(key: &[u8]) -> Option<CommitId> {
    let start = key.len().checked_sub(32)?;
    let mut id = [0; 32];
    id.copy_from_slice(&key[start..]);
    Some(CommitId(id))
}

/// `y` · author · scope: the sync summary of one author in one scope.
pub fn summary(author: &PublicKey, scope: &ScopeId) -> Vec<u8> {
    key(SUMMARY, &[author.as_bytes(), &scope.0])
}

/// The author and scope of a summary key; the author's key is validated
/// through `keys` (validating a key costs about a signature check).
pub fn parse_summary(key: &[u8], keys: &KeyCache) -> Option<(PublicKey, ScopeId)> {
    let author: [u8; 32] = key.get(1..33)?.try_into().ok()?;
    let scope: [u8; 16] = key.get(33..49)?.try_into().ok()?;
    Some((keys.get(author).ok()?, ScopeId(scope)))
}

/// `h` · author.
pub fn head(author: &PublicKey) -> Vec<u8> {
    key(HEAD, &[author.as_bytes()])
}

/// `f` · author · seq.
pub fn fork(author: &PublicKey, seq: u64) -> Vec<u8> {
    key(FORK, &[author.as_bytes(), &seq.to_be_bytes()])
}

/// `u` · scope · epoch: commits waiting for one scope key.
pub fn unopened_epoch(scope: &ScopeId, epoch: u32) -> Vec<u8> {
    key(UNOPENED, &[&scope.0, &epoch.to_be_bytes()])
}

/// `u` · scope · epoch · id.
pub fn unopened(scope: &ScopeId, epoch: u32, id: &CommitId) -> Vec<u8> {
    key(UNOPENED, &[&scope.0, &epoch.to_be_bytes(), &id.0])
}

/// `x` · id.
pub fn unreadable(id: &CommitId) -> Vec<u8> {
    key(UNREADABLE, &[&id.0])
}

/// `o` · op id.
pub fn control_op(id: &[u8; 32]) -> Vec<u8> {
    key(CONTROL, &[id])
}

/// `v` · invite token.
pub fn invite(token: &[u8; 32]) -> Vec<u8> {
    key(INVITE, &[token])
}

/// `q` · app key.
pub fn request(app: &PublicKey) -> Vec<u8> {
    key(REQUEST, &[app.as_bytes()])
}

/// `d` · app key.
pub fn answered(app: &PublicKey) -> Vec<u8> {
    key(ANSWERED, &[app.as_bytes()])
}

/// `k` · ask id.
pub fn asked(id: &[u8; 32]) -> Vec<u8> {
    key(ASKED, &[id])
}

/// `n` · app key.
pub fn app_name(app: &PublicKey) -> Vec<u8> {
    key(APP_NAME, &[app.as_bytes()])
}

/// `a` · app key.
pub fn custodial(app: &PublicKey) -> Vec<u8> {
    key(CUSTODIAL, &[app.as_bytes()])
}

/// `z` · commit id.
pub fn rejected(id: &CommitId) -> Vec<u8> {
    key(REJECTED, &[&id.0])
}

/// `p` · apply-at · id.
pub fn held(apply_at_ms: u64, id: &CommitId) -> Vec<u8> {
    key(HELD, &[&apply_at_ms.to_be_bytes(), &id.0])
}

/// The apply-at time of a held-commit key.
pub fn held_apply_at(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(1..9)?.try_into().ok()?))
}

/// `r` · table: every row of one table.
pub fn rows_of(table: &Name) -> Vec<u8> {
    key(ROW, &[&name_bytes(table)])
}

/// `r` · table · row key.
///
/// The row key is in its deterministic CBOR encoding ([`RowKey::encode`]),
/// written here directly: this key is built for every operation merged.
pub fn row(table: &Name, row_key: &RowKey) -> Vec<u8> {
    let name = table.as_str().as_bytes();
    let parts: usize = row_key
        .parts()
        .iter()
        .map(|part| match part {
            KeyPart::Integer(_) => 9,
            KeyPart::Text(text) => 9 + text.len(),
            KeyPart::Bytes(bytes) => 9 + bytes.len(),
        })
        .sum();
    let mut out = Vec::with_capacity(2 + name.len() + 1 + parts);
    out.push(ROW);
    // Names are at most 64 bytes (basic_proto::value::MAX_NAME_LEN).
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    cbor_head(&mut out, 4, row_key.parts().len() as u64);
    for part in row_key.parts() {
        match part {
            KeyPart::Integer(i) if *i >= 0 => cbor_head(&mut out, 0, *i as u64),
            // CBOR's negative integers hold -1 - i, which is !i.
            KeyPart::Integer(i) => cbor_head(&mut out, 1, !*i as u64),
            KeyPart::Bytes(bytes) => {
                cbor_head(&mut out, 2, bytes.len() as u64);
                out.extend_from_slice(bytes);
            }
            KeyPart::Text(text) => {
                cbor_head(&mut out, 3, text.len() as u64);
                out.extend_from_slice(text.as_bytes());
            }
        }
    }
    out
}

/// A CBOR head of `major` type and argument `n`, in its shortest form.
fn cbor_head(out: &mut Vec<u8>, major: u8, n: u64) {
    let major = major << 5;
    if n < 24 {
        out.push(major | n as u8);
    } else if let Ok(n) = u8::try_from(n) {
        out.extend_from_slice(&[major | 24, n]);
    } else if let Ok(n) = u16::try_from(n) {
        out.push(major | 25);
        out.extend_from_slice(&n.to_be_bytes());
    } else if let Ok(n) = u32::try_from(n) {
        out.push(major | 26);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(major | 27);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// Splits a row key into table and row key.
pub fn parse_row(key: &[u8]) -> Option<(Name, Vec<u8>)> {
    let (&prefix, rest) = key.split_first()?;
    let (&len, rest) = rest.split_first()?;
    if prefix != ROW || rest.len() < usize::from(len) {
        return None;
    }
    let (name, row_key) = rest.split_at(usize::from(len));
    let name = Name::new(std::str::from_utf8(name).ok()?).ok()?;
    Some((name, row_key.to_vec()))
}

/// `m` · name.
pub fn meta(name: &str) -> Vec<u8> {
    key(META, &[name.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn part() -> impl Strategy<Value = KeyPart> {
        prop_oneof![
            prop_oneof![
                any::<i64>(),
                Just(i64::MIN),
                Just(i64::MAX),
                -70_000i64..70_000,
                Just(-(1 << 32) - 1),
                Just(1 << 32),
            ]
            .prop_map(KeyPart::Integer),
            ".{0,30}".prop_map(KeyPart::Text),
            (0usize..70_000).prop_map(|n| KeyPart::Text("x".repeat(n))),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(KeyPart::Bytes),
        ]
    }

    proptest! {
        /// The row key written directly is the deterministic CBOR of the key.
        #[test]
        fn row_keys_hold_the_cbor_encoding(parts in proptest::collection::vec(part(), 1..9)) {
            let key = RowKey::new(parts).unwrap();
            let table = Name::new("todo.items").unwrap();
            let expected = [&[ROW][..], &name_bytes(&table), &key.encode()].concat();
            prop_assert_eq!(row(&table, &key), expected);
            prop_assert_eq!(parse_row(&row(&table, &key)), Some((table, key.encode())));
        }
    }
}
