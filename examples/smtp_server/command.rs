//! The SMTP commands this server knows, parsed from one line (RFC 5321 §4.1, with the `SIZE`
//! and `BODY` parameters of RFC 1870 and RFC 6152, and `STARTTLS` from RFC 3207).

/// A parsed command line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Command {
    /// `HELO domain`.
    Helo(String),
    /// `EHLO domain`.
    Ehlo(String),
    /// `MAIL FROM:<reverse-path> [SIZE=n] [BODY=7BIT|8BITMIME]`; `from` is empty for the null
    /// sender `<>`.
    Mail {
        from: String,
        size: Option<u64>,
    },
    /// `RCPT TO:<forward-path>`.
    Rcpt {
        to: String,
    },
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
    StartTls,
    /// A command of the protocol this server does not implement (`EXPN`, `TURN`, ...).
    NotImplemented,
}

/// Why a line is not a command this server accepts.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// Not a command at all: `500`.
    Unrecognized,
    /// A command whose arguments do not parse: `501`, with the expected syntax.
    Syntax(&'static str),
    /// A `MAIL` or `RCPT` parameter this server does not support: `555`.
    UnsupportedParameter,
}

/// Parses one command line, without its line ending.
pub(crate) fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let (verb, args) = match line.iter().position(|&byte| byte == b' ') {
        Some(space) => (&line[..space], &line[space + 1..]),
        None => (line, &b""[..]),
    };
    if verb.is_empty() || !verb.iter().all(u8::is_ascii_alphabetic) {
        return Err(ParseError::Unrecognized);
    }
    let verb = verb.to_ascii_uppercase();
    let Some(args) = std::str::from_utf8(args).ok().filter(|args| {
        args.bytes()
            .all(|byte| byte == b' ' || byte.is_ascii_graphic())
    }) else {
        return Err(ParseError::Syntax("Arguments must be printable ASCII"));
    };
    let args = args.trim_matches(' ');
    let no_args = |command, syntax| {
        if args.is_empty() {
            Ok(command)
        } else {
            Err(ParseError::Syntax(syntax))
        }
    };
    match &verb[..] {
        b"HELO" => domain(args, "Syntax: HELO domain").map(Command::Helo),
        b"EHLO" => domain(args, "Syntax: EHLO domain").map(Command::Ehlo),
        b"MAIL" => mail(args),
        b"RCPT" => rcpt(args),
        b"DATA" => no_args(Command::Data, "Syntax: DATA"),
        b"RSET" => no_args(Command::Rset, "Syntax: RSET"),
        b"QUIT" => no_args(Command::Quit, "Syntax: QUIT"),
        b"STARTTLS" => no_args(
            Command::StartTls,
            "Syntax: STARTTLS (no parameters allowed)",
        ),
        b"NOOP" => Ok(Command::Noop),
        b"HELP" => Ok(Command::Help),
        b"VRFY" if args.is_empty() => Err(ParseError::Syntax("Syntax: VRFY string")),
        b"VRFY" => Ok(Command::Vrfy),
        b"EXPN" | b"TURN" | b"ETRN" | b"AUTH" | b"BDAT" => Ok(Command::NotImplemented),
        _ => Err(ParseError::Unrecognized),
    }
}

/// The one word of `HELO` and `EHLO`: a domain or an address literal (not checked further).
fn domain(args: &str, syntax: &'static str) -> Result<String, ParseError> {
    if args.is_empty() || args.contains(' ') {
        return Err(ParseError::Syntax(syntax));
    }
    Ok(args.to_owned())
}

fn mail(args: &str) -> Result<Command, ParseError> {
    const SYNTAX: &str = "Syntax: MAIL FROM:<address>";
    let (from, parameters) = path_after(args, "FROM:").ok_or(ParseError::Syntax(SYNTAX))?;
    let mut size = None;
    for parameter in parameters {
        let (keyword, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        if keyword.eq_ignore_ascii_case("SIZE") {
            size = Some(size_value(value).ok_or(ParseError::Syntax("Syntax: SIZE=digits"))?);
        } else if keyword.eq_ignore_ascii_case("BODY")
            && (value.eq_ignore_ascii_case("7BIT") || value.eq_ignore_ascii_case("8BITMIME"))
        {
            // Stored as received either way.
        } else {
            return Err(ParseError::UnsupportedParameter);
        }
    }
    Ok(Command::Mail {
        from: from.to_owned(),
        size,
    })
}

fn rcpt(args: &str) -> Result<Command, ParseError> {
    const SYNTAX: &str = "Syntax: RCPT TO:<address>";
    let (to, mut parameters) = path_after(args, "TO:").ok_or(ParseError::Syntax(SYNTAX))?;
    if to.is_empty() {
        return Err(ParseError::Syntax(SYNTAX));
    }
    if parameters.next().is_some() {
        return Err(ParseError::UnsupportedParameter);
    }
    Ok(Command::Rcpt { to: to.to_owned() })
}

/// Splits `FROM:<path> params` (keyword case-insensitive, spaces allowed after the colon) into
/// the address inside the angle brackets and the parameters. A source route (`<@a,@b:x@c>`)
/// is dropped, as RFC 5321 §4.1.1.3 says a server should.
fn path_after<'a>(
    args: &'a str,
    keyword: &str,
) -> Option<(&'a str, impl Iterator<Item = &'a str>)> {
    let head = args.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = args[keyword.len()..].trim_start_matches(' ');
    let (path, parameters) = rest.strip_prefix('<')?.split_once('>')?;
    if !parameters.is_empty() && !parameters.starts_with(' ') {
        return None;
    }
    let address = match path.strip_prefix('@') {
        // The mailbox after the route is an address of its own: not empty (the null sender is
        // `<>`) and not another route, so it reads the same written as `<address>`.
        Some(route) => match route.split_once(':')?.1 {
            "" => return None,
            mailbox if mailbox.starts_with('@') => return None,
            mailbox => mailbox,
        },
        None => path,
    };
    if address.contains(['<', ' ']) {
        return None;
    }
    Some((
        address,
        parameters.split(' ').filter(|part| !part.is_empty()),
    ))
}

/// A `SIZE=` value: 1 to 20 digits (RFC 1870); too large for a `u64` is as good as infinite.
fn size_value(value: &str) -> Option<u64> {
    if value.is_empty() || value.len() > 20 || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    Some(value.parse().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_are_case_insensitive_and_arguments_are_kept() {
        assert_eq!(
            parse(b"ehlo mx.example"),
            Ok(Command::Ehlo("mx.example".into()))
        );
        assert_eq!(
            parse(b"HeLo [127.0.0.1]"),
            Ok(Command::Helo("[127.0.0.1]".into()))
        );
        assert_eq!(parse(b"data"), Ok(Command::Data));
        assert_eq!(parse(b"NOOP anything at all"), Ok(Command::Noop));
        assert_eq!(parse(b"StartTLS"), Ok(Command::StartTls));
        assert_eq!(parse(b"QUIT "), Ok(Command::Quit));
    }

    #[test]
    fn mail_takes_a_path_and_size_and_body_parameters() {
        assert_eq!(
            parse(b"MAIL FROM:<alice@example.org>"),
            Ok(Command::Mail {
                from: "alice@example.org".into(),
                size: None
            })
        );
        assert_eq!(
            parse(b"mail from: <a@x> size=1234 BODY=8BITMIME"),
            Ok(Command::Mail {
                from: "a@x".into(),
                size: Some(1234)
            })
        );
        assert_eq!(
            parse(b"MAIL FROM:<>"),
            Ok(Command::Mail {
                from: String::new(),
                size: None
            })
        );
        assert_eq!(
            parse(b"MAIL FROM:<a@x> SIZE=99999999999999999999"),
            Ok(Command::Mail {
                from: "a@x".into(),
                size: Some(u64::MAX)
            })
        );
        assert_eq!(
            parse(b"MAIL FROM:<@relay.example:a@x>"),
            Ok(Command::Mail {
                from: "a@x".into(),
                size: None
            })
        );
    }

    #[test]
    fn malformed_mail_and_rcpt_are_syntax_errors() {
        for line in [
            &b"MAIL"[..],
            b"MAIL FROM",
            b"MAIL FROM:a@x",
            b"MAIL FROM:<a@x",
            b"MAIL FROM:<a@x>junk",
            b"MAIL FROM:<a b@x>",
            b"MAIL TO:<a@x>",
            b"MAIL FROM:<a@x> SIZE=",
            b"MAIL FROM:<a@x> SIZE=12k",
            b"RCPT TO:<>",
            b"RCPT TO:b@y",
            b"RCPT FROM:<b@y>",
            b"RCPT TO:<@route-without-colon>",
        ] {
            assert!(
                matches!(parse(line), Err(ParseError::Syntax(_))),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    /// Found by `fuzz/fuzz_targets/smtp_command.rs`: after a source route, the server took
    /// `@b.net` (another route, without its colon) and an empty mailbox (the null sender) for
    /// addresses, which read differently once written back as `<address>`.
    #[test]
    fn a_source_route_leads_to_a_mailbox() {
        for line in [
            &b"RCPT TO:<@relay.example:@b.net>"[..],
            b"MAIL FROM:<@relay.example:>",
            b"MAIL FROM:<@a,@b:@c>",
        ] {
            assert!(
                matches!(parse(line), Err(ParseError::Syntax(_))),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(
            parse(b"RCPT TO:<@a,@b:c@d>"),
            Ok(Command::Rcpt { to: "c@d".into() })
        );
    }

    #[test]
    fn unknown_parameters_are_refused() {
        assert_eq!(
            parse(b"MAIL FROM:<a@x> SMTPUTF8"),
            Err(ParseError::UnsupportedParameter)
        );
        assert_eq!(
            parse(b"MAIL FROM:<a@x> BODY=BINARYMIME"),
            Err(ParseError::UnsupportedParameter)
        );
        assert_eq!(
            parse(b"RCPT TO:<b@y> NOTIFY=NEVER"),
            Err(ParseError::UnsupportedParameter)
        );
    }

    #[test]
    fn arguments_where_none_belong_are_syntax_errors() {
        for line in [
            &b"DATA now"[..],
            b"RSET x",
            b"QUIT x",
            b"STARTTLS x",
            b"EHLO",
            b"HELO a b",
            b"VRFY",
        ] {
            assert!(
                matches!(parse(line), Err(ParseError::Syntax(_))),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn garbage_is_unrecognized_never_a_panic() {
        assert_eq!(parse(b""), Err(ParseError::Unrecognized));
        assert_eq!(parse(b" NOOP"), Err(ParseError::Unrecognized));
        assert_eq!(parse(b"FOO bar"), Err(ParseError::Unrecognized));
        assert_eq!(parse(b"NO0P"), Err(ParseError::Unrecognized));
        assert_eq!(parse(b"\xff\xfe\x00"), Err(ParseError::Unrecognized));
        assert_eq!(parse(b"EXPN staff"), Ok(Command::NotImplemented));
        assert!(matches!(
            parse(b"EHLO caf\xc3\xa9"),
            Err(ParseError::Syntax(_))
        ));
        assert!(matches!(
            parse(b"RCPT TO:<\x01@y>"),
            Err(ParseError::Syntax(_))
        ));
        // Every prefix of a valid command parses to something or to an error.
        let line = b"MAIL FROM:<a@x> SIZE=10 BODY=8BITMIME";
        for end in 0..=line.len() {
            let _ = parse(&line[..end]);
        }
    }
}
