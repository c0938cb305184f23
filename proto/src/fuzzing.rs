//! Test support: a small time-bounded mutational fuzzer for the crates' `fuzz_*` tests.
//! Inputs are seeds (valid examples) mutated with random edits and tokens that break
//! parsers (huge numbers, NaN, signs, separators, a byte-order mark, long runs); the
//! property is "no panic". `FAULTLINE_FUZZ_SECONDS` sets the budget per target (default
//! 1 s, so a plain `cargo test` stays quick; `cargo xtask test` gives each 60 s).

use std::time::{Duration, Instant};

/// xorshift64*: no dependency, reproducible from the seed it prints.
pub struct Rng(u64);

impl Rng {
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next_u64() % n as u64) as usize }
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// Tokens that have broken parsers before.
pub const TOKENS: &[&str] = &[
    "0",
    "-1",
    "-5",
    "1e400",
    "nan",
    "NaN",
    ".nan",
    "inf",
    "-inf",
    "18446744073709551615",
    "99999999999999999999999",
    "4294967296",
    "0.0000001",
    "%",
    "ms",
    "us",
    "s",
    "m",
    "h",
    "mbit",
    "kbit",
    "gbit",
    "bps",
    "k",
    "m",
    "g",
    "..",
    "/",
    ":",
    ",",
    "=",
    "@",
    "-",
    "--",
    " ",
    "\n",
    "\t",
    "\u{feff}",
    "\0",
    "é",
    "💥",
    "'",
    "\"",
    "[",
    "]",
    "{",
    "}",
    "*",
    "&a",
    "!!",
    "~",
    "null",
    "true",
    "false",
    "for",
    "<",
    ">",
    "p99",
    "error_rate",
    "rate",
    "role=db",
    "10.0.0.0/8",
    "::1",
    "fd00::/64",
    "0.0.0.0/0",
    "/33",
    "eth0",
];

/// One random edit of `input`.
pub fn mutate(rng: &mut Rng, input: &str) -> String {
    let mut s: Vec<char> = input.chars().collect();
    let edits = 1 + rng.below(4);
    for _ in 0..edits {
        let at = rng.below(s.len() + 1);
        match rng.below(6) {
            0 if !s.is_empty() => {
                let end = (at + 1 + rng.below(8)).min(s.len());
                s.drain(at.min(s.len())..end);
            }
            1 => s.splice(at..at, rng.pick(TOKENS).chars()).for_each(drop),
            2 if at < s.len() => s[at] = char::from(rng.below(128) as u8),
            3 => {
                // A long run: what an attacker sends to make errors and buffers huge.
                let run: String =
                    std::iter::repeat_n(*rng.pick(&['9', 'a', ' ', '-', '[']), 1 + rng.below(5000))
                        .collect();
                s.splice(at..at, run.chars()).for_each(drop);
            }
            4 if !s.is_empty() => {
                // Duplicate a slice (repeated keys, nested structure).
                let from = rng.below(s.len());
                let end = (from + 1 + rng.below(40)).min(s.len());
                let piece: Vec<char> = s[from..end].to_vec();
                s.splice(at..at, piece).for_each(drop);
            }
            _ => s.splice(at..at, rng.pick(TOKENS).chars()).for_each(drop),
        }
    }
    s.into_iter().collect()
}

fn budget() -> Duration {
    let secs = std::env::var("FAULTLINE_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(1.0);
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::from_secs(1))
}

/// Runs `target` on mutations of `seeds` (and the seeds themselves) until the budget is
/// spent; a panic fails the calling test with the input that caused it. Prints and returns
/// the iterations reached.
pub fn run(name: &str, seeds: &[&str], mut target: impl FnMut(&str)) -> u64 {
    let seed = std::env::var("FAULTLINE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(7, |d| d.as_nanos() as u64)
        });
    let mut rng = Rng::new(seed);
    let deadline = Instant::now() + budget();
    let mut iterations = 0u64;
    let mut current: Vec<String> = seeds.iter().map(|s| (*s).to_owned()).collect();
    for s in seeds {
        target(s);
    }
    while Instant::now() < deadline {
        for _ in 0..64 {
            let base = rng.below(current.len());
            let input = mutate(&mut rng, &current[base]);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(&input)));
            assert!(
                result.is_ok(),
                "fuzz {name}: panic on input {input:?} (FAULTLINE_FUZZ_SEED={seed})"
            );
            iterations += 1;
            // Keep exploring from some mutants, so edits accumulate.
            if rng.chance(8) && input.len() < 20_000 {
                current[base] = input;
            } else if rng.chance(4) {
                seeds[base % seeds.len()].clone_into(&mut current[base]);
            }
        }
    }
    println!(
        "fuzz {name}: {iterations} inputs in {:.0} s, 0 panics (seed {seed})",
        budget().as_secs_f64()
    );
    iterations
}
