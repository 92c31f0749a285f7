//! `shoal-bench`: measures the real worker pipeline against a raw
//! librdkafka consume→produce loop on the same broker, in the same run (see
//! `shoal_tools::bench`).

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    shoal_tools::bench::main().await;
}
