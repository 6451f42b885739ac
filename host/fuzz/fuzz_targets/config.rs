//! Config files are outside input: any text must give settings or a `ConfigError`
//! naming the file, never a panic. Uses the side-effect-free `check`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(e) = shoal::config::check(std::path::Path::new("/nonexistent/fuzz.toml"), text) {
        assert!(e.to_string().contains("fuzz.toml"), "{e}");
    }
});
