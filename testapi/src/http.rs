//! Just enough HTTP/1.1 for Kubernetes clients: requests with Content-Length bodies,
//! keep-alive, fixed-length responses and chunked streaming for watches. [`Request`] is also
//! what [`super::h2`] hands the router, so both protocols meet the same handlers.

use std::io::{self, Read, Write};

/// Largest request head accepted; real clients send a few hundred bytes.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body accepted (the real apiserver's limit is about 3 MiB).
pub const MAX_BODY: usize = 16 * 1024 * 1024;
const MAX_HEADERS: usize = 64;

#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The path without the query, percent-decoded.
    pub path: String,
    pub query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// A request for `target` (path and query, as on the request line), body still to come.
    pub fn new(method: &str, target: &str, headers: Vec<(String, String)>) -> Request {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Request {
            method: method.to_string(),
            path: percent_decode(path, false),
            query: parse_query(query),
            headers,
            body: Vec::new(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The last value of a query parameter.
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn wants_close(&self) -> bool {
        self.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Answer 400 (or 413) and close: the stream can no longer be parsed.
    #[error("bad request: {1}")]
    Bad(u16, String),
}

/// One connection's read side: buffers bytes so pipelined requests are not lost.
pub struct RequestReader {
    buf: Vec<u8>,
}

impl RequestReader {
    pub fn new() -> RequestReader {
        RequestReader { buf: Vec::new() }
    }

    /// The next request; None when the peer closed between requests. `on_idle` is called
    /// whenever a read times out and returns false to give up (server shutting down).
    pub fn read_request<S: Read + Write>(
        &mut self,
        stream: &mut S,
        on_idle: &dyn Fn() -> bool,
    ) -> Result<Option<Request>, HttpError> {
        loop {
            if let Some((head_len, mut request, content_length)) = self.parse_head()? {
                if content_length > MAX_BODY {
                    return Err(HttpError::Bad(413, "request body too large".into()));
                }
                if request.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
                    && self.buf.len() < head_len + content_length
                {
                    stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
                    stream.flush()?;
                }
                while self.buf.len() < head_len + content_length {
                    if !self.fill(stream, on_idle)? {
                        return Err(HttpError::Io(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
                request.body = self.buf[head_len..head_len + content_length].to_vec();
                self.buf.drain(..head_len + content_length);
                return Ok(Some(request));
            }
            if self.buf.len() > MAX_HEAD {
                return Err(HttpError::Bad(431, "request header too large".into()));
            }
            if !self.fill(stream, on_idle)? {
                return match self.buf.is_empty() {
                    true => Ok(None),
                    false => Err(HttpError::Io(io::ErrorKind::UnexpectedEof.into())),
                };
            }
        }
    }

    /// Reads more bytes; false on EOF.
    fn fill<S: Read>(&mut self, stream: &mut S, on_idle: &dyn Fn() -> bool) -> Result<bool, HttpError> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    if !on_idle() {
                        return Ok(false);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The request head if complete: its length, the request and the body length.
    fn parse_head(&self) -> Result<Option<(usize, Request, usize)>, HttpError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        let head_len = match parsed.parse(&self.buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(HttpError::Bad(400, e.to_string())),
        };
        let headers: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
            .collect();
        let request = Request::new(parsed.method.unwrap_or_default(), parsed.path.unwrap_or_default(), headers);
        if request.header("transfer-encoding").is_some() {
            return Err(HttpError::Bad(400, "chunked request bodies are not supported".into()));
        }
        let content_length = match request.header("content-length") {
            Some(v) => v.trim().parse::<usize>().map_err(|_| HttpError::Bad(400, "bad Content-Length".into()))?,
            None => 0,
        };
        Ok(Some((head_len, request, content_length)))
    }
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

/// Decodes `%XX` (and `+` as space in query strings, as Go's url.ParseQuery does);
/// malformed escapes are kept as they are.
fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex_digit(bytes[i + 1]), hex_digit(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        410 => "Gone",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

fn head(code: u16, content_type: &str, extra: &[(&str, String)], keep_alive: bool) -> String {
    let mut head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: {content_type}\r\nCache-Control: no-cache, private\r\n",
        reason_phrase(code)
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    head
}

/// Writes a complete response; returns the bytes written.
pub fn write_response<W: Write>(
    out: &mut W,
    code: u16,
    content_type: &str,
    extra: &[(&str, String)],
    body: &[u8],
    keep_alive: bool,
) -> io::Result<usize> {
    let mut bytes = head(code, content_type, extra, keep_alive);
    bytes.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut message = bytes.into_bytes();
    message.extend_from_slice(body);
    out.write_all(&message)?;
    out.flush()?;
    Ok(message.len())
}

/// A chunked response in progress (watch streams).
pub struct ChunkedWriter<'a, W: Write> {
    out: &'a mut W,
    pub bytes_written: usize,
}

impl<'a, W: Write> ChunkedWriter<'a, W> {
    pub fn start(out: &'a mut W, content_type: &str, keep_alive: bool) -> io::Result<Self> {
        let mut bytes = head(200, content_type, &[], keep_alive);
        bytes.push_str("Transfer-Encoding: chunked\r\n\r\n");
        out.write_all(bytes.as_bytes())?;
        out.flush()?;
        Ok(ChunkedWriter { out, bytes_written: bytes.len() })
    }

    /// Sends one chunk at once, so the client sees each event as it happens.
    pub fn chunk(&mut self, data: &[u8]) -> io::Result<()> {
        let mut message = format!("{:x}\r\n", data.len()).into_bytes();
        message.extend_from_slice(data);
        message.extend_from_slice(b"\r\n");
        self.out.write_all(&message)?;
        self.out.flush()?;
        self.bytes_written += message.len();
        Ok(())
    }

    pub fn finish(self) -> io::Result<usize> {
        self.out.write_all(b"0\r\n\r\n")?;
        self.out.flush()?;
        Ok(self.bytes_written + 5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that serves fixed input and collects output.
    struct Pipe(io::Cursor<Vec<u8>>, Vec<u8>);
    impl Read for Pipe {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read(buf)
        }
    }
    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.1.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn reads_pipelined_requests_and_decodes_queries() {
        let input = b"GET /api/v1/pods?labelSelector=app%3Dweb%2Ctier+in+(a)&watch=1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /x HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
        let mut pipe = Pipe(io::Cursor::new(input.to_vec()), Vec::new());
        let mut reader = RequestReader::new();
        let first = reader.read_request(&mut pipe, &|| true).unwrap().unwrap();
        assert_eq!(first.path, "/api/v1/pods");
        assert_eq!(first.query("labelSelector"), Some("app=web,tier in (a)"));
        let second = reader.read_request(&mut pipe, &|| true).unwrap().unwrap();
        assert_eq!((second.method.as_str(), second.body.as_slice()), ("POST", &b"{}"[..]));
        assert!(reader.read_request(&mut pipe, &|| true).unwrap().is_none());
    }

    #[test]
    fn malformed_percent_escapes_are_kept() {
        assert_eq!(percent_decode("a%zz%4", false), "a%zz%4");
        assert_eq!(percent_decode("%2F", false), "/");
    }
}
