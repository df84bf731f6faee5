//! The write queue: the buffers accepted and not yet written, in order.

use std::collections::VecDeque;

use bytes::{Buf, Bytes};

/// The buffers accepted and not yet written, in order.
///
/// The first is held inline, so a connection with one write outstanding at a time (a
/// request/response protocol, an idle connection) holds no queue allocation; the buffers behind
/// it go to a deque allocated the first time there are two, and kept, so a busy connection does
/// not allocate per write.
#[derive(Debug, Default)]
pub struct WriteQueue {
    head: Option<Bytes>,
    /// Never holds anything while `head` is empty.
    #[expect(
        clippy::box_collection,
        reason = "a boxed deque takes 8 bytes of the actor, a bare one 32, for every connection"
    )]
    rest: Option<Box<VecDeque<Bytes>>>,
}

impl WriteQueue {
    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    /// Queues `data` behind what is queued; an empty buffer is not queued.
    pub(crate) fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        if self.head.is_none() {
            self.head = Some(data);
        } else {
            self.rest.get_or_insert_default().push_back(data);
        }
    }

    /// The buffer to write first.
    pub fn front(&self) -> Option<&Bytes> {
        self.head.as_ref()
    }

    /// Whether more than one buffer is queued (worth a vectored write).
    pub fn has_several(&self) -> bool {
        self.rest.as_ref().is_some_and(|rest| !rest.is_empty())
    }

    /// Every queued buffer, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Bytes> {
        self.head
            .iter()
            .chain(self.rest.iter().flat_map(|rest| rest.iter()))
    }

    /// Drops `n` written bytes from the front.
    pub(crate) fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(head) = &mut self.head else {
                return;
            };
            if head.len() <= n {
                n -= head.len();
                self.head = self.rest.as_mut().and_then(|rest| rest.pop_front());
            } else {
                head.advance(n);
                n = 0;
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.head = None;
        if let Some(rest) = &mut self.rest {
            rest.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(parts: &[&'static str]) -> WriteQueue {
        let mut queue = WriteQueue::default();
        for part in parts {
            queue.push(Bytes::from_static(part.as_bytes()));
        }
        queue
    }

    fn contents(queue: &WriteQueue) -> Vec<&[u8]> {
        queue.iter().map(|b| &b[..]).collect()
    }

    #[test]
    fn advance_drops_whole_buffers_and_trims_a_partial_one() {
        let mut q = queue(&["abc", "de", "fghij"]);
        q.advance(4);
        assert_eq!(contents(&q), [&b"e"[..], b"fghij"]);
        q.advance(1);
        assert_eq!(contents(&q), [&b"fghij"[..]]);
        q.advance(0);
        assert_eq!(contents(&q), [&b"fghij"[..]]);
        q.advance(5);
        assert!(q.is_empty());
        q.advance(3); // more than is queued: nothing to do, no panic
        assert!(q.is_empty());
        q.push(Bytes::from_static(b"kl"));
        assert_eq!(
            contents(&q),
            [&b"kl"[..]],
            "the emptied queue takes new buffers"
        );
    }

    #[test]
    fn advance_by_every_split_point_leaves_the_right_suffix() {
        let parts = ["a", "bc", "def", "ghij"];
        let all: Vec<u8> = parts.concat().into_bytes();
        for n in 0..=all.len() {
            let mut q = queue(&parts);
            q.advance(n);
            let rest: Vec<u8> = q.iter().flat_map(|b| b.iter().copied()).collect();
            assert_eq!(rest, all[n..], "after advancing {n}");
            assert_eq!(q.front().map(|b| &b[..]), q.iter().next().map(|b| &b[..]));
            assert!(
                q.iter().all(|b| !b.is_empty()),
                "no empty buffer is left queued"
            );
        }
    }

    #[test]
    fn one_write_at_a_time_allocates_no_queue() {
        let mut q = queue(&["abc"]);
        q.advance(3);
        q.push(Bytes::from_static(b"de"));
        assert!(q.rest.is_none());
        q.push(Bytes::from_static(b"f"));
        assert!(q.rest.is_some(), "a second buffer spills");
        q.push(Bytes::new());
        assert_eq!(q.iter().count(), 2, "an empty buffer is not queued");
        q.clear();
        assert!(q.is_empty() && q.iter().next().is_none());
    }
}
