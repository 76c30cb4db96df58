//! Shared by the store's integration tests.

use std::path::Path;

/// The repository's `examples/` directory (schemas the tests load).
pub(crate) fn examples() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples"))
}

/// Implements [`basic_store::Store`]'s reads (`get`, `scan`,
/// `size_on_disk`) by the store in field `$inner`, for test stores that
/// only watch or hold back applies and flushes; with `before_get`, each
/// `get` first calls that method of the test store with the key.
macro_rules! store_reads_from {
    ($inner:ident) => {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, basic_store::StoreError> {
            self.$inner.get(key)
        }

        crate::common::store_reads_from!(@scan $inner);
    };
    ($inner:ident, before_get: $hook:ident) => {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, basic_store::StoreError> {
            self.$hook(key);
            self.$inner.get(key)
        }

        crate::common::store_reads_from!(@scan $inner);
    };
    (@scan $inner:ident) => {
        fn scan(
            &self,
            prefix: &[u8],
            from: &[u8],
        ) -> Box<dyn Iterator<Item = Result<basic_store::Entry, basic_store::StoreError>> + '_> {
            self.$inner.scan(prefix, from)
        }

        fn size_on_disk(&self) -> Result<u64, basic_store::StoreError> {
            self.$inner.size_on_disk()
        }
    };
}

pub(crate) use store_reads_from;
