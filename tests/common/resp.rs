//! A small blocking RESP2/RESP3 client for tests, written independently of walnut's codec so
//! the tests do not trust the code they test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// A decoded RESP2 value, or a RESP3 one (after `HELLO 3`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Value>),
    NilArray,
    /// RESP3 `_`.
    Null,
    /// RESP3 `%`: pairs in the order sent.
    Map(Vec<(Value, Value)>),
    /// RESP3 `~`.
    Set(Vec<Value>),
    /// RESP3 `>`.
    Push(Vec<Value>),
    /// RESP3 `,`, as written.
    Double(String),
    /// RESP3 `#`.
    Boolean(bool),
    /// RESP3 `=`: the format (`txt`) and the text.
    Verbatim(String, Vec<u8>),
    /// RESP3 `(`, as written.
    BigNumber(String),
}

impl Value {
    pub fn bulk(data: impl AsRef<[u8]>) -> Value {
        Value::Bulk(data.as_ref().to_vec())
    }
}

trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

/// A blocking client on TCP or a unix socket.
pub struct RespClient {
    reader: BufReader<Box<dyn Conn>>,
}

/// `*N\r\n$len\r\narg\r\n…`
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

impl RespClient {
    pub fn connect(addr: &str) -> RespClient {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        RespClient {
            reader: BufReader::new(Box::new(stream)),
        }
    }

    pub fn connect_unix(path: &Path) -> RespClient {
        let stream =
            UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        RespClient {
            reader: BufReader::new(Box::new(stream)),
        }
    }

    /// A client over any connected stream (a TLS one, say).
    pub fn over(stream: impl Read + Write + 'static) -> RespClient {
        RespClient {
            reader: BufReader::new(Box::new(stream)),
        }
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.reader
            .get_mut()
            .write_all(bytes)
            .expect("write to server");
    }

    /// One command, one reply.
    pub fn cmd(&mut self, args: &[&[u8]]) -> Value {
        self.send_raw(&encode(args));
        self.read_value()
    }

    /// Convenience for text arguments.
    pub fn cmd_str(&mut self, args: &[&str]) -> Value {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.cmd(&args)
    }

    /// Sends every command in one write, then reads one reply per command.
    pub fn pipeline(&mut self, commands: &[Vec<Vec<u8>>]) -> Vec<Value> {
        let mut out = Vec::new();
        for command in commands {
            let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
            out.extend_from_slice(&encode(&args));
        }
        self.send_raw(&out);
        (0..commands.len()).map(|_| self.read_value()).collect()
    }

    fn read_line(&mut self) -> String {
        let mut line = Vec::new();
        let n = self
            .reader
            .read_until(b'\n', &mut line)
            .expect("read reply line");
        assert!(n > 0, "connection closed while a reply was expected");
        assert!(line.ends_with(b"\r\n"), "reply line without CRLF: {line:?}");
        line.truncate(line.len() - 2);
        String::from_utf8(line).expect("reply line is UTF-8")
    }

    fn read_blob(&mut self, len: &str) -> Vec<u8> {
        let len: usize = len.parse().expect("blob length");
        let mut data = vec![0; len + 2];
        self.reader.read_exact(&mut data).expect("blob data");
        data.truncate(len);
        data
    }

    fn read_values(&mut self, len: &str) -> Vec<Value> {
        let len: usize = len.parse().expect("aggregate length");
        (0..len).map(|_| self.read_value()).collect()
    }

    /// Reads one whole reply.
    pub fn read_value(&mut self) -> Value {
        let line = self.read_line();
        let (kind, rest) = line.split_at(1);
        match kind {
            "_" => Value::Null,
            "," => Value::Double(rest.to_string()),
            "#" => Value::Boolean(rest == "t"),
            "(" => Value::BigNumber(rest.to_string()),
            "~" => Value::Set(self.read_values(rest)),
            ">" => Value::Push(self.read_values(rest)),
            "%" => {
                let pairs: usize = rest.parse().expect("map length");
                Value::Map(
                    (0..pairs)
                        .map(|_| (self.read_value(), self.read_value()))
                        .collect(),
                )
            }
            "=" => {
                let data = self.read_blob(rest);
                let (format, text) = data.split_at(4.min(data.len()));
                Value::Verbatim(
                    String::from_utf8_lossy(&format[..3.min(format.len())]).into_owned(),
                    text.to_vec(),
                )
            }
            "+" => Value::Status(rest.to_string()),
            "-" => Value::Error(rest.to_string()),
            ":" => Value::Int(rest.parse().expect("integer reply")),
            "$" => {
                let len: i64 = rest.parse().expect("bulk length");
                if len < 0 {
                    return Value::Nil;
                }
                let mut data = vec![0; len as usize + 2];
                self.reader.read_exact(&mut data).expect("bulk data");
                data.truncate(len as usize);
                Value::Bulk(data)
            }
            "*" => {
                let len: i64 = rest.parse().expect("array length");
                if len < 0 {
                    return Value::NilArray;
                }
                Value::Array((0..len).map(|_| self.read_value()).collect())
            }
            other => panic!("unexpected reply type {other:?} in {line:?}"),
        }
    }

    /// True when the peer has closed the connection (reads EOF).
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.reader.read(&mut byte), Ok(0))
    }
}
