//! What a mail transaction knows besides the message, and the trace header fields it adds to
//! the message when it is stored (RFC 5321 §4.4).

use std::net::SocketAddr;

/// What the client said in `HELO` or `EHLO`.
#[derive(Debug, Clone)]
pub(crate) struct Hello {
    /// The client's name for itself.
    pub(crate) name: String,
    /// `EHLO` rather than `HELO`.
    pub(crate) extended: bool,
}

/// One message's envelope, as the command phase hands it to the DATA phase.
#[derive(Debug)]
pub(crate) struct Envelope {
    pub(crate) hello: Hello,
    pub(crate) peer: Option<SocketAddr>,
    /// The session runs over TLS.
    pub(crate) tls: bool,
    /// The reverse path; empty for the null sender.
    pub(crate) from: String,
    /// The forward paths, at least one.
    pub(crate) recipients: Vec<String>,
}

impl Envelope {
    /// The `Return-Path:` and `Received:` fields a final delivery puts in front of the message,
    /// each line ending in `<CRLF>`. `with` tells how the message came (RFC 3848): `ESMTPS`
    /// after STARTTLS, `ESMTP` otherwise, `SMTP` after `HELO`.
    pub(crate) fn trace_fields(&self, hostname: &str, id: &str, unix_time: u64) -> String {
        let peer = match self.peer {
            Some(SocketAddr::V4(addr)) => format!("[{}]", addr.ip()),
            Some(SocketAddr::V6(addr)) => format!("[IPv6:{}]", addr.ip()),
            None => "unknown".to_owned(),
        };
        let with = match (self.hello.extended, self.tls) {
            (true, true) => "ESMTPS",
            (true, false) => "ESMTP",
            (false, _) => "SMTP",
        };
        let recipient = match &self.recipients[..] {
            [only] => format!("\r\n\tfor <{only}>"),
            _ => String::new(),
        };
        format!(
            "Return-Path: <{from}>\r\n\
             Received: from {helo} ({peer})\r\n\
             \tby {hostname} with {with} id {id}{recipient};\r\n\
             \t{date}\r\n",
            from = self.from,
            helo = self.hello.name,
            date = rfc5322_date(unix_time),
        )
    }
}

/// A time as RFC 5322 §3.3 writes it, in UTC: `Thu, 01 Jan 1970 00:00:00 +0000`.
pub(crate) fn rfc5322_date(unix_time: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix_time / 86_400;
    let seconds = unix_time % 86_400;
    // Howard Hinnant's civil_from_days, for days on or after 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_written_as_rfc_5322_says() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_709_251_199),
            "Thu, 29 Feb 2024 23:59:59 +0000"
        );
        assert_eq!(
            rfc5322_date(4_102_444_800),
            "Fri, 01 Jan 2100 00:00:00 +0000"
        );
    }

    #[test]
    fn trace_fields_name_the_client_the_protocol_and_the_one_recipient() {
        let mut envelope = Envelope {
            hello: Hello {
                name: "client.example".into(),
                extended: true,
            },
            peer: Some("127.0.0.1:40000".parse().unwrap()),
            tls: true,
            from: "a@x".into(),
            recipients: vec!["b@y".into()],
        };
        assert_eq!(
            envelope.trace_fields("mx.example", "ID1", 0),
            "Return-Path: <a@x>\r\n\
             Received: from client.example ([127.0.0.1])\r\n\
             \tby mx.example with ESMTPS id ID1\r\n\
             \tfor <b@y>;\r\n\
             \tThu, 01 Jan 1970 00:00:00 +0000\r\n"
        );
        envelope.tls = false;
        envelope.from.clear();
        envelope.recipients.push("c@z".into());
        envelope.peer = Some("[::1]:25".parse().unwrap());
        assert_eq!(
            envelope.trace_fields("mx.example", "ID2", 0),
            "Return-Path: <>\r\n\
             Received: from client.example ([IPv6:::1])\r\n\
             \tby mx.example with ESMTP id ID2;\r\n\
             \tThu, 01 Jan 1970 00:00:00 +0000\r\n"
        );
    }
}
