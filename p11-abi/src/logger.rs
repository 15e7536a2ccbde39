//! The module's logger: `HSMLINK_LOG` (or `log` in the config file) sets the
//! level (error, warn, info, debug, trace, off; default warn),
//! `HSMLINK_LOG_FILE` a file to append to (default standard error). Installed once; if the host process already has
//! a `log` logger, that one is used. Nothing logged ever holds a secret.

use std::io::Write;
use std::sync::Mutex;

struct Logger {
    file: Option<Mutex<std::fs::File>>,
}

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let line = format!(
            "hsmlink[{}] {}: {}\n",
            std::process::id(),
            r.level(),
            r.args()
        );
        match &self.file {
            Some(f) => {
                if let Ok(mut f) = f.lock() {
                    let _ = f.write_all(line.as_bytes());
                }
            }
            None => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

/// Install the logger once per process with `level` (default warn) and
/// `file` (default standard error).
pub fn init(level: Option<&str>, file: Option<&str>) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let level = level
            .and_then(|v| v.parse::<log::LevelFilter>().ok())
            .unwrap_or(log::LevelFilter::Warn);
        let file = file.and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .ok()
                .map(Mutex::new)
        });
        let logger = Box::leak(Box::new(Logger { file }));
        if log::set_logger(logger).is_ok() {
            log::set_max_level(level);
        }
    });
}
