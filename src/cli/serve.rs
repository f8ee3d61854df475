//! `comfyvn-obs serve`

use clap::Args;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on, host:port (default: obs.server.bind, 127.0.0.1:8001). Port 0 picks a free
    /// port; the real address is printed on stderr. A non-loopback address needs COMFYVN_API_TOKEN.
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,
    /// Do not run the file watcher in this process (the webhook worker and dev plugins still run).
    #[arg(long)]
    pub no_watch: bool,
    /// Request worker threads (default: obs.server.workers).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=512))]
    pub workers: Option<u16>,
}
