//! How the checks read a fuzz input: a few bytes of settings, then where to cut the data into
//! chunks, then the data. The same input, cut or whole, must give the same result wherever a
//! parser promises it: a peer's bytes arrive cut anywhere.

/// A fuzz input being read from the front.
#[derive(Debug)]
pub(crate) struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    pub(crate) fn new(fuzz: &'a [u8]) -> Self {
        Input { rest: fuzz }
    }

    /// The next byte, or 0 once the input is used up: every input means something.
    pub(crate) fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&byte, rest)) => {
                self.rest = rest;
                byte
            }
            None => 0,
        }
    }

    /// The rest as data cut into chunks, at the [`cuts`](Self::cuts) read first.
    pub(crate) fn chunks(mut self) -> Chunks<'a> {
        let cuts = self.cuts();
        Chunks::new(self.rest(), &cuts)
    }

    /// Where to cut data: one byte for the number of cuts (up to 15), then one little-endian
    /// `u16` for each.
    pub(crate) fn cuts(&mut self) -> Vec<u16> {
        let cuts = self.byte() % 16;
        (0..cuts)
            .map(|_| u16::from_le_bytes([self.byte(), self.byte()]))
            .collect()
    }

    /// The bytes not read yet.
    pub(crate) fn rest(self) -> &'a [u8] {
        self.rest
    }
}

/// Data and the points it is cut at.
#[derive(Debug)]
pub(crate) struct Chunks<'a> {
    pub(crate) data: &'a [u8],
    cuts: Vec<usize>,
}

impl<'a> Chunks<'a> {
    /// `data` cut at `cuts`, each taken modulo the data's length plus one.
    pub(crate) fn new(data: &'a [u8], cuts: &[u16]) -> Self {
        let mut cuts: Vec<usize> = cuts
            .iter()
            .map(|&cut| usize::from(cut) % (data.len() + 1))
            .collect();
        cuts.sort_unstable();
        Chunks { data, cuts }
    }

    /// The chunks in order, empty ones included (a cut twice at one point): together, the data.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        let data = self.data;
        let ends = self.cuts.iter().copied().chain([data.len()]);
        let starts = [0].into_iter().chain(self.cuts.iter().copied());
        starts.zip(ends).map(move |(start, end)| &data[start..end])
    }
}

/// Runs `check` on every file of `dir`, a target's corpus: the tests replay the committed seeds
/// and regressions with it, on the stable toolchain, without a fuzzer.
pub(crate) fn replay(dir: &std::path::Path, check: fn(&[u8])) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display()));
    let mut inputs = 0;
    for entry in entries {
        let path = entry.expect("a corpus entry").path();
        let input = std::fs::read(&path).expect("a corpus file");
        let checked = std::panic::catch_unwind(|| check(&input));
        assert!(checked.is_ok(), "{} fails its checks", path.display());
        inputs += 1;
    }
    assert!(inputs > 0, "no input in {}", dir.display());
}
