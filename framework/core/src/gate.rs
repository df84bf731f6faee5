//! The read gate's bookkeeping, shared by the stream and datagram cores: the deliveries whose
//! acknowledgement is not back yet.

/// The deliveries whose acknowledgement is not back yet, as `(seq, bytes)`.
///
/// Usually none or one, held inline: a delivery waits until none is out. Only a protocol switch
/// adds one while another is out (the new protocol's `ConnectionMade`); that rare case
/// allocates, and the allocation goes once a single one is left.
#[derive(Debug, Default)]
pub(crate) enum Unacked {
    #[default]
    None,
    One(u64, usize),
    Many(Vec<(u64, usize)>),
}

impl Unacked {
    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, Unacked::None)
    }

    /// How many deliveries are out.
    pub(crate) fn len(&self) -> usize {
        match self {
            Unacked::None => 0,
            Unacked::One(..) => 1,
            Unacked::Many(all) => all.len(),
        }
    }

    /// The bytes delivered and not acknowledged.
    pub(crate) fn bytes(&self) -> usize {
        match self {
            Unacked::None => 0,
            Unacked::One(_, bytes) => *bytes,
            Unacked::Many(all) => all.iter().map(|(_, bytes)| bytes).sum(),
        }
    }

    pub(crate) fn push(&mut self, seq: u64, bytes: usize) {
        *self = match std::mem::take(self) {
            Unacked::None => Unacked::One(seq, bytes),
            Unacked::One(first, first_bytes) => {
                Unacked::Many(vec![(first, first_bytes), (seq, bytes)])
            }
            Unacked::Many(mut all) => {
                all.push((seq, bytes));
                Unacked::Many(all)
            }
        };
    }

    /// Forgets delivery `seq`; whether it was out (an unknown or repeated one changes nothing).
    pub(crate) fn remove(&mut self, seq: u64) -> bool {
        match self {
            Unacked::One(known, _) if *known == seq => {
                *self = Unacked::None;
                true
            }
            Unacked::Many(all) => {
                let before = all.len();
                all.retain(|(known, _)| *known != seq);
                let removed = all.len() != before;
                match all[..] {
                    [] => *self = Unacked::None,
                    [(last, bytes)] => *self = Unacked::One(last, bytes),
                    _ => {}
                }
                removed
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unacked_tracks_bytes_and_forgets_each_seq_once() {
        let mut unacked = Unacked::default();
        unacked.push(1, 0);
        assert!(!unacked.is_empty());
        assert!(!unacked.remove(7)); // unknown: nothing happens
        assert!(unacked.remove(1));
        assert!(unacked.is_empty());
        unacked.push(2, 10);
        unacked.push(3, 0); // a switch while a delivery is out
        unacked.push(4, 0);
        assert_eq!(unacked.bytes(), 10);
        assert!(unacked.remove(3));
        assert!(!unacked.remove(3));
        assert_eq!(unacked.bytes(), 10);
        assert!(unacked.remove(2));
        assert!(matches!(unacked, Unacked::One(4, 0)), "{unacked:?}");
        assert!(unacked.remove(4));
        assert!(unacked.is_empty());
        assert_eq!(unacked.bytes(), 0);
    }
}
