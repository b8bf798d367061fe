//! Start-to-ready and size of each function binary (issue: prove it).
//!
//! "Ready" is the moment a function, started as Lambda starts it, asks the Runtime API for its
//! first event (`GET /2018-06-01/runtime/invocation/next`): everything `main` builds before the
//! first invocation — logging, the AWS SDK config and clients, the Kareo and Dock HTTP clients
//! — is inside it. A local listener plays the Runtime API; each binary is started `--runs`
//! times; the table shows the median and the 90th percentile, and the stripped size.
//!
//!     cargo build --release --bin poll --bin task --bin write --bin webhook
//!     cargo run --release -p kareo-dock-bench --bin bench-start [-- --dir target/release --runs 30]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Starts `bin` against a fresh Runtime API listener; the time until it asks for an event.
fn start_to_ready(bin: &std::path::Path) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let started = Instant::now();
    let mut child = Command::new(bin)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/bench")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("AWS_SESSION_TOKEN", "bench")
        .env("KAREO_DOCK_FAMILY", "payments")
        .env("KAREO_DOCK_TABLE", "bench")
        .env("KAREO_DOCK_TASK_FUNCTION", "bench-task")
        // The webhook function reads its tenant directory before it is ready: here DynamoDB
        // answers at once (a closed port, one attempt), so the figure is the start itself.
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_MAX_ATTEMPTS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let (stream, _) = listener.accept().unwrap();
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).unwrap();
    let ready = started.elapsed();
    assert!(
        line.starts_with("GET /2018-06-01/runtime/invocation/next"),
        "{}: {line}",
        bin.display()
    );
    let _ = child.kill();
    let _ = child.wait();
    ready
}

fn main() {
    let dir = std::path::PathBuf::from(arg("--dir").unwrap_or_else(|| {
        format!(
            "{}/release",
            std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into())
        )
    }));
    let runs: usize = arg("--runs").and_then(|v| v.parse().ok()).unwrap_or(30);
    println!("Each function binary started {runs} times as Lambda starts it (a local Runtime API); ready = its first `GET …/invocation/next` (the webhook function's read of its tenant directory before that answered at once: on Lambda it is one DynamoDB query of the init phase).\n");
    println!("| function | start → ready, median | p90 | stripped size | targets |");
    println!("|---|---:|---:|---:|---|");
    for name in ["poll", "task", "write", "webhook"] {
        let bin = dir.join(name);
        let size = std::fs::metadata(&bin)
            .unwrap_or_else(|e| panic!("{}: {e} (build it with --release first)", bin.display()))
            .len();
        // One unmeasured start warms the page cache, as a warm Lambda host's would be.
        start_to_ready(&bin);
        let mut times: Vec<Duration> = (0..runs).map(|_| start_to_ready(&bin)).collect();
        times.sort();
        let median = times[runs / 2];
        let p90 = times[(runs * 9 / 10).min(runs - 1)];
        println!(
            "| {name} | {:.2} ms | {:.2} ms | {:.1} MB | ≤ 3 ms, ≤ 12 MB |",
            median.as_secs_f64() * 1e3,
            p90.as_secs_f64() * 1e3,
            size as f64 / 1e6
        );
    }
}
