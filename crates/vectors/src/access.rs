//! `access.json`: an app asking a device for access over the network
//! (`protocol-spec/apps.md`): a valid ask and poll with every step of
//! their signatures, one answer of every kind, refused frames with the
//! refusal a device answers, an access code, and a device's relay of the
//! ask and denial of it, with the relays a device refuses.

use std::collections::BTreeMap;

use basic_proto::SecretKey;
use basic_proto::codec::encode_value;
use basic_proto::control::Rights;
use basic_proto::{DatabaseId, Name, SigningContext};
use basic_store::{
    AccessAnswer, AccessAsk, AccessCode, AccessDenial, AccessFrame, AccessPoll, AccessRefusal,
    AccessRelay, MAX_ACCESS_FRAME,
};
use ciborium::Value as Cbor;
use serde_json::{Value as Json, json};

use crate::json::hex;
use crate::principal;

/// The device's clock when it reads the frames (ms since 1970).
pub const NOW_MS: u64 = 1_767_225_600_000;

/// The libp2p peer id bytes of an ed25519 key: the identity multihash of
/// its protobuf encoding.
pub fn transport_of(name: &str) -> Vec<u8> {
    [&[0x00, 0x24, 0x08, 0x01, 0x12, 0x20][..], principal(name).public().as_bytes()].concat()
}

fn scopes(list: &[(&str, Rights)]) -> BTreeMap<Name, Rights> {
    list.iter().map(|(name, rights)| (Name::new(*name).unwrap(), *rights)).collect()
}

/// A frame's `[kind, body, signature]`.
fn parts(frame: &[u8]) -> (u64, Vec<u8>, Vec<u8>) {
    let Cbor::Array(items) = ciborium::from_reader::<Cbor, _>(frame).unwrap() else { panic!() };
    let [Cbor::Integer(kind), Cbor::Bytes(body), Cbor::Bytes(signature)] = &items[..] else {
        panic!("a frame is [kind, body, signature]")
    };
    (u64::try_from(i128::from(*kind)).unwrap(), body.clone(), signature.clone())
}

/// Every step of a frame's signature, recomputed from the spec.
fn signed(frame: &AccessFrame, context: SigningContext, device: &[u8]) -> Json {
    let bytes = frame.to_bytes();
    let (kind, body, signature) = parts(&bytes);
    let message =
        encode_value(&Cbor::Array(vec![Cbor::Bytes(device.to_vec()), Cbor::Bytes(body.clone())]));
    let app = principal("app");
    assert_eq!(
        app.sign(context, &message).to_vec(),
        signature,
        "the signature is over the spec's input"
    );
    json!({
        "kind": kind,
        "body": hex(&body),
        "device_transport": hex(device),
        "message": hex(&message),
        "label": hex(context.label()),
        "signed_bytes": hex(context.signed_bytes(&message)),
        "signature": hex(&signature),
        "frame": hex(&bytes),
    })
}

fn refusal_name(refusal: &AccessRefusal) -> &'static str {
    match refusal {
        AccessRefusal::BadSignature => "bad-signature",
        AccessRefusal::Stale => "stale",
        AccessRefusal::Replayed => "replayed",
        AccessRefusal::UnknownScope(_) => "unknown-scope",
        AccessRefusal::BadName => "bad-name",
        AccessRefusal::BadScopes => "bad-scopes",
        AccessRefusal::TooMany => "too-many",
        AccessRefusal::Oversized => "oversized",
        AccessRefusal::Malformed(_) => "malformed",
        AccessRefusal::NotADevice => "not-a-device",
        AccessRefusal::NoRequest => "no-request",
        AccessRefusal::DeviceError(_) => "device-error",
        AccessRefusal::NotFromADevice => "not-from-a-device",
        AccessRefusal::Revoked(_) => "revoked",
    }
}

/// Every step of a device's signature of a relay or denial.
fn device_signed(frame: &AccessFrame, device: &SecretKey) -> Json {
    let bytes = frame.to_bytes();
    let (kind, body, signature) = parts(&bytes);
    let message =
        encode_value(&Cbor::Array(vec![Cbor::Integer(kind.into()), Cbor::Bytes(body.clone())]));
    let context = SigningContext::AccessRelay;
    assert_eq!(
        device.sign(context, &message).to_vec(),
        signature,
        "the signature is over the spec's input"
    );
    json!({
        "kind": kind,
        "body": hex(&body),
        "message": hex(&message),
        "label": hex(context.label()),
        "signed_bytes": hex(context.signed_bytes(&message)),
        "signature": hex(&signature),
        "frame": hex(&bytes),
    })
}

/// The keys of a device, as its `add-device` names them.
fn device_keys(device: &SecretKey) -> Json {
    json!({ "key": hex(device.public().as_bytes()), "sealing": hex(device.sealing_key().0) })
}

/// `relays`: a device's relay of the valid ask and its denial, and the
/// relays and denials a device refuses.
fn relays(ask: &AccessAsk, device: &[u8]) -> Json {
    let app = principal("app");
    let relayer = principal("relaying device");
    let removed = principal("removed device");
    let stranger = principal("adversary");
    let minute = 60_000;
    let relay = |by: &SecretKey, ask: AccessAsk, transport: &[u8], issued: u64| {
        AccessFrame::Relay(AccessRelay::sign(by, transport.to_vec(), ask, issued))
    };
    let valid = relay(&relayer, ask.clone(), device, NOW_MS);
    let denial = AccessFrame::Denial(AccessDenial::sign(&relayer, app.public(), ask.id(), NOW_MS));
    let mut posing = AccessRelay::sign(&stranger, device.to_vec(), ask.clone(), NOW_MS);
    posing.device = relayer.public();
    let mut forged =
        AccessAsk::sign(&stranger, device, ask.name.clone(), ask.scopes.clone(), NOW_MS);
    forged.app = ask.app;
    let sign_ask = |name: String, list: &[(&str, Rights)], issued: u64| {
        AccessAsk::sign(&app, device, name, scopes(list), issued)
    };
    let rw = [("todo", Rights::ReadWrite)];
    let padded = sign_ask(format!("Groceries{}", " ".repeat(8000)), &rw, NOW_MS);
    let refused: Vec<(&str, Vec<u8>, &str, AccessRefusal)> = vec![
        (
            "a relay signed by a key that is no device of the database",
            relay(&stranger, ask.clone(), device, NOW_MS).to_bytes(),
            "",
            AccessRefusal::NotFromADevice,
        ),
        (
            "a relay signed by a removed device",
            relay(&removed, ask.clone(), device, NOW_MS).to_bytes(),
            "",
            AccessRefusal::NotFromADevice,
        ),
        (
            "a relay signed by the app's own key",
            relay(&app, ask.clone(), device, NOW_MS).to_bytes(),
            "",
            AccessRefusal::NotFromADevice,
        ),
        (
            "a relay naming the relaying device but signed by another key",
            AccessFrame::Relay(posing).to_bytes(),
            "",
            AccessRefusal::BadSignature,
        ),
        (
            "a relay of an ask signed by another key in the app's name",
            relay(&relayer, forged, device, NOW_MS).to_bytes(),
            "",
            AccessRefusal::BadSignature,
        ),
        (
            "a relay carrying another transport than the one the app signed",
            relay(&relayer, ask.clone(), &transport_of("another device"), NOW_MS).to_bytes(),
            "",
            AccessRefusal::BadSignature,
        ),
        (
            "a relay signed 10 minutes and 1 ms before the device's clock",
            relay(&relayer, ask.clone(), device, NOW_MS - 10 * minute - 1).to_bytes(),
            "",
            AccessRefusal::Stale,
        ),
        (
            "a fresh relay of an ask issued 10 minutes and 1 ms before the device's clock",
            relay(
                &relayer,
                sign_ask("Groceries".into(), &rw, NOW_MS - 10 * minute - 1),
                device,
                NOW_MS,
            )
            .to_bytes(),
            "",
            AccessRefusal::Stale,
        ),
        (
            "a relay of an ask for a namespace the database does not have",
            relay(
                &relayer,
                sign_ask("Mail".into(), &[("mail", Rights::Read)], NOW_MS),
                device,
                NOW_MS,
            )
            .to_bytes(),
            "",
            AccessRefusal::UnknownScope("mail".into()),
        ),
        (
            "the valid relay again, after its ask was denied",
            valid.to_bytes(),
            "the valid relay was taken, then its ask denied",
            AccessRefusal::Replayed,
        ),
        (
            "a relay over the cap (its ask's name padded with white space)",
            relay(&relayer, padded, device, NOW_MS).to_bytes(),
            "",
            AccessRefusal::Oversized,
        ),
        (
            "a denial signed by a key that is no device of the database",
            AccessFrame::Denial(AccessDenial::sign(&stranger, app.public(), ask.id(), NOW_MS))
                .to_bytes(),
            "",
            AccessRefusal::NotFromADevice,
        ),
        (
            "a denial signed 10 minutes and 1 ms after the device's clock",
            AccessFrame::Denial(AccessDenial::sign(
                &relayer,
                app.public(),
                ask.id(),
                NOW_MS + 10 * minute + 1,
            ))
            .to_bytes(),
            "",
            AccessRefusal::Stale,
        ),
    ];
    json!({
        "relaying_device": device_keys(&relayer),
        "removed_device": device_keys(&removed),
        "relay": device_signed(&valid, &relayer),
        "denial": device_signed(&denial, &relayer),
        "refused": refused.into_iter().map(|(why, frame, before, expected)| refused_case(why, &frame, before, &expected)).collect::<Vec<_>>(),
    })
}

/// One refused frame, as `refused` and `relays.refused` list them.
fn refused_case(why: &str, frame: &[u8], before: &str, expected: &AccessRefusal) -> Json {
    json!({
        "why": why,
        "frame": hex(frame),
        "before": before,
        "refusal": refusal_name(expected),
        "detail": match expected {
            AccessRefusal::UnknownScope(scope) | AccessRefusal::Revoked(scope) => {
                Json::from(scope.as_str())
            }
            _ => Json::Null,
        },
    })
}

pub(crate) fn vectors() -> Json {
    let app = principal("app");
    let device = transport_of("device");
    let todo = scopes(&[("todo", Rights::ReadWrite)]);
    let valid_ask = AccessAsk::sign(&app, &device, "Groceries".into(), todo.clone(), NOW_MS);
    let ask = AccessFrame::Ask(valid_ask.clone());
    let poll = AccessFrame::Poll(AccessPoll::sign(&app, &device, NOW_MS));
    let ask_body = parts(&ask.to_bytes()).1;
    let ask_id = blake3::derive_key("basic/v0 access ask id", &ask_body);

    let answers: Vec<Json> = [
        ("pending", AccessAnswer::Pending),
        ("granted", AccessAnswer::Granted(vec![vec![0x82, 0x01, 0x02], vec![0x80]])),
        ("denied", AccessAnswer::Denied),
        ("expired", AccessAnswer::Expired),
    ]
    .into_iter()
    .map(|(name, answer)| json!({ "answer": name, "bytes": hex(answer.to_bytes()) }))
    .chain(
        [
            AccessRefusal::BadSignature,
            AccessRefusal::Stale,
            AccessRefusal::Replayed,
            AccessRefusal::UnknownScope("mail".into()),
            AccessRefusal::BadName,
            AccessRefusal::BadScopes,
            AccessRefusal::TooMany,
            AccessRefusal::Oversized,
            AccessRefusal::Malformed("the body is not in deterministic encoding".into()),
            AccessRefusal::NotADevice,
            AccessRefusal::NoRequest,
            AccessRefusal::DeviceError("storage failed".into()),
            AccessRefusal::NotFromADevice,
            AccessRefusal::Revoked("todo".into()),
        ]
        .iter()
        .map(|r| {
            let bytes = AccessAnswer::Refused(r.clone()).to_bytes();
            json!({ "answer": "refused", "refusal": refusal_name(r), "bytes": hex(bytes) })
        }),
    )
    .collect();

    let sign = |name: &str, list: &[(&str, Rights)], issued: u64, to: &[u8]| {
        AccessFrame::Ask(AccessAsk::sign(&app, to, name.into(), scopes(list), issued)).to_bytes()
    };
    let rw = [("todo", Rights::ReadWrite)];
    let mut forged =
        AccessAsk::sign(&principal("adversary"), &device, "Groceries".into(), todo.clone(), NOW_MS);
    forged.app = basic_proto::Party::of(&app);
    let mut altered = AccessAsk::sign(
        &app,
        &device,
        "Groceries".into(),
        scopes(&[("todo", Rights::Read)]),
        NOW_MS,
    );
    altered.scopes = todo.clone();
    let mut poll_forged = AccessPoll::sign(&principal("adversary"), &device, NOW_MS);
    poll_forged.app = app.public();
    let thirty_three: Vec<(String, Rights)> =
        (0..33).map(|i| (format!("s{i:02}"), Rights::Read)).collect();
    let thirty_three: Vec<(&str, Rights)> =
        thirty_three.iter().map(|(n, r)| (n.as_str(), *r)).collect();
    let (_, poll_body, poll_signature) = parts(&poll.to_bytes());
    // The poll's body with the app key's length in two bytes, not one.
    let mut long_length = vec![0x82, 0x59, 0x00, 0x20];
    long_length.extend_from_slice(app.public().as_bytes());
    long_length.push(0x1b);
    long_length.extend_from_slice(&NOW_MS.to_be_bytes());
    let non_canonical = |body: Vec<u8>| {
        encode_value(&Cbor::Array(vec![
            Cbor::Integer(1.into()),
            Cbor::Bytes(body),
            Cbor::Bytes(poll_signature.clone()),
        ]))
    };
    let minute = 60_000;
    let refused: Vec<(&str, Vec<u8>, &str, AccessRefusal)> = vec![
        (
            "the valid ask, after the app's key was granted todo and revoked on it",
            ask.to_bytes(),
            "the app was granted todo (read), then revoked on it",
            AccessRefusal::Revoked("todo".into()),
        ),
        (
            "an ask signed by another key in the app's name",
            AccessFrame::Ask(forged).to_bytes(),
            "",
            AccessRefusal::BadSignature,
        ),
        (
            "an ask altered after signing (read became read-write)",
            AccessFrame::Ask(altered).to_bytes(),
            "",
            AccessRefusal::BadSignature,
        ),
        (
            "an ask the app signed for another device",
            sign("Groceries", &rw, NOW_MS, &transport_of("another device")),
            "",
            AccessRefusal::BadSignature,
        ),
        (
            "a poll signed by another key in the app's name",
            AccessFrame::Poll(poll_forged).to_bytes(),
            "",
            AccessRefusal::BadSignature,
        ),
        (
            "an ask issued 10 minutes and 1 ms before the device's clock",
            sign("Groceries", &rw, NOW_MS - 10 * minute - 1, &device),
            "",
            AccessRefusal::Stale,
        ),
        (
            "an ask issued 10 minutes and 1 ms after the device's clock",
            sign("Groceries", &rw, NOW_MS + 10 * minute + 1, &device),
            "",
            AccessRefusal::Stale,
        ),
        (
            "the valid ask again, after the user denied it",
            ask.to_bytes(),
            "the valid ask was received, then denied",
            AccessRefusal::Replayed,
        ),
        (
            "an ask for a namespace the database does not have",
            sign("Mail", &[("mail", Rights::Read), ("todo", Rights::Read)], NOW_MS, &device),
            "",
            AccessRefusal::UnknownScope("mail".into()),
        ),
        ("an ask with an empty name", sign("", &rw, NOW_MS, &device), "", AccessRefusal::BadName),
        (
            "an ask with a name of 65 characters",
            sign(&"x".repeat(65), &rw, NOW_MS, &device),
            "",
            AccessRefusal::BadName,
        ),
        (
            "an ask with a control character in its name",
            sign("a\nb", &rw, NOW_MS, &device),
            "",
            AccessRefusal::BadName,
        ),
        (
            "an ask for no scope",
            sign("Groceries", &[], NOW_MS, &device),
            "",
            AccessRefusal::BadScopes,
        ),
        (
            "an ask for 33 scopes",
            sign("Groceries", &thirty_three, NOW_MS, &device),
            "",
            AccessRefusal::BadScopes,
        ),
        (
            "a frame one byte over the cap",
            vec![0x80; MAX_ACCESS_FRAME + 1],
            "",
            AccessRefusal::Oversized,
        ),
        ("bytes that are not CBOR", vec![0xff, 0xff], "", AccessRefusal::Malformed(String::new())),
        (
            "a frame of an unknown kind",
            encode_value(&Cbor::Array(vec![
                Cbor::Integer(7.into()),
                Cbor::Bytes(poll_body.clone()),
                Cbor::Bytes(poll_signature.clone()),
            ])),
            "",
            AccessRefusal::Malformed(String::new()),
        ),
        (
            "a poll whose body gives the app key's length in 2 bytes (not the shortest form)",
            non_canonical(long_length),
            "",
            AccessRefusal::Malformed(String::new()),
        ),
        (
            "a valid poll from an app that asked nothing",
            poll.to_bytes(),
            "the device holds no request of the app",
            AccessRefusal::NoRequest,
        ),
    ];
    let refused: Vec<Json> = refused
        .into_iter()
        .map(|(why, frame, before, expected)| refused_case(why, &frame, before, &expected))
        .collect();
    let relays = relays(&valid_ask, &device);

    let code = AccessCode {
        database: DatabaseId(crate::fixture("access code database")),
        addresses: vec![
            "/ip4/192.168.1.5/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".into(),
            "/ip4/192.168.1.5/udp/4001/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".into(),
        ],
    };
    let code_cbor = encode_value(&Cbor::Array(vec![
        Cbor::Bytes(code.database.0.to_vec()),
        Cbor::Array(code.addresses.iter().map(|a| Cbor::Text(a.clone())).collect()),
    ]));

    json!({
        "description": "protocol-spec/apps.md. The app's seed is keys.json's app principal; device_transport is the libp2p peer id bytes of keys.json's device principal (0x0024080112 20 then its ed25519 key). ask: a valid ask (name Groceries, todo read-write, issued_ms = now_ms) with every step of its signature (message = CBOR [device transport id, body], signed_bytes = label || 0x00 || message) and its id (BLAKE3 derive_key(\"basic/v0 access ask id\", body)); poll: a valid poll. answers: one answer frame of every kind, and a refusal of every code. refused: frames a device with the todo namespace (and no other), clock now_ms and transport id device_transport MUST refuse with the refusal given, after the state in before (empty: a fresh device); detail is the refusal's detail where it is normative (the unknown scope), else null; other details are for people and not normative. code: an access code with its CBOR and text. relays: relaying_device and removed_device are the keys of the fixture principals (\"relaying device\", \"removed device\"); relay is the relaying device's relay of the valid ask (message = CBOR [2, body]) and denial its denial of it (message = CBOR [3, body]), each signed with the context basic/v0/access-relay; a device whose control log holds relaying_device (and removed_device, added then removed), with the todo namespace and clock now_ms, answers relay [0] and lists the request, then answers denial [0] and the valid poll denied; relays.refused lists frames it MUST refuse, after the state in before.",
        "now_ms": NOW_MS,
        "app_seed": hex(app.seed()),
        "device_transport": hex(&device),
        "ask": {
            "name": "Groceries",
            "app": hex(app.public().as_bytes()),
            "sealing": hex(app.sealing_key().0),
            "scopes": [["todo", 2]],
            "issued_ms": NOW_MS,
            "id": hex(ask_id),
            "signed": signed(&ask, SigningContext::AccessAsk, &device),
        },
        "poll": {
            "app": hex(app.public().as_bytes()),
            "issued_ms": NOW_MS,
            "signed": signed(&poll, SigningContext::AccessPoll, &device),
        },
        "answers": answers,
        "refused": refused,
        "relays": relays,
        "code": {
            "database": hex(code.database.0),
            "addresses": code.addresses,
            "cbor": hex(&code_cbor),
            "text": code.to_string(),
        },
    })
}
