//! JSON-lines records (`shoal replay` input, the local stream source, archives) are
//! outside input: any line parses into a record or gives an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal::archive_format::InputLine;

fuzz_target!(|line: &str| {
    if let Ok(mut parsed) = InputLine::parse(line) {
        let _ = parsed.take_data();
    }
});
