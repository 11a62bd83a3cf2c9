//! cograft: a Raft-replicated cognitive graph database. This binary is the thin shell: the CLI
//! (`serve`, `cluster up`, `demo`, `admin`, `atom`, `link`), configuration, the HTTP API and
//! node start-up. Everything that runs inside a node lives in `cograft-actors`.

mod api;
mod atomese;
mod bench;
mod cli;
mod client;
mod cluster;
mod config;
mod demo;
mod node;
mod progress;
mod transfer;

/// jemalloc instead of glibc's malloc, whose bookkeeping took ~40% of apply's CPU.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    if let Err(e) = cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
