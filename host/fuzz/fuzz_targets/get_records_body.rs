//! A GetRecords answer is outside input (network bytes): whatever arrives, in whatever
//! chunks, the streaming reader gives records or an error, never a panic; and how the bytes
//! were cut into chunks does not change the outcome.
//!
//! The first byte of the input picks the chunk size (1 to 256 bytes); the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal::get_records_body::{GetRecordsBody, ParsedGetRecords};

fn read(body: &[u8], chunk: usize) -> Option<ParsedGetRecords> {
    let mut reader = GetRecordsBody::new();
    for piece in body.chunks(chunk) {
        reader.feed(piece).ok()?;
    }
    reader.finish().ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let chunked = read(body, usize::from(first) + 1);
    let whole = read(body, body.len().max(1));
    match (chunked, whole) {
        (Some(a), Some(b)) => {
            assert_eq!(a.records, b.records, "records depend on the chunking");
            assert_eq!(a.rest, b.rest, "the rest depends on the chunking");
        }
        (None, None) => {}
        (a, b) => panic!(
            "chunked and whole disagree: {} vs {}",
            a.is_some(),
            b.is_some()
        ),
    }
});
