//! Adding a device by invitation: one line of text, used once, before it
//! expires; the new device gets every key and reads everything.

use std::path::Path;

use basic_proto::Value;
use basic_store::{Database, DbError, Invite, PairingError, Schema};

fn todo_schema() -> Schema {
    Schema::from_file(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/todo.toml")))
        .unwrap()
}

#[test]
fn an_invited_device_joins_and_reads_everything() {
    let (a_dir, b_dir, c_dir) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Database::open(a_dir.path()).unwrap();
    a.apply_schema(todo_schema()).unwrap();
    a.execute("INSERT INTO todo.lists (id, name) VALUES ('home', 'Home')", &[], None).unwrap();

    let invite = a.invite(vec!["/ip4/127.0.0.1/tcp/4001".into()], 60_000).unwrap();
    let text = invite.to_text();
    assert!(text.starts_with("basic-invite-") && !text.contains(char::is_whitespace));
    let received = Invite::parse(&format!("  {text}\n")).unwrap();
    assert_eq!(received, invite);

    let request = Database::prepare_join(b_dir.path(), &received).unwrap();
    // Opening the directory before the join finishes does not make a new database.
    assert!(matches!(
        Database::open(b_dir.path()),
        Err(DbError::Control(basic_store::ControlError::Joining))
    ));
    assert!(
        matches!(
            Database::finish_join(b_dir.path(), &a.control_ops().unwrap()),
            Err(DbError::Control(basic_store::ControlError::NotAdded))
        ),
        "not added yet"
    );
    a.accept_join(&request).unwrap();
    let b = Database::finish_join(b_dir.path(), &a.control_ops().unwrap()).unwrap();
    assert_eq!(b.id(), a.id());
    assert!(a.auth_state().is_device(&b.device()));
    let commits: Vec<Vec<u8>> =
        a.replica().commits().map(|c| c.unwrap().as_bytes().to_vec()).collect();
    for result in b.ingest(&commits).unwrap() {
        result.unwrap();
    }
    assert_eq!(
        b.query("SELECT name FROM todo.lists", &[], None).unwrap().rows,
        [[Value::Text("Home".into())]]
    );

    // The invite was used once: a second device cannot use it again.
    let again = Database::prepare_join(c_dir.path(), &received).unwrap();
    assert!(matches!(a.accept_join(&again), Err(DbError::Pairing(PairingError::NoSuchInvite))));
}

#[test]
fn expired_forged_and_garbled_invites_are_refused() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Database::open(a_dir.path()).unwrap();
    let expired = a.invite(vec![], 0).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert!(matches!(
        Database::prepare_join(b_dir.path(), &expired),
        Err(DbError::Pairing(PairingError::Expired))
    ));

    let invite = a.invite(vec![], 60_000).unwrap();
    let mut request = Database::prepare_join(b_dir.path(), &invite).unwrap();
    request.proof[0] ^= 1;
    assert!(matches!(a.accept_join(&request), Err(DbError::Pairing(PairingError::NoSuchInvite))));

    for bad in ["", "basic-invite-", "basic-invite-!!!", "hello", &invite.to_text()[..30]] {
        assert!(matches!(Invite::parse(bad), Err(PairingError::Malformed(_))), "{bad:?}");
    }
}

#[test]
fn a_join_request_travels_as_bytes_and_garbage_is_refused() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Database::open(a_dir.path()).unwrap();
    let invite = a.invite(vec![], 60_000).unwrap();
    let request = Database::prepare_join(b_dir.path(), &invite).unwrap();
    let bytes = request.to_bytes();
    assert!(bytes.len() <= basic_store::JOIN_REQUEST_BYTES);
    assert_eq!(basic_store::JoinRequest::from_bytes(&bytes).unwrap(), request);
    for garbage in
        [&b""[..], b"\x80", &bytes[..bytes.len() - 1], &[bytes.as_slice(), b"x"].concat()]
    {
        assert!(matches!(
            basic_store::JoinRequest::from_bytes(garbage),
            Err(PairingError::Malformed(_))
        ));
    }
    a.accept_join(&basic_store::JoinRequest::from_bytes(&bytes).unwrap()).unwrap();
}

#[test]
fn a_pinning_peer_replicates_into_a_directory_and_reopens_it() {
    let (a_dir, p_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Database::open(a_dir.path()).unwrap();
    let pinner = basic_proto::SecretKey::from_seed([9; 32]);
    a.add_pinner(pinner.public()).unwrap();
    let p = Database::replicate(p_dir.path(), a.id(), &pinner, &a.control_ops().unwrap()).unwrap();
    assert_eq!(p.id(), a.id());
    assert!(matches!(Database::open(p_dir.path()), Err(DbError::InUse(_))), "holds its lock");
    drop(p);
    let p = Database::open(p_dir.path()).unwrap();
    assert_eq!(p.member_key().unwrap().public(), pinner.public());
}
