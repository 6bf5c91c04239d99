//! Reading one text per line, with errors that name the line.

/// A line that cannot be used as an input text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    /// The line is not UTF-8.
    #[error("line {line}: invalid UTF-8 ({detail})")]
    InvalidUtf8 {
        /// 1-based line number.
        line: usize,
        /// Where the bad byte is.
        detail: String,
    },
    /// The line is empty or only white space.
    #[error("line {line}: empty line (every line must hold one text)")]
    Empty {
        /// 1-based line number.
        line: usize,
    },
    /// There is no text at all.
    #[error("no input: give one text per line on stdin or with --input FILE")]
    NoInput,
}

/// Splits bytes into lines (`\n`, optional `\r`), checks each is non-empty UTF-8.
/// A final newline does not make an empty last line.
pub fn read_lines(bytes: &[u8]) -> Result<Vec<String>, InputError> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if body.is_empty() {
        return Err(InputError::NoInput);
    }
    let mut out = Vec::new();
    for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw).map_err(|e| InputError::InvalidUtf8 {
            line,
            detail: e.to_string(),
        })?;
        if text.trim().is_empty() {
            return Err(InputError::Empty { line });
        }
        out.push(text.to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Case = (&'static [u8], Result<Vec<&'static str>, InputError>);

    #[test]
    fn table() {
        let cases: [Case; 7] = [
            (b"a\nb\n", Ok(vec!["a", "b"])),
            (b"a\r\nb", Ok(vec!["a", "b"])),
            (b"only", Ok(vec!["only"])),
            (b"a\n\nb\n", Err(InputError::Empty { line: 2 })),
            (b"a\n  \n", Err(InputError::Empty { line: 2 })),
            (b"", Err(InputError::NoInput)),
            (b"\n", Err(InputError::NoInput)),
        ];
        for (input, want) in cases {
            let got = read_lines(input);
            let want = want.map(|v| v.into_iter().map(String::from).collect::<Vec<_>>());
            assert_eq!(got, want, "input {:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let err = read_lines(b"fine\nbad \xff byte\n").unwrap_err();
        assert!(
            matches!(err, InputError::InvalidUtf8 { line: 2, .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with("line 2: invalid UTF-8"),
            "{err}"
        );
    }
}
