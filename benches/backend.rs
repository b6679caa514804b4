//! Prints which ChaCha20 backend `pilfered::generator::backend()` reports
//! on this CPU for this build ("AVX-512", "AVX2", ...).
//! Used by `benches/throughput.sh`; not part of pilfered.

fn main() {
    println!("{}", pilfered::generator::backend());
}
