//! Command-line clients (pkcs11-tool, openssl, java) run against a fresh
//! `hsmlink-hsm dev` through the built module.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{module_path, require_tool, Hsm, TempDir};

/// The HSM user of a [`Bench`] server.
pub const USER: &str = "tool-user";
/// Its password, the PIN.
pub const PIN: &str = "tool-password";

/// One server, one scratch directory, and the two command-line tools.
pub struct Bench {
    /// The server.
    pub hsm: Hsm,
    /// The scratch directory commands run in.
    pub dir: TempDir,
    /// `pkcs11-tool`.
    pub pkcs11_tool: PathBuf,
    /// `openssl`.
    pub openssl: PathBuf,
    /// The built module.
    pub module: PathBuf,
}

impl Bench {
    /// Starts a server; fails if pkcs11-tool or openssl is missing.
    pub fn new(name: &str) -> Bench {
        let pkcs11_tool = require_tool("pkcs11-tool", "opensc");
        let openssl = require_tool("openssl", "openssl");
        Bench {
            hsm: Hsm::start_dev(USER, PIN),
            dir: TempDir::new(name),
            pkcs11_tool,
            openssl,
            module: module_path(),
        }
    }

    /// A file in the scratch directory.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// A pkcs11-tool command configured for this server.
    pub fn tool_command(&self, args: &[&str]) -> Command {
        let mut command = self.configured(Command::new(&self.pkcs11_tool));
        command.arg("--module").arg(&self.module).args(args);
        command
    }

    /// Runs pkcs11-tool; panics with its output unless it exits 0.
    pub fn tool(&self, args: &[&str]) -> String {
        let output = self.tool_command(args).output().expect("run pkcs11-tool");
        checked("pkcs11-tool", args, &output, &self.hsm)
    }

    /// Runs pkcs11-tool logged in with the user's password.
    pub fn tool_login(&self, args: &[&str]) -> String {
        let mut all = vec!["--login", "--pin", PIN];
        all.extend_from_slice(args);
        self.tool(&all)
    }

    /// Runs openssl; panics with its output unless it exits 0.
    /// The environment is set for the libp11 engine too
    /// (`PKCS11_MODULE_PATH` = the module, `HSMLINK_ADDR`, `HSMLINK_USER`).
    pub fn openssl(&self, args: &[&str]) -> String {
        let output = self
            .configured(Command::new(&self.openssl))
            .args(args)
            .output()
            .expect("run openssl");
        checked("openssl", args, &output, &self.hsm)
    }

    /// `command` run in the scratch directory with the module configured
    /// for this server through the environment.
    pub fn configured(&self, mut command: Command) -> Command {
        command
            .current_dir(self.dir.path())
            .env("HSMLINK_ADDR", self.hsm.addr())
            .env("HSMLINK_USER", USER)
            .env("PKCS11_MODULE_PATH", &self.module);
        for var in crate::CONFIG_VARS
            .iter()
            .filter(|v| !["HSMLINK_ADDR", "HSMLINK_USER"].contains(v))
        {
            command.env_remove(var);
        }
        command
    }

    /// Reads the public key `id` with pkcs11-tool and converts it to PEM.
    pub fn export_public_key(&self, id: &str, stem: &str) -> String {
        let der = format!("{stem}.der");
        let pem = format!("{stem}.pem");
        self.tool_login(&[
            "--read-object",
            "--type",
            "pubkey",
            "--id",
            id,
            "--output-file",
            &der,
        ]);
        self.openssl(&[
            "pkey", "-pubin", "-inform", "DER", "-in", &der, "-out", &pem,
        ]);
        pem
    }
}

/// Runs `command`; panics with its output (and the server's log) unless it exits 0.
pub fn run_checked(name: &str, command: &mut Command, hsm: &Hsm) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    let args: Vec<String> = command
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    checked(name, &args, &output, hsm)
}

/// The output of a finished command, or a panic with everything about it.
pub fn checked(tool: &str, args: &[&str], output: &Output, hsm: &Hsm) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "`{tool} {}` exited with {}\nstdout:\n{stdout}\nstderr:\n{stderr}\nserver log:\n{}",
        args.join(" "),
        output.status,
        hsm.stderr()
    );
    stdout + &stderr
}

/// Writes a file, panicking with its path on error.
pub fn write(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}
