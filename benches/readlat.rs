//! Latency of single reads: `readlat PATH BLOCK COUNT` reads COUNT blocks of
//! BLOCK bytes from PATH, one `read()` each, and prints the p50, p99 and
//! maximum time per read in microseconds as `p50 p99 max`.
//! Used by `benches/throughput.sh`.

use std::fs::File;
use std::io::Read;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: readlat PATH BLOCK COUNT");
        std::process::exit(2);
    }
    let block: usize = args[2].parse().expect("BLOCK is a number");
    let count: usize = args[3].parse().expect("COUNT is a number");
    let mut f = File::open(&args[1]).expect("open PATH");
    let mut buf = vec![0u8; block];
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        let n = f.read(&mut buf).expect("read");
        times.push(t.elapsed());
        assert!(n > 0, "end of file");
    }
    times.sort_unstable();
    // The nearest rank: index round(p * (len - 1)), in whole steps.
    let pct = |per_mille: usize| {
        let i = ((times.len() - 1) * per_mille + 500) / 1000;
        times[i].as_secs_f64() * 1e6
    };
    println!("{:.1} {:.1} {:.1}", pct(500), pct(990), pct(1000));
}
