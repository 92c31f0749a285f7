//! `shoal-chaos`: runs real Shoal processes under a seeded fault schedule
//! and checks the history (see `shoal_tools::chaos` and `--help`).

use clap::Parser;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let status = shoal_tools::chaos::run(shoal_tools::chaos::Cli::parse()).await;
    std::process::exit(status);
}
