//! `${VAR}` in names and endpoints: replaced by the environment variable's value when the
//! config is read, so one file serves several environments (`stream_name =
//! "orders-${STAGE}"`). `$$` is a literal `$`. An unset variable is an error, never an
//! empty string.

/// Expand `text` with `lookup`; the error names what is wrong in plain words.
pub fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    if !text.contains('$') {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("`${{` without a closing `}}` in {text:?}"))?;
            let name = &body[..end];
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(format!(
                    "`${{{name}}}` is not a variable name (letters, digits and `_`)"
                ));
            }
            let value = lookup(name).ok_or_else(|| {
                format!("environment variable {name} is not set (used as `${{{name}}}`)")
            })?;
            out.push_str(&value);
            rest = &body[end + 1..];
        } else {
            return Err(format!(
                "a `$` must start `${{VAR}}` (or be doubled, `$$`) in {text:?}"
            ));
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "STAGE" => Some("prod".into()),
            "REGION" => Some("eu-west-1".into()),
            _ => None,
        }
    }

    #[test]
    fn variables_expand_and_dollars_escape() {
        assert_eq!(expand("orders", env).as_deref(), Ok("orders"));
        assert_eq!(expand("orders-${STAGE}", env).as_deref(), Ok("orders-prod"));
        assert_eq!(
            expand("https://kinesis.${REGION}.amazonaws.com", env).as_deref(),
            Ok("https://kinesis.eu-west-1.amazonaws.com")
        );
        assert_eq!(expand("${STAGE}${STAGE}", env).as_deref(), Ok("prodprod"));
        assert_eq!(expand("cost$$", env).as_deref(), Ok("cost$"));
    }

    #[test]
    fn an_unset_or_malformed_variable_is_an_error_in_plain_words() {
        assert_eq!(
            expand("orders-${NOPE}", env),
            Err("environment variable NOPE is not set (used as `${NOPE}`)".into())
        );
        assert!(
            expand("orders-${STAGE", env)
                .unwrap_err()
                .contains("closing")
        );
        assert!(
            expand("a-${1X}", env)
                .unwrap_err()
                .contains("not a variable name")
        );
        assert!(expand("a-$STAGE", env).unwrap_err().contains("must start"));
    }
}
