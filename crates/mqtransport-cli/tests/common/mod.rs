//! What the `mqt` tests share: running the binary, reading what it printed, a directory of a
//! test's own, the RabbitMQ URL.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use tokio::io::AsyncBufReadExt as _;

/// The shared RabbitMQ (`MQT_TEST_AMQP_URL`).
pub(crate) fn amqp_url() -> String {
    std::env::var("MQT_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// `mqt` with `args` (with `MQT_URL` unset, so `--url` or the default decides), run to its end.
pub(crate) fn mqt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mqt"))
        .args(args)
        .env_remove("MQT_URL")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

/// `mqt` with `args`, started with its standard output and error piped (killed when dropped).
pub(crate) fn spawn_mqt(args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_mqt"))
        .args(args)
        .env_remove("MQT_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// The `http://` address in the first line `child` prints on standard error (a server saying
/// where it listens).
pub(crate) async fn announced_url(child: &mut tokio::process::Child) -> String {
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), stderr.next_line())
        .await
        .expect("the server says where it listens within 30 s")
        .unwrap()
        .unwrap();
    line.split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in: {line}"))
        .to_owned()
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Everything `out` printed, for an assertion's message.
pub(crate) fn show(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// A directory of a test's own, removed when dropped.
pub(crate) struct Dir(pub(crate) PathBuf);

impl Dir {
    pub(crate) fn new(label: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("mqt-test-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    /// Writes `text` to `name` in the directory; its path.
    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
