//! `negative.json`: inputs every implementation must refuse, with the error.

use basic_proto::change::pad::padded_len;
use basic_proto::hlc::{MAX_AHEAD_MS, check_not_ahead};
use basic_proto::seal::SEALED_CIPHERTEXT_LEN;
use basic_proto::{
    Cbor, Commit, CommitHeader, LiteMap, Party, Principal, Role, ScopeKey, SealedKey, SecretKey,
    SigningContext,
};

use basic_proto::{Changes, KeyPart, Name, RowKey, RowOp, Value};
use ciborium::Value as CborValue;
use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::scalar::Scalar;
use serde_json::{Value as Json, json};

use crate::commits::{BASE_WALL_MS, chain, draft, hundred_cells, scope_key};
use crate::errors;
use crate::json::hex;
use crate::{fixture, principal, rng};

/// A commit's three parts, to take apart and put back together.
struct Parts {
    header: Vec<u8>,
    ciphertext: Vec<u8>,
    signature: Vec<u8>,
}

impl Parts {
    fn of(commit: &Commit) -> Self {
        Parts {
            header: commit.header_bytes().to_vec(),
            ciphertext: commit.ciphertext().to_vec(),
            signature: commit.signature().to_vec(),
        }
    }

    fn resign(mut self, author: &SecretKey, context: SigningContext) -> Self {
        let message = [&self.header[..], &self.ciphertext].concat();
        self.signature = author.sign(context, &message).to_vec();
        self
    }

    fn encode(&self) -> Vec<u8> {
        basic_proto::codec::encode_value(&CborValue::Array(vec![
            CborValue::Bytes(self.header.clone()),
            CborValue::Bytes(self.ciphertext.clone()),
            CborValue::Bytes(self.signature.clone()),
        ]))
    }
}

/// A header with field `index` replaced by `value`.
fn edit_header(header: &CommitHeader, index: usize, value: CborValue) -> Vec<u8> {
    let CborValue::Array(mut fields) = header.to_cbor() else { unreachable!("headers are arrays") };
    fields[index] = value;
    basic_proto::codec::encode_value(&CborValue::Array(fields))
}

fn decode_error(bytes: &[u8]) -> String {
    errors::commit(&Commit::decode(bytes).expect_err("vector must be refused"))
}

fn open_error(bytes: &[u8], key: &ScopeKey) -> String {
    let commit = Commit::decode(bytes).expect("vector decodes; only opening fails");
    errors::commit(&commit.open(key).expect_err("vector must not open"))
}

fn commit_case(name: &str, why: &str, input: &[u8]) -> Json {
    json!({ "name": name, "check": "commit-decode", "why": why, "input": hex(input), "error": decode_error(input) })
}

fn open_case(name: &str, why: &str, input: &[u8]) -> Json {
    let key = scope_key();
    json!({
        "name": name, "check": "commit-open", "why": why, "input": hex(input),
        "scope_key": hex(key.as_bytes()), "error": open_error(input, &key),
    })
}

fn commit_cases() -> Vec<Json> {
    let author = principal("device");
    let commits = chain();
    let (first, third) = (&commits[0].1, &commits[2].1);
    let header = first.header();

    let mut tampered = Parts::of(first);
    tampered.ciphertext[0] ^= 0x01;
    let tampered_resigned = Parts { ciphertext: tampered.ciphertext.clone(), ..Parts::of(first) }
        .resign(&author, SigningContext::Commit);

    let mut non_canonical_sig = Parts::of(first);
    add_group_order(&mut non_canonical_sig.signature[32..]);

    let with_author = |author: [u8; 32]| Parts {
        header: edit_header(header, 2, CborValue::Bytes(author.to_vec())),
        ..Parts::of(first)
    };
    let mut weak_author = [0u8; 32];
    weak_author[0] = 1;
    let weak = with_author(weak_author);
    // y = 3 encoded as 3 + p: the same point as y = 3, not in canonical form.
    let mut unreduced = [0xff; 32];
    unreduced[0] = 0xf0;
    unreduced[31] = 0x7f;
    let non_canonical_key = with_author(unreduced);
    let mixed =
        (ED25519_BASEPOINT_POINT * Scalar::from(5u64) + EIGHT_TORSION[1]).compress().to_bytes();
    let mixed_order_key = with_author(mixed);

    let swapped = Parts { ciphertext: third.ciphertext().to_vec(), ..Parts::of(first) }
        .resign(&author, SigningContext::Commit);

    let bytes = first.as_bytes();
    let truncated = &bytes[..bytes.len() - 10];
    let mut trailing = bytes.to_vec();
    trailing.push(0);

    let long_scope = Parts {
        header: edit_header(header, 6, CborValue::Bytes(vec![0xa5; 17])),
        ..Parts::of(first)
    }
    .resign(&author, SigningContext::Commit);
    let long_header = Parts { header: vec![0; 513], ..Parts::of(first) };

    // seq 1 as a 9-byte integer: same value, not the shortest form.
    let mut wide_seq = first.header_bytes().to_vec();
    let seq_at = 1 + 1 + 34 + 34;
    assert_eq!(wide_seq[seq_at], 0x01, "seq position in the header");
    wide_seq.splice(seq_at..=seq_at, [0x1b, 0, 0, 0, 0, 0, 0, 0, 1]);
    let wide_seq =
        Parts { header: wide_seq, ..Parts::of(first) }.resign(&author, SigningContext::Commit);

    let version_1 =
        Parts { header: edit_header(header, 0, CborValue::Integer(1.into())), ..Parts::of(first) }
            .resign(&author, SigningContext::Commit);
    let prev_on_first =
        Parts { header: edit_header(header, 4, CborValue::Bytes(vec![0; 32])), ..Parts::of(first) }
            .resign(&author, SigningContext::Commit);

    vec![
        commit_case(
            "tampered ciphertext",
            "one ciphertext bit flipped: the signature covers the ciphertext",
            &tampered.encode(),
        ),
        commit_case(
            "signature from another context",
            "signed with the basic/v0/control label",
            &Parts::of(first).resign(&author, SigningContext::Control).encode(),
        ),
        commit_case(
            "non-canonical signature",
            "S + L in place of S: same scalar, not canonical",
            &non_canonical_sig.encode(),
        ),
        commit_case(
            "weak author key",
            "author is the identity point, of small order",
            &weak.encode(),
        ),
        commit_case(
            "non-canonical author key",
            "author y-coordinate encoded as y + p",
            &non_canonical_key.encode(),
        ),
        commit_case(
            "mixed-order author key",
            "author key is 5·B plus a point of order 8",
            &mixed_order_key.encode(),
        ),
        commit_case("truncated CBOR", "the last 10 bytes cut off", truncated),
        commit_case("trailing bytes", "one zero byte after the commit", &trailing),
        commit_case(
            "scope id of the wrong length",
            "17-byte scope id (a scope id is 16 bytes), re-signed by the author",
            &long_scope.encode(),
        ),
        commit_case("oversize header", "513-byte header byte string", &long_header.encode()),
        commit_case(
            "non-shortest integer in header",
            "seq 1 encoded in 9 bytes, re-signed",
            &wide_seq.encode(),
        ),
        commit_case("unknown version", "header version 1, re-signed", &version_1.encode()),
        commit_case(
            "prev on the first commit",
            "seq 1 with a prev hash, re-signed",
            &prev_on_first.encode(),
        ),
        open_case(
            "tampered ciphertext, re-signed",
            "the author signs a corrupted ciphertext: the AEAD tag fails",
            &tampered_resigned.encode(),
        ),
        open_case(
            "header swapped onto another ciphertext",
            "the first commit's header with the third's ciphertext, re-signed: the header is the AEAD's associated data",
            &swapped.encode(),
        ),
        open_case(
            "a delete that writes a cell",
            "generation 2 (a delete) for a row that the column title gives a cell, encrypted and signed",
            &sealed_changes(padded(delete_with_cell())).encode(),
        ),
        open_case(
            "JSON with a lone surrogate",
            "a json value \"\\ud800\", encrypted and signed",
            &sealed_changes(json_value("\"\\ud800\"")).encode(),
        ),
        open_case(
            "JSON nested too deep",
            "a json value of 128 nested arrays, encrypted and signed",
            &sealed_changes(json_value(&("[".repeat(128) + &"]".repeat(128)))).encode(),
        ),
        open_case(
            "generation over the highest",
            "a row at generation 4294967295, encrypted and signed",
            &sealed_changes(padded(max_generation())).encode(),
        ),
    ]
    .into_iter()
    .chain(change_set_cases())
    .chain(non_canonical_cases())
    .collect()
}

/// The first vector commit's header with field `index` written as the raw
/// CBOR `field` (the others as they are), in an array of definite length
/// or (`indefinite`) of indefinite length.
fn raw_header(index: Option<usize>, field: &[u8], indefinite: bool) -> Vec<u8> {
    let first = &chain()[0].1;
    let CborValue::Array(fields) = first.header().to_cbor() else {
        unreachable!("headers are arrays")
    };
    let mut out = vec![if indefinite { 0x9f } else { 0x80 | fields.len() as u8 }];
    for (i, value) in fields.iter().enumerate() {
        match index == Some(i) {
            true => out.extend(field),
            false => out.extend(basic_proto::codec::encode_value(value)),
        }
    }
    if indefinite {
        out.push(0xff);
    }
    out
}

/// Non-canonical CBOR in a commit, each re-signed by its author: the error
/// class each gets by the decode order of wire-format.md §1.2 (structure,
/// step 4, before canonical form, step 5) and how the parser reads the
/// item (§1.2, "How items outside §1.1 are read").
fn non_canonical_cases() -> Vec<Json> {
    let first = &chain()[0].1;
    let author = principal("device");
    let scope = first.header().scope.0;
    let with_header = |header: Vec<u8>| {
        Parts { header, ..Parts::of(first) }.resign(&author, SigningContext::Commit).encode()
    };
    let field = |index: usize, raw: &[u8]| with_header(raw_header(Some(index), raw, false));
    let chunked_scope = [&[0x5f, 0x48][..], &scope[..8], &[0x48], &scope[8..], &[0xff]].concat();
    let long_scope_head = [&[0x58, 0x10][..], &scope[..]].concat();
    let tagged_scope = [&[0xd8, 0x18, 0x50][..], &scope[..]].concat();
    let seq_2_64 = [&[0xc2, 0x49, 0x01][..], &[0; 8]].concat();
    // The commit itself: its header byte string with a 3-byte length head.
    let parts = Parts::of(first);
    let mut wide_header_head = vec![0x83, 0x59];
    wide_header_head.extend(u16::try_from(parts.header.len()).expect("short").to_be_bytes());
    wide_header_head.extend(&parts.header);
    for part in [&parts.ciphertext, &parts.signature] {
        wide_header_head.extend(basic_proto::codec::encode_value(&CborValue::Bytes(part.clone())));
    }
    let mut indefinite_commit = first.as_bytes().to_vec();
    indefinite_commit[0] = 0x9f;
    indefinite_commit.push(0xff);
    vec![
        commit_case(
            "header as an indefinite-length array",
            "9f, the nine fields, ff; re-signed: NonCanonical (step 5)",
            &with_header(raw_header(None, &[], true)),
        ),
        commit_case(
            "commit as an indefinite-length array",
            "9f, the three parts, ff: NonCanonical (step 5)",
            &indefinite_commit,
        ),
        commit_case(
            "header length in a 3-byte head",
            "the header byte string's length written 59 00 xx: NonCanonical (step 5)",
            &wide_header_head,
        ),
        commit_case(
            "scope length in a 2-byte head",
            "the 16-byte scope id's length written 58 10; re-signed: NonCanonical (step 5)",
            &field(6, &long_scope_head),
        ),
        commit_case(
            "scope as an indefinite-length byte string",
            "the scope id in two chunks of 8 bytes (5f 48 … 48 … ff); re-signed: read as its 16 bytes, then NonCanonical (step 5)",
            &field(6, &chunked_scope),
        ),
        commit_case(
            "seq as a bignum",
            "seq 1 written as tag 2 over the byte 01 (c2 41 01); re-signed: read as the integer 1, then NonCanonical (step 5)",
            &field(3, &[0xc2, 0x41, 0x01]),
        ),
        commit_case(
            "seq 0 as a bignum",
            "seq written as tag 2 over no bytes (c2 40), the integer 0; re-signed: the field rule comes first (step 4)",
            &field(3, &[0xc2, 0x40]),
        ),
        commit_case(
            "seq as a bignum of 2^64",
            "tag 2 over 01 00 00 00 00 00 00 00 00; re-signed: outside the integers of major types 0 and 1, so a tag (step 4)",
            &field(3, &seq_2_64),
        ),
        commit_case(
            "seq as a float",
            "seq written as the half float 1.0 (f9 3c 00); re-signed: a float is no integer (step 4)",
            &field(3, &[0xf9, 0x3c, 0x00]),
        ),
        commit_case(
            "prev as undefined",
            "prev of the first commit written f7 (undefined) instead of f6 (null); re-signed: read as null, then NonCanonical (step 5)",
            &field(4, &[0xf7]),
        ),
        commit_case(
            "scope as undefined",
            "scope written f7; re-signed: read as null, which the field does not allow (step 4)",
            &field(6, &[0xf7]),
        ),
        commit_case(
            "tagged scope",
            "the scope id under tag 24 (d8 18); re-signed: a tag other than a small bignum is a type error (step 4)",
            &field(6, &tagged_scope),
        ),
        commit_case(
            "hlc as a map with a duplicate key",
            "hlc written {0: 0, 0: 0} (a2 00 00 00 00); re-signed: no v0 structure has a map field (step 4)",
            &field(5, &[0xa2, 0x00, 0x00, 0x00, 0x00]),
        ),
        commit_case(
            "scope in nested indefinite-length chunks",
            "5f 5f 48 … ff 48 … ff: the chunks' bytes are read (step 2), then NonCanonical (step 5)",
            &field(
                6,
                &[&[0x5f, 0x5f, 0x48][..], &scope[..8], &[0xff, 0x48], &scope[8..], &[0xff]]
                    .concat(),
            ),
        ),
        commit_case(
            "seq as a bignum of 17 bytes",
            "tag 2 over 16 zero bytes and 01; re-signed: more than 16 bytes, so a tag (step 4)",
            &field(3, &[&[0xc2, 0x51][..], &[0; 16], &[0x01]].concat()),
        ),
        commit_case(
            "version 1 in a 2-byte head",
            "version written 18 01; re-signed: the version rule comes first (step 4)",
            &field(0, &[0x18, 0x01]),
        ),
    ]
}

/// `content` followed by zero bytes to its padded length.
fn padded(mut content: Vec<u8>) -> Vec<u8> {
    content.resize(padded_len(content.len()), 0);
    content
}

/// One group of table `todo.items` with `rows` rows: its head up to the
/// key parts.
fn group_head(rows: u8) -> Vec<u8> {
    [&[0x01, 0x0a][..], b"todo.items", &[rows, 0x01]].concat()
}

/// Row 1 (an integer key) at generation 2, with a `title` cell.
fn delete_with_cell() -> Vec<u8> {
    [group_head(1), vec![0x14, 0x02, 0x02, 0x01, 0x01, 0x05], b"title".to_vec(), vec![0x11]]
        .concat()
}

/// Row 1 at generation 2^32 - 1, writing no cell.
fn max_generation() -> Vec<u8> {
    [group_head(1), vec![0x14, 0x02, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x00]].concat()
}

/// Change sets that break the rules of wire-format.md §4, each encrypted
/// and signed in the first vector commit's place.
fn change_set_cases() -> Vec<Json> {
    // Rows 1 and 2 at generation 2 (deletes), no column: the valid base.
    let two_deletes =
        |keys: [u8; 3]| [group_head(2), keys.to_vec(), vec![0x02, 0x02, 0x00]].concat();
    let valid = two_deletes([0x24, 0x02, 0x02]);
    assert!(Changes::decode(&padded(valid.clone())).is_ok(), "the base case is valid");
    let mut non_zero_padding = padded(valid.clone());
    *non_zero_padding.last_mut().expect("padded") = 0x01;
    let mut long_padding = padded(valid.clone());
    long_padding.extend([0; 8]);
    // The texts "ab" then "ac" in one column, the second sharing nothing.
    let texts = |second: &[u8]| {
        [
            group_head(2),
            vec![0x24, 0x02, 0x02, 0x01, 0x02, 0x01, 0x05],
            b"title".to_vec(),
            vec![0x26, 0x00, 0x02, b'a', b'b'],
            second.to_vec(),
        ]
        .concat()
    };
    assert!(Changes::decode(&padded(texts(&[0x01, 0x01, b'c']))).is_ok(), "the base case is valid");
    // 10,000 rows and 104 columns in which every row is null: 11 KB of
    // plaintext that would be 1,040,000 cells (1,050,000 units).
    let mut bomb =
        [&[0x01, 0x0a][..], b"todo.items", &[0x90, 0x4e, 0x01, 0x84, 0xe2, 0x09, 0x00]].concat();
    bomb.extend(std::iter::repeat_n(0x02, 9_999));
    bomb.extend([0x01, 0x90, 0x4e, 104]);
    for column in 0..104 {
        bomb.push(4);
        bomb.extend(format!("c{column:03}").bytes());
        bomb.extend([0x81, 0xe2, 0x09]);
    }
    // 250 rows of one 1 KiB text in column `title`, front-coded: 2 KB of
    // plaintext that would be 250 KB of values (4,500 units).
    let mut front_bomb = [
        &[0x01, 0x0a][..],
        b"todo.items",
        &[0xfa, 0x01, 0x01, 0xa4, 0x1f, 0x00], // 250 rows, 1 key part, 250 integers from 0
    ]
    .concat();
    front_bomb.extend(std::iter::repeat_n(0x02, 249));
    front_bomb.extend([0x01, 0xfa, 0x01, 0x01, 0x05]); // generation 1 × 250, 1 column
    front_bomb.extend(b"title");
    front_bomb.extend([0xa6, 0x1f, 0x00, 0x80, 0x08]); // 250 texts, the first in full
    front_bomb.extend(long_text());
    for _ in 1..250 {
        front_bomb.extend([0x80, 0x08, 0x00]); // 1,024 shared bytes, nothing more
    }
    assert_eq!(
        [front_bomb.clone(), vec![0; padded_len(4_500) - front_bomb.len()]].concat(),
        long_text_on_many_rows().encode(),
        "padded to its units, the bomb is the encoding of its rows"
    );
    let case = |name: &str, why: &str, content: Vec<u8>| {
        open_case(name, why, &sealed_changes(content).encode())
    };
    vec![
        case("non-zero padding", "the last padding byte is 01", non_zero_padding),
        case("padding too long", "8 zero bytes more than the padded length", long_padding),
        case("rows out of order", "row 2 before row 1", padded(two_deletes([0x24, 0x04, 0x01]))),
        case(
            "a row changed twice",
            "row 1 twice: key deltas 1 then 0",
            padded(two_deletes([0x24, 0x02, 0x00])),
        ),
        case(
            "non-shortest varint",
            "the generation 2 written as 82 00",
            padded([group_head(2), vec![0x24, 0x02, 0x02, 0x82, 0x00, 0x02, 0x00]].concat()),
        ),
        case(
            "prefix not the longest",
            "\"ab\" then \"ac\" written as 0 shared bytes and \"ac\"",
            padded(texts(&[0x00, 0x02, b'a', b'c'])),
        ),
        case(
            "a run over the rows",
            "a run of 3 cells in a group of 2 rows",
            padded([group_head(2), vec![0x34, 0x02, 0x02]].concat()),
        ),
        case(
            "a key part that is null",
            "a run of null cells as key part 0",
            padded([group_head(1), vec![0x11, 0x02, 0x01, 0x00]].concat()),
        ),
        case(
            "a run bomb: more units than bytes",
            "10,000 rows and 104 columns of null runs, 11 KB padded for its content alone: 1,050,000 units (rows and cells), so the count passes the input's length in the first column",
            padded(bomb),
        ),
        case(
            "a front-coding bomb: value bytes not counted in units",
            "250 rows of one 1 KiB text, each row after the first sharing all 1,024 bytes with the one before: 2,053 bytes padded for its content alone (2,176), but 250 rows, 250 cells and 16 units a value are 4,500 units; the count passes the input's length at the 105th value, before its bytes are read",
            padded(front_bomb),
        ),
    ]
}

/// The 1 KiB text of the front-coding bomb.
fn long_text() -> Vec<u8> {
    b"0123456789abcdef".repeat(64)
}

/// 250 upserts of [`long_text`] to `title` of `todo.items`, keyed 0..250.
fn long_text_on_many_rows() -> Changes {
    let text = Value::Text(String::from_utf8(long_text()).expect("ASCII"));
    let ops = (0..250)
        .map(|k| RowOp::Upsert {
            table: Name::new("todo.items").expect("name"),
            key: RowKey::single(KeyPart::Integer(k)),
            generation: 1,
            cells: LiteMap::from_iter([(Name::new("title").expect("name"), text.clone())]),
        })
        .collect();
    Changes::new(ops).expect("valid changes")
}

/// A one-op change set writing `value` to a json column, without the
/// validation `Changes::new` would apply to the op.
fn json_value(text: &str) -> Vec<u8> {
    let op = RowOp::Upsert {
        table: Name::new("todo.items").expect("name"),
        key: RowKey::single(KeyPart::Integer(1)),
        generation: 1,
        cells: LiteMap::from_iter([(Name::new("meta").expect("name"), Value::Json(text.into()))]),
    };
    Changes::new(vec![op]).expect("JSON is only checked on decode").encode()
}

/// The first vector commit's header over `plaintext`, encrypted and signed.
fn sealed_changes(plaintext: Vec<u8>) -> Parts {
    let first = &chain()[0].1;
    let ciphertext = scope_key().encrypt(&first.header().nonce, first.header_bytes(), &plaintext);
    Parts { ciphertext, ..Parts::of(first) }.resign(&principal("device"), SigningContext::Commit)
}

fn clock_case() -> Json {
    let now_ms = BASE_WALL_MS;
    let commit = Commit::create(
        &principal("device"),
        draft(1, None, now_ms + MAX_AHEAD_MS + 1),
        &hundred_cells(),
        &scope_key(),
        &mut rng("negative clock"),
    )
    .expect("commit");
    let error = check_not_ahead(commit.header().hlc, now_ms).expect_err("too far ahead");
    json!({
        "name": "clock too far ahead",
        "check": "clock",
        "why": "the commit is valid but stamped 60001 ms ahead of the receiver's clock: it is held back until now_ms >= hlc.wall_ms - 60000",
        "input": hex(commit.as_bytes()),
        "now_ms": now_ms,
        "apply_at_ms": error.apply_at_ms,
        "error": errors::clock(&error),
    })
}

fn seal_cases() -> Vec<Json> {
    let (device, app, other) = (principal("device"), principal("app"), principal("pinner"));
    let payload = ScopeKey::from_bytes(fixture("scope key todo epoch 1"));
    let label = b"example label: database, scope todo, epoch 1";
    let sealed =
        SealedKey::seal(&payload, &device, &Party::of(&app), label, &mut rng("negative seal"))
            .expect("seal");
    let mut low_order = sealed.clone();
    low_order.ephemeral = [0; 32];
    let mut tampered = sealed.clone();
    tampered.ciphertext[SEALED_CIPHERTEXT_LEN - 1] ^= 0x80;
    let case = |name: &str,
                why: &str,
                sealed: &SealedKey,
                recipient: &SecretKey,
                sender: &SecretKey,
                label: &[u8]| {
        let error = sealed.open(recipient, &Party::of(sender), label).expect_err("must not open");
        json!({
            "name": name, "check": "seal-open", "why": why,
            "input": hex(sealed.encode()),
            "recipient_seed": hex(recipient.seed()),
            "sender_ed25519_public": hex(sender.public().as_bytes()),
            "sender_x25519_public": hex(sender.sealing_key().0),
            "label": hex(label),
            "error": errors::seal(&error),
        })
    };
    vec![
        case(
            "seal opened by another recipient",
            "sealed to the app, opened by the pinner",
            &sealed,
            &other,
            &device,
            label,
        ),
        case(
            "seal attributed to another sender",
            "sealed by the device, opened as if from the pinner",
            &sealed,
            &app,
            &other,
            label,
        ),
        case(
            "seal under another label",
            "the label binds database, scope and epoch",
            &sealed,
            &app,
            &device,
            b"another label",
        ),
        case("tampered seal", "one ciphertext bit flipped", &tampered, &app, &device, label),
        case(
            "low-order ephemeral key",
            "ephemeral key of all zeros",
            &low_order,
            &app,
            &device,
            label,
        ),
    ]
}

fn text_id_cases() -> Vec<Json> {
    let id = Principal { role: Role::App, key: principal("app").public() }.to_string();
    let mut typo = id.clone().into_bytes();
    typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).expect("ascii");
    let case = |name: &str, input: &str| {
        let error = input.parse::<Principal>().expect_err("must be refused");
        json!({ "name": name, "check": "text-id", "input": input, "error": errors::key(&error) })
    };
    vec![
        case("text id with a typo", &typo),
        case("truncated text id", &id[..40]),
        case("unknown prefix", &id.replacen("app_", "key_", 1)),
        case("weak key in a text id", &weak_key_id()),
    ]
}

/// A well-formed `dev_` id (valid checksum) whose key is a small-order point.
fn weak_key_id() -> String {
    let mut weak = [0u8; 32];
    weak[0] = 1;
    let mut hasher = blake3::Hasher::new_derive_key(basic_proto::keys::ID_CHECKSUM_CONTEXT);
    hasher.update(b"dev_");
    hasher.update(&weak);
    let body = [&weak[..], &hasher.finalize().as_bytes()[..4]].concat();
    format!("dev_{}", data_encoding::BASE32_NOPAD.encode(&body).to_ascii_lowercase())
}

/// Adds the ed25519 group order L to a little-endian scalar.
fn add_group_order(s: &mut [u8]) {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for (byte, l) in s.iter_mut().zip(L) {
        let sum = u16::from(*byte) + u16::from(l) + carry;
        *byte = sum as u8;
        carry = sum >> 8;
    }
}

pub(crate) fn vectors() -> Json {
    let mut cases = commit_cases();
    cases.push(clock_case());
    cases.extend(seal_cases());
    cases.extend(text_id_cases());
    json!({
        "description": "Inputs that MUST be refused, with the error each MUST produce. check: commit-decode (decode and verify the commit), commit-open (decoding succeeds; decrypting with scope_key or decoding the plaintext fails), clock (the commit decodes but its stamp is more than 60000 ms ahead of now_ms), seal-open (open the sealed key as recipient_seed, attributed to the sender keys, under label), text-id (parse the text id). Error codes are listed in vectors/README.md.",
        "cases": cases,
    })
}
