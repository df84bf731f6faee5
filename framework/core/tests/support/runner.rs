//! What the interleavings checkers share, whichever core they drive: a step's encoding as two
//! plain numbers, the run of a case step by step with its count of executed steps, the failures
//! and the invariant they name, and the proptest runner with its seed, its extra shrinking pass
//! and its report.
//!
//! `tests/interleavings.rs` (the stream core) and `tests/datagram_interleavings.rs` (the datagram
//! core) each add a generator of steps and a harness (a driver with its model) of their own.

use std::{
    cell::{Cell, RefCell},
    env, fmt,
    hash::{BuildHasher, RandomState},
    panic::{self, AssertUnwindSafe, PanicHookInfo},
    rc::Rc,
    sync::Arc,
    thread,
};

use proptest::{
    collection::vec,
    prelude::*,
    test_runner::{
        Config, FileFailurePersistence, RngAlgorithm, RngSeed, TestCaseError, TestError, TestRunner,
    },
};

// ---- failures ----

/// What a check returns: nothing, or the violation it found.
pub(crate) type Checked<T = ()> = Result<T, String>;

/// The lines a traced run records: each step and what the core did.
pub(crate) type Trace = Rc<RefCell<Vec<String>>>;

/// A violation's message; [`Failure::invariant`] reads the name back.
pub(crate) fn violation(invariant: &str, detail: String) -> String {
    format!("invariant `{invariant}` violated: {detail}")
}

/// Returns the violation of `$invariant` unless `$cond` holds.
macro_rules! ensure {
    ($cond:expr, $invariant:expr, $($detail:tt)+) => {
        if !$cond {
            return Err(format!(
                "invariant `{}` violated: {}",
                $invariant,
                format_args!($($detail)+)
            ));
        }
    };
}
pub(crate) use ensure;

/// The first violation of a run.
#[derive(Debug)]
pub(crate) struct Failure {
    /// How many steps the run took, the failing one included: the steps after them never ran.
    pub(crate) steps: usize,
    /// Which step (or the start, or the end) and which invariant, with the details.
    pub(crate) message: String,
}

impl Failure {
    /// The name of the invariant violated.
    pub(crate) fn invariant(&self) -> &str {
        self.message.split('`').nth(1).unwrap_or_default()
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// At most 16 bytes of `bytes`, for a message.
pub(crate) fn brief(bytes: &[u8]) -> String {
    if bytes.len() <= 16 {
        format!("{bytes:?}")
    } else {
        format!("{:?}.. ({} bytes)", &bytes[..16], bytes.len())
    }
}

/// The byte at position `i` of what a model feeds a core (what the peer sends, what the protocol
/// writes): consecutive values, so a reordering, a loss or a duplicate shows.
pub(crate) fn pattern(i: u64) -> u8 {
    (i as u8).wrapping_add((i >> 8) as u8)
}

// ---- a run ----

/// Records a line of the trace, if there is one; returns its index.
pub(crate) fn note(trace: Option<&Trace>, line: impl FnOnce() -> String) -> Option<usize> {
    let mut trace = trace?.borrow_mut();
    trace.push(line());
    Some(trace.len() - 1)
}

/// A core under a driver and its model: what [`drive`] needs of a harness.
pub(crate) trait Machine {
    type Step: fmt::Debug;

    /// What the driver does after every step and at the start (poll the events and deliver them,
    /// ask for the deadline, take the release and stop after one), with the checks.
    fn round(&mut self) -> Checked;

    /// Runs one step; whether its precondition held (a step that does not hold is skipped).
    fn step(&mut self, step: &Self::Step) -> Checked<bool>;

    /// Whether the run ended: the driver stopped.
    fn ended(&self) -> bool;

    /// The steps ran out: the driver stops for a reason of its own (its system shuts down).
    fn stop(&mut self) -> Checked;

    fn trace(&self) -> Option<&Trace>;
}

/// Drives `machine` through `steps` until they run out or it ends; returns how many steps ran
/// (skipped ones are not counted), or the first violation.
pub(crate) fn drive<M: Machine>(mut machine: M, steps: &[M::Step]) -> Result<u64, Failure> {
    let failure = |steps, message| Failure { steps, message };
    machine
        .round()
        .map_err(|err| failure(0, format!("at the start: {err}")))?;
    let mut executed = 0;
    for (i, step) in steps.iter().enumerate() {
        if machine.ended() {
            break;
        }
        let line = note(machine.trace(), || format!("step {i}: {step:?}"));
        let ran = machine
            .step(step)
            .map_err(|err| failure(i + 1, format!("step {i} ({step:?}): {err}")))?;
        if ran {
            executed += 1;
        } else if let (Some(trace), Some(line)) = (machine.trace(), line) {
            trace.borrow_mut()[line].push_str(" (skipped: precondition)");
        }
        machine
            .round()
            .map_err(|err| failure(i + 1, format!("after step {i} ({step:?}): {err}")))?;
    }
    if !machine.ended() {
        note(machine.trace(), || "the driver stops".to_owned());
        machine
            .stop()
            .map_err(|err| failure(steps.len(), format!("at the end: {err}")))?;
    }
    Ok(executed)
}

// ---- generating steps ----

/// How often a case ends the connection early: most cases run long, some end soon, so the
/// closing paths get their share without cutting every run short.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Temper {
    Calm,
    Usual,
    Hasty,
}

/// Parameters cut from a step's random bits.
pub(crate) struct Bits(pub(crate) u64);

impl Bits {
    pub(crate) fn take(&mut self, bits: u32) -> u64 {
        let value = self.0 & ((1 << bits) - 1);
        self.0 >>= bits;
        value
    }

    pub(crate) fn byte(&mut self) -> u8 {
        self.take(8) as u8
    }

    /// Whether an event of `sixteenths` / 16 chance happens (never with all bits zero).
    pub(crate) fn chance(&mut self, sixteenths: u64) -> bool {
        self.take(4) >= 16 - sixteenths
    }

    /// A number in `0..=max`, from 8 bits.
    pub(crate) fn upto(&mut self, max: u8) -> u8 {
        (self.take(8) % (u64::from(max) + 1)) as u8
    }
}

/// `1..=max_steps` steps of a case of random temper, each drawn as two plain numbers: which kind
/// of step (`weights(temper)`, the first kinds first as proptest shrinks the number towards 0)
/// and the bits of its parameters, which `decode` cuts.
///
/// So the steps are one tuple of plain strategies: proptest shrinks a case by deleting steps and
/// simplifying numbers, never regenerating what it already shrank (a `prop_flat_map` on the
/// temper did).
pub(crate) fn steps<K, W, S>(
    max_steps: usize,
    weights: fn(Temper) -> W,
    decode: fn(K, &mut Bits) -> S,
) -> impl Strategy<Value = Vec<S>>
where
    K: Copy,
    W: AsRef<[(K, u32)]>,
    S: fmt::Debug,
{
    (
        prop_oneof![
            7 => Just(Temper::Calm),
            2 => Just(Temper::Usual),
            1 => Just(Temper::Hasty),
        ],
        vec((any::<u32>(), any::<u64>()), 1..=max_steps),
    )
        .prop_map(move |(temper, raw)| {
            let weights = weights(temper);
            let weights = weights.as_ref();
            let total: u32 = weights.iter().map(|(_, weight)| weight).sum();
            raw.into_iter()
                .map(|(pick, bits)| {
                    let mut pick = pick % total;
                    let kind = weights
                        .iter()
                        .find_map(|&(kind, weight)| {
                            if pick < weight {
                                Some(kind)
                            } else {
                                pick -= weight;
                                None
                            }
                        })
                        .expect("pick < total");
                    decode(kind, &mut Bits(bits))
                })
                .collect()
        })
}

// ---- the checker ----

/// A generated case: a fresh core's parameters and its steps.
pub(crate) trait Case: Clone + fmt::Debug {
    type Step;

    fn steps_mut(&mut self) -> &mut Vec<Self::Step>;

    /// Runs the case; how many steps ran, or the first violation. With `trace`, records each
    /// step and what the core did.
    fn run(&self, trace: Option<Trace>) -> Result<u64, Failure>;
}

/// One checker: how many cases of how many steps, and where its test lives.
pub(crate) struct Checker {
    /// The test target, as `cargo test --test` names it.
    pub(crate) test: &'static str,
    /// The test's `file!()`: proptest keeps its regressions file beside it.
    pub(crate) source_file: &'static str,
    /// Cases per run, unless `PROPTEST_CASES` says otherwise.
    pub(crate) cases: u32,
    /// The most steps in a case.
    pub(crate) max_steps: usize,
    /// The steps a default run must execute at least.
    pub(crate) min_steps: u64,
}

impl Checker {
    /// Runs the cases of `strategy`; panics with the invariant, the seed, the minimal case and
    /// its trace at the first failure, or if a default run executed too few steps.
    pub(crate) fn check<C: Case>(&self, strategy: impl Strategy<Value = C>) {
        let test = self.test;
        let max_steps = self.max_steps;
        // `Config::default()` reads proptest's environment variables (`PROPTEST_CASES`,
        // `PROPTEST_RNG_SEED`, ...).
        let defaults = Config::default();
        let cases = if env::var_os("PROPTEST_CASES").is_some() {
            defaults.cases
        } else {
            self.cases
        };
        // A seed of our own when none is given, so that it can be printed: proptest does not
        // tell the seed of a random run.
        let seed = match defaults.rng_seed {
            RngSeed::Fixed(seed) => seed,
            RngSeed::Random => RandomState::new().hash_one(0u8),
        };
        // XorShift unless `PROPTEST_RNG_ALGORITHM` says otherwise: the default ChaCha takes most
        // of a debug run's time. A replay must use the same algorithm as the run it replays.
        let rng_algorithm = if env::var_os("PROPTEST_RNG_ALGORITHM").is_some() {
            defaults.rng_algorithm
        } else {
            RngAlgorithm::XorShift
        };
        let config = Config {
            cases,
            rng_seed: RngSeed::Fixed(seed),
            rng_algorithm,
            // `tests/<test>.proptest-regressions`: an integration test has no `lib.rs` for
            // proptest's default (a parallel `proptest-regressions/` tree) to find.
            failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
                "proptest-regressions",
            ))),
            source_file: Some(self.source_file),
            ..defaults
        };
        eprintln!(
            "{test}: {cases} cases of up to {max_steps} steps, seed {seed} \
             (replay: PROPTEST_RNG_SEED={seed})"
        );
        let steps = Cell::new(0u64);
        let mut runner = TestRunner::new(config);
        let result = quietly(|| {
            runner.run(&strategy, |case| {
                let ran = case
                    .run(None)
                    .map_err(|failure| TestCaseError::fail(failure.to_string()))?;
                steps.set(steps.get() + ran);
                Ok(())
            })
        });
        match result {
            Ok(()) => {}
            Err(TestError::Fail(reason, mut case)) => {
                let shrunk = case.steps_mut().len();
                let mut case = quietly(|| minimize(case));
                // The minimal case once more, traced (a panic in the core shows where, now).
                let trace = Rc::new(RefCell::new(Vec::new()));
                let replay =
                    panic::catch_unwind(AssertUnwindSafe(|| case.run(Some(trace.clone()))));
                let trace = trace.borrow().join("\n");
                panic!(
                    "{reason}\n\nseed {seed}: replay with\n    PROPTEST_RNG_SEED={seed} cargo test \
                     -p switchboard-core --test {test}\n\nminimal case ({} steps; proptest shrank \
                     it to {shrunk}):\n{case:?}\n\ntrace of the minimal case ({}):\n{trace}",
                    case.steps_mut().len(),
                    match replay {
                        Ok(Ok(_)) => {
                            "it passed: the failure depends on more than the case".to_owned()
                        }
                        Ok(Err(failure)) => failure.to_string(),
                        Err(_) => "the core panicked".to_owned(),
                    }
                );
            }
            Err(TestError::Abort(why)) => panic!("proptest gave up: {why} (seed {seed})"),
        }
        let steps = steps.get();
        eprintln!("{test}: {steps} steps executed in {cases} cases");
        if cases >= self.cases {
            assert!(
                steps >= self.min_steps,
                "only {steps} steps executed in {cases} cases: the weights or lengths drifted"
            );
        }
    }
}

/// Runs `f` with the panics of this thread kept quiet: while proptest shrinks a case that
/// panics in the core, the default hook would print every attempt.
fn quietly<T>(f: impl FnOnce() -> T) -> T {
    let default: Arc<dyn Fn(&PanicHookInfo<'_>) + Send + Sync> = Arc::from(panic::take_hook());
    let checker = thread::current().id();
    let others = default.clone();
    panic::set_hook(Box::new(move |info| {
        if thread::current().id() != checker {
            others(info);
        }
    }));
    let result = f();
    panic::set_hook(Box::new(move |info| default(info)));
    result
}

/// How `case` fails: after how many steps, and which invariant (or a panic in the core).
fn failure<C: Case>(case: &C) -> Option<(usize, String)> {
    match panic::catch_unwind(AssertUnwindSafe(|| case.run(None))) {
        Ok(Ok(_)) => None,
        Ok(Err(failure)) => Some((failure.steps, failure.invariant().to_owned())),
        Err(_) => Some((usize::MAX, "a panic".to_owned())),
    }
}

/// Shrinks a failing case further than proptest does: cuts the steps after the failing one
/// (they never ran), then deletes steps one at a time, over and over, while the case still fails
/// the same invariant. proptest deletes steps in one sweep before it simplifies them, so a step
/// that became useless once another was simplified stays.
fn minimize<C: Case>(mut case: C) -> C {
    let Some((ran, invariant)) = failure(&case) else {
        return case;
    };
    case.steps_mut().truncate(ran);
    loop {
        let before = case.steps_mut().len();
        let mut i = 0;
        while i < case.steps_mut().len() {
            let mut candidate = case.clone();
            candidate.steps_mut().remove(i);
            match failure(&candidate) {
                Some((ran, same)) if same == invariant => {
                    candidate.steps_mut().truncate(ran);
                    case = candidate;
                }
                _ => i += 1,
            }
        }
        if case.steps_mut().len() == before {
            return case;
        }
    }
}
