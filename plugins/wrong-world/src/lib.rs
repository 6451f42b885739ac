//! `wrong-world`: a component that does not fit shoal's world, for tests of the
//! rejection messages (`shoal plugin check`, hot-swap rejection).

wit_bindgen::generate!({ world: "processor", path: "wit" });

struct Wrong;

impl Guest for Wrong {
    fn initialize(shard: String) -> Result<(), String> {
        log(&format!("initialize {shard}"));
        Ok(())
    }

    fn process(_shard: String, records: Vec<Vec<u8>>) -> Result<(), String> {
        shoal::processor::metrics::counter("records", records.len() as u64);
        Ok(())
    }
}

export!(Wrong);
