//! The `logstorfs` binary: everything is in [`logstorfs::cli`].

fn main() {
    std::process::exit(logstorfs::cli::main());
}
