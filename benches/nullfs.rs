//! A null FUSE server, the ceiling for pilfered's FUSE reads:
//! `nullfs MOUNTPOINT [TRANSPORT [THREADS]]` serves one file, `bits`, whose
//! reads return zeros at once. It is pilfered's own code but for the bytes:
//! the same mount call and options, the same `Device` and open flags, and
//! the same transport (`TRANSPORT` as `--fuse-transport` takes it, default
//! `auto`; `THREADS` as `--fuse-threads`, default 2). Whatever pilfered
//! reaches against it is the share of what FUSE allows over that
//! transport. It is the daemon itself, serving zeros: it logs the same
//! serving line (with the transport in use) on stderr once it serves, and
//! runs until SIGINT or SIGTERM, then unmounts. Used by
//! `benches/throughput.sh`; not part of pilfered.

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
    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Info)
        .init();
    if let Err(e) = pilfered::internal::null_server(&mount, &transport, threads) {
        eprintln!("nullfs: {e}");
        std::process::exit(1);
    }
}
