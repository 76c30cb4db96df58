//! The database's own records in the replica's metadata space: its
//! identity (and a join in progress), this device's log position, the
//! schemas, the view's watermark.

use super::*;

pub(super) mod meta {
    //! Metadata records of the database, in the replica's `m` space.
    pub(crate) const IDENTITY: &str = "identity";
    pub(crate) const JOINING: &str = "joining";
    pub(crate) const AUTHOR: &str = "author";
    pub(crate) const SCHEMAS: &str = "schemas";
    pub(crate) const WATERMARK: &str = "watermark";
}

pub(super) fn encode_u64(value: u64) -> Vec<u8> {
    value.to_be_bytes().to_vec()
}

pub(super) fn decode_u64(bytes: &[u8], what: &'static str) -> Result<u64, StoreError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        what,
        reason: format!("{} bytes, not 8", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(array))
}

/// The database id, this device's secret and, until the user has written
/// down the recovery secret, the root secret. Created on first open: the
/// root identity signs the genesis operation, which names this device and
/// whose id is the database id.
pub(super) fn load_identity<S: Store>(
    replica: &Replica<S>,
    environment: &Environment,
) -> Result<(DatabaseId, SecretKey, Option<SecretKey>), DbError> {
    if let Some(identity) = read_identity(replica)? {
        // Secrets still in the file move to a keystore installed since.
        let in_file = |e: &Cbor| matches!(e, Cbor::Bytes(_));
        if secrets::installed().is_some()
            && identity_elements(replica)?.is_some_and(|(d, r)| in_file(&d) || in_file(&r))
        {
            let (database, device, root) = &identity;
            let mut txn = replica.begin();
            write_identity(&mut txn, *database, device, root.as_ref())?;
            txn.commit()?;
        }
        return Ok(identity);
    }
    if read_joining(replica)?.is_some() {
        return Err(ControlError::Joining.into());
    }
    let mut rng = environment.rng();
    let (root, device) = (SecretKey::generate(&mut rng), SecretKey::generate(&mut rng));
    let genesis = ControlOp::create(
        &root,
        OpBody {
            database: DatabaseId([0; 32]),
            author: root.public(),
            parents: Vec::new(),
            hlc: Hlc { wall_ms: environment.now_ms(), counter: 0 },
            payload: Payload::genesis(&root, &Party::of(&device), &mut rng)
                .map_err(ControlError::from)?,
        },
    )
    .map_err(ControlError::from)?;
    let database = genesis.database();
    let mut txn = replica.begin();
    txn.insert_op(&genesis);
    write_identity(&mut txn, database, &device, Some(&root))?;
    txn.commit()?;
    Ok((database, device, Some(root)))
}

/// The stored identity, if this replica has one.
pub(crate) fn read_identity<S: Store>(
    replica: &Replica<S>,
) -> Result<Option<(DatabaseId, SecretKey, Option<SecretKey>)>, DbError> {
    let Some(bytes) = replica.store().get(&layout::meta(meta::IDENTITY))? else {
        return Ok(None);
    };
    let corrupt =
        |e: codec::DecodeError| StoreError::Corrupt { what: "identity", reason: e.to_string() };
    let mut fields =
        Fields::new(codec::parse(&bytes, "identity", 1024).map_err(corrupt)?, "identity", 3)
            .map_err(corrupt)?;
    let database = DatabaseId(fields.fixed("database").map_err(corrupt)?);
    // Each secret: its bytes, or its name in the platform keystore.
    let device =
        SecretKey::from_seed(secrets::seed(&fields.next("device").map_err(corrupt)?, "key")?);
    let root = match fields.next("root").map_err(corrupt)? {
        Cbor::Null => None,
        value => Some(SecretKey::from_seed(secrets::seed(&value, "root key")?)),
    };
    Ok(Some((database, device, root)))
}

/// The raw elements of the identity record (device, root), to tell
/// secrets in the file from secrets in the keystore.
pub(super) fn identity_elements<S: Store>(
    replica: &Replica<S>,
) -> Result<Option<(Cbor, Cbor)>, StoreError> {
    let Some(bytes) = replica.store().get(&layout::meta(meta::IDENTITY))? else {
        return Ok(None);
    };
    let corrupt =
        |e: codec::DecodeError| StoreError::Corrupt { what: "identity", reason: e.to_string() };
    let mut fields =
        Fields::new(codec::parse(&bytes, "identity", 1024).map_err(corrupt)?, "identity", 3)
            .map_err(corrupt)?;
    fields.next("database").map_err(corrupt)?;
    Ok(Some((fields.next("device").map_err(corrupt)?, fields.next("root").map_err(corrupt)?)))
}

/// The database and device secret of a join in progress.
pub(crate) fn read_joining<S: Store>(
    replica: &Replica<S>,
) -> Result<Option<(DatabaseId, SecretKey)>, StoreError> {
    let Some(bytes) = replica.store().get(&layout::meta(meta::JOINING))? else {
        return Ok(None);
    };
    let corrupt =
        |e: codec::DecodeError| StoreError::Corrupt { what: "joining", reason: e.to_string() };
    let mut fields =
        Fields::new(codec::parse(&bytes, "joining", 128).map_err(corrupt)?, "joining", 2)
            .map_err(corrupt)?;
    let database = DatabaseId(fields.fixed("database").map_err(corrupt)?);
    let device = SecretKey::from_seed(fields.fixed("device").map_err(corrupt)?);
    Ok(Some((database, device)))
}

/// Stages the record of a join in progress.
pub(crate) fn write_joining<S: Store>(
    txn: &mut Txn<'_, S>,
    database: DatabaseId,
    device: &SecretKey,
) {
    txn.put_meta(
        meta::JOINING,
        codec::encode_value(&Cbor::Array(vec![
            Cbor::Bytes(database.0.to_vec()),
            Cbor::Bytes(device.seed().to_vec()),
        ])),
    );
}

/// Stages the end of a join.
pub(crate) fn clear_joining<S: Store>(txn: &mut Txn<'_, S>) {
    txn.delete_meta(meta::JOINING);
}

/// Stages the identity record. With a platform keystore installed
/// ([`secrets::install`]), the secrets go there and the record names them.
pub(crate) fn write_identity<S: Store>(
    txn: &mut Txn<'_, S>,
    database: DatabaseId,
    device: &SecretKey,
    root: Option<&SecretKey>,
) -> Result<(), DbError> {
    let who = basic_proto::keys::Principal {
        role: basic_proto::keys::Role::Device,
        key: device.public(),
    };
    let device_element = secrets::element(|| format!("{database} device {who}"), device.seed())?;
    let root_element = match root {
        None => Cbor::Null,
        Some(root) => secrets::element(|| format!("{database} root on {who}"), root.seed())?,
    };
    txn.put_meta(
        meta::IDENTITY,
        codec::encode_value(&Cbor::Array(vec![
            Cbor::Bytes(database.0.to_vec()),
            device_element,
            root_element,
        ])),
    );
    Ok(())
}

pub(super) fn encode_author(log: &LogWriter) -> Vec<u8> {
    let last = log.clock().last();
    codec::encode_value(&Cbor::Array(vec![
        Cbor::Integer(log.seq().into()),
        log.prev().map_or(Cbor::Null, |id| Cbor::Bytes(id.0.to_vec())),
        Cbor::Integer(last.wall_ms.into()),
        Cbor::Integer(last.counter.into()),
    ]))
}

pub(super) fn load_author<S: Store>(
    replica: &Replica<S>,
    device: SecretKey,
    database: DatabaseId,
) -> Result<LogWriter, DbError> {
    let Some(bytes) = replica.store().get(&layout::meta(meta::AUTHOR))? else {
        return Ok(LogWriter::new(device, database));
    };
    let corrupt =
        |e: codec::DecodeError| StoreError::Corrupt { what: "author state", reason: e.to_string() };
    let mut fields =
        Fields::new(codec::parse(&bytes, "author", 256).map_err(corrupt)?, "author", 4)
            .map_err(corrupt)?;
    let seq = fields.uint("seq").map_err(corrupt)?;
    let prev = match fields.next("prev").map_err(corrupt)? {
        Cbor::Null => None,
        value => Some(CommitId(codec::as_fixed(value, "prev").map_err(corrupt)?)),
    };
    let wall_ms = fields.uint("wall_ms").map_err(corrupt)?;
    let counter = u32::try_from(fields.uint("counter").map_err(corrupt)?).map_err(|_| {
        StoreError::Corrupt { what: "author state", reason: "counter over 2^32-1".into() }
    })?;
    Ok(LogWriter::resume(device, database, seq, prev, Hlc { wall_ms, counter }))
}

pub(super) fn load_catalog<S: Store>(replica: &Replica<S>) -> Result<Catalog, DbError> {
    let Some(bytes) = replica.store().get(&layout::meta(meta::SCHEMAS))? else {
        return Ok(Catalog::new());
    };
    let corrupt = |reason: String| StoreError::Corrupt { what: "schemas", reason };
    let items = codec::as_array(
        codec::parse(&bytes, "schemas", usize::MAX).map_err(|e| corrupt(e.to_string()))?,
        "schemas",
        0,
        usize::MAX,
    )
    .map_err(|e| corrupt(e.to_string()))?;
    let schemas = items
        .into_iter()
        .map(|item| {
            let text = codec::as_text(item, "schema", 0, usize::MAX)
                .map_err(|e| corrupt(e.to_string()))?;
            Schema::from_json_canonical(&text).map_err(|e| corrupt(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Catalog::from_schemas(schemas).map_err(|e| corrupt(e.to_string()))?)
}

pub(super) fn encode_catalog(catalog: &Catalog) -> Vec<u8> {
    codec::encode_value(&Cbor::Array(catalog.schemas().map(|s| Cbor::Text(s.to_json())).collect()))
}
