//! Record data from the stream is outside input: KPL de-aggregation of any bytes gives
//! user records or an error (delivered as one plain record), never a panic; what decodes
//! re-encodes to something that decodes the same.
//!
//! Each input is decoded twice: as it is (the magic, length and MD5 checks), and as the
//! protobuf body of an aggregate framed with the magic and a correct MD5, so the fuzzer
//! reaches the message parser, which a random digest would almost never let it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use md5::{Digest, Md5};

fn check(data: &[u8]) {
    if let Ok(records) = shoal::kpl::decode(data) {
        let again = shoal::kpl::decode(&shoal::kpl::encode(&records))
            .expect("re-encoded aggregate decodes");
        assert_eq!(again, records);
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut framed = shoal::kpl::MAGIC.to_vec();
    framed.extend_from_slice(data);
    framed.extend_from_slice(&Md5::digest(data));
    check(&framed);
});
