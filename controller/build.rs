//! The `faultline` binary is linked as a position-dependent executable: a PIE of this size
//! makes the dynamic loader apply ~35k relocations and copy-on-write ~130 pages of
//! relocated data at every start, which is most of a CLI command's start-up (measured in
//! docs/benchmarks.md). Only the link changes; the code is the same.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
