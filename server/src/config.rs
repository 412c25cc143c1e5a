//! The command line: Locktopus's flags and `LOCKTOPUS_*` environment
//! variables, so an operator swaps the binary and keeps the deployment,
//! plus the limits, keepalive, drain, auth and TLS settings Locktopus lacks.
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};

use crate::protocol::Limits;

/// A boolean: `true`, `1`, `yes`, `y`, `on` (any case) are true, as in
/// Locktopus, and `false`, `0`, `no`, `n`, `off` false; anything else is an
/// error (Locktopus reads it as false, so a typo such as `ture` would turn
/// logging off silently). `--log-clients=true`, `--log-clients false` and a
/// bare `--log-clients` all work.
fn truthy(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "y" | "on" => Ok(true),
        "false" | "0" | "no" | "n" | "off" => Ok(false),
        _ => Err(format!(
            "`{s}` is not a boolean (true/false, yes/no, 1/0, on/off)"
        )),
    }
}

/// A duration in milliseconds: a bare number is milliseconds, as
/// Locktopus's flags take them; anything else is a humantime duration
/// (`30s`, `1m 30s`, `250ms`).
fn millis(s: &str) -> Result<u64, String> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    let duration = humantime::parse_duration(s).map_err(|e| {
        format!("`{s}` is not a duration: give milliseconds (`30000`) or a unit (`30s`): {e}")
    })?;
    u64::try_from(duration.as_millis()).map_err(|_| format!("`{s}` is too long"))
}

/// An auth token: anything but empty.
fn token(s: &str) -> Result<String, &'static str> {
    if s.is_empty() {
        return Err(
            "the token is empty, which would let in anyone who sends `?token=`; \
                    give a non-empty token, or no token to turn auth off",
        );
    }
    Ok(s.to_owned())
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "shardlock-server",
    version,
    about = "A Locktopus-compatible lock server on shardlock's PathLock"
)]
pub struct Config {
    /// Address to listen on. Loopback by default (Locktopus: 0.0.0.0); use
    /// `--host 0.0.0.0` to expose the server.
    #[arg(short = 'H', long, env = "LOCKTOPUS_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on (0 picks a free one; the address is printed).
    #[arg(short, long, env = "LOCKTOPUS_PORT", default_value_t = 9009)]
    pub port: u16,
    /// Abandon timeout for a connection that closes holding a lock, unless
    /// it set `abandon-timeout-ms`: milliseconds, or a duration (`1m`).
    #[arg(
        long,
        env = "LOCKTOPUS_DEFAULT_ABANDON_TIMEOUT",
        default_value_t = 60_000,
        value_parser = millis
    )]
    pub default_abandon_timeout: u64,
    /// Longest abandon timeout a client may ask for with
    /// `abandon-timeout-ms` (a longer one is refused with HTTP 400):
    /// milliseconds, or a duration (`1h`).
    #[arg(
        long,
        env = "LOCKTOPUS_MAX_ABANDON_TIMEOUT",
        default_value_t = 3_600_000,
        value_parser = millis
    )]
    pub max_abandon_timeout: u64,
    /// Most abandoned locks (held by connections that ended) kept at once,
    /// over all namespaces; past it, a lock whose connection ends is
    /// released at once.
    #[arg(long, env = "LOCKTOPUS_MAX_ABANDONED_LOCKS", default_value_t = 1_000)]
    pub max_abandoned_locks: usize,
    /// Most abandoned locks kept at once in one namespace (as above).
    #[arg(
        long,
        env = "LOCKTOPUS_MAX_ABANDONED_LOCKS_PER_NAMESPACE",
        default_value_t = 100
    )]
    pub max_abandoned_locks_per_namespace: usize,
    /// Log usage statistics every N > 0 seconds (0: never).
    #[arg(long, env = "LOCKTOPUS_STATS_INTERVAL", default_value_t = 0)]
    pub stats_interval: u64,
    /// Log client sessions (true/false).
    #[arg(long, env = "LOCKTOPUS_LOG_CLIENTS", default_value = "false", value_parser = truthy,
        action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub log_clients: bool,
    /// Log locks and releases (true/false).
    #[arg(long, env = "LOCKTOPUS_LOG_LOCKS", default_value = "false", value_parser = truthy,
        action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub log_locks: bool,
    /// Log format.
    #[arg(long, env = "LOCKTOPUS_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Largest WebSocket message accepted, in bytes.
    #[arg(long, env = "LOCKTOPUS_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,
    /// Most resources in one lock.
    #[arg(long, env = "LOCKTOPUS_MAX_RESOURCES", default_value_t = 64)]
    pub max_resources: usize,
    /// Most segments in one path.
    #[arg(long, env = "LOCKTOPUS_MAX_PATH_DEPTH", default_value_t = 32)]
    pub max_path_depth: usize,
    /// Longest path segment, in bytes.
    #[arg(long, env = "LOCKTOPUS_MAX_SEGMENT_BYTES", default_value_t = 256)]
    pub max_segment_bytes: usize,
    /// Most open sessions.
    #[arg(long, env = "LOCKTOPUS_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Most open sessions in one namespace.
    #[arg(
        long,
        env = "LOCKTOPUS_MAX_CONNECTIONS_PER_NAMESPACE",
        default_value_t = 1_000
    )]
    pub max_connections_per_namespace: usize,
    /// Time a client has to send its request headers: milliseconds, or a
    /// duration (`10s`).
    #[arg(long, env = "LOCKTOPUS_HANDSHAKE_TIMEOUT", default_value_t = 10_000, value_parser = millis)]
    pub handshake_timeout: u64,
    /// Ping interval: milliseconds, or a duration (`30s`); a peer silent for
    /// two intervals, or one that takes no reply for two, is dead.
    #[arg(long, env = "LOCKTOPUS_KEEPALIVE_INTERVAL", default_value_t = 30_000, value_parser = millis)]
    pub keepalive_interval: u64,
    /// Time sessions get to close on shutdown before the server exits:
    /// milliseconds, or a duration (`5s`).
    #[arg(long, env = "LOCKTOPUS_DRAIN_TIMEOUT", default_value_t = 5_000, value_parser = millis)]
    pub drain_timeout: u64,
    /// Shared secret clients must present (`Authorization: Bearer <token>`
    /// or `?token=<token>`). Off by default, as in Locktopus.
    /// An empty token is refused at start-up (it would let `?token=` in).
    #[arg(long, env = "LOCKTOPUS_AUTH_TOKEN", hide_env_values = true, value_parser = token)]
    pub auth_token: Option<String>,
    /// Runtime worker threads (0: one per CPU). Fewer than the CPUs leaves
    /// room for co-located clients and shortens the latency tail there.
    #[arg(long, env = "LOCKTOPUS_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,
    /// PEM certificate chain: serve TLS (`wss://`) with rustls. Needs
    /// `--tls-key`. Off by default, as in Locktopus.
    #[arg(long, env = "LOCKTOPUS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `--tls-cert`.
    #[arg(long, env = "LOCKTOPUS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Cluster mode: etcd's client URLs (`http://127.0.0.1:2379,...`).
    /// Namespaces are then spread over the instances that share these
    /// endpoints, and any instance serves any client (see the README's
    /// "Running a cluster").
    #[arg(long, env = "LOCKTOPUS_ETCD_ENDPOINTS", value_delimiter = ',',
        requires = "advertise_url", value_parser = endpoint)]
    pub etcd_endpoints: Vec<String>,
    /// Cluster mode: the `http://host:port` other instances reach this one
    /// at (they forward clients there).
    #[arg(long, env = "LOCKTOPUS_ADVERTISE_URL", value_parser = advertise_url)]
    pub advertise_url: Option<String>,
    /// Cluster mode: seconds of this instance's etcd lease. An instance
    /// that dies loses its namespaces after about this long; one cut off
    /// from etcd stops granting before then. (etcd raises a TTL below its
    /// minimum, about 2 s with its default election timeout.)
    #[arg(long, env = "LOCKTOPUS_LEASE_TTL", default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub lease_ttl: u64,
    /// Cluster mode: the etcd key prefix (instances with the same prefix
    /// and endpoints form one cluster).
    #[arg(long, env = "LOCKTOPUS_ETCD_PREFIX", default_value = "/shardlock")]
    pub etcd_prefix: String,
    /// Cluster mode: PEM certificates trusted when forwarding to instances
    /// that serve TLS (`https://` advertised URLs); the webpki roots when
    /// not given.
    #[arg(long, env = "LOCKTOPUS_CLUSTER_CA")]
    pub cluster_ca: Option<PathBuf>,
    /// Cluster mode: PEM CA certificates that sign etcd's server
    /// certificates (needed for `https://` endpoints).
    #[arg(long, env = "LOCKTOPUS_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,
    /// Cluster mode: a PEM client certificate for etcd (its
    /// `--client-cert-auth`), with `--etcd-key`.
    #[arg(long, env = "LOCKTOPUS_ETCD_CERT", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// Cluster mode: the PEM private key of `--etcd-cert`.
    #[arg(long, env = "LOCKTOPUS_ETCD_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// Cluster mode: an etcd user (etcd's own authentication), with
    /// `--etcd-password`.
    #[arg(long, env = "LOCKTOPUS_ETCD_USER", requires = "etcd_password")]
    pub etcd_user: Option<String>,
    /// Cluster mode: the password of `--etcd-user`.
    #[arg(
        long,
        env = "LOCKTOPUS_ETCD_PASSWORD",
        hide_env_values = true,
        requires = "etcd_user"
    )]
    pub etcd_password: Option<String>,
}

/// `(scheme, host:port)` of a URL given as `scheme://host:port[/path]` or
/// bare `host:port`: schemes in `schemes` map to the name beside them (the
/// first is the default); any path is dropped.
fn host_port<'a>(
    s: &'a str,
    schemes: &[(&str, &'static str)],
) -> Result<(&'static str, &'a str), String> {
    let s = s.trim();
    let (scheme, rest) = match s.split_once("://") {
        Some((given, rest)) => {
            let scheme = schemes
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(given))
                .map(|(_, to)| *to)
                .ok_or_else(|| format!("`{s}`: the scheme `{given}` is not one of {schemes:?}"))?;
            (scheme, rest)
        }
        None => (schemes[0].1, s),
    };
    let host_port = rest.split('/').next().unwrap_or(rest);
    let port = host_port
        .rsplit_once(':')
        .map(|(host, p)| (host, p.parse::<u16>()));
    match port {
        Some((host, Ok(p))) if p != 0 && !host.is_empty() => Ok((scheme, host_port)),
        _ => Err(format!("`{s}` is not host:port with a port")),
    }
}

/// An etcd endpoint: `http://host:port`, `https://host:port` (with
/// `--etcd-ca`) or `host:port`.
fn endpoint(s: &str) -> Result<String, String> {
    let (scheme, host_port) = host_port(s, &[("http", "http"), ("https", "https")])?;
    Ok(format!("{scheme}://{host_port}"))
}

/// An advertised URL: `http://host:port`, or `https://host:port` for an
/// instance that serves TLS (`ws://` and `wss://` are taken as these, a
/// bare `host:port` as `http://`, and a path such as `/v1` is dropped).
fn advertise_url(s: &str) -> Result<String, String> {
    let schemes = [
        ("http", "http"),
        ("ws", "http"),
        ("https", "https"),
        ("wss", "https"),
    ];
    let (scheme, host_port) = host_port(s, &schemes)?;
    Ok(format!("{scheme}://{host_port}"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl Config {
    pub fn limits(&self) -> Limits {
        Limits {
            max_resources: self.max_resources,
            max_depth: self.max_path_depth,
            max_segment_bytes: self.max_segment_bytes,
        }
    }

    pub fn default_abandon(&self) -> Duration {
        Duration::from_millis(self.default_abandon_timeout)
    }

    pub fn keepalive(&self) -> Duration {
        Duration::from_millis(self.keepalive_interval.max(1))
    }

    /// The TLS acceptor, when `--tls-cert`/`--tls-key` are given.
    pub fn tls(&self) -> std::io::Result<Option<tokio_rustls::TlsAcceptor>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => crate::tls::acceptor(cert, key).map(Some),
            _ => Ok(None),
        }
    }

    /// Cluster mode's settings, when `--etcd-endpoints` is given.
    pub fn cluster(&self) -> Option<crate::cluster::Settings> {
        if self.etcd_endpoints.is_empty() {
            return None;
        }
        Some(crate::cluster::Settings {
            endpoints: self.etcd_endpoints.clone(),
            advertise: self.advertise_url.clone()?,
            ttl: Duration::from_secs(self.lease_ttl),
            prefix: self.etcd_prefix.trim_end_matches('/').to_owned(),
            ca: self.cluster_ca.clone(),
            etcd_ca: self.etcd_ca.clone(),
            etcd_identity: self.etcd_cert.clone().zip(self.etcd_key.clone()),
            etcd_user: self.etcd_user.clone().zip(self.etcd_password.clone()),
        })
    }

    /// A configuration for tests: loopback, a free port, defaults otherwise.
    pub fn for_tests() -> Self {
        Config::parse_from(["shardlock-server", "--port", "0"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("shardlock-server").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn booleans_take_locktopus_forms() {
        assert!(!parse(&[]).log_clients);
        assert!(parse(&["--log-clients=true"]).log_clients);
        assert!(parse(&["--log-clients", "yes", "--port", "1"]).log_clients);
        assert!(parse(&["--log-locks"]).log_locks);
        assert!(!parse(&["--log-locks=false"]).log_locks);
        assert!(!parse(&["--log-locks", "no"]).log_locks);
        let typo = Config::try_parse_from(["shardlock-server", "--log-clients=ture"]).unwrap_err();
        assert!(typo.to_string().contains("not a boolean"), "{typo}");
    }

    #[test]
    fn durations_take_milliseconds_or_units() {
        assert_eq!(
            parse(&["--keepalive-interval", "30s"]).keepalive_interval,
            30_000
        );
        assert_eq!(
            parse(&["--keepalive-interval", "1500"]).keepalive_interval,
            1_500
        );
        assert_eq!(parse(&["--drain-timeout", "250ms"]).drain_timeout, 250);
        assert_eq!(
            parse(&["--default-abandon-timeout", "1m 30s"]).default_abandon_timeout,
            90_000
        );
        assert_eq!(
            parse(&["--max-abandon-timeout", "2h"]).max_abandon_timeout,
            7_200_000
        );
        let bad = Config::try_parse_from(["shardlock-server", "--handshake-timeout", "soon"])
            .unwrap_err();
        assert!(bad.to_string().contains("not a duration"), "{bad}");
    }

    #[test]
    fn loopback_and_locktopus_defaults() {
        let c = parse(&[]);
        assert_eq!(c.host, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(c.port, 9009);
        assert_eq!(c.default_abandon_timeout, 60_000);
        assert!(c.tls_cert.is_none());
    }

    #[test]
    fn an_empty_auth_token_is_refused() {
        let err = Config::try_parse_from(["shardlock-server", "--auth-token", ""]).unwrap_err();
        assert!(err.to_string().contains("token is empty"), "{err}");
        assert_eq!(
            parse(&["--auth-token", "x"]).auth_token.as_deref(),
            Some("x")
        );
    }

    #[test]
    fn cluster_flags() {
        assert!(parse(&[]).cluster().is_none(), "single node by default");
        let c = parse(&[
            "--etcd-endpoints",
            "127.0.0.1:2379,http://127.0.0.1:22379/",
            "--advertise-url",
            "ws://127.0.0.1:9011",
        ]);
        let s = c.cluster().unwrap();
        assert_eq!(
            s.endpoints,
            ["http://127.0.0.1:2379", "http://127.0.0.1:22379"]
        );
        assert_eq!(s.advertise, "http://127.0.0.1:9011");
        assert_eq!(s.ttl, Duration::from_secs(5));
        let err = |args: &[&str]| {
            Config::try_parse_from(std::iter::once("shardlock-server").chain(args.iter().copied()))
                .unwrap_err()
                .to_string()
        };
        assert!(err(&["--etcd-endpoints", "127.0.0.1:2379"]).contains("advertise-url"));
        let no_port = ["--etcd-endpoints", "x:1", "--advertise-url", "http://h"];
        assert!(err(&no_port).contains("with a port"));
        let ftp = ["--etcd-endpoints", "x:1", "--advertise-url", "ftp://h:1"];
        assert!(err(&ftp).contains("scheme"));
        assert!(err(&["--lease-ttl", "0"]).contains("lease-ttl"));
        let bare = parse(&[
            "--etcd-endpoints",
            "x:1",
            "--advertise-url",
            "127.0.0.1:9011/v1",
        ]);
        assert_eq!(bare.cluster().unwrap().advertise, "http://127.0.0.1:9011");
        let tls = parse(&["--etcd-endpoints", "x:1", "--advertise-url", "wss://h:9"]);
        assert_eq!(tls.cluster().unwrap().advertise, "https://h:9");
    }

    #[test]
    fn tls_needs_both_files() {
        let only_cert = ["shardlock-server", "--tls-cert", "c.pem"];
        assert!(Config::try_parse_from(only_cert).is_err());
        let c = parse(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]);
        let err = c.tls().err().expect("missing files are an error");
        assert!(err.to_string().contains("c.pem"), "{err}");
    }
}
