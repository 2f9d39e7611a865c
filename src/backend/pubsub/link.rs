//! One raw connection to Redis for a subscriber or a MONITOR stream: TCP, TLS or a
//! Unix socket, authenticated and named, reading and writing RESP2 frames.
//!
//! Addresses, credentials and TLS settings come from fred's own parsing of
//! `REDIS_URL`, so every URL the backend accepts works here too. On a cluster the
//! link goes to the first node that answers (Redis forwards plain `PUBLISH` to every
//! node), or to one node chosen by [`Endpoint::at`] (sharded Pub/Sub); behind
//! Sentinel it goes to the primary the sentinels name (asked with `sentinelUsername`
//! and `sentinelPassword` when the URL has them).

use std::path::PathBuf;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use fred::types::config::{Config as FredConfig, Server, ServerConfig, TlsConnector};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::resp::{self, ProtocolError, Reply};

/// Bytes read from the socket at a time (the buffer grows for larger frames).
const READ_CHUNK: usize = 16 * 1024;

/// Why a link could not be opened or broke.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    /// TCP, TLS or Unix-socket failure, or the peer closed the connection.
    #[error("{0}")]
    Io(String),
    /// No answer in time.
    #[error("Redis did not answer within {0} ms")]
    Timeout(u128),
    /// Redis refused the handshake (AUTH) or a command.
    #[error("{0}")]
    Refused(String),
    /// Redis sent bytes that are not RESP2.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The URL describes something a link cannot reach.
    #[error("{0}")]
    Config(String),
}

impl From<std::io::Error> for LinkError {
    fn from(error: std::io::Error) -> Self {
        LinkError::Io(error.to_string())
    }
}

/// Where and how to connect, from `REDIS_URL`.
#[derive(Clone)]
pub struct Endpoint {
    target: Target,
    username: Option<String>,
    password: Option<String>,
    tls: Option<TlsConnector>,
}

#[derive(Clone)]
enum Target {
    /// A single node.
    Node(Server),
    /// The known nodes of a cluster (tried in order).
    Cluster(Vec<Server>),
    /// A Unix socket.
    Unix(PathBuf),
    /// Sentinels that name the primary of `service`, with the Sentinels' own
    /// credentials (`sentinelUsername`, `sentinelPassword`).
    Sentinel {
        hosts: Vec<Server>,
        service: String,
        username: Option<String>,
        password: Option<String>,
    },
}

impl Endpoint {
    /// Parses `url` as the backend does.
    pub fn from_url(url: &str) -> Result<Endpoint, LinkError> {
        let config = FredConfig::from_url(url).map_err(|e| LinkError::Config(e.to_string()))?;
        let target = match config.server {
            ServerConfig::Centralized { server } => Target::Node(server),
            ServerConfig::Clustered { mut hosts, .. } => {
                // fred appends the URL's own host last; try it first.
                hosts.rotate_right(1);
                Target::Cluster(hosts)
            }
            ServerConfig::Unix { path } => Target::Unix(path),
            ServerConfig::Sentinel {
                hosts,
                service_name,
                username,
                password,
            } => Target::Sentinel {
                hosts,
                service: service_name,
                username,
                password,
            },
        };
        Ok(Endpoint {
            target,
            username: config.username,
            password: config.password,
            tls: config.tls.map(|t| t.connector),
        })
    }

    /// Uses TLS with `connector` (the operator's CA): `RESTASH_REDIS_TLS_CA_FILE`.
    pub fn trust(&mut self, connector: TlsConnector) {
        self.tls = Some(connector);
    }

    /// The nodes `REDIS_URL` names when it is a cluster URL (`redis-cluster://`).
    pub fn cluster_seeds(&self) -> Option<&[Server]> {
        match &self.target {
            Target::Cluster(nodes) => Some(nodes),
            _ => None,
        }
    }

    /// The same credentials and TLS settings, towards `server` only.
    pub fn at(&self, server: Server) -> Endpoint {
        Endpoint {
            target: Target::Node(server),
            username: self.username.clone(),
            password: self.password.clone(),
            tls: self.tls.clone(),
        }
    }
}

/// Probes after 30 s of silence, every 10 s, 3 times: a dead peer is found within a
/// minute, and a load balancer's idle timer never runs out.
const TCP_KEEPALIVE: socket2::TcpKeepalive = socket2::TcpKeepalive::new()
    .with_time(Duration::from_secs(30))
    .with_interval(Duration::from_secs(10))
    .with_retries(3);

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An open, authenticated connection.
pub struct Link {
    io: Box<dyn Io>,
    input: BytesMut,
    output: Vec<u8>,
}

impl Link {
    /// Connects, authenticates and names the connection `name` (shown by `CLIENT LIST`),
    /// all within `limit`.
    pub async fn connect(
        endpoint: &Endpoint,
        name: &str,
        limit: Duration,
    ) -> Result<Link, LinkError> {
        match tokio::time::timeout(limit, Self::open(endpoint, name)).await {
            Ok(result) => result,
            Err(_) => Err(LinkError::Timeout(limit.as_millis())),
        }
    }

    async fn open(endpoint: &Endpoint, name: &str) -> Result<Link, LinkError> {
        let mut link = match &endpoint.target {
            Target::Unix(path) => Self::unix(path).await?,
            Target::Node(node) => Self::tcp(endpoint, node).await?,
            Target::Cluster(nodes) => Self::first_node(endpoint, nodes).await?,
            Target::Sentinel {
                hosts,
                service,
                username,
                password,
            } => {
                let credentials = (username.as_deref(), password.as_deref());
                let primary = Self::ask_sentinels(endpoint, hosts, service, credentials).await?;
                Self::tcp(endpoint, &primary).await?
            }
        };
        link.authenticate(endpoint.username.as_deref(), endpoint.password.as_deref())
            .await?;
        // Naming is a courtesy for operators; an ACL may forbid it.
        link.request(&[b"CLIENT", b"SETNAME", name.as_bytes()])
            .await?;
        // A server that refuses the connection (max clients reached, protected mode)
        // writes one error and closes: the link is usable only once PING answers.
        match link.request(&[b"PING"]).await? {
            Reply::Error(text) => Err(LinkError::Refused(
                String::from_utf8_lossy(&text).into_owned(),
            )),
            _ => Ok(link),
        }
    }

    async fn first_node(endpoint: &Endpoint, nodes: &[Server]) -> Result<Link, LinkError> {
        let mut last = LinkError::Config("no Redis node in REDIS_URL".into());
        for node in nodes {
            match Self::tcp(endpoint, node).await {
                Ok(link) => return Ok(link),
                Err(error) => last = error,
            }
        }
        Err(last)
    }

    /// `AUTH [username] password`, when there is a password.
    async fn authenticate(
        &mut self,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Result<(), LinkError> {
        let Some(password) = password else {
            return Ok(());
        };
        let mut args: Vec<&[u8]> = vec![b"AUTH"];
        if let Some(user) = username {
            args.push(user.as_bytes());
        }
        args.push(password.as_bytes());
        match self.request(&args).await? {
            Reply::Error(text) => Err(LinkError::Refused(
                String::from_utf8_lossy(&text).into_owned(),
            )),
            _ => Ok(()),
        }
    }

    async fn ask_sentinels(
        endpoint: &Endpoint,
        hosts: &[Server],
        service: &str,
        (username, password): (Option<&str>, Option<&str>),
    ) -> Result<Server, LinkError> {
        let mut last = LinkError::Config("no sentinel in REDIS_URL".into());
        for host in hosts {
            let mut sentinel = match Self::tcp(endpoint, host).await {
                Ok(link) => link,
                Err(error) => {
                    last = error;
                    continue;
                }
            };
            if let Err(error) = sentinel.authenticate(username, password).await {
                last = error;
                continue;
            }
            // A sentinel that fails mid-request is skipped, like one that is down.
            let reply = match sentinel
                .request(&[b"SENTINEL", b"GET-MASTER-ADDR-BY-NAME", service.as_bytes()])
                .await
            {
                Ok(reply) => reply,
                Err(error) => {
                    last = error;
                    continue;
                }
            };
            if let Reply::Array(Some(items)) = &reply {
                let text = |i: usize| {
                    items
                        .get(i)
                        .and_then(Reply::bytes)
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                };
                if let (Some(host), Some(port)) = (text(0), text(1).and_then(|p| p.parse().ok())) {
                    return Ok(Server::new(host, port));
                }
            }
            last = match reply {
                Reply::Error(text) => LinkError::Refused(format!(
                    "sentinel refused SENTINEL GET-MASTER-ADDR-BY-NAME: {}",
                    String::from_utf8_lossy(&text)
                )),
                _ => LinkError::Refused(format!("sentinel does not know the service {service}")),
            };
        }
        Err(last)
    }

    async fn tcp(endpoint: &Endpoint, server: &Server) -> Result<Link, LinkError> {
        let socket = tokio::net::TcpStream::connect((&*server.host, server.port)).await?;
        let _ = socket.set_nodelay(true);
        // A subscriber mostly reads and may wait hours for a message: without keepalive
        // probes a connection that died silently (a crashed host, a partition, a load
        // balancer's idle timeout) would look subscribed forever.
        let _ = socket2::SockRef::from(&socket).set_tcp_keepalive(&TCP_KEEPALIVE);
        let io: Box<dyn Io> = match &endpoint.tls {
            None => Box::new(socket),
            Some(TlsConnector::Rustls(connector)) => {
                let name = server
                    .tls_server_name
                    .clone()
                    .unwrap_or_else(|| server.host.clone());
                let name = fred::rustls::pki_types::ServerName::try_from(name.to_string())
                    .map_err(|e| LinkError::Config(format!("invalid TLS server name: {e}")))?;
                Box::new(connector.connect(name, socket).await?)
            }
            #[allow(unreachable_patterns)]
            Some(_) => return Err(LinkError::Config("only rustls TLS is supported".into())),
        };
        Ok(Link::new(io))
    }

    async fn unix(path: &PathBuf) -> Result<Link, LinkError> {
        Ok(Link::new(Box::new(
            tokio::net::UnixStream::connect(path).await?,
        )))
    }

    fn new(io: Box<dyn Io>) -> Link {
        Link {
            io,
            input: BytesMut::with_capacity(READ_CHUNK),
            output: Vec::with_capacity(256),
        }
    }

    /// Queues one command; [`Link::flush`] sends everything queued.
    pub fn queue(&mut self, args: &[&[u8]]) {
        resp::encode(&mut self.output, args);
    }

    /// Writes every queued command.
    pub async fn flush(&mut self) -> Result<(), LinkError> {
        if !self.output.is_empty() {
            self.io.write_all(&self.output).await?;
            self.io.flush().await?;
            self.output.clear();
        }
        Ok(())
    }

    /// Sends one command and reads one reply (for the handshake, before any subscription).
    pub async fn request(&mut self, args: &[&[u8]]) -> Result<Reply, LinkError> {
        self.queue(args);
        self.flush().await?;
        self.read().await
    }

    /// Reads the next reply. Cancel-safe: bytes already read stay buffered.
    pub async fn read(&mut self) -> Result<Reply, LinkError> {
        loop {
            if let Some((reply, used)) = resp::decode(&self.input)? {
                self.input.advance(used);
                return Ok(reply);
            }
            self.input.reserve(READ_CHUNK);
            if self.io.read_buf(&mut self.input).await? == 0 {
                return Err(LinkError::Io("Redis closed the connection".into()));
            }
        }
    }
}
