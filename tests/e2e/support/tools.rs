//! The external programs the tests run, and the Debian packages that install them. A missing one
//! is a test failure that says what to install, never a skip.

use std::path::Path;
use std::process::{Command, Output};

/// Each program (or file) the tests need, and the Debian package it comes in.
const PACKAGES: &[(&str, &str)] = &[
    ("ffmpeg", "ffmpeg"),
    ("ffprobe", "ffmpeg"),
    ("nginx", "nginx"),
    ("/usr/lib/nginx/modules/ngx_rtmp_module.so", "libnginx-mod-rtmp"),
    (
        "/usr/lib/nginx/modules/ngx_stream_module.so",
        "libnginx-mod-stream",
    ),
    ("openssl", "openssl"),
    ("node", "nodejs npm"),
    ("/usr/bin/chromium", "chromium"),
    ("prometheus", "prometheus"),
    ("promtool", "prometheus"),
];

/// Fails (never skips) when `tool` is missing: a program looked up in `PATH`, or a file by its
/// absolute path. The message names the Debian package that installs it.
pub fn require(tool: &str) {
    let package = PACKAGES
        .iter()
        .find(|(name, _)| *name == tool)
        .map(|(_, package)| *package)
        .unwrap_or_else(|| panic!("{tool}: add it and its Debian package to PACKAGES in {}", file!()));
    let found = if tool.starts_with('/') {
        Path::new(tool).exists()
    } else {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| is_executable(&dir.join(tool))))
    };
    assert!(
        found,
        "{tool} is missing: `apt-get install {package}` (scripts/test installs the tests' tools)"
    );
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A command running `program`, which must be installed (see [`require`]).
pub fn command(program: &str) -> Command {
    require(program);
    Command::new(program)
}

/// Runs `command` to its end; it must succeed. Returns its output; a failure shows its stderr.
pub fn run(command: &mut Command) -> Output {
    let out = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
