//! `CLIENT REPLY`, the pure parts: its argument read the way Redis 7.0 reads it (with Redis's
//! own error text). No I/O and no session state.

/// `CLIENT REPLY ON|OFF|SKIP`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyMode {
    /// Replies again; answered `+OK`.
    On,
    /// No reply at all until `CLIENT REPLY ON`.
    Off,
    /// No reply to the next command.
    Skip,
}

/// Why Redis refuses a `CLIENT REPLY`: the text after `-ERR `.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientArgError {
    #[error("syntax error")]
    Syntax,
}

/// `CLIENT REPLY <mode>` (the arity is checked by the caller).
pub fn reply_mode(mode: &[u8]) -> Result<ReplyMode, ClientArgError> {
    if mode.eq_ignore_ascii_case(b"ON") {
        Ok(ReplyMode::On)
    } else if mode.eq_ignore_ascii_case(b"OFF") {
        Ok(ReplyMode::Off)
    } else if mode.eq_ignore_ascii_case(b"SKIP") {
        Ok(ReplyMode::Skip)
    } else {
        Err(ClientArgError::Syntax)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_modes_ignore_case_and_refuse_the_rest() {
        assert_eq!(reply_mode(b"on"), Ok(ReplyMode::On));
        assert_eq!(reply_mode(b"OFF"), Ok(ReplyMode::Off));
        assert_eq!(reply_mode(b"Skip"), Ok(ReplyMode::Skip));
        assert_eq!(reply_mode(b"never"), Err(ClientArgError::Syntax));
    }
}
