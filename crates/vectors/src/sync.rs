//! `sync.json`: the session proofs, a fingerprint, a digest, example
//! frames of `protocol-spec/sync.md`, byte for byte, frames that must not
//! decode, and a well-formed frame that must be refused.

use basic_proto::keys::SigningContext;
use basic_proto::sync::message::{ErrorCode, Message, Part};
use basic_proto::sync::proof::{Side, Transcript, heads_message};
use basic_proto::sync::summary::digest;
use basic_proto::sync::{Entry, Fingerprint, View};
use basic_proto::{CommitId, KeyCache, OpId};
use serde_json::{Value as Json, json};

use crate::commits::chain;
use crate::json::hex;
use crate::{fixture, principal};

/// The deterministic CBOR array of `entries`, as digested and signed.
fn entries_cbor(entries: &[Entry]) -> Vec<u8> {
    basic_proto::codec::encode_value(&ciborium::Value::Array(
        entries
            .iter()
            .map(|e| {
                ciborium::Value::Array(vec![
                    ciborium::Value::Bytes(e.author.as_bytes().to_vec()),
                    ciborium::Value::Integer(e.max.into()),
                    ciborium::Value::Integer(e.held.count.into()),
                    ciborium::Value::Bytes(e.held.sum.to_le_bytes().to_vec()),
                ])
            })
            .collect(),
    ))
}

pub(crate) fn vectors() -> Json {
    let database = crate::commits::database();
    let requester = principal("device");
    let responder = principal("second device");
    let transcript = Transcript {
        database,
        requester: requester.public(),
        requester_nonce: fixture("sync requester nonce"),
        requester_transport: b"requester transport id".to_vec(),
        responder_nonce: fixture("sync responder nonce"),
        responder_transport: b"responder transport id".to_vec(),
    };
    let responder_side = Side::Responder(responder.public());
    let requester_proof = transcript.prove(Side::Requester, &requester);
    let responder_proof = transcript.prove(responder_side, &responder);
    assert!(transcript.verify(Side::Requester, &requester_proof));
    assert!(transcript.verify(responder_side, &responder_proof));
    assert!(!transcript.verify(Side::Responder(requester.public()), &requester_proof));

    let ids: Vec<CommitId> =
        (1..=3).map(|i| CommitId(fixture(&format!("sync commit id {i}")))).collect();
    let mut held = Fingerprint::default();
    ids.iter().for_each(|id| held.add(id));
    let mut entries = vec![
        Entry { author: requester.public(), max: 3, held },
        Entry {
            author: responder.public(),
            max: 1,
            held: Fingerprint { count: 1, sum: u128::from_le_bytes([7; 16]) },
        },
    ];
    entries.sort_by(|a, b| a.author.as_bytes().cmp(b.author.as_bytes()));
    let entries_digest = digest(&entries);
    // The responder holds a fourth commit of the requester's author: its
    // entries differ from the summary's in that one entry, which is all the
    // reply shows (with the responder's own digest).
    let mut theirs = entries.clone();
    let fourth = CommitId(fixture("sync commit id 4"));
    for entry in &mut theirs {
        if entry.author == requester.public() {
            entry.max = 4;
            entry.held.add(&fourth);
        }
    }
    let their_digest = digest(&theirs);
    let shown: Vec<Entry> = theirs.iter().filter(|e| !entries.contains(e)).cloned().collect();
    assert_eq!(shown.len(), 1);
    let signed = heads_message(database, &requester.public(), &their_digest, &shown);
    let signature = responder.sign(SigningContext::SyncHeads, &signed);

    let todo = crate::commits::scope_id();
    let (_, first, _) = chain().into_iter().next().expect("a vector commit");
    let genesis = crate::control::genesis();
    let mut two = Fingerprint::default();
    ids[..2].iter().for_each(|id| two.add(id));
    // Later in the session: a change list with nothing changed, asking for
    // the reply to be signed (the requester holds less of an author than
    // the responder showed before), and a reply with the requester's own
    // digest to a summary that did not ask, which carries no signature.
    let asking = Message::Summary {
        view: View::Scopes([todo].into()),
        digest: entries_digest,
        entries: Some(Vec::new()),
        delta: true,
        control: Vec::new(),
        sign: true,
    };
    let unsigned = Message::Reply {
        digest: entries_digest,
        entries: Vec::new(),
        commits: Vec::new(),
        more: false,
        control: Vec::new(),
        signature: None,
    };
    let summary = Message::Summary {
        view: View::Scopes([todo].into()),
        digest: entries_digest,
        entries: Some(entries.clone()),
        delta: false,
        control: vec![OpId(fixture("sync control head"))],
        sign: false,
    };
    let reply_signed = |signature| Message::Reply {
        digest: their_digest,
        entries: shown.clone(),
        commits: vec![first.as_bytes().to_vec()],
        more: false,
        control: Vec::new(),
        signature,
    };
    let reply = reply_signed(Some(signature));
    let frames = [
        (
            "hello",
            Message::Hello { database, key: requester.public(), nonce: transcript.requester_nonce },
        ),
        ("challenge", Message::Challenge { nonce: transcript.responder_nonce }),
        ("auth", Message::Auth { proof: requester_proof, prelude: Vec::new() }),
        (
            "ready",
            Message::Ready {
                key: responder.public(),
                proof: responder_proof,
                heads: vec![OpId(fixture("sync control head"))],
            },
        ),
        ("summary", summary.clone()),
        ("reply", reply.clone()),
        ("summary asking for a signature", asking.clone()),
        ("reply with the requester's digest, unsigned", unsigned.clone()),
        ("control-want", Message::ControlWant { heads: vec![OpId(fixture("sync control head"))] }),
        ("ops", Message::Ops { ops: vec![genesis.as_bytes().to_vec()], more: false }),
        (
            "ranges",
            Message::Ranges {
                view: View::Scopes([todo].into()),
                author: requester.public(),
                parts: vec![
                    Part { lo: 1, hi: 2, held: two },
                    Part { lo: 3, hi: 3, held: Fingerprint::default() },
                ],
            },
        ),
        (
            "ranges-reply",
            Message::RangesReply {
                split: vec![(40, 71)],
                commits: vec![first.as_bytes().to_vec()],
            },
        ),
        ("push", Message::Push { ops: Vec::new(), commits: vec![first.as_bytes().to_vec()] }),
        ("ack", Message::Ack { stored: 1 }),
        ("error", Message::Error { code: ErrorCode::NotMember, message: "not a member".into() }),
    ];
    let frames: Vec<Json> = frames
        .iter()
        .map(|(name, message)| {
            let bytes = message.encode();
            let decoded =
                Message::decode(&bytes, usize::MAX, &KeyCache::default()).expect("decodes");
            assert_eq!(&decoded, message);
            json!({ "name": name, "frame": hex(&bytes) })
        })
        .collect();

    // Frames every implementation must refuse, each built from a valid one.
    let ack = Message::Ack { stored: 1 }.encode();
    let mut version_1 = ack.clone();
    version_1[1] = 0x01;
    let mut unknown_kind = ack.clone();
    unknown_kind[2] = 0x0e;
    let mut trailing = ack.clone();
    trailing.push(0);
    // `ack` with stored = 1 as a two-byte integer: not the shortest form.
    let non_canonical = vec![0x83, 0x00, 0x0c, 0x18, 0x01];
    let mut unsorted = entries.clone();
    unsorted.reverse();
    let unsorted_reply = Message::Reply {
        digest: their_digest,
        entries: unsorted,
        commits: Vec::new(),
        more: false,
        control: Vec::new(),
        signature: Some(signature),
    }
    .encode();
    // `sign` as the integer 1, not a bool (the last byte of the frame).
    let mut sign_not_bool = asking.encode();
    *sign_not_bool.last_mut().expect("a frame") = 0x01;
    // A signature of 63 bytes: the last field, `58 40` and 64 bytes.
    let reply_bytes = reply.encode();
    let mut short_signature = reply_bytes[..reply_bytes.len() - 66].to_vec();
    short_signature.extend_from_slice(&[0x58, 0x3f]);
    short_signature.extend_from_slice(&signature[..63]);
    let refused: Vec<Json> = [
        ("version 1", version_1, "the version is not 0"),
        ("unknown kind", unknown_kind, "kind 14 is not a frame"),
        ("trailing byte", trailing, "bytes after the frame"),
        ("non-canonical integer", non_canonical, "not in deterministic form"),
        ("unsorted entries", unsorted_reply, "entries must be sorted by author"),
        ("sign not a bool", sign_not_bool, "summary.sign must be a bool"),
        ("63-byte signature", short_signature, "reply.signature is 64 bytes or null"),
    ]
    .into_iter()
    .map(|(name, bytes, why)| {
        assert!(Message::decode(&bytes, usize::MAX, &KeyCache::default()).is_err(), "{name}");
        json!({ "name": name, "frame": hex(&bytes), "why": why })
    })
    .collect();

    // A frame that decodes but must be refused: an app entitled to `todo`
    // pushes a commit it did not author (the first commits.json commit, by
    // the device). The answer is error 8 (forbidden), then a disconnect.
    let app = principal("app");
    let (_, foreign, _) = chain().into_iter().next().expect("a vector commit");
    assert_ne!(foreign.header().author, app.public());
    let push = Message::Push { ops: Vec::new(), commits: vec![foreign.as_bytes().to_vec()] };
    let forbidden = Message::Error {
        code: ErrorCode::Forbidden,
        message: "an app pushed another's commit".into(),
    };
    for frame in [&push, &forbidden] {
        let bytes = frame.encode();
        let decoded = Message::decode(&bytes, usize::MAX, &KeyCache::default()).expect("decodes");
        assert_eq!(&decoded, frame);
    }
    let violations = vec![json!({
        "name": "an app pushes another author's commit",
        "pusher": hex(app.public().as_bytes()),
        "pusher_entitled_view": ["todo"],
        "frame": hex(push.encode()),
        "answer_code": ErrorCode::Forbidden as u64,
        "answer": hex(forbidden.encode()),
        "why": "an app pushes only commits it authored, in its entitled view (sync.md §6); the responder answers error 8 and ends the session",
    })];

    // Replies that decode but that the requester MUST refuse: unsigned
    // where a signature is needed. It ends the session (bad proof).
    let unsigned_differing = reply_signed(None);
    let requester_refuses = vec![
        json!({
            "name": "an unsigned reply to a summary asking for the signature",
            "summary": hex(asking.encode()),
            "reply": hex(unsigned.encode()),
            "code": ErrorCode::BadProof as u64,
            "why": "a requester that set sign needs the signature as evidence of a rollback (sync.md §5)",
        }),
        json!({
            "name": "an unsigned reply whose digest differs",
            "summary": hex(summary.encode()),
            "reply": hex(unsigned_differing.encode()),
            "code": ErrorCode::BadProof as u64,
            "why": "a reply is unsigned only with the requester's own digest (sync.md §5)",
        }),
    ];

    // The list both sides keep after a reply (sync.md §4 step 2): the
    // summary's list with the shown entries in place after a complete reply;
    // the summary's list as it was after one with `more`.
    let mut complete = entries.clone();
    for entry in &shown {
        match complete.iter_mut().find(|e| e.author == entry.author) {
            Some(kept) => *kept = *entry,
            None => complete.push(*entry),
        }
    }
    complete.sort_by(|a, b| a.author.as_bytes().cmp(b.author.as_bytes()));
    let kept_lists = vec![
        json!({
            "reply_more": false,
            "kept_cbor": hex(entries_cbor(&complete)),
            "kept_digest": hex(digest(&complete)),
        }),
        json!({
            "reply_more": true,
            "kept_cbor": hex(entries_cbor(&entries)),
            "kept_digest": hex(digest(&entries)),
        }),
    ];

    json!({
        "kept_lists": kept_lists,
        "refused": refused,
        "violations": violations,
        "requester_refuses": requester_refuses,
        "description": "protocol-spec/sync.md. transcript_requester is the CBOR transcript the requester signs first (context basic/v0/sync-proof, side 0, without the responder's key); transcript_responder the one the responder signs (side 1, with its key) and sends in ready only to a requester that proved membership; the fingerprint is count and little-endian wrapping sum of the first 16 bytes of each id; the digest is BLAKE3 derive_key(\"basic/v0 sync digest\", CBOR entries array)[..16]: the summary carries the requester's entries and their digest; the responder holds a fourth commit of the requester's author, so its digest differs and its reply shows only the entry that differs (shown_entries), with its own digest and the commit the requester lacks; the reply signature (context basic/v0/sync-heads) covers heads_message = CBOR [database, requester key, responder digest] followed by the shown entries array. Frames: one of each kind, as encoded, and two more: a change list (delta, nothing changed) with sign = true, and an unsigned reply (signature null) with the requester's own digest to a summary that did not ask. refused: frames that must not decode; violations: frames that decode but must be refused with answer_code; requester_refuses: replies that decode but that the requester must refuse, after sending summary, ending the session (code: bad proof), each unsigned where the signature is needed. kept_lists: the requester's list both sides keep after the reply to the summary (digest.entries_cbor) showed digest.shown_entries_cbor, the base of the session's next change list: with the shown entries in place when the reply's more is false, as the summary listed it when more is true (sync.md §4 step 2).",
        "session": {
            "database": hex(database.0),
            "requester_seed": hex(requester.seed()),
            "requester_public": hex(requester.public().as_bytes()),
            "requester_nonce": hex(transcript.requester_nonce),
            "requester_transport": hex(&transcript.requester_transport),
            "responder_seed": hex(responder.seed()),
            "responder_public": hex(responder.public().as_bytes()),
            "responder_nonce": hex(transcript.responder_nonce),
            "responder_transport": hex(&transcript.responder_transport),
            "transcript_requester": hex(transcript.message(Side::Requester)),
            "transcript_responder": hex(transcript.message(responder_side)),
            "requester_proof": hex(requester_proof),
            "responder_proof": hex(responder_proof),
        },
        "fingerprint": {
            "ids": ids.iter().map(|id| hex(id.0)).collect::<Vec<_>>(),
            "count": held.count,
            "sum_le": hex(held.sum.to_le_bytes()),
        },
        "digest": {
            "entries_cbor": hex(entries_cbor(&entries)),
            "digest": hex(entries_digest),
            "responder_entries_cbor": hex(entries_cbor(&theirs)),
            "responder_digest": hex(their_digest),
            "shown_entries_cbor": hex(entries_cbor(&shown)),
            "heads_message": hex(&signed),
            "reply_signature": hex(signature),
        },
        "frames": frames,
    })
}
