//! `cargo xtask package`: the Debian packages of the module and of the
//! server, staged here and built with `dpkg-deb` (no tool to install: dpkg-dev
//! and binutils come with build-essential), into `target/debian/`.
//!
//! - `hsmlink-pkcs11`: `/usr/lib/<multiarch>/pkcs11/libhsmlink_pkcs11.so`,
//!   its p11-kit registration `/usr/share/p11-kit/modules/hsmlink.module`,
//!   and the sample settings `/etc/hsmlink/hsmlink.toml` (a conffile).
//! - `hsmlink-hsm`: `/usr/bin/hsmlink-hsm`, the systemd unit
//!   `hsmlink-hsm.service` (own system user `hsmlink`, data in
//!   `/var/lib/hsmlink`, hardened) and `/etc/default/hsmlink-hsm`; its
//!   postinst makes the user, the data folder and the master key's key file.
//!
//! `--install-test` then installs both with `apt-get`, checks the files,
//! the user and the unit (`systemd-analyze verify`), that `p11-kit
//! list-modules` shows the token, starts the server as the unit would (or
//! finds it started where systemd runs), and runs a pkcs11-tool session whose
//! only environment variable is `HSMLINK_USER` (the rest comes from
//! `/etc/hsmlink/hsmlink.toml`), then the same token through p11-kit (the
//! proxy module, p11tool and the OpenSSL engine by PKCS#11 URI). Finally it
//! removes its HSM user and purges both packages.

use std::env;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{cargo, require_tool, run, run_capture, section, show, step, target_dir, Result};

const MODULE_PACKAGE: &str = "hsmlink-pkcs11";
const SERVER_PACKAGE: &str = "hsmlink-hsm";
/// The Debian revision appended to the workspace version.
const REVISION: &str = "1";
const MAINTAINER: &str = "hsmlink developers <hsmlink@example.invalid>";
const HOMEPAGE: &str = "https://example.invalid/hsmlink";

/// Where the packaged unit lives (Debian 12's place for packaged units).
const UNIT_PATH: &str = "/lib/systemd/system/hsmlink-hsm.service";
const MODULE_CONFIG: &str = "/etc/hsmlink/hsmlink.toml";
const P11KIT_FILE: &str = "/usr/share/p11-kit/modules/hsmlink.module";
const DATA_DIR: &str = "/var/lib/hsmlink";
const KEY_FILE: &str = "/etc/hsmlink/master.key";
/// The address the packaged configuration uses on both sides.
const PACKAGED_ADDR: &str = "127.0.0.1:4433";

const USAGE: &str = "\
usage: cargo xtask package [--profile release|dev] [--install-test]

Builds target/debian/hsmlink-pkcs11_VERSION_ARCH.deb (the module, its p11-kit
registration, /etc/hsmlink/hsmlink.toml) and hsmlink-hsm_VERSION_ARCH.deb (the
server and its systemd unit) with dpkg-deb.

  --profile dev   package the debug build (`cargo build`) instead of a release
                  build: what CI does, to reuse the build its tests made
  --install-test  then install both packages with apt-get (as root, or through
                  sudo), run a pkcs11-tool session configured by the installed
                  files, and purge both packages: for throwaway machines (CI)
";

/// The two built packages.
struct Debs {
    module: PathBuf,
    server: PathBuf,
}

/// The target's Debian names.
struct Arch {
    /// `dpkg --print-architecture`, e.g. amd64.
    debian: String,
    /// The multiarch triplet, e.g. x86_64-linux-gnu.
    multiarch: String,
}

pub fn package(args: &[String]) -> Result<()> {
    let mut release = true;
    let mut install_test = false;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--install-test" => install_test = true,
            "--profile" => match rest.next().map(String::as_str) {
                Some("release") => release = true,
                Some("dev" | "debug") => release = false,
                other => return Err(format!("--profile {other:?}: want release or dev\n{USAGE}")),
            },
            "help" | "--help" | "-h" => {
                print!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let started = Instant::now();
    let debs = build_packages(release)?;
    println!("\npackages built in {:.0?}", started.elapsed());
    if install_test {
        let started = Instant::now();
        install_and_test(&debs)?;
        println!("\ninstall test passed in {:.0?}", started.elapsed());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Building
// ---------------------------------------------------------------------------

fn build_packages(release: bool) -> Result<Debs> {
    for (tool, package) in [
        ("dpkg-deb", "dpkg"),
        ("dpkg-shlibdeps", "dpkg-dev"),
        ("dpkg-architecture", "dpkg-dev"),
        ("strip", "binutils"),
        ("md5sum", "coreutils"),
    ] {
        require_tool(tool, package)?;
    }
    let profile = if release { "release" } else { "debug" };
    section(&format!("package: cargo build ({profile})"));
    let mut build = cargo();
    build.args(["build", "-p", "hsmlink-hsm", "-p", "hsmlink-pkcs11"]);
    if release {
        build.arg("--release");
    }
    run(&mut build)?;
    let built = target_dir().join(profile);
    let server_bin = built.join("hsmlink-hsm");
    let module_so = built.join("libhsmlink_pkcs11.so");

    let arch = Arch {
        debian: capture_quiet(Command::new("dpkg").arg("--print-architecture"))?,
        multiarch: capture_quiet(Command::new("dpkg-architecture").arg("-qDEB_HOST_MULTIARCH"))?,
    };
    let version = format!("{}-{REVISION}", env!("CARGO_PKG_VERSION"));
    let out = target_dir().join("debian");
    fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let packaging = crate::workspace_root().join("packaging");
    let source = |name: &str| packaging.join(name);

    section(&format!("package: {MODULE_PACKAGE}"));
    let mut module = Stage::new(&out, MODULE_PACKAGE)?;
    let module_dest = format!("usr/lib/{}/pkcs11/libhsmlink_pkcs11.so", arch.multiarch);
    module.copy(&module_so, &module_dest, 0o644)?;
    module.strip(&module_dest)?;
    module.copy(&source("hsmlink.module"), &P11KIT_FILE[1..], 0o644)?;
    module.copy(&source("hsmlink.toml"), &MODULE_CONFIG[1..], 0o644)?;
    module.copy(
        &source("copyright"),
        &format!("usr/share/doc/{MODULE_PACKAGE}/copyright"),
        0o644,
    )?;
    let depends = shlib_depends(&module.root.join(&module_dest), &out)?;
    let module_deb = module.finish(&Control {
        package: MODULE_PACKAGE,
        version: &version,
        arch: &arch.debian,
        depends,
        recommends: "p11-kit",
        suggests: "hsmlink-hsm, opensc, gnutls-bin, libengine-pkcs11-openssl, libnss3-tools",
        conffiles: &[MODULE_CONFIG],
        description: "PKCS#11 module for the hsmlink network HSM\n \
             libhsmlink_pkcs11.so is a PKCS#11 v2.40 module: applications (OpenSSL,\n \
             GnuTLS, NSS, Java, pkcs11-tool, python-pkcs11) reach keys that live in a\n \
             network HSM (hsmlink-hsm). It is registered with p11-kit and reads its\n \
             settings from /etc/hsmlink/hsmlink.toml and HSMLINK_* variables.",
    })?;

    section(&format!("package: {SERVER_PACKAGE}"));
    let mut server = Stage::new(&out, SERVER_PACKAGE)?;
    server.copy(&server_bin, "usr/bin/hsmlink-hsm", 0o755)?;
    server.strip("usr/bin/hsmlink-hsm")?;
    server.copy(&source("hsmlink-hsm.service"), &UNIT_PATH[1..], 0o644)?;
    server.copy(
        &source("hsmlink-hsm.default"),
        "etc/default/hsmlink-hsm",
        0o644,
    )?;
    server.copy(
        &source("copyright"),
        &format!("usr/share/doc/{SERVER_PACKAGE}/copyright"),
        0o644,
    )?;
    for script in ["postinst", "prerm", "postrm"] {
        server.copy(
            &source(&format!("debian-hsm/{script}")),
            &format!("DEBIAN/{script}"),
            0o755,
        )?;
    }
    let depends = shlib_depends(&server.root.join("usr/bin/hsmlink-hsm"), &out)?;
    let server_deb = server.finish(&Control {
        package: SERVER_PACKAGE,
        version: &version,
        arch: &arch.debian,
        depends: format!("{depends}, adduser"),
        recommends: "",
        suggests: "hsmlink-pkcs11",
        conffiles: &["/etc/default/hsmlink-hsm"],
        description: "software HSM server for hsmlink\n \
             hsmlink-hsm plays the part of a network HSM: users, token objects\n \
             encrypted at rest, and the cryptography, served over TLS to the\n \
             hsmlink PKCS#11 module. The hsmlink-hsm service runs it as the system\n \
             user hsmlink with its data in /var/lib/hsmlink.",
    })?;

    for deb in [&module_deb, &server_deb] {
        step(&format!("contents of {}", deb.display()));
        run(Command::new("dpkg-deb").arg("--info").arg(deb))?;
        run(Command::new("dpkg-deb").arg("--contents").arg(deb))?;
    }
    Ok(Debs {
        module: module_deb,
        server: server_deb,
    })
}

/// A package's file tree under `target/debian/stage/NAME`.
struct Stage {
    name: &'static str,
    root: PathBuf,
    out: PathBuf,
}

/// The fields of `DEBIAN/control` (and `conffiles`) that differ per package.
struct Control<'a> {
    package: &'a str,
    version: &'a str,
    arch: &'a str,
    depends: String,
    recommends: &'a str,
    suggests: &'a str,
    conffiles: &'a [&'a str],
    description: &'a str,
}

impl Stage {
    fn new(out: &Path, name: &'static str) -> Result<Stage> {
        let root = out.join("stage").join(name);
        if root.exists() {
            fs::remove_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
        }
        make_dir(&root.join("DEBIAN"))?;
        Ok(Stage {
            name,
            root,
            out: out.to_path_buf(),
        })
    }

    /// Copies `from` to `to` (relative to the package root) with `mode`.
    fn copy(&mut self, from: &Path, to: &str, mode: u32) -> Result<()> {
        let dest = self.root.join(to);
        if let Some(parent) = dest.parent() {
            make_dir(parent)?;
        }
        fs::copy(from, &dest)
            .map_err(|e| format!("copy {} to {}: {e}", from.display(), dest.display()))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode))
            .map_err(|e| format!("{}: {e}", dest.display()))
    }

    /// Strips the symbols of an ELF file in the tree.
    fn strip(&self, path: &str) -> Result<()> {
        run(Command::new("strip")
            .arg("--strip-unneeded")
            .arg(self.root.join(path)))
    }

    /// Writes `DEBIAN/control`, `conffiles` and `md5sums`, then builds the
    /// `.deb` into the output folder.
    fn finish(self, c: &Control<'_>) -> Result<PathBuf> {
        let files = files_under(&self.root)?;
        let payload: Vec<&PathBuf> = files
            .iter()
            .filter(|f| !f.starts_with(self.root.join("DEBIAN")))
            .collect();
        let mut installed_kib = 0;
        for f in &payload {
            let len = fs::metadata(f)
                .map_err(|e| format!("{}: {e}", f.display()))?
                .len();
            installed_kib += len.div_ceil(1024);
        }
        let mut control = format!(
            "Package: {}\nVersion: {}\nArchitecture: {}\nMaintainer: {MAINTAINER}\n\
             Installed-Size: {installed_kib}\nDepends: {}\n",
            c.package, c.version, c.arch, c.depends
        );
        if !c.recommends.is_empty() {
            control.push_str(&format!("Recommends: {}\n", c.recommends));
        }
        if !c.suggests.is_empty() {
            control.push_str(&format!("Suggests: {}\n", c.suggests));
        }
        control.push_str(&format!(
            "Section: admin\nPriority: optional\nHomepage: {HOMEPAGE}\nDescription: {}\n",
            c.description
        ));
        write_file(&self.root.join("DEBIAN/control"), &control, 0o644)?;
        let conffiles: String = c.conffiles.iter().map(|f| format!("{f}\n")).collect();
        write_file(&self.root.join("DEBIAN/conffiles"), &conffiles, 0o644)?;

        let relative: Vec<String> = payload
            .iter()
            .map(|f| {
                f.strip_prefix(&self.root)
                    .map(|p| p.to_string_lossy().into_owned())
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_>>()?;
        let mut md5 = Command::new("md5sum");
        md5.args(&relative).current_dir(&self.root);
        let sums = capture_quiet(&mut md5)?;
        write_file(&self.root.join("DEBIAN/md5sums"), &(sums + "\n"), 0o644)?;

        let deb = self
            .out
            .join(format!("{}_{}_{}.deb", self.name, c.version, c.arch));
        run(Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&self.root)
            .arg(&deb))?;
        Ok(deb)
    }
}

/// The shared-library dependencies of an ELF file, as `dpkg-shlibdeps`
/// computes them (it wants to run beside a `debian/control`).
fn shlib_depends(elf: &Path, out: &Path) -> Result<String> {
    let work = out.join("shlibdeps");
    make_dir(&work.join("debian"))?;
    write_file(&work.join("debian/control"), "", 0o644)?;
    let mut command = Command::new("dpkg-shlibdeps");
    command.arg("-O").arg(elf).current_dir(&work);
    let text = capture_quiet(&mut command)?;
    text.lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .map(str::to_string)
        .ok_or_else(|| format!("`{}` printed no shlibs:Depends: {text}", show(&command)))
}

fn make_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Every file under `dir`, sorted; every folder on the way gets mode 0755
/// (what the package installs, whatever the umask was).
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("{}: {e}", d.display()))?;
        for entry in fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Runs `command` and returns its trimmed standard output, without echoing.
fn capture_quiet(command: &mut Command) -> Result<String> {
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run `{}`: {e}", show(command)))?;
    if !output.status.success() {
        return Err(format!("`{}` exited with {}", show(command), output.status));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

// ---------------------------------------------------------------------------
// The install test
// ---------------------------------------------------------------------------

const CI_USER: &str = "ci-package-test";
const CI_PASSWORD: &str = "ci-package-password";
const CI_LABEL: &str = "ci-package-ec";
/// pkcs11-tool (OpenSC 0.23) picks the key of `--sign` by `--id` only.
const CI_ID: &str = "c1";

/// Whether this process runs as root.
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `program` run as root: directly, or through sudo.
fn as_root(program: &str) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut command = Command::new("sudo");
        command.args(["-n", program]);
        command
    }
}

/// `program` run as the service's user `hsmlink`.
fn as_service_user(program: &str) -> Command {
    let mut command = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=hsmlink", "--regid=hsmlink", "--init-groups", "--"]);
        c
    } else {
        let mut c = Command::new("sudo");
        c.args(["-n", "-u", "hsmlink", "--"]);
        c
    };
    command.arg(program);
    command
}

fn install_and_test(debs: &Debs) -> Result<()> {
    let arch_multiarch =
        capture_quiet(Command::new("dpkg-architecture").arg("-qDEB_HOST_MULTIARCH"))?;
    let module = format!("/usr/lib/{arch_multiarch}/pkcs11/libhsmlink_pkcs11.so");
    let proxy = format!("/usr/lib/{arch_multiarch}/p11-kit-proxy.so");
    let pkcs11_tool = require_tool("pkcs11-tool", "opensc")?;
    let openssl = require_tool("openssl", "openssl")?;
    let p11_kit = require_tool("p11-kit", "p11-kit")?;
    let p11tool = require_tool("p11tool", "gnutls-bin")?;
    if !Path::new(&proxy).is_file() {
        return Err(format!(
            "{proxy} is missing: run `apt-get install p11-kit-modules`"
        ));
    }
    if std::net::TcpListener::bind(PACKAGED_ADDR).is_err() && !systemd_running() {
        return Err(format!(
            "{PACKAGED_ADDR} is busy: the packaged server listens there; stop whatever does"
        ));
    }

    section("install test: apt-get install both packages");
    run(as_root("apt-get")
        .args(["install", "-y", "--reinstall", "--no-install-recommends"])
        .arg(&debs.module)
        .arg(&debs.server)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;

    let result = installed_checks(&module, &proxy, &pkcs11_tool, &openssl, &p11_kit, &p11tool);

    section("install test: apt-get purge both packages");
    let purged = run(as_root("apt-get")
        .args(["purge", "-y", MODULE_PACKAGE, SERVER_PACKAGE])
        .env("DEBIAN_FRONTEND", "noninteractive"));
    result?;
    purged?;
    for gone in [
        module.as_str(),
        P11KIT_FILE,
        MODULE_CONFIG,
        "/usr/bin/hsmlink-hsm",
        UNIT_PATH,
    ] {
        if Path::new(gone).exists() {
            return Err(format!("{gone} is still there after the purge"));
        }
    }
    if !Path::new(DATA_DIR).is_dir() {
        return Err(format!(
            "the purge deleted {DATA_DIR}: it must keep the HSM's data"
        ));
    }
    println!("purged; {DATA_DIR} and {KEY_FILE} kept, as intended");
    Ok(())
}

fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn installed_checks(
    module: &str,
    proxy: &str,
    pkcs11_tool: &Path,
    openssl: &Path,
    p11_kit: &Path,
    p11tool: &Path,
) -> Result<()> {
    section("install test: files, user, data folder, unit");
    for file in [
        module,
        P11KIT_FILE,
        MODULE_CONFIG,
        "/usr/bin/hsmlink-hsm",
        UNIT_PATH,
        KEY_FILE,
    ] {
        if !Path::new(file).is_file() {
            return Err(format!("{file} is not installed"));
        }
        println!("present: {file}");
    }
    let passwd = capture_quiet(Command::new("getent").args(["passwd", "hsmlink"]))
        .map_err(|e| format!("the system user hsmlink was not made: {e}"))?;
    println!("user: {passwd}");
    let uid: u32 = passwd
        .split(':')
        .nth(2)
        .and_then(|u| u.parse().ok())
        .ok_or_else(|| format!("cannot read a uid in {passwd:?}"))?;
    for (path, mode, owner) in [(DATA_DIR, 0o700, uid), (KEY_FILE, 0o640, 0)] {
        let meta = fs::metadata(path).map_err(|e| format!("{path}: {e}"))?;
        let got = meta.mode() & 0o7777;
        if got != mode || meta.uid() != owner {
            return Err(format!(
                "{path}: mode {got:o} owner {}, want mode {mode:o} owner {owner}",
                meta.uid()
            ));
        }
        println!("{path}: mode {got:o}, owner uid {owner}");
    }
    if let Ok(analyze) = require_tool("systemd-analyze", "systemd") {
        step("systemd-analyze verify the unit");
        run(Command::new(analyze).args(["verify", UNIT_PATH]))?;
    } else {
        println!("(systemd-analyze is not installed: the unit is not verified)");
    }

    step("p11-kit list-modules shows the module and its token");
    let modules = run_capture(Command::new(p11_kit).arg("list-modules"))?;
    let ours = modules
        .split("\n")
        .skip_while(|l| !l.starts_with("hsmlink:"))
        .take_while(|l| l.starts_with("hsmlink:") || l.starts_with(' '))
        .collect::<Vec<_>>()
        .join("\n");
    if !ours.contains("token: Dinamo HSM") {
        return Err("p11-kit list-modules does not list hsmlink with the token Dinamo HSM".into());
    }

    let server = start_packaged_server()?;
    let result = client_session(module, proxy, pkcs11_tool, openssl, p11tool);
    let removed = remove_ci_user();
    drop(server);
    result.and(removed)
}

/// The server as installed: under systemd, the service the postinst
/// started; elsewhere (CI containers), the unit's `ExecStart` run by hand
/// as the unit's user with its `EnvironmentFile`.
fn start_packaged_server() -> Result<Option<RunningServer>> {
    let server = if systemd_running() {
        section("install test: the hsmlink-hsm service (started by the postinst)");
        run(Command::new("systemctl").args(["is-active", "hsmlink-hsm.service"]))?;
        None
    } else {
        section("install test: the packaged server, started as its unit would start it");
        Some(RunningServer::start()?)
    };
    step("add an HSM user (through the running server's admin socket)");
    let mut add = as_service_user("/usr/bin/hsmlink-hsm");
    add.args(["user", "add", "--data", DATA_DIR, "--replace", CI_USER]);
    run_with_stdin(&mut add, &format!("{CI_PASSWORD}\n"))?;
    Ok(server)
}

fn remove_ci_user() -> Result<()> {
    step("remove the HSM user and its objects");
    run(as_service_user("/usr/bin/hsmlink-hsm")
        .args(["user", "remove", "--data", DATA_DIR, CI_USER]))
}

/// `hsmlink-hsm serve` started from the installed unit's command line.
struct RunningServer {
    child: Child,
}

impl RunningServer {
    fn start() -> Result<RunningServer> {
        let unit = fs::read_to_string(UNIT_PATH).map_err(|e| format!("{UNIT_PATH}: {e}"))?;
        let exec = unit_value(&unit, "ExecStart")
            .ok_or_else(|| format!("{UNIT_PATH} has no ExecStart"))?;
        let env_file = unit_value(&unit, "EnvironmentFile").unwrap_or_default();
        let env_file = env_file.trim_start_matches('-');
        let user = unit_value(&unit, "User").unwrap_or_default();
        if user != "hsmlink" {
            return Err(format!("{UNIT_PATH}: User={user}, want hsmlink"));
        }
        // systemd splits an unquoted $OPTIONS on white space, as sh does.
        let script = format!("set -a; [ -r {env_file} ] && . {env_file}; set +a; exec {exec}");
        let mut command = as_service_user("/bin/sh");
        command
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        println!("$ {}", show(&command));
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start the packaged server: {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                println!("[hsmlink-hsm] {line}");
                if line.starts_with("listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        let mut server = RunningServer { child };
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            server.stop();
            return Err("the packaged server did not print \"listening on ADDR\" in 30 s".into());
        }
        Ok(server)
    }

    fn stop(&mut self) {
        // SIGTERM (relayed by sudo when there is one), then SIGKILL.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The value of the first `Key=` line of a unit file.
fn unit_value(unit: &str, key: &str) -> Option<String> {
    unit.lines()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().to_string())
}

fn run_with_stdin(command: &mut Command, input: &str) -> Result<()> {
    println!("$ {}   (password on standard input)", show(command));
    let mut child = command
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `{}`: {e}", show(command)))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| format!("`{}`: {e}", show(command)))?;
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` exited with {status}", show(command)))
    }
}

/// A client command whose whole environment is `PATH`, and `HSMLINK_USER`
/// when `user` is set: everything else comes from the installed files.
fn client(program: &Path, work: &Path, user: bool) -> Command {
    let mut command = Command::new(program);
    command
        .env_clear()
        .env("PATH", env::var_os("PATH").unwrap_or_default())
        .current_dir(work);
    if user {
        command.env("HSMLINK_USER", CI_USER);
    }
    command
}

fn client_session(
    module: &str,
    proxy: &str,
    pkcs11_tool: &Path,
    openssl: &Path,
    p11tool: &Path,
) -> Result<()> {
    section("install test: pkcs11-tool with HSMLINK_USER and the PIN only");
    let work = target_dir().join("debian").join("install-test");
    let _ = fs::remove_dir_all(&work);
    make_dir(&work)?;
    write_file(
        &work.join("data.txt"),
        "signed by the packaged module\n",
        0o644,
    )?;
    let tool = |module: &str, args: &[&str]| {
        let mut command = client(pkcs11_tool, &work, true);
        command.args(["--module", module]).args(args);
        command
    };
    let login = ["--login", "--pin", CI_PASSWORD];
    let slots = run_capture(&mut tool(module, &["--list-slots"]))?;
    if !slots.contains("Dinamo HSM") {
        return Err("pkcs11-tool --list-slots does not show the token Dinamo HSM".into());
    }
    run(&mut tool(
        module,
        &[
            &login[..],
            &[
                "--keypairgen",
                "--key-type",
                "EC:prime256v1",
                "--id",
                CI_ID,
                "--label",
                CI_LABEL,
            ],
        ]
        .concat(),
    ))?;
    run(&mut tool(
        module,
        &[
            &login[..],
            &[
                "--sign",
                "--id",
                CI_ID,
                "--mechanism",
                "ECDSA-SHA256",
                "--signature-format",
                "openssl",
                "--input-file",
                "data.txt",
                "--output-file",
                "data.sig",
            ],
        ]
        .concat(),
    ))?;
    run(&mut tool(
        module,
        &[
            &login[..],
            &[
                "--read-object",
                "--type",
                "pubkey",
                "--id",
                CI_ID,
                "--output-file",
                "pub.der",
            ],
        ]
        .concat(),
    ))?;
    run(client(openssl, &work, false).args([
        "pkey", "-pubin", "-inform", "DER", "-in", "pub.der", "-out", "pub.pem",
    ]))?;
    let verified = run_capture(client(openssl, &work, false).args([
        "dgst",
        "-sha256",
        "-verify",
        "pub.pem",
        "-signature",
        "data.sig",
        "data.txt",
    ]))?;
    if !verified.contains("Verified OK") {
        return Err("OpenSSL did not verify the packaged module's signature".into());
    }

    section("install test: the same token through p11-kit's registration");
    step("pkcs11-tool on p11-kit-proxy.so");
    let objects = run_capture(&mut tool(
        proxy,
        &[
            &login[..],
            &["--token-label", "Dinamo HSM", "--list-objects"],
        ]
        .concat(),
    ))?;
    if !objects.contains(CI_LABEL) {
        return Err(format!("p11-kit-proxy.so does not show the key {CI_LABEL}"));
    }
    step("p11tool by PKCS#11 URI");
    let listed = run_capture(client(p11tool, &work, true).args([
        "--login",
        "--set-pin",
        CI_PASSWORD,
        "--list-all",
        "pkcs11:token=Dinamo%20HSM",
    ]))?;
    if !listed.contains(&format!("object={CI_LABEL};type=private")) {
        return Err(format!("p11tool does not list the private key {CI_LABEL}"));
    }
    step("OpenSSL's pkcs11 engine by PKCS#11 URI, no module path (p11-kit-proxy)");
    let uri =
        format!("pkcs11:token=Dinamo%20HSM;object={CI_LABEL};type=private;pin-value={CI_PASSWORD}");
    run(client(openssl, &work, true).args([
        "dgst",
        "-engine",
        "pkcs11",
        "-keyform",
        "engine",
        "-sha256",
        "-sign",
        &uri,
        "-out",
        "engine.sig",
        "data.txt",
    ]))?;
    let verified = run_capture(client(openssl, &work, false).args([
        "dgst",
        "-sha256",
        "-verify",
        "pub.pem",
        "-signature",
        "engine.sig",
        "data.txt",
    ]))?;
    if !verified.contains("Verified OK") {
        return Err("OpenSSL did not verify the engine's signature".into());
    }
    Ok(())
}
