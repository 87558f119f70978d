//! A one-command admin channel for the standalone embedded broker.
//!
//! librdkafka's mock cluster has no CreateTopics handler, so a client outside
//! the process (the container backend running this crate's own image) creates
//! topics through this line protocol instead:
//! `create <topic> <partitions>\n` → `ok\n` or `error <reason>\n`.
//! [`AdminCommand::parse`] reads one such line without any I/O.

use std::fmt;
use std::net::SocketAddr;
use std::num::ParseIntError;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::Broker;
use crate::error::{Error, Result};

/// The admin channel of a standalone embedded broker; closed when dropped,
/// or by [`shutdown`](Self::shutdown), which also waits until no task of
/// the channel holds the broker any more.
#[derive(Debug)]
pub struct AdminChannel {
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl AdminChannel {
    /// Serves topic creation for `broker` on `listen` (port 0 = a free port).
    pub async fn serve(broker: Arc<Broker>, listen: SocketAddr) -> Result<Self> {
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (local_addr, task) = serve(broker, listen, stopped).await?;
        Ok(Self {
            local_addr,
            task,
            stop: Some(stop),
        })
    }

    /// Where the channel listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops listening, ends every connection, and returns once every
    /// clone of the broker the channel held is dropped: the caller can
    /// then take the broker back (`Arc::try_unwrap`) and shut it down.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            // An error means the task has ended already.
            let _ = stop.send(());
        }
        // A panicked answer would show here; the broker is released either way.
        let _ = (&mut self.task).await;
    }
}

impl Drop for AdminChannel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    broker: Arc<Broker>,
    listen: SocketAddr,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Front {
            addr: listen.to_string(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| Error::Front {
        addr: listen.to_string(),
        source,
    })?;
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        connections.spawn(answer(Arc::clone(&broker), stream));
                    }
                    Err(_) => break,
                },
                // Reap finished connections so the set does not grow.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        // Aborts every connection and waits until each has let go of its
        // clone of the broker.
        connections.shutdown().await;
    });
    Ok((local, task))
}

/// Longest request line (newline included) the channel reads: a longer
/// one gets an error and its connection is closed, so that no client can
/// make the broker buffer without bound.
pub const MAX_LINE_BYTES: usize = 1024;

async fn answer(broker: Arc<Broker>, stream: TcpStream) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut line = Vec::new();
        let limit = MAX_LINE_BYTES as u64 + 1;
        match (&mut reader).take(limit).read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let too_long = line.len() > MAX_LINE_BYTES;
        let reply = if too_long {
            format!("error a request line is longer than {MAX_LINE_BYTES} bytes; {USAGE}")
        } else {
            match AdminCommand::parse(&String::from_utf8_lossy(&line)) {
                Ok(AdminCommand::Create { topic, partitions }) => {
                    match broker.create_topic(&topic, partitions).await {
                        Ok(()) => "ok".to_owned(),
                        Err(e) => format!("error {e}"),
                    }
                }
                Err(e) => format!("error {e}"),
            }
        };
        // `{:?}` quoting in every message keeps a reply on one line.
        if write
            .write_all(format!("{reply}\n").as_bytes())
            .await
            .is_err()
            || too_long
        {
            return;
        }
    }
}

/// The usage line every parse error ends with.
const USAGE: &str = "expected: create <topic> <partitions>";

/// Longest part of a request quoted back in an error: a reply stays short
/// whatever a client sends.
const QUOTED_CHARS: usize = 64;

/// Kafka's limit on a topic name's length.
pub const MAX_TOPIC_LEN: usize = 249;

/// One request of the admin channel's line protocol.
///
/// ```
/// use kafka_trace_harness::broker::{AdminCommand, AdminParseError};
///
/// let command = AdminCommand::parse("create trades 3\n")?;
/// assert_eq!(
///     command,
///     AdminCommand::Create { topic: "trades".to_owned(), partitions: 3 }
/// );
/// assert_eq!(command.to_string(), "create trades 3");
///
/// assert_eq!(
///     AdminCommand::parse("create trades 0"),
///     Err(AdminParseError::ZeroPartitions)
/// );
/// assert!(matches!(
///     AdminCommand::parse("delete trades"),
///     Err(AdminParseError::UnknownCommand { .. })
/// ));
/// # Ok::<(), AdminParseError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdminCommand {
    /// `create <topic> <partitions>`: create a topic.
    Create {
        /// A legal Kafka topic name (at most [`MAX_TOPIC_LEN`] ASCII
        /// letters, digits, `.`, `_` and `-`; not `.` or `..`).
        topic: String,
        /// Number of partitions, at least 1.
        partitions: u16,
    },
}

impl AdminCommand {
    /// Parses one request line. Words are separated by any whitespace, and
    /// surrounding whitespace (including the line's `\n` or `\r\n`) is
    /// ignored.
    pub fn parse(line: &str) -> std::result::Result<Self, AdminParseError> {
        let mut words = line.split_whitespace();
        let command = words.next().ok_or(AdminParseError::Empty)?;
        if command != "create" {
            return Err(AdminParseError::UnknownCommand {
                command: shorten(command),
            });
        }
        // Counted without collecting: a hostile line may hold many words.
        let (topic, partitions) = match (words.next(), words.next(), words.next()) {
            (Some(topic), Some(partitions), None) => (topic, partitions),
            (topic, partitions, extra) => {
                let given = [topic, partitions, extra].iter().flatten().count() + words.count();
                return Err(AdminParseError::Arguments { given });
            }
        };
        check_topic(topic)?;
        let partitions = match partitions.parse::<u16>() {
            Ok(0) => return Err(AdminParseError::ZeroPartitions),
            Ok(n) => n,
            Err(source) => {
                return Err(AdminParseError::Partitions {
                    value: shorten(partitions),
                    source,
                });
            }
        };
        Ok(Self::Create {
            topic: topic.to_owned(),
            partitions,
        })
    }
}

/// The request line, without its `\n`; parses back to the same command.
impl fmt::Display for AdminCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Create { topic, partitions } => write!(f, "create {topic} {partitions}"),
        }
    }
}

/// Why an admin request line was refused; the channel replies
/// `error <this message>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdminParseError {
    /// The line holds no word.
    #[error("empty request; {USAGE}")]
    Empty,
    /// The first word is not a known command.
    #[error("unknown command {command:?}; {USAGE}")]
    UnknownCommand {
        /// The first word (at most 64 characters of it).
        command: String,
    },
    /// `create` did not get exactly two arguments.
    #[error("create takes 2 arguments, got {given}; {USAGE}")]
    Arguments {
        /// How many words followed the command.
        given: usize,
    },
    /// The topic name is not one Kafka accepts.
    #[error("topic {topic:?} {reason}; {USAGE}")]
    InvalidTopic {
        /// The name (at most 64 characters of it).
        topic: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The partition count is not a number from 1 to 65535.
    #[error("partitions {value:?}: {source}; {USAGE}")]
    Partitions {
        /// The word given (at most 64 characters of it).
        value: String,
        /// What the integer parser said.
        source: ParseIntError,
    },
    /// The partition count is 0.
    #[error("partitions must be at least 1; {USAGE}")]
    ZeroPartitions,
}

/// Kafka's own rule for topic names, so that the mock cluster is asked for
/// no topic a real broker would refuse.
fn check_topic(topic: &str) -> std::result::Result<(), AdminParseError> {
    let reason = if topic.len() > MAX_TOPIC_LEN {
        "is longer than 249 characters"
    } else if topic == "." || topic == ".." {
        "is reserved"
    } else if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        "has a character other than ASCII letters, digits, '.', '_' and '-'"
    } else {
        return Ok(());
    };
    Err(AdminParseError::InvalidTopic {
        topic: shorten(topic),
        reason,
    })
}

/// The first [`QUOTED_CHARS`] characters of `text`, marked when cut.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(QUOTED_CHARS) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

/// Asks the admin channel at `admin` to create `topic`.
#[cfg(feature = "container")]
pub(crate) async fn create_topic(
    admin: &str,
    topic: &str,
    partitions: u16,
) -> std::result::Result<(), String> {
    let stream = TcpStream::connect(admin)
        .await
        .map_err(|e| format!("admin channel {admin}: {e}"))?;
    let (read, mut write) = stream.into_split();
    write
        .write_all(format!("create {topic} {partitions}\n").as_bytes())
        .await
        .map_err(|e| format!("admin channel {admin}: {e}"))?;
    let reply = BufReader::new(read)
        .lines()
        .next_line()
        .await
        .map_err(|e| format!("admin channel {admin}: {e}"))?
        .unwrap_or_default();
    match reply.strip_prefix("error ") {
        None if reply == "ok" => Ok(()),
        None => Err(format!("admin channel {admin} answered {reply:?}")),
        Some(reason) => Err(reason.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_line_too_long_is_refused_and_its_connection_closed() {
        let broker = Arc::new(Broker::start().await.expect("broker"));
        let channel = AdminChannel::serve(Arc::clone(&broker), "127.0.0.1:0".parse().unwrap())
            .await
            .expect("admin channel");
        let stream = TcpStream::connect(channel.local_addr()).await.unwrap();
        let (read, mut write) = stream.into_split();
        // 64 KiB of one line, then a valid command on the same connection.
        let mut request = vec![b'x'; 64 * 1024];
        request.extend_from_slice(b"\ncreate t 1\n");
        write.write_all(&request).await.unwrap();
        let mut replies = BufReader::new(read).lines();
        let deadline = std::time::Duration::from_secs(10);
        let first = tokio::time::timeout(deadline, replies.next_line())
            .await
            .expect("a reply within 10 s")
            .unwrap()
            .expect("a reply");
        assert!(
            first.starts_with("error a request line is longer than 1024 bytes"),
            "{first}"
        );
        let next = tokio::time::timeout(deadline, replies.next_line())
            .await
            .expect("the connection closes within 10 s");
        assert!(matches!(next, Ok(None) | Err(_)), "{next:?}");
        channel.shutdown().await;
        Arc::try_unwrap(broker)
            .expect("the channel let go of the broker")
            .shutdown()
            .await
            .unwrap();
    }

    fn create(topic: &str, partitions: u16) -> AdminCommand {
        AdminCommand::Create {
            topic: topic.to_owned(),
            partitions,
        }
    }

    #[test]
    fn parses_create_with_any_whitespace() {
        assert_eq!(AdminCommand::parse("create t 3"), Ok(create("t", 3)));
        assert_eq!(
            AdminCommand::parse("  create\tstockapp.trades-1_x   65535\r\n"),
            Ok(create("stockapp.trades-1_x", 65535))
        );
    }

    #[test]
    fn display_parses_back() {
        let command = create("orders", 12);
        assert_eq!(AdminCommand::parse(&command.to_string()), Ok(command));
    }

    #[test]
    fn refuses_each_malformed_line_with_its_own_error() {
        assert_eq!(AdminCommand::parse(""), Err(AdminParseError::Empty));
        assert_eq!(AdminCommand::parse(" \t\r\n"), Err(AdminParseError::Empty));
        assert_eq!(
            AdminCommand::parse("CREATE t 1"),
            Err(AdminParseError::UnknownCommand {
                command: "CREATE".to_owned()
            })
        );
        for (line, given) in [("create", 0), ("create t", 1), ("create t 1 2", 3)] {
            assert_eq!(
                AdminCommand::parse(line),
                Err(AdminParseError::Arguments { given }),
                "{line:?}"
            );
        }
        assert_eq!(
            AdminCommand::parse("create t 0"),
            Err(AdminParseError::ZeroPartitions)
        );
        for value in ["-1", "65536", "3.0", "x", "+"] {
            assert!(
                matches!(
                    AdminCommand::parse(&format!("create t {value}")),
                    Err(AdminParseError::Partitions { value: v, .. }) if v == value
                ),
                "{value}"
            );
        }
        for topic in [".", "..", "a/b", "café", "a\0b", &"x".repeat(250)] {
            assert!(
                matches!(
                    AdminCommand::parse(&format!("create {topic} 1")),
                    Err(AdminParseError::InvalidTopic { .. })
                ),
                "{topic:?}"
            );
        }
        assert!(AdminCommand::parse(&format!("create {} 1", "x".repeat(249))).is_ok());
    }

    #[test]
    fn errors_quote_at_most_a_short_prefix_on_one_line() {
        let long = format!("{}\u{7}", "é".repeat(1000));
        let err = AdminCommand::parse(&long).unwrap_err();
        let text = err.to_string();
        assert!(text.chars().count() < 200, "{text}");
        assert!(text.contains('…'), "{text}");
        assert!(!text.contains('\n'));
        assert!(text.ends_with(USAGE), "{text}");
    }
}
