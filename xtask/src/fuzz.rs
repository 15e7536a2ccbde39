//! `cargo xtask fuzz`: builds the cargo-fuzz targets of `fuzz/` and runs
//! each for a while, then prints executions per second and coverage per
//! target as libFuzzer reports them.
//!
//! ```text
//! cargo xtask fuzz [--seconds N] [--targets a,b] [--record] [--build-only]
//! ```
//!
//! - `--seconds N`: how long each target runs (default 60).
//! - `--targets a,b`: only these targets (default: all of [`TARGETS`]).
//! - `--record`: first record the seed corpora again from real traffic
//!   (`fuzz/corpus/`, see `fuzz/record/record_corpus.rs`).
//! - `--build-only`: build the targets and stop.
//!
//! Each target reads its committed seeds in `fuzz/corpus/<target>/` (left
//! untouched) and keeps what it finds in `fuzz/target/work-corpus/<target>/`,
//! so a later run goes on from there. A crash, a timeout (an input running
//! longer than [`TIMEOUT_SECS`]) or an input that makes the process grow
//! past libFuzzer's memory limit fails the run; the input is saved in
//! `fuzz/artifacts/<target>/` and can be replayed with
//! `cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>`.
//!
//! cargo-fuzz needs `-Z` flags: the nightly toolchain is used when rustup
//! has one, otherwise the default toolchain with `RUSTC_BOOTSTRAP=1`.
//! cargo-fuzz itself comes from crates.io (`cargo install cargo-fuzz --locked`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Every fuzz target, in the order they run.
pub const TARGETS: &[&str] = &[
    "wire_request",
    "wire_response",
    "template",
    "token_model",
    "server",
    "store_records",
    "extraction",
    "abi",
];

/// An input that runs longer than this is a hang.
pub const TIMEOUT_SECS: u32 = 30;

const USAGE: &str =
    "usage: cargo xtask fuzz [--seconds N] [--targets a,b] [--record] [--build-only]";

struct Options {
    seconds: u32,
    targets: Vec<String>,
    record: bool,
    build_only: bool,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        seconds: 60,
        targets: TARGETS.iter().map(|t| t.to_string()).collect(),
        record: false,
        build_only: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                let v = it.next().ok_or(USAGE)?;
                o.seconds = v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("--seconds wants a whole number > 0, not {v:?}"))?;
            }
            "--targets" => {
                let v = it.next().ok_or(USAGE)?;
                o.targets = v.split(',').map(|t| t.trim().to_string()).collect();
                for t in &o.targets {
                    if !TARGETS.contains(&t.as_str()) {
                        return Err(format!(
                            "no fuzz target {t:?}; there are {}",
                            TARGETS.join(", ")
                        ));
                    }
                }
            }
            "--record" => o.record = true,
            "--build-only" => o.build_only = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(o)
}

/// `cargo` with the toolchain cargo-fuzz needs, in `fuzz/`.
fn cargo_fuzz(fuzz_dir: &Path, nightly: bool) -> Command {
    let mut c = Command::new("cargo");
    if nightly {
        c.arg("+nightly");
    } else {
        c.env("RUSTC_BOOTSTRAP", "1");
    }
    c.arg("fuzz").current_dir(fuzz_dir);
    // The workspace's own settings must not leak into the fuzz build.
    c.env_remove("CARGO_TARGET_DIR");
    c.env_remove("RUSTFLAGS");
    c
}

fn has_nightly() -> bool {
    Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.starts_with("nightly"))
        })
        .unwrap_or(false)
}

fn run(c: &mut Command) -> Result<(), String> {
    println!("$ {c:?}");
    let status = c.status().map_err(|e| format!("cannot run {c:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{c:?} exited with {status}"))
    }
}

/// What libFuzzer said at the end of one run.
#[derive(Default, Debug)]
struct Report {
    execs: u64,
    exec_per_sec: u64,
    cov: u64,
    features: u64,
    corpus: u64,
    peak_rss_mb: u64,
    failure: Option<String>,
}

fn number_after(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// Read libFuzzer's output: the last status line (`#N ... cov: C ft: F
/// corp: K/...`) and the final statistics (`-print_final_stats=1`).
fn read_report(log: &str) -> Report {
    let mut r = Report::default();
    for line in log.lines() {
        if line.starts_with('#') && line.contains("cov:") {
            r.cov = number_after(line, "cov:").unwrap_or(r.cov);
            r.features = number_after(line, "ft:").unwrap_or(r.features);
            r.corpus = number_after(line, "corp:").unwrap_or(r.corpus);
            r.execs = number_after(line, "#").unwrap_or(r.execs);
        }
        if let Some(n) = number_after(line, "stat::number_of_executed_units:") {
            r.execs = n;
        }
        if let Some(n) = number_after(line, "stat::average_exec_per_sec:") {
            r.exec_per_sec = n;
        }
        if let Some(n) = number_after(line, "stat::peak_rss_mb:") {
            r.peak_rss_mb = n;
        }
        let failed = [
            "ERROR: libFuzzer:",
            "panicked at",
            "ERROR: AddressSanitizer",
        ]
        .iter()
        .any(|k| line.contains(k));
        if failed && r.failure.is_none() {
            r.failure = Some(line.trim().to_string());
        }
        if line.contains("Test unit written to") {
            let f = r.failure.take().unwrap_or_default();
            r.failure = Some(format!("{f}; {}", line.trim()));
        }
    }
    r
}

/// Run one target for `seconds`; its whole output goes to `log`.
fn fuzz_one(
    fuzz_dir: &Path,
    nightly: bool,
    target: &str,
    seconds: u32,
    log: &Path,
) -> Result<Report, String> {
    let work = fuzz_dir.join("target/work-corpus").join(target);
    let seeds = fuzz_dir.join("corpus").join(target);
    fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    // A target with no recorded seeds (`store_records`) starts from nothing.
    fs::create_dir_all(&seeds).map_err(|e| format!("{}: {e}", seeds.display()))?;
    let out = fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let mut c = cargo_fuzz(fuzz_dir, nightly);
    c.args(["run", "--debug-assertions", target])
        .arg(&work)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={TIMEOUT_SECS}"))
        .arg("-print_final_stats=1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    println!("$ {c:?}   (output in {})", log.display());
    let status = c
        .status()
        .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
    let text = fs::read_to_string(log).unwrap_or_default();
    let mut r = read_report(&text);
    if !status.success() && r.failure.is_none() {
        r.failure = Some(format!("cargo fuzz exited with {status}"));
    }
    Ok(r)
}

/// `cargo xtask fuzz ...`
pub fn fuzz(root: &Path, args: &[String]) -> Result<(), String> {
    let o = parse(args)?;
    let fuzz_dir = root.join("fuzz");
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        return Err("cargo-fuzz is not installed: run `cargo install cargo-fuzz --locked`".into());
    }
    let nightly = has_nightly();
    if !nightly {
        println!("no nightly toolchain: building with the default one and RUSTC_BOOTSTRAP=1");
    }
    let started = Instant::now();
    run(cargo_fuzz(&fuzz_dir, nightly).args(["build", "--debug-assertions"]))?;
    println!("fuzz targets built in {:.0?}", started.elapsed());
    if o.record {
        let corpus = fuzz_dir.join("corpus");
        // The recorded targets' seeds only: `abi`'s are not recorded.
        for t in TARGETS.iter().filter(|t| **t != "abi") {
            let _ = fs::remove_dir_all(corpus.join(t));
        }
        let bin = fuzz_dir.join("target/x86_64-unknown-linux-gnu/release/record_corpus");
        run(Command::new(bin).arg(&corpus))?;
    }
    if o.build_only {
        return Ok(());
    }
    let logs = fuzz_dir.join("target/logs");
    fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let mut reports = Vec::new();
    for t in &o.targets {
        println!("\n--- fuzz {t} for {} s", o.seconds);
        let log: PathBuf = logs.join(format!("{t}.log"));
        let r = fuzz_one(&fuzz_dir, nightly, t, o.seconds, &log)?;
        println!(
            "{t}: {} executions, {}/s, coverage {} edges ({} features), corpus {}{}",
            r.execs,
            r.exec_per_sec,
            r.cov,
            r.features,
            r.corpus,
            r.failure
                .as_deref()
                .map(|f| format!(" — FAILED: {f}"))
                .unwrap_or_default()
        );
        reports.push((t.clone(), r));
    }
    println!(
        "\n{:<14} {:>12} {:>9} {:>10} {:>10} {:>8} {:>8}  result",
        "target", "executions", "exec/s", "cov edges", "features", "corpus", "rss MB"
    );
    for (t, r) in &reports {
        println!(
            "{t:<14} {:>12} {:>9} {:>10} {:>10} {:>8} {:>8}  {}",
            r.execs,
            r.exec_per_sec,
            r.cov,
            r.features,
            r.corpus,
            r.peak_rss_mb,
            if r.failure.is_some() { "FAILED" } else { "ok" }
        );
    }
    println!(
        "({} s per target, {:.0?} in all)",
        o.seconds,
        started.elapsed()
    );
    let failed: Vec<String> = reports
        .iter()
        .filter_map(|(t, r)| r.failure.as_ref().map(|f| format!("{t}: {f}")))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "fuzzing found problems (inputs in fuzz/artifacts/):\n  {}",
            failed.join("\n  ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_reports() {
        let log = "\
#2	INITED cov: 1110 ft: 1946 corp: 58/14402b exec/s: 0 rss: 43Mb
#2913520	DONE   cov: 1358 ft: 2707 corp: 879/19Kb lim: 4096 exec/s: 182095 rss: 498Mb
Done 2913520 runs in 16 second(s)
stat::number_of_executed_units: 2913520
stat::average_exec_per_sec:     182095
stat::new_units_added:          1
stat::peak_rss_mb:              498
";
        let r = read_report(log);
        assert_eq!(r.execs, 2_913_520);
        assert_eq!(r.exec_per_sec, 182_095);
        assert_eq!(r.cov, 1358);
        assert_eq!(r.features, 2707);
        assert_eq!(r.corpus, 879);
        assert_eq!(r.peak_rss_mb, 498);
        assert!(r.failure.is_none());
        let crash = "thread '<unnamed>' panicked at src/x.rs:1:2:\n==1== ERROR: libFuzzer: deadly signal\nTest unit written to ./artifacts/t/crash-1\n";
        let r = read_report(crash);
        assert!(r.failure.unwrap().contains("crash-1"));
    }

    #[test]
    fn parses_options() {
        let a = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let o = parse(&a(&["--seconds", "5", "--targets", "server,template"])).unwrap();
        assert_eq!(o.seconds, 5);
        assert_eq!(o.targets, ["server", "template"]);
        assert!(parse(&a(&["--targets", "nope"])).is_err());
        assert!(parse(&a(&["--seconds", "0"])).is_err());
        assert_eq!(parse(&[]).unwrap().targets.len(), TARGETS.len());
    }
}
