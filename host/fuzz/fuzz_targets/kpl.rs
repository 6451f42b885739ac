//! Record data from the stream is outside input: KPL de-aggregation of any bytes gives
//! user records or an error (delivered as one plain record), never a panic; what decodes
//! re-encodes to something that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(records) = shoal::kpl::decode(data) {
        let again = shoal::kpl::decode(&shoal::kpl::encode(&records))
            .expect("re-encoded aggregate decodes");
        assert_eq!(again, records);
    }
});
