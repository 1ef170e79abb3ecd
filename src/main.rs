//! `chatd`: one binary, every role. This file only parses the command line (flags and
//! `CHATD_*` environment variables) and calls into the crates.

mod admin;
mod chaos;
mod cli;
mod dev;

use clap::Parser;

/// jemalloc instead of the system allocator: thousands of connections and streams allocate
/// and free many small buffers; jemalloc keeps fragmentation and retained memory (RSS) lower.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Return freed pages to the OS within a second (by a background thread) instead of jemalloc's
/// default ten, so RSS follows the load instead of its peak.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    if let Err(error) = cli::reject_unknown_env(std::env::vars()) {
        eprintln!("error: {error}");
        return std::process::ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
