//! JSON forms of protocol values, as they appear in the vectors.

use basic_proto::{Changes, CommitHeader, Hlc, KeyPart, RowKey, RowOp, RowState, Tables, Value};
use serde_json::{Value as Json, json};

/// Lowercase hex of `bytes`.
pub fn hex(bytes: impl AsRef<[u8]>) -> Json {
    Json::String(hex::encode(bytes))
}

/// A cell value: `{"type": …, "value": …}`; bytes in hex, JSON as its text.
pub fn value(value: &Value) -> Json {
    match value {
        Value::Null => json!({ "type": "null" }),
        Value::Integer(i) => json!({ "type": "integer", "value": i }),
        Value::Real(r) => json!({ "type": "real", "value": r }),
        Value::Bool(b) => json!({ "type": "bool", "value": b }),
        Value::Text(t) => json!({ "type": "text", "value": t }),
        Value::Bytes(b) => json!({ "type": "bytes", "value": hex(b) }),
        Value::Timestamp(t) => json!({ "type": "timestamp", "value": t }),
        Value::Json(j) => json!({ "type": "json", "value": j }),
    }
}

/// A row key: its parts as values.
pub fn key(key: &RowKey) -> Json {
    Json::Array(key.parts().iter().map(KeyPart::to_value).map(|v| value(&v)).collect())
}

/// A clock stamp as `[wall_ms, counter]`.
pub fn hlc(hlc: Hlc) -> Json {
    json!([hlc.wall_ms, hlc.counter])
}

/// A row operation.
pub fn op(op: &RowOp) -> Json {
    match op {
        RowOp::Upsert { table, key: k, generation, cells } => json!({
            "op": "upsert",
            "table": table.as_str(),
            "key": key(k),
            "generation": generation,
            "cells": cells.iter().map(|(c, v)| (c.to_string(), value(v))).collect::<serde_json::Map<_, _>>(),
        }),
        RowOp::Delete { table, key: k, generation } => json!({
            "op": "delete",
            "table": table.as_str(),
            "key": key(k),
            "generation": generation,
        }),
    }
}

/// A change set.
pub fn changes(changes: &Changes) -> Json {
    Json::Array(changes.ops().iter().map(op).collect())
}

/// A commit header.
pub fn header(header: &CommitHeader) -> Json {
    json!({
        "version": 0,
        "database": hex(header.database.0),
        "database_text": header.database.to_string(),
        "author": hex(header.author.as_bytes()),
        "seq": header.seq,
        "prev": header.prev.map(|p| hex(p.0)),
        "hlc": hlc(header.hlc),
        "scope": hex(header.scope.0),
        "epoch": header.epoch,
        "nonce": hex(header.nonce),
    })
}

/// One row's merged state: generation, liveness and winning cells.
pub fn row_state(state: &RowState) -> Json {
    json!({
        "generation": state.generation,
        "live": state.is_live(),
        "cells": state.cells.iter().map(|(column, cell)| {
            (column.to_string(), json!({
                "value": value(&cell.value),
                "hlc": hlc(cell.stamp.hlc),
                "author": hex(cell.stamp.author.as_bytes()),
            }))
        }).collect::<serde_json::Map<_, _>>(),
    })
}

/// Every row state of `tables`, deleted rows included, in key order.
pub fn tables(tables: &Tables) -> Json {
    Json::Array(
        tables
            .states()
            .map(|(table, k, state)| {
                let mut row = row_state(state);
                row["table"] = json!(table.as_str());
                row["key"] = key(k);
                row
            })
            .collect(),
    )
}

/// The authorisation state of a control log: devices, apps, pinning
/// peers, scopes with their epochs, and cut-off ops.
pub fn auth_state(state: &basic_proto::AuthState) -> Json {
    use basic_proto::control::{End, Rights};
    let end = |e: &Option<End>| {
        e.map(|e| {
            json!({
                "cutoff_seq": e.cutoff.seq,
                "cutoff_last": e.cutoff.last.map(|id| hex(id.0)),
                "max_wall_ms": e.max_wall_ms,
                "by": hex(e.by.0),
            })
        })
    };
    json!({
        "database": hex(state.database().0),
        "root": state.root().map(|r| hex(r.key.as_bytes())),
        "devices": state.devices().iter().map(|(k, d)| json!({
            "key": hex(k.as_bytes()),
            "sealing": hex(d.sealing.0),
            "removed": end(&d.removed),
        })).collect::<Vec<_>>(),
        "apps": state.apps().iter().map(|(k, a)| json!({
            "key": hex(k.as_bytes()),
            "sealing": hex(a.sealing.0),
            "grants": a.scopes.iter().map(|(scope, g)| json!({
                "scope": hex(scope.0),
                "rights": match g.rights { Rights::Read => "read", Rights::ReadWrite => "read-write" },
                "epochs": g.epochs,
                "revoked": end(&g.revoked),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "pinners": state.pinners().iter().map(|(k, on)| json!({
            "key": hex(k.as_bytes()),
            "authorised": on,
        })).collect::<Vec<_>>(),
        "scopes": state.scopes().iter().map(|(id, scope)| json!({
            "scope": hex(id.0),
            "epochs": scope.epochs.iter().map(|(n, keys)| json!({
                "epoch": n,
                "created_by": keys.iter().map(|k| hex(k.op.0)).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "schemas": state.schemas().map(|(id, schema)| json!({
            "scope": hex(id.0),
            "op": hex(schema.op.0),
            "epoch": schema.epoch,
        })).collect::<Vec<_>>(),
        "cut_off": state.cut_off().iter().map(|id| hex(id.0)).collect::<Vec<_>>(),
    })
}
