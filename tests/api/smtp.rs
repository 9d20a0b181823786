//! A small SMTP server on loopback that speaks the real protocol (RFC 5321: greeting,
//! EHLO/HELO, MAIL FROM, RCPT TO, DATA with dot-unstuffing, RSET, NOOP, QUIT), so the
//! server's mail goes through lettre's production SMTP client. It keeps what it receives,
//! and can be taken down (421 at the greeting, a transient failure) or made to hang.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One message as the server received it.
#[derive(Clone, Debug)]
pub struct Received {
    /// The envelope sender (MAIL FROM).
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

impl Received {
    /// The message's headers and its body decoded as a mail client would (7bit, or
    /// quoted-printable).
    pub fn text(&self) -> (String, String) {
        let (headers, body) = self.data.split_once("\r\n\r\n").unwrap_or((&self.data, ""));
        let quoted = headers.to_ascii_lowercase().contains("content-transfer-encoding: quoted-printable");
        (headers.to_string(), if quoted { decode_quoted_printable(body) } else { body.to_string() })
    }

    /// The first link in the body with this path (e.g. `/oauth/invitation`), and its token.
    pub fn link(&self, path: &str) -> (String, String) {
        let (_, body) = self.text();
        let start = body.find(&format!("{path}?token=")).unwrap_or_else(|| panic!("no {path} link in {body}"));
        let url_start = body[..start].rfind("http").expect("an absolute link");
        let end = body[start..].find(char::is_whitespace).map_or(body.len(), |e| start + e);
        let url = body[url_start..end].to_string();
        let token = url.split("token=").nth(1).unwrap().to_string();
        (url, token)
    }
}

/// RFC 2045 quoted-printable: soft line breaks joined, `=XX` decoded.
fn decode_quoted_printable(body: &str) -> String {
    let joined = body.replace("=\r\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

const UP: u8 = 0;
const DOWN: u8 = 1;
const HANGING: u8 = 2;

/// The test SMTP server.
#[derive(Clone)]
pub struct Mailbox {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    mode: Arc<AtomicU8>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl Mailbox {
    pub async fn start() -> Mailbox {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mailbox = Mailbox {
            port,
            received: Default::default(),
            mode: Arc::new(AtomicU8::new(UP)),
            connections: Default::default(),
        };
        let served = mailbox.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                served.connections.fetch_add(1, Ordering::SeqCst);
                let session = served.clone();
                tokio::spawn(async move {
                    let _ = session.serve(stream).await;
                });
            }
        });
        mailbox
    }

    /// `SMTP_URL` of this server (plain SMTP on loopback).
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Refuses every new connection with 421 (a transient failure) until `up`.
    pub fn down(&self) {
        self.mode.store(DOWN, Ordering::SeqCst);
    }

    /// Accepts connections but never answers (a sender stuck mid-send).
    pub fn hang(&self) {
        self.mode.store(HANGING, Ordering::SeqCst);
    }

    pub fn up(&self) {
        self.mode.store(UP, Ordering::SeqCst);
    }

    /// How many connections were opened so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits up to 15 s for the `nth` (0-based) message to `to`.
    pub async fn wait_for_nth(&self, to: &str, nth: usize) -> Received {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let found: Vec<Received> =
                self.received().into_iter().filter(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(to))).collect();
            if let Some(message) = found.get(nth) {
                return message.clone();
            }
            assert!(Instant::now() < deadline, "no mail #{nth} to {to} arrived; received: {:?}", self.received());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the first message to `to`.
    pub async fn wait_for(&self, to: &str) -> Received {
        self.wait_for_nth(to, 0).await
    }

    async fn serve(&self, stream: TcpStream) -> std::io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read);
        match self.mode.load(Ordering::SeqCst) {
            DOWN => {
                write.write_all(b"421 4.3.2 test server down, try later\r\n").await?;
                return Ok(());
            }
            HANGING => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return Ok(());
            }
            _ => write.write_all(b"220 mail.test ESMTP venueql test server\r\n").await?,
        }
        let (mut from, mut to) = (String::new(), Vec::new());
        let mut line = String::new();
        loop {
            line.clear();
            if lines.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let command = line.trim_end().to_string();
            let verb = command.split_whitespace().next().unwrap_or_default().to_ascii_uppercase();
            let reply: &[u8] = match verb.as_str() {
                "EHLO" => b"250-mail.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
                "HELO" => b"250 mail.test\r\n",
                "MAIL" => {
                    from = address(&command);
                    b"250 2.1.0 OK\r\n"
                }
                "RCPT" => {
                    to.push(address(&command));
                    b"250 2.1.5 OK\r\n"
                }
                "DATA" => {
                    write.write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n").await?;
                    let mut data = String::new();
                    loop {
                        line.clear();
                        if lines.read_line(&mut line).await? == 0 {
                            return Ok(());
                        }
                        if line == ".\r\n" || line == ".\n" {
                            break;
                        }
                        data.push_str(line.strip_prefix('.').unwrap_or(&line));
                    }
                    let message = Received { from: std::mem::take(&mut from), to: std::mem::take(&mut to), data };
                    self.received.lock().unwrap().push(message);
                    b"250 2.0.0 queued\r\n"
                }
                "RSET" => {
                    from.clear();
                    to.clear();
                    b"250 2.0.0 OK\r\n"
                }
                "NOOP" => b"250 2.0.0 OK\r\n",
                "QUIT" => {
                    write.write_all(b"221 2.0.0 bye\r\n").await?;
                    return Ok(());
                }
                _ => b"502 5.5.2 command not recognised\r\n",
            };
            write.write_all(reply).await?;
        }
    }
}

/// The address inside `<…>` of a MAIL FROM or RCPT TO command.
fn address(command: &str) -> String {
    command.split('<').nth(1).and_then(|rest| rest.split('>').next()).unwrap_or_default().to_string()
}
