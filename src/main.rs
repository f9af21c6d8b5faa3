//! The `logstorfs` binary: everything is in [`logstorfs::cli`].

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    std::process::exit(logstorfs::cli::main());
}
