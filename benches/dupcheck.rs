//! `dupcheck FILE...`: exits 1 if any 32-byte stretch occurs twice across
//! (or within) the files, naming both places; else prints how much it
//! checked and exits 0. Used by `benches/soak.sh` on sampled output.

#[path = "../tests/it/common/stretch.rs"]
mod stretch;

fn main() {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        eprintln!("usage: dupcheck FILE...");
        std::process::exit(2);
    }
    let outputs: Vec<Vec<u8>> = paths
        .iter()
        .map(|p| {
            std::fs::read(p).unwrap_or_else(|e| {
                eprintln!("dupcheck: {p}: {e}");
                std::process::exit(2);
            })
        })
        .collect();
    let total: usize = outputs.iter().map(Vec::len).sum();
    match stretch::find_repeated_stretch(&outputs) {
        None => println!(
            "no repeated {}-byte stretch in {total} bytes of {} samples",
            stretch::STRETCH,
            outputs.len()
        ),
        Some(r) => {
            println!(
                "REPEATED: {} bytes at {} offset {} also at {} offset {}",
                stretch::STRETCH,
                paths[r.second.0],
                r.second.1,
                paths[r.first.0],
                r.first.1
            );
            std::process::exit(1);
        }
    }
}
