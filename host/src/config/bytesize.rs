//! Parses human-readable byte sizes from the config ("64MiB", "1 GiB", "65536").

/// Parse a size such as `65536`, `64KiB`, `256 MiB`, `1GiB`, `100MB` or `2 kb`.
///
/// Binary units (KiB, MiB, GiB) are powers of 1024; decimal units (KB, MB, GB) powers of
/// 1000; a bare number is bytes.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "{text:?} is not a size: expected a number such as 64MiB"
        ));
    }
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{digits:?} is too large a number"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?}: use B, KiB, MiB, GiB, KB, MB or GB"
            ));
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_bytes("65536"), Ok(65536));
        assert_eq!(parse_bytes("64KiB"), Ok(65536));
        assert_eq!(parse_bytes("256 MiB"), Ok(256 << 20));
        assert_eq!(parse_bytes("1gib"), Ok(1 << 30));
        assert_eq!(parse_bytes("100MB"), Ok(100_000_000));
        assert_eq!(parse_bytes(" 7 b "), Ok(7));
    }

    #[test]
    fn bad_sizes_say_why() {
        assert!(parse_bytes("MiB").unwrap_err().contains("not a size"));
        assert!(
            parse_bytes("12 parsecs")
                .unwrap_err()
                .contains("unknown size unit")
        );
        assert!(
            parse_bytes("99999999999999999999")
                .unwrap_err()
                .contains("too large")
        );
        assert!(
            parse_bytes("99999999999 GiB")
                .unwrap_err()
                .contains("too large")
        );
    }
}
