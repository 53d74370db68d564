//! Private RabbitMQ nodes for restart, cluster and consumer-timeout tests.
//!
//! Each node has its own node name, AMQP and distribution ports, data and log directory and
//! Erlang cookie, and is started, stopped, killed and restarted by the test that owns it. The
//! shared service (`rabbit@localhost` on 5672) is never touched: a node here reads no file under
//! `/etc/rabbitmq` (its config, env and plugin files are its own), and `rabbitmqctl` is always
//! pointed at the node by name with the node's own cookie.
//!
//! The server scripts are run directly from RabbitMQ's `bin` directory
//! (`/usr/lib/rabbitmq/bin`, or `MQT_RABBITMQ_BIN`), not through `/usr/sbin`, whose wrapper
//! switches to the `rabbitmq` user and its home (and so the shared service's cookie).
//!
//! A node is killed (SIGKILL) and its directory removed when its [`RabbitNode`] is dropped, so
//! a failing test leaves nothing running.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::process::Command;

/// How long a node may take to boot (or to stop) before the test fails.
const BOOT_DEADLINE: Duration = Duration::from_secs(120);

/// A failure to run a private node, with what was tried.
pub type NodeResult<T> = Result<T, String>;

/// RabbitMQ's `bin` directory (holding `rabbitmq-server` and `rabbitmqctl`), if installed.
pub fn rabbitmq_bin() -> Option<PathBuf> {
    let dir =
        std::env::var_os("MQT_RABBITMQ_BIN").map_or_else(|| PathBuf::from("/usr/lib/rabbitmq/bin"), PathBuf::from);
    (dir.join("rabbitmq-server").is_file() && dir.join("rabbitmqctl").is_file()).then_some(dir)
}

/// RabbitMQ's `bin` directory, or `None` after printing `SKIPPED` when RabbitMQ is not installed
/// and `MQT_REQUIRE_BROKERS=1` is not set (then it panics).
pub fn rabbitmq_bin_or_skip() -> Option<PathBuf> {
    if let Some(dir) = rabbitmq_bin() {
        return Some(dir);
    }
    let why = "private RabbitMQ nodes: rabbitmq-server not found in /usr/lib/rabbitmq/bin (set MQT_RABBITMQ_BIN)";
    assert!(
        std::env::var("MQT_REQUIRE_BROKERS").as_deref() != Ok("1"),
        "{why}, and MQT_REQUIRE_BROKERS=1"
    );
    println!("SKIPPED: {why}");
    None
}

/// A free TCP port on 127.0.0.1 (free when asked; the node binds it moments later).
fn free_port() -> NodeResult<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// A directory of this process's own for one node or one cluster, and its number.
fn fresh_dir(label: &str) -> NodeResult<(PathBuf, u32)> {
    static COUNT: AtomicU32 = AtomicU32::new(0);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("mqt-node-{}-{n}-{label}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok((dir, n))
}

/// Writes an Erlang cookie into `home` (readable by the owner only, as Erlang demands).
fn write_cookie(home: &Path) -> NodeResult<()> {
    use std::os::unix::fs::PermissionsExt;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let path = home.join(".erlang.cookie");
    std::fs::write(&path, format!("MQTCOOKIE{nanos:X}{}", std::process::id()))
        .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// One private RabbitMQ node.
pub struct RabbitNode {
    bin: PathBuf,
    /// The Erlang node name, `mqt-<pid>-<n>-<label>@localhost`.
    name: String,
    amqp_port: u16,
    dist_port: u16,
    /// The node's own directory: config, data, logs, pid file.
    dir: PathBuf,
    /// Where the Erlang cookie is (shared by the nodes of one cluster).
    home: PathBuf,
    /// Lines added to the node's `rabbitmq.conf`.
    config: String,
    /// The management plugin's HTTP port, when the node runs it.
    management_port: Option<u16>,
    /// The node's OS process while it runs.
    pid: Option<u32>,
}

impl RabbitNode {
    /// Starts a node of its own, with `config` (lines of `rabbitmq.conf`, e.g.
    /// `consumer_timeout = 2000`) added to a configuration that listens on 127.0.0.1 only.
    pub async fn start(bin: &Path, label: &str, config: &str) -> NodeResult<RabbitNode> {
        Self::start_with_home(bin, label, config, None).await
    }

    /// Starts a node of its own that also runs the management plugin (its HTTP API on a port
    /// of its own, see [`management_url`](Self::management_url)).
    pub async fn start_with_management(bin: &Path, label: &str) -> NodeResult<RabbitNode> {
        let (dir, n) = fresh_dir(label)?;
        write_cookie(&dir)?;
        let mut node = RabbitNode::unbooted(bin, label, "", dir.clone(), dir, n)?;
        node.management_port = Some(free_port()?);
        node.write_files()?;
        node.boot().await?;
        Ok(node)
    }

    /// Starts a node whose cookie is in `home`, or (`None`) in its own directory.
    async fn start_with_home(bin: &Path, label: &str, config: &str, home: Option<PathBuf>) -> NodeResult<RabbitNode> {
        let (dir, n) = fresh_dir(label)?;
        let home = match home {
            Some(home) => home,
            None => {
                write_cookie(&dir)?;
                dir.clone()
            }
        };
        let mut node = RabbitNode::unbooted(bin, label, config, dir, home, n)?;
        node.write_files()?;
        node.boot().await?;
        Ok(node)
    }

    fn unbooted(bin: &Path, label: &str, config: &str, dir: PathBuf, home: PathBuf, n: u32) -> NodeResult<RabbitNode> {
        Ok(RabbitNode {
            bin: bin.to_owned(),
            name: format!("mqt-{}-{n}-{label}@localhost", std::process::id()),
            amqp_port: free_port()?,
            dist_port: free_port()?,
            dir,
            home,
            config: config.to_owned(),
            management_port: None,
            pid: None,
        })
    }

    fn write_files(&self) -> NodeResult<()> {
        let mut conf = format!(
            "listeners.tcp.default = 127.0.0.1:{}\n{}\n",
            self.amqp_port, self.config
        );
        if let Some(port) = self.management_port {
            conf.push_str(&format!(
                "management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {port}\n"
            ));
        }
        let write = |file: &str, text: &str| {
            std::fs::write(self.dir.join(file), text).map_err(|e| format!("writing {file} for {}: {e}", self.name))
        };
        write("rabbitmq.conf", &conf)?;
        // The channel tick enforces `consumer_timeout`: once a second, not once a minute.
        write("advanced.config", "[{rabbit, [{channel_tick_interval, 1000}]}].\n")?;
        write("rabbitmq-env.conf", "")?;
        let plugins = if self.management_port.is_some() {
            "[rabbitmq_management].\n"
        } else {
            "[].\n"
        };
        write("enabled_plugins", plugins)
    }

    /// `http://guest:guest@127.0.0.1:<port>` of the node's management API, if it runs one.
    pub fn management_url(&self) -> Option<String> {
        self.management_port
            .map(|p| format!("http://guest:guest@127.0.0.1:{p}"))
    }

    /// The node's Erlang name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's AMQP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.amqp_port
    }

    /// `host:port` of the node's AMQP listener.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.amqp_port)
    }

    /// An AMQP URL for the node (guest may log in: the connection is from loopback).
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.address())
    }

    /// Whether the node's OS process runs.
    pub fn is_running(&self) -> bool {
        self.pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        let d = &self.dir;
        cmd.env("HOME", &self.home)
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_CONF_ENV_FILE", d.join("rabbitmq-env.conf"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", d.join("advanced.config"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.amqp_port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_PID_FILE", d.join("pid"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .current_dir(d)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs `rabbitmqctl -n <node> args…`, returning its output, or an error with its output.
    pub async fn ctl(&self, args: &[&str]) -> NodeResult<String> {
        let mut cmd = self.command("rabbitmqctl");
        cmd.arg("-q").arg("-n").arg(&self.name).args(args);
        let out = cmd
            .output()
            .await
            .map_err(|e| format!("running rabbitmqctl {args:?}: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!(
                "rabbitmqctl -n {} {args:?} failed ({}): {text}{}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Starts the node's process and waits until it has booted.
    async fn boot(&mut self) -> NodeResult<()> {
        let _ = std::fs::remove_file(self.dir.join("pid"));
        let status = self
            .command("rabbitmq-server")
            .arg("-detached")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .map_err(|e| format!("starting {}: {e}", self.name))?;
        if !status.success() {
            return Err(format!("rabbitmq-server -detached for {} failed: {status}", self.name));
        }
        let deadline = tokio::time::Instant::now() + BOOT_DEADLINE;
        // `await_startup` fails at once until the node has registered with epmd.
        loop {
            if self.ctl(&["await_startup", "--timeout", "60"]).await.is_ok() {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "{} did not boot within {BOOT_DEADLINE:?}; see {}",
                    self.name,
                    self.dir.join("log").display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let pid =
            std::fs::read_to_string(self.dir.join("pid")).map_err(|e| format!("pid file of {}: {e}", self.name))?;
        self.pid = Some(
            pid.trim()
                .parse()
                .map_err(|_| format!("pid file of {} holds '{pid}'", self.name))?,
        );
        Ok(())
    }

    /// Starts the node again after [`stop`](Self::stop) or [`kill`](Self::kill), on the same
    /// ports and data (durable queues and persistent messages come back).
    pub async fn restart(&mut self) -> NodeResult<()> {
        self.boot().await
    }

    /// Stops the node gracefully (`rabbitmqctl stop`), waiting until its process has exited.
    pub async fn stop(&mut self) -> NodeResult<()> {
        self.ctl(&["stop"]).await?;
        self.wait_exit().await
    }

    /// Kills the node's process (SIGKILL): the broker vanishes mid-stream, as in a crash.
    pub async fn kill(&mut self) -> NodeResult<()> {
        if let Some(pid) = self.pid {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status().await;
        }
        self.wait_exit().await
    }

    async fn wait_exit(&mut self) -> NodeResult<()> {
        let deadline = tokio::time::Instant::now() + BOOT_DEADLINE;
        while self.is_running() {
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "{} still runs {BOOT_DEADLINE:?} after it was stopped",
                    self.name
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.pid = None;
        Ok(())
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = std::process::Command::new("kill")
                .arg("-9")
                .arg(pid.to_string())
                .status();
            for _ in 0..200 {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A cluster of private nodes sharing one Erlang cookie, joined with `rabbitmqctl
/// join_cluster`. Dropping it kills every node.
pub struct RabbitCluster {
    /// The nodes, the first being the one the others joined.
    pub nodes: Vec<RabbitNode>,
    home: PathBuf,
}

impl RabbitCluster {
    /// Starts `size` nodes with `config` and joins them into one cluster.
    pub async fn start(bin: &Path, size: usize, config: &str) -> NodeResult<RabbitCluster> {
        let (home, _) = fresh_dir("cluster")?;
        write_cookie(&home)?;
        let mut nodes = Vec::with_capacity(size);
        for i in 0..size {
            nodes.push(RabbitNode::start_with_home(bin, &format!("c{i}"), config, Some(home.clone())).await?);
        }
        let cluster = RabbitCluster { nodes, home };
        let seed = cluster.nodes[0].name.clone();
        for node in &cluster.nodes[1..] {
            node.ctl(&["stop_app"]).await?;
            node.ctl(&["join_cluster", &seed]).await?;
            node.ctl(&["start_app"]).await?;
            node.ctl(&["await_startup", "--timeout", "60"]).await?;
        }
        Ok(cluster)
    }

    /// The AMQP addresses of every node, comma-separated: the host list of a cluster URL.
    pub fn addresses(&self) -> String {
        self.nodes.iter().map(RabbitNode::address).collect::<Vec<_>>().join(",")
    }

    /// The node whose AMQP listener is on `port`.
    pub fn by_port(&mut self, port: u16) -> Option<&mut RabbitNode> {
        self.nodes.iter_mut().find(|n| n.amqp_port == port)
    }
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}
