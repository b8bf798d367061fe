//! Shared pieces of the benchmark binaries: peak memory of the current process, and running
//! one phase of a benchmark in a fresh child process so that its peak RSS is its own.

use std::process::Command;

/// Peak resident set size of this process so far (VmHWM), in bytes. Linux only.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Runs this same executable with `args` and parses the last line it prints as JSON.
pub fn run_child(args: &[&str]) -> serde_json::Value {
    let exe = std::env::current_exe().expect("own path");
    let out = Command::new(exe).args(args).output().expect("child runs");
    assert!(
        out.status.success(),
        "child {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().expect("child printed a result");
    serde_json::from_str(last).expect("child result is JSON")
}

/// Megabytes (10^6 bytes) per second.
pub fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs
}

/// Mebibytes.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The value after `name` on the command line, parsed; `default` when absent or unparsable.
pub fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time of the calling thread, in nanoseconds (Linux `schedstat`).
pub fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// The Kareo client of a benchmark against the simulator: no throttle waits (the simulator
/// does not throttle here), this request timeout.
pub fn kareo_client(sim: &kareo_sim::KareoSim, timeout: std::time::Duration) -> kareo::KareoClient {
    let kareo = kareo::KareoClient::new(kareo::ClientConfig {
        endpoint: sim.url(),
        timeout,
        ..kareo::ClientConfig::default()
    })
    .unwrap();
    kareo.throttle().set_live(
        &sim.config().customer_key,
        kareo::schema::op_names().map(|o| (o.to_string(), std::time::Duration::ZERO)),
    );
    kareo
}

/// The Dock port of a benchmark against the simulator, unthrottled.
pub fn dock_tasks(sim: &dock_sim::DockSim) -> tasks::dock::DockTasks {
    tasks::dock::DockTasks::new(
        dock::DockClient::new(dock::DockConfig {
            api_url: sim.api_url(),
            auth_url: sim.auth_url(),
            rate_per_sec: 0,
            ..dock::DockConfig::default()
        })
        .unwrap(),
    )
}

/// The secrets of the benchmark tenant: `kareo/bench` and `dock/bench` for the simulators.
pub fn bench_secrets(
    kareo: &kareo_sim::KareoSim,
    dock: &dock_sim::DockSim,
) -> domain::local::LocalSecrets {
    let c = kareo.config();
    domain::local::LocalSecrets::from_map(std::collections::BTreeMap::from([
        (
            "kareo/bench".to_string(),
            serde_json::json!({"customer_key": c.customer_key, "user": c.user, "password": c.password}),
        ),
        (
            "dock/bench".to_string(),
            serde_json::to_value(dock.secret()).unwrap(),
        ),
    ]))
}
