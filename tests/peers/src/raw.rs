//! Byte-exact peers for the cases tonic cannot produce or observe:
//! a scripted HTTP/2 gRPC server, a scripted HTTP/1.1 gRPC-web server, an
//! HTTP/2 client that records exactly what it receives, and an HTTP/1.1
//! client for browser-style gRPC-web requests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One step of a scripted reply.
#[derive(Clone, Debug)]
pub enum Step {
    /// Response headers: status and fields; `true` ends the stream.
    Headers(u16, Vec<(&'static str, &'static str)>, bool),
    /// HTTP/2: status 200 and these fields, with the request's own
    /// content-type as the reply's and in `x-seen-content-type` (a server
    /// that answers in the codec it was asked for, and says what it got).
    EchoContentType(Vec<(&'static str, &'static str)>, bool),
    /// Body bytes (HTTP/2: one DATA frame; HTTP/1.1: one chunk); `true` ends the stream.
    Data(Vec<u8>, bool),
    /// HTTP/2 trailers (ends the stream).
    Trailers(Vec<(&'static str, &'static str)>),
    Sleep(Duration),
    /// HTTP/2: RST_STREAM(INTERNAL_ERROR). HTTP/1.1: close the connection.
    Reset,
}

/// Scripts by request path.
pub type Scripts = Arc<HashMap<&'static str, Vec<Step>>>;

fn header_map(fields: &[(&'static str, &'static str)]) -> Result<HeaderMap> {
    let mut map = HeaderMap::new();
    for (name, value) in fields {
        map.append(
            HeaderName::from_bytes(name.as_bytes())?,
            HeaderValue::from_static(value),
        );
    }
    Ok(map)
}

/// Accepts connections on an ephemeral loopback port, each handled by
/// `handle` on its own task, until the runtime stops.
pub async fn serve_each<F, Fut>(handle: F) -> Result<SocketAddr>
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(handle(socket));
        }
    });
    Ok(address)
}

/// Serves `scripts` over cleartext HTTP/2 on an ephemeral loopback port.
pub async fn h2_server(scripts: Scripts) -> Result<SocketAddr> {
    serve_each(move |socket| {
        let scripts = scripts.clone();
        async move {
            let Ok(mut connection) = h2::server::handshake(socket).await else {
                return;
            };
            while let Some(Ok((request, respond))) = connection.accept().await {
                let scripts = scripts.clone();
                tokio::spawn(async move {
                    let _ = h2_reply(request, respond, &scripts).await;
                });
            }
        }
    })
    .await
}

async fn h2_reply(
    request: Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    scripts: &Scripts,
) -> Result<()> {
    let path = request.uri().path().to_string();
    let content_type = request.headers().get("content-type").cloned();
    // Read the whole request first: these scripts answer unary calls.
    let mut body = request.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let script = scripts
        .get(path.as_str())
        .with_context(|| format!("no script for {path}"))?;
    let mut stream = None;
    for step in script {
        match step {
            Step::Headers(status, fields, end) => {
                let mut response = Response::builder().status(*status).body(())?;
                *response.headers_mut() = header_map(fields)?;
                stream = Some(respond.send_response(response, *end)?);
            }
            Step::EchoContentType(fields, end) => {
                let mut response = Response::builder().status(200).body(())?;
                let headers = response.headers_mut();
                *headers = header_map(fields)?;
                if let Some(value) = &content_type {
                    headers.insert("content-type", value.clone());
                    headers.insert("x-seen-content-type", value.clone());
                }
                stream = Some(respond.send_response(response, *end)?);
            }
            Step::Data(bytes, end) => {
                let send = stream.as_mut().context("data before headers")?;
                send.send_data(Bytes::copy_from_slice(bytes), *end)?;
            }
            Step::Trailers(fields) => {
                stream
                    .as_mut()
                    .context("trailers before headers")?
                    .send_trailers(header_map(fields)?)?;
            }
            Step::Sleep(duration) => tokio::time::sleep(*duration).await,
            Step::Reset => {
                stream
                    .as_mut()
                    .context("reset before headers")?
                    .send_reset(h2::Reason::INTERNAL_ERROR);
            }
        }
    }
    // Let the last frames leave before the stream handle drops.
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(())
}

/// Serves `scripts` as an HTTP/1.1 gRPC-web server, one request per
/// connection (it answers `connection: close`).
pub async fn http1_server(scripts: Scripts) -> Result<SocketAddr> {
    serve_each(move |socket| {
        let scripts = scripts.clone();
        async move {
            let _ = http1_reply(socket, &scripts).await;
        }
    })
    .await
}

async fn http1_reply(socket: TcpStream, scripts: &Scripts) -> Result<()> {
    let mut reader = BufReader::new(socket);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).await?;
    let path = request_line
        .split(' ')
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let mut chunked = false;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        chunked |= line
            .to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked");
    }
    if chunked {
        read_chunked(&mut reader).await?;
    }
    let mut socket = reader.into_inner();
    let script = scripts
        .get(path.as_str())
        .with_context(|| format!("no script for {path}"))?;
    for step in script {
        match step {
            Step::Headers(status, fields, end) => {
                let reason = StatusCode::from_u16(*status)?
                    .canonical_reason()
                    .unwrap_or("");
                let mut head = format!("HTTP/1.1 {status} {reason}\r\nconnection: close\r\n");
                for (name, value) in fields {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                head.push_str(if *end {
                    "content-length: 0\r\n\r\n"
                } else {
                    "transfer-encoding: chunked\r\n\r\n"
                });
                socket.write_all(head.as_bytes()).await?;
                if *end {
                    break;
                }
            }
            Step::Data(bytes, end) => {
                if !bytes.is_empty() {
                    socket
                        .write_all(format!("{:x}\r\n", bytes.len()).as_bytes())
                        .await?;
                    socket.write_all(bytes).await?;
                    socket.write_all(b"\r\n").await?;
                }
                if *end {
                    socket.write_all(b"0\r\n\r\n").await?;
                }
                socket.flush().await?;
            }
            Step::Trailers(_) => bail!("HTTP/1.1 scripts carry no trailers"),
            Step::EchoContentType(..) => bail!("HTTP/1.1 scripts do not echo"),
            Step::Sleep(duration) => tokio::time::sleep(*duration).await,
            Step::Reset => return Ok(()),
        }
    }
    socket.shutdown().await?;
    Ok(())
}

async fn read_chunked<R: AsyncBufReadExt + Unpin>(reader: &mut R) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size).await?;
        let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)?;
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk).await?;
        if size == 0 {
            // Trailers, if any, end with an empty line: consumed with the CRLF above only when absent.
            return Ok(body);
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

/// What a client received, exactly.
#[derive(Debug, Default)]
pub struct Received {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub trailers: Option<HeaderMap>,
    /// The stream ended in a reset or error instead of END_STREAM.
    pub error: Option<String>,
}

impl Received {
    /// `grpc-status` from the trailers, or from the headers of a trailers-only reply.
    pub fn grpc_status(&self) -> Option<&str> {
        self.field("grpc-status")
    }

    /// A field from the trailers, else from a binary gRPC-web body's
    /// trailer frame, else from the headers.
    pub fn field(&self, name: &str) -> Option<&str> {
        let from_maps = || {
            self.trailers
                .as_ref()
                .and_then(|t| t.get(name))
                .or_else(|| self.headers.get(name))
                .and_then(|v| v.to_str().ok())
        };
        match self.body_trailers() {
            Some(block) => block.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.eq_ignore_ascii_case(name).then_some(value.trim())
            }),
            None => from_maps(),
        }
    }

    /// The trailer block of a binary gRPC-web body, if it has one.
    pub fn body_trailers(&self) -> Option<&str> {
        let web = self.headers.get("content-type").is_some_and(|v| {
            let v = v.as_bytes();
            v.starts_with(b"application/grpc-web") && !v.starts_with(b"application/grpc-web-text")
        });
        let mut rest = web.then_some(self.body.as_slice())?;
        while rest.len() >= 5 {
            let length = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            let payload = rest.get(5..5 + length)?;
            if rest[0] & 0x80 != 0 {
                return std::str::from_utf8(payload).ok();
            }
            rest = &rest[5 + length..];
        }
        None
    }

    /// `grpc-message`, percent-decoded.
    pub fn grpc_message(&self) -> String {
        let raw = self.field("grpc-message").unwrap_or_default();
        String::from_utf8_lossy(&grpc_web_bridge::codec::decode_grpc_message(raw.as_bytes()))
            .into_owned()
    }

    /// Every value of `name` in the trailers (or trailers-only headers).
    pub fn values(&self, name: &str) -> Vec<String> {
        let map = self.trailers.as_ref().unwrap_or(&self.headers);
        map.get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }
}

/// Makes one gRPC call over cleartext HTTP/2 and records the reply.
pub async fn h2_call(
    address: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Received> {
    h2_call_with(address, path, headers, body, false).await
}

/// Like [`h2_call`], but the body (and the end of the request) goes only
/// once the response headers are in: a full-duplex client, whose request
/// fails while the response is under way.
pub async fn h2_call_after_headers(
    address: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Received> {
    h2_call_with(address, path, headers, body, true).await
}

async fn h2_call_with(
    address: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    after_headers: bool,
) -> Result<Received> {
    let socket = TcpStream::connect(address).await?;
    let (mut client, connection) = h2::client::handshake(socket).await?;
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method("POST")
        .uri(format!("http://{address}{path}"))
        .header("te", "trailers");
    if !headers.iter().any(|(name, _)| *name == "content-type") {
        request = request.header("content-type", "application/grpc");
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (response, mut send) = client.send_request(request.body(())?, false)?;
    if !after_headers {
        send.send_data(Bytes::copy_from_slice(body), true)?;
    }
    let response = tokio::time::timeout(Duration::from_secs(10), response).await??;
    if after_headers {
        send.send_data(Bytes::copy_from_slice(body), true)?;
    }
    let mut received = Received {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        ..Default::default()
    };
    let mut body = response.into_body();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), body.data()).await? {
            Some(Ok(chunk)) => {
                let _ = body.flow_control().release_capacity(chunk.len());
                received.body.extend_from_slice(&chunk);
            }
            Some(Err(error)) => {
                received.error = Some(error.to_string());
                return Ok(received);
            }
            None => break,
        }
    }
    match body.trailers().await {
        Ok(trailers) => received.trailers = trailers,
        Err(error) => received.error = Some(error.to_string()),
    }
    Ok(received)
}

/// Makes one HTTP/1.1 request with a chunked body, as a browser's gRPC-web
/// client would, and reads the whole reply (no trailers in HTTP/1.1).
pub async fn http1_call(
    address: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Received> {
    let mut socket = TcpStream::connect(address).await?;
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: {address}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n"
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    socket.write_all(head.as_bytes()).await?;
    if !body.is_empty() {
        socket
            .write_all(format!("{:x}\r\n", body.len()).as_bytes())
            .await?;
        socket.write_all(body).await?;
        socket.write_all(b"\r\n").await?;
    }
    socket.write_all(b"0\r\n\r\n").await?;
    let mut reader = BufReader::new(socket);
    let mut status_line = String::new();
    tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut status_line)).await??;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("bad status line")?;
    let mut received = Received {
        status,
        ..Default::default()
    };
    let mut chunked = false;
    let mut length = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').context("bad header line")?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        chunked |= name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked");
        if name == "content-length" {
            length = value.parse::<usize>().ok();
        }
        received.headers.append(
            HeaderName::from_bytes(name.as_bytes())?,
            HeaderValue::from_str(value)?,
        );
    }
    received.body = match (chunked, length) {
        (true, _) => {
            tokio::time::timeout(Duration::from_secs(10), read_chunked(&mut reader)).await??
        }
        (false, Some(length)) => {
            let mut body = vec![0; length];
            reader.read_exact(&mut body).await?;
            body
        }
        (false, None) => {
            let mut body = Vec::new();
            reader.read_to_end(&mut body).await?;
            body
        }
    };
    Ok(received)
}

/// A gRPC frame.
pub fn frame(flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.extend_from_slice(&[flags]);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.to_vec()
}
