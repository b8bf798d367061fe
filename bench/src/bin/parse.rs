//! Streaming response parse benchmark (issue: Kareo client).
//!
//! Builds a GetPatients response of about `--mb` MB (default 100) from the simulator's
//! synthetic patients, then, each in a fresh child process so that peak RSS is per phase:
//!
//! - `bare`: a bare quick-xml buffered event loop over the file (the physical limit here);
//! - `typed`: kareo's streaming reader over the same file, one typed record at a time;
//! - `http`: the same response streamed over HTTP from the simulator into the client, the
//!   simulator sending the file's bytes (rendered beforehand), then rendering as it sends;
//! - `drain`: either body over HTTP, counted and dropped: the ceiling of the `http` phase.
//!
//! Prints a table: MB/s, ratio to the bare loop measured in the same run, peak RSS.
//!
//!     cargo run --release -p kareo-dock-bench --bin bench-parse [-- --mb 100 --runs 3]

use std::io::{BufReader, BufWriter, Write};
use std::time::Instant;

use kareo_dock_bench::{mb_per_s, mib, peak_rss_bytes, run_child};

const OP: &str = "GetPatients";

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(phase) = arg(&args, "--phase") {
        let file = arg(&args, "--file").expect("--file");
        let result = match phase.as_str() {
            "bare" => bare(&file),
            "typed" => typed(&file),
            "http" => http(&arg(&args, "--url").expect("--url")),
            "drain" => drain(&arg(&args, "--url").expect("--url")),
            other => panic!("unknown phase {other}"),
        };
        println!("{result}");
        return;
    }
    let mb: u64 = arg(&args, "--mb")
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let runs: usize = arg(&args, "--runs")
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let tz = chrono_tz::America::New_York;

    // Size one record, then write enough of them for the target size.
    let mut probe = Vec::new();
    kareo_sim::render_list_response(
        OP,
        (0..200).map(|i| kareo_sim::synthetic_patient(i, tz)),
        tz,
        &mut probe,
    )
    .unwrap();
    let per = probe.len() as u64 / 200;
    let n = mb * 1_000_000 / per;
    let path = std::env::temp_dir().join(format!("kareo-bench-{}.xml", std::process::id()));
    {
        let f = std::fs::File::create(&path).unwrap();
        let mut w = BufWriter::with_capacity(1 << 20, f);
        kareo_sim::render_list_response(
            OP,
            (0..n).map(|i| kareo_sim::synthetic_patient(i, tz)),
            tz,
            &mut w,
        )
        .unwrap();
        w.flush().unwrap();
    }
    let bytes = std::fs::metadata(&path).unwrap().len();
    if let Some(keep) = arg(&args, "--write-only") {
        std::fs::rename(&path, &keep).unwrap();
        println!("wrote {keep}: {bytes} bytes, {n} records");
        return;
    }
    let file = path.to_str().unwrap().to_string();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let sim = rt.block_on(kareo_sim::KareoSim::start(kareo_sim::SimConfig {
        enforce_throttle: false,
        ..Default::default()
    }));
    sim.set_bulk_patients(Some(n));
    let url = sim.url();

    // Each phase's best of `runs`, the phases taken in turn round after round: the machine's
    // load drifts over seconds, and a ratio is fair only when both sides saw the same drift.
    let best = |phases: &[(&str, &[&str])]| -> Vec<(f64, u64, u64)> {
        let mut out = vec![(f64::MAX, 0u64, 0u64); phases.len()];
        for _ in 0..runs {
            for (i, (phase, extra)) in phases.iter().enumerate() {
                let mut a = vec!["--phase", phase, "--file", &file];
                a.extend_from_slice(extra);
                let r = run_child(&a);
                let o = &mut out[i];
                o.0 = o.0.min(r["secs"].as_f64().unwrap());
                o.1 = o.1.max(r["peak_rss"].as_u64().unwrap());
                o.2 = r["count"].as_u64().unwrap();
            }
        }
        out
    };
    let http_args = ["--url", url.as_str()];
    // The simulator renders its synthetic patients as the client reads: one core's rendering
    // rate caps what it sends. Measured as such, then from the same bytes rendered beforehand
    // (`set_bulk_rendered`), so that the HTTP phases measure the client, not the simulator.
    let live = best(&[("http", &http_args), ("drain", &http_args)]);
    let [(live_s, live_rss, live_records), (live_drain_s, live_drain_rss, live_bytes)] = live[..]
    else {
        unreachable!()
    };
    sim.set_bulk_rendered(Some(std::fs::read(&path).unwrap().into()));
    let main = best(&[
        ("bare", &[]),
        ("typed", &[]),
        ("http", &http_args),
        ("drain", &http_args),
    ]);
    sim.set_bulk_rendered(None);
    let [(bare_s, bare_rss, events), (typed_s, typed_rss, records), (http_s, http_rss, http_records), (drain_s, drain_rss, drain_bytes)] =
        main[..]
    else {
        unreachable!()
    };
    for (what, got, want) in [
        ("typed reader: records", records, n),
        ("client over HTTP: records", http_records, n),
        ("client, simulator rendering: records", live_records, n),
        ("drained body: bytes", drain_bytes, bytes),
        (
            "drained body, simulator rendering: bytes",
            live_bytes,
            bytes,
        ),
    ] {
        assert_eq!(got, want, "{what}");
    }
    std::fs::remove_file(&path).ok();

    let bare_mbs = mb_per_s(bytes, bare_s);
    println!("GetPatients response: {:.1} MB, {n} records, {events} XML events; best of {runs} runs, each phase in its own process, the phases in turn\n", bytes as f64 / 1e6);
    println!("| phase | MB/s | × bare loop | peak RSS (MiB) |");
    println!("|---|---:|---:|---:|");
    for (name, secs, rss) in [
        ("bare quick-xml event loop (file)", bare_s, bare_rss),
        ("kareo typed streaming reader (file)", typed_s, typed_rss),
        (
            "kareo client over HTTP from the simulator (body rendered beforehand)",
            http_s,
            http_rss,
        ),
        (
            "the same HTTP body drained, not parsed (the transport's ceiling)",
            drain_s,
            drain_rss,
        ),
        (
            "kareo client over HTTP, the simulator rendering as it sends",
            live_s,
            live_rss,
        ),
        (
            "that body drained, not parsed (the simulator's rendering rate)",
            live_drain_s,
            live_drain_rss,
        ),
    ] {
        let mbs = mb_per_s(bytes, secs);
        println!(
            "| {name} | {mbs:.0} | {:.2} | {:.1} |",
            mbs / bare_mbs,
            mib(rss)
        );
    }
    println!("\ntargets: typed ≥ 0.80× bare, client over HTTP ≥ 0.60× bare; peak RSS ≤ 32 MiB (HTTP phases: the client process only; the simulator runs in the parent, on the machine's other core)");
}

fn result(secs: f64, count: u64) -> String {
    serde_json::json!({"secs": secs, "count": count, "peak_rss": peak_rss_bytes()}).to_string()
}

fn bare(file: &str) -> String {
    let f = std::fs::File::open(file).unwrap();
    let mut r = quick_xml::Reader::from_reader(BufReader::with_capacity(64 * 1024, f));
    let mut buf = Vec::with_capacity(4096);
    let mut n = 0u64;
    let t = Instant::now();
    loop {
        match r.read_event_into(&mut buf).unwrap() {
            quick_xml::events::Event::Eof => break,
            _ => n += 1,
        }
        buf.clear();
    }
    result(t.elapsed().as_secs_f64(), n)
}

fn typed(file: &str) -> String {
    let f = std::fs::File::open(file).unwrap();
    let op = kareo::op(OP).unwrap();
    let mut r = kareo::ResponseReader::new(op, BufReader::with_capacity(64 * 1024, f));
    let mut n = 0u64;
    let t = Instant::now();
    while let Some(rec) = r.next_record().unwrap() {
        std::hint::black_box(&rec);
        n += 1;
    }
    result(t.elapsed().as_secs_f64(), n)
}

/// The simulator's credentials and a GetPatients request for every patient, on a runtime for
/// one phase.
fn on_sim<F: std::future::Future<Output = String>>(
    phase: impl FnOnce(kareo::Credentials, serde_json::Value) -> F,
) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sim_cfg = kareo_sim::SimConfig::default();
    let creds = kareo::Credentials {
        customer_key: sim_cfg.customer_key,
        user: sim_cfg.user,
        password: sim_cfg.password,
    };
    let body = serde_json::json!({"Fields": {}, "Filter": {"PracticeName": sim_cfg.practice_name}});
    rt.block_on(phase(creds, body))
}

/// The GetPatients body over HTTP, counted and dropped: the simulator's send rate, the ceiling
/// of the `http` phase on this machine (returns bytes, not records).
fn drain(url: &str) -> String {
    on_sim(|creds, body| async move {
        let op = kareo::op(OP).unwrap();
        let xml = kareo::envelope::write(op, &creds, "bench", &body).unwrap();
        let t = Instant::now();
        let mut resp = https::client()
            .post(url)
            .header("Content-Type", "text/xml; charset=utf-8")
            .header("SOAPAction", kareo::envelope::soap_action(OP))
            .body(xml)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "the simulator answered");
        let mut n = 0u64;
        while let Some(chunk) = resp.chunk().await.unwrap() {
            n += chunk.len() as u64;
        }
        result(t.elapsed().as_secs_f64(), n)
    })
}

fn http(url: &str) -> String {
    on_sim(|creds, body| async move {
        let client = kareo::KareoClient::new(kareo::ClientConfig {
            endpoint: url.to_string(),
            ..Default::default()
        })
        .unwrap();
        let t = Instant::now();
        let mut s = client
            .stream(&creds, kareo::op(OP).unwrap(), &body)
            .await
            .unwrap();
        let mut n = 0u64;
        while let Some(rec) = s.next().await.unwrap() {
            std::hint::black_box(&rec);
            n += 1;
        }
        result(t.elapsed().as_secs_f64(), n)
    })
}
