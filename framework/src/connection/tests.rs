//! `Connection` on the mock transport: items in order, writes that wait for room, the ends.

use std::io;

use futures::FutureExt;
use tokio_util::codec::LinesCodec;

use crate::{
    Connection,
    testing::{Ending, MockTransport, run},
};

#[test]
fn a_request_gets_its_reply_and_the_last_line_comes_at_eof() {
    run(async {
        let (mock, mut conn) =
            MockTransport::builder().attach(Connection::with_codec(LinesCodec::new()));
        conn.send("GET a").await.unwrap();
        mock.expect_written("GET a\n").await;
        mock.push("1\n2\n");
        mock.push("3");
        let read = async {
            let mut lines = Vec::new();
            while let Some(line) = conn.next().await {
                lines.push(line.unwrap());
            }
            lines
        };
        let (kept_open, lines) = futures::join!(mock.eof(), read);
        assert!(kept_open, "the connection stays half-open");
        assert_eq!(lines, ["1", "2", "3"]);
        // Half-open, as asyncio's streams: writing still works after the peer's EOF.
        conn.send("bye").await.unwrap();
        mock.expect_written("bye\n").await;
        conn.close();
        conn.closed().await.unwrap();
        assert_eq!(mock.ending(), Some(Ending::Closed));
    });
}

#[test]
fn writes_wait_for_room_in_the_write_buffer() {
    run(async {
        let (mock, conn) = MockTransport::builder().attach(Connection::new());
        mock.settle().await;
        conn.write("first").await.unwrap();
        mock.pause_writing().await; // the peer stops reading
        let mut second = Box::pin(conn.write("second"));
        mock.settle().await;
        assert!(
            (&mut second).now_or_never().is_none(),
            "waits while writing is paused"
        );
        mock.resume_writing().await;
        second.await.unwrap();
        mock.settle().await;
        assert_eq!(mock.written(), "firstsecond");
    });
}

#[test]
fn an_error_ends_the_items_and_closed_reports_it() {
    run(async {
        let (mock, mut conn) = MockTransport::builder().attach(Connection::new());
        mock.push("data");
        mock.lose(Some(io::ErrorKind::ConnectionReset.into())).await;
        assert_eq!(&conn.next().await.unwrap().unwrap()[..], b"data");
        let err = conn.next().await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        assert!(conn.next().await.is_none());
        let closed = conn.closed().await.unwrap_err();
        assert_eq!(closed.kind(), io::ErrorKind::ConnectionReset);
        assert!(conn.write("late").await.is_err());
    });
}

#[test]
fn dropping_the_connection_closes_it() {
    run(async {
        let (mock, conn) = MockTransport::builder().attach(Connection::new());
        mock.settle().await;
        drop(conn);
        mock.settle().await;
        assert_eq!(mock.ending(), Some(Ending::Closed));
    });
}
