//! The invariants every run must keep, checked during the run and at its end.
//!
//! - **convergence**: every up device and pinning peer holds the same log
//!   heads and control heads; every up device holds the same row states
//!   and authorisation state; every app that is still granted holds the
//!   same row states as the devices in its scope's tables.
//! - **no loss**: every acknowledged commit that the final authorisation
//!   state accepts is applied (stored and not rejected) on every up node
//!   entitled to its scope.
//! - **reference model**: every up device's tables, and every granted
//!   app's tables in its scope, are exactly what an independent model of
//!   the merge ([`crate::model`]) gives from every authorised commit.
//! - **authorisation**: every stored commit that is not in a replica's
//!   rejected set passes the final authorisation state; no commit an
//!   adversary made (a forged one, a fork below a cut-off) is ever applied; a revoked app holds no key of an
//!   epoch after its revocation.
//! - **revocation told**: every revoked app that is up has been told of its
//!   revocation by a device (control-log.md §9.5) and knows it
//!   (`basic_client::AppView::access`), before the run counts as settled.
//! - **privacy**: a pinning peer never holds a scope key or a row state;
//!   an outsider probing the handshake (a stranger, a removed device, a
//!   requester for another database) learns no key and cannot tell whether
//!   a node hosts the database.
//! - **liveness**: convergence within [`crate::world::LIVENESS_MS`] of the
//!   final heal (checked by the world's loop).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use basic_proto::sync::{SyncStore, View};
use basic_proto::{CommitId, RowState};
use basic_store::scope_of;
use basic_store::{Keyring, SyncReplica};

use crate::model::Model;
use crate::node::Role;
use crate::world::World;

/// A broken invariant, with what led to it.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The run's seed.
    pub seed: u64,
    /// The event at which it was found.
    pub step: u64,
    /// Simulated time.
    pub now: u64,
    /// Which invariant.
    pub invariant: String,
    /// What was wrong.
    pub detail: String,
    /// The trace's last lines.
    pub tail: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "FAILED seed={} step={} t={}ms invariant={}: {}",
            self.seed, self.step, self.now, self.invariant, self.detail
        )?;
        writeln!(f, "trace tail:")?;
        for line in &self.tail {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

type Rows = Vec<(basic_proto::Name, Vec<u8>, RowState)>;

/// Every row state of `node` (deleted rows included).
pub fn rows(world: &World, node: usize) -> Result<Rows, String> {
    let db = world.nodes[node].db.as_ref().ok_or("node down")?;
    db.replica().row_states().collect::<Result<_, _>>().map_err(|e| e.to_string())
}

fn live(world: &World, role: impl Fn(&Role) -> bool) -> Vec<usize> {
    (0..world.nodes.len())
        .filter(|&i| world.nodes[i].is_up() && !world.nodes[i].lost && role(&world.nodes[i].role))
        .collect()
}

fn is_revoked(world: &World, node: usize) -> bool {
    world.revoked.iter().any(|(a, _, _)| *a == node)
}

/// The commits a node stores and applies (stored, not rejected).
pub fn applied(world: &World, node: usize) -> Result<BTreeSet<CommitId>, String> {
    let db = world.nodes[node].db.as_ref().ok_or("node down")?;
    let rejected = db.replica().rejected().map_err(|e| e.to_string())?;
    let mut ids = BTreeSet::new();
    // Ids from the store's keys: decoding every commit would check every
    // signature again at each probe (the final check decodes them once).
    for id in db.replica().commit_ids() {
        let id = id.map_err(|e| e.to_string())?;
        if !rejected.contains(&id) {
            ids.insert(id);
        }
    }
    Ok(ids)
}

/// A commit by its author's name and its seq, read from a node holding it.
fn describe(world: &World, id: &CommitId) -> String {
    let mut held = world.nodes.iter().filter_map(|n| n.db.as_ref()?.replica().commit(id).ok()?);
    match held.next() {
        Some(commit) => {
            let author = &commit.header().author;
            let name = world.nodes.iter().find(|n| n.key.public() == *author);
            format!(
                "{}'s seq {}",
                name.map_or("an unknown author", |n| &n.name),
                commit.header().seq
            )
        }
        None => format!("{:02x?}", &id.0[..8]),
    }
}

/// Whether every up device and pinner shows the same holdings to sync (its
/// entries in the full view: rejected commits are not counted), so that
/// summaries agree and no round resends anything.
pub fn same_heads(world: &World) -> Result<(), String> {
    let entries = |db: &basic_store::Database<crate::node::SharedMem>| {
        SyncReplica::new(db).entries(&View::All).map_err(|e| e.to_string())
    };
    let (reference, _) = world.reference().ok_or("no device is up")?;
    let db = world.nodes[reference].db.as_ref().ok_or("reference down")?;
    let heads = entries(db)?;
    for i in live(world, |r| matches!(r, Role::Device | Role::Pinner)) {
        let other = world.nodes[i].db.as_ref().ok_or("down")?;
        let theirs = entries(other)?;
        if theirs != heads {
            let differ: Vec<String> = heads
                .iter()
                .filter(|e| !theirs.contains(e))
                .chain(theirs.iter().filter(|e| !heads.contains(e)))
                .map(|e| format!("{:?}: max {} count {}", e.author, e.max, e.held.count))
                .take(2)
                .collect();
            return Err(format!(
                "{} and {} differ in what they hold: {differ:?}",
                world.nodes[reference].name, world.nodes[i].name
            ));
        }
    }
    Ok(())
}

/// Whether the world has converged; why not otherwise.
pub fn converged(world: &World) -> Result<(), String> {
    let Some((reference, auth)) = world.reference() else {
        return Err("no device is up".into());
    };
    let db = world.nodes[reference].db.as_ref().ok_or("reference down")?;
    let control = db.control_log().heads();
    let name = |i: usize| world.nodes[i].name.clone();
    let applied_here = applied(world, reference)?;
    for i in live(world, |r| matches!(r, Role::Device | Role::Pinner)) {
        let other = world.nodes[i].db.as_ref().ok_or("down")?;
        if other.control_log().heads() != control {
            return Err(format!("{} and {} differ in control heads", name(reference), name(i)));
        }
        let theirs = applied(world, i)?;
        if theirs != applied_here {
            let only_ref = applied_here.difference(&theirs).count();
            let only_other = theirs.difference(&applied_here).count();
            let first = applied_here.symmetric_difference(&theirs).next();
            return Err(format!(
                "{} and {} differ in applied commits: {only_ref} only on {}, {only_other} only on {}; the first: {}",
                name(reference),
                name(i),
                name(reference),
                name(i),
                first.map_or_else(String::new, |id| describe(world, id))
            ));
        }
    }
    same_heads(world)?;
    let ours = rows(world, reference)?;
    for i in live(world, |r| *r == Role::Device) {
        let other = world.nodes[i].db.as_ref().ok_or("down")?;
        if *other.auth_state() != *auth {
            return Err(format!(
                "{} and {} differ in authorisation state",
                name(reference),
                name(i)
            ));
        }
        let theirs = rows(world, i)?;
        if theirs != ours {
            let a: BTreeMap<_, _> =
                ours.iter().map(|(t, k, s)| ((t.clone(), k.clone()), s)).collect();
            let b: BTreeMap<_, _> =
                theirs.iter().map(|(t, k, s)| ((t.clone(), k.clone()), s)).collect();
            let first = a
                .keys()
                .chain(b.keys())
                .find(|k| a.get(*k) != b.get(*k))
                .map(|k| format!("{}: {:?} vs {:?}", k.0, a.get(k), b.get(k)))
                .unwrap_or_default();
            return Err(format!("{} and {} differ in tables: {first}", name(reference), name(i)));
        }
    }
    for i in live(world, |r| matches!(r, Role::App { .. })) {
        let Role::App { namespace, .. } = &world.nodes[i].role else { continue };
        if is_revoked(world, i) {
            continue;
        }
        let in_scope = |rows: Rows| -> Rows {
            rows.into_iter().filter(|(t, _, _)| scope_of(t) == *namespace).collect()
        };
        if in_scope(rows(world, i)?) != in_scope(ours.clone()) {
            return Err(format!("app {} and {} differ in {namespace}", name(i), name(reference)));
        }
    }
    Ok(())
}

/// Invariants that hold at every moment: privacy, revoked keys, adversary commits.
pub fn check_during(world: &World) -> Result<(), Failure> {
    if let Some(leak) = world.leaks.first() {
        return Err(world.fail("privacy", format!("an adversary learned too much: {leak}")));
    }
    for (i, node) in world.nodes.iter().enumerate() {
        let Some(db) = node.db.as_ref() else { continue };
        if node.role == Role::Pinner {
            let keys = db.scope_keys();
            if let Some((scope, epoch, _)) = keys.iter().next() {
                return Err(world.fail(
                    "privacy",
                    format!("pinner {} holds the key of {scope} epoch {epoch}", node.name),
                ));
            }
            if let Some(row) = db.replica().row_states().next() {
                let what = row.map(|(t, _, _)| t.to_string()).unwrap_or_else(|e| e.to_string());
                return Err(world.fail(
                    "privacy",
                    format!("pinner {} holds a plaintext row of {what}", node.name),
                ));
            }
        }
        for (app, scope, epoch) in &world.revoked {
            if *app != i {
                continue;
            }
            for (s, e, _) in db.scope_keys().iter() {
                if s == scope && e > *epoch {
                    return Err(world.fail(
                        "authorisation",
                        format!(
                            "revoked app {} holds {scope} epoch {e} (revoked at {epoch})",
                            node.name
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Whether the world has converged and every entitled replica holds every
/// acknowledged write: what a run waits for after the final heal.
pub fn settled(world: &World) -> Result<(), String> {
    converged(world)?;
    told(world)?;
    let (_, auth) = world.reference().ok_or("no device is up")?;
    check_no_loss(world, &auth).map_err(|failure| failure.detail)
}

/// Every invariant, once the world has converged.
pub fn check_final(world: &World) -> Result<(), Failure> {
    check_during(world)?;
    converged(world).map_err(|why| world.fail("convergence", why))?;
    let Some((_, auth)) = world.reference() else {
        return Err(world.fail("convergence", "no device is up".into()));
    };
    // Authorisation: what is applied passes the final state; adversary commits never are.
    for (i, node) in world.nodes.iter().enumerate() {
        let Some(db) = node.db.as_ref() else { continue };
        let replica = db.replica();
        let rejected = replica.rejected().map_err(|e| world.fail("harness", e.to_string()))?;
        for commit in replica.commits() {
            let commit = commit.map_err(|e| world.fail("harness", e.to_string()))?;
            if rejected.contains(&commit.id()) {
                continue;
            }
            // A revoked app's writes made before it was told of its
            // revocation stay applied on its own replica only.
            if is_revoked(world, i) && commit.header().author == node.key.public() {
                continue;
            }
            if let Err(why) = auth.check_commit(commit.header(), commit.id()) {
                return Err(world.fail(
                    "authorisation",
                    format!(
                        "{} applies commit {:?} by {:?} seq {}: {why}",
                        node.name,
                        commit.id(),
                        commit.header().author,
                        commit.header().seq
                    ),
                ));
            }
        }
        for (id, what) in &world.forbidden {
            let stored = replica.commit(id).map_err(|e| world.fail("harness", e.to_string()))?;
            if stored.is_some() && !rejected.contains(id) {
                return Err(world.fail(
                    "authorisation",
                    format!("{} applied an adversary's commit ({what})", world.nodes[i].name),
                ));
            }
        }
    }
    told(world).map_err(|why| world.fail("revocation", why))?;
    check_confidential(world)?;
    check_no_loss(world, &auth)?;
    check_model(world, &auth)
}

/// Every revoked app that is up has been told (control-log.md §9.5): it
/// knows it reads and writes nothing new.
fn told(world: &World) -> Result<(), String> {
    for (i, node) in world.nodes.iter().enumerate() {
        let Some(db) = node.db.as_ref().filter(|_| is_revoked(world, i)) else { continue };
        let view = basic_client::AppView::new(db).map_err(|e| e.to_string())?;
        if view.access() != basic_client::Access::Revoked {
            return Err(format!("{} was revoked and does not know it", node.name));
        }
    }
    Ok(())
}

/// Every authorised commit any up node holds, merged from scratch by the
/// reference model, against every replica that reads plaintext.
fn check_model(world: &World, auth: &basic_proto::AuthState) -> Result<(), Failure> {
    let harness = |e: String| world.fail("harness", e);
    let Some((reference, _)) = world.reference() else {
        return Err(world.fail("convergence", "no device is up".into()));
    };
    let keys = world.nodes[reference]
        .db
        .as_ref()
        .ok_or("reference down")
        .map_err(|e| harness(e.into()))?
        .scope_keys();
    let forbidden: BTreeSet<CommitId> = world.forbidden.iter().map(|(id, _)| *id).collect();
    let mut seen = BTreeSet::new();
    let mut model = Model::default();
    for (i, node) in world.nodes.iter().enumerate() {
        let Some(db) = node.db.as_ref() else { continue };
        if node.lost || is_revoked(world, i) {
            continue;
        }
        for commit in db.replica().commits() {
            let commit = commit.map_err(|e| harness(e.to_string()))?;
            let id = commit.id();
            if forbidden.contains(&id) || !seen.insert(id) {
                continue;
            }
            let header = commit.header();
            if auth.check_commit(header, id).is_err() {
                continue;
            }
            let key = keys.scope_key(&header.scope, header.epoch).ok_or_else(|| {
                world.fail(
                    "reference model",
                    format!("no device key opens authorised commit {id:?}"),
                )
            })?;
            match commit.open(&key) {
                Ok(changes) => model.apply(header, &changes),
                Err(why) => {
                    return Err(world.fail(
                        "reference model",
                        format!("authorised commit {id:?} does not open: {why}"),
                    ));
                }
            }
        }
    }
    for i in live(world, |r| *r == Role::Device) {
        let states = rows(world, i).map_err(harness)?;
        model.compare(&states, |_| true).map_err(|why| {
            world.fail("reference model", format!("{}: {why}", world.nodes[i].name))
        })?;
    }
    for i in live(world, |r| matches!(r, Role::App { .. })) {
        let Role::App { namespace, .. } = &world.nodes[i].role else { continue };
        if is_revoked(world, i) {
            continue;
        }
        let states = rows(world, i).map_err(harness)?;
        model.compare(&states, |table| scope_of(table) == *namespace).map_err(|why| {
            world.fail("reference model", format!("{}: {why}", world.nodes[i].name))
        })?;
    }
    Ok(())
}

/// Confidentiality of what is written next: once settled, no device's
/// state has a scope whose newest key was made by, or sealed to, anyone
/// who no longer reads it (a removed device, a revoked app, a stranger):
/// devices repair such scopes (control-log.md §5.5).
fn check_confidential(world: &World) -> Result<(), Failure> {
    for node in world.nodes.iter().filter(|n| n.role == Role::Device && !n.lost) {
        let Some(db) = node.db.as_ref() else { continue };
        let state = db.auth_state();
        if !state.is_device(&node.key.public()) {
            continue;
        }
        if let Some(scope) = state.compromised().first() {
            return Err(world.fail(
                "confidentiality",
                format!("{}: scope {scope}'s newest key is known to a non-reader", node.name),
            ));
        }
    }
    Ok(())
}

fn check_no_loss(world: &World, auth: &basic_proto::AuthState) -> Result<(), Failure> {
    let mut headers = BTreeMap::new();
    for acked in &world.acked {
        // The commit as any up node holds it.
        let commit = world
            .nodes
            .iter()
            .filter_map(|n| n.db.as_ref())
            .find_map(|db| db.replica().commit(&acked.id).ok().flatten());
        let Some(commit) = commit else {
            if world.nodes[acked.node].lost {
                continue; // lost with its device before it left
            }
            return Err(world.fail(
                "no loss",
                format!(
                    "write {:?} acknowledged by {} is held nowhere",
                    acked.id, world.nodes[acked.node].name
                ),
            ));
        };
        if auth.check_commit(commit.header(), acked.id).is_err() {
            continue; // after its author's cut-off: rejected by design
        }
        headers.insert(acked.id, acked.scope);
    }
    for (i, node) in world.nodes.iter().enumerate() {
        if node.db.is_none() || node.lost {
            continue;
        }
        let applied = applied(world, i).map_err(|e| world.fail("harness", e))?;
        for (id, scope) in &headers {
            let entitled = match &node.role {
                Role::Device | Role::Pinner => true,
                Role::App { scope: granted, .. } => granted == scope && !is_revoked(world, i),
            };
            if !entitled {
                continue;
            }
            if !applied.contains(id) {
                return Err(world.fail(
                    "no loss",
                    format!("{} does not apply acknowledged commit {id:?} of {scope}", node.name),
                ));
            }
        }
    }
    Ok(())
}
