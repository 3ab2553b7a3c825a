//! The batched-lookup measurement of the spill design (docs/adr/0007-hot-path.md): a
//! RocksDB opened through rust-rocksdb, filled with 16-byte fingerprint keys, read back with
//! one multi-get per micro-batch, as bench/hotpath/rocks-getmany.ts does through `rocksdb`.

use napi::bindgen_prelude::Buffer;
use napi::{Error, Result, Status};
use rocksdb::{BlockBasedOptions, Cache, DBCompressionType, Options, WriteBatch, DB};

fn err(e: rocksdb::Error) -> Error {
    Error::new(Status::GenericFailure, e.to_string())
}

#[napi]
pub struct RocksProbe {
    db: DB,
}

#[napi]
impl RocksProbe {
    /// Opens (creating) a store with the same settings as the `rocksdb` side: no compression,
    /// a 10-bit Bloom filter, an LRU block cache of `cache_bytes`.
    #[napi(constructor)]
    pub fn new(path: String, cache_bytes: f64) -> Result<Self> {
        let mut table = BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        table.set_block_cache(&Cache::new_lru_cache(cache_bytes as usize));
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_compression_type(DBCompressionType::None);
        opts.set_block_based_table_factory(&table);
        Ok(RocksProbe {
            db: DB::open(&opts, path).map_err(err)?,
        })
    }

    /// Writes keys (16 bytes each, concatenated) with a 4-byte value, in one batch.
    #[napi]
    pub fn put_many(&self, keys: Buffer) -> Result<()> {
        let mut batch = WriteBatch::default();
        for k in keys.chunks_exact(16) {
            batch.put(k, [1u8, 0, 0, 0]);
        }
        self.db.write(batch).map_err(err)
    }

    #[napi]
    pub fn compact(&self) -> Result<()> {
        self.db.flush().map_err(err)?;
        self.db.compact_range::<&[u8], &[u8]>(None, None);
        Ok(())
    }

    /// One batched multi-get of every 16-byte key in `keys`; returns how many were found.
    #[napi]
    pub fn get_many(&self, keys: Buffer) -> Result<u32> {
        let cf = self.db.cf_handle("default").ok_or_else(|| {
            Error::new(
                Status::GenericFailure,
                "no default column family".to_string(),
            )
        })?;
        let mut found = 0;
        for r in self
            .db
            .batched_multi_get_cf(cf, keys.chunks_exact(16), false)
        {
            if r.map_err(err)?.is_some() {
                found += 1;
            }
        }
        Ok(found)
    }
}
