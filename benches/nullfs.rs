//! A null FUSE server, the ceiling for pilfered's FUSE reads:
//! `nullfs MOUNTPOINT [TRANSPORT [THREADS]]` serves one file, `bits`, whose
//! reads return zeros at once. It is pilfered's own code but for the bytes:
//! the same mount call and options, the same `Device` and open flags, and
//! the same transport (`TRANSPORT` as `--fuse-transport` takes it, default
//! `auto`; `THREADS` as `--fuse-threads`, default 2). Whatever pilfered
//! reaches against it is the share of what FUSE allows over that
//! transport. It prints the transport in use on stdout once it serves, and
//! runs until SIGINT or SIGTERM, then unmounts. Used by
//! `benches/throughput.sh`; not part of pilfered.

use std::io::Write;

fn main() {
    let mut args = std::env::args().skip(1);
    let mount = args
        .next()
        .expect("usage: nullfs MOUNTPOINT [TRANSPORT [THREADS]]");
    let transport = args.next().unwrap_or_else(|| "auto".to_string());
    let threads = args
        .next()
        .map_or(2, |t| t.parse().expect("THREADS is a number"));
    let mount = std::path::absolute(&mount).expect("an absolute path");
    let started = |transport: &str| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{transport}");
        let _ = out.flush();
    };
    if let Err(e) = pilfered::internal::null_server(&mount, &transport, threads, started) {
        eprintln!("nullfs: {e}");
        std::process::exit(1);
    }
}
