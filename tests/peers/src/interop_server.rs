//! `grpc.testing.TestService` as the gRPC interop test descriptions define
//! it, on tonic. Metadata echo and compression checks live in a tower layer
//! ([`InteropLayer`]) because tonic's handlers see neither trailers nor
//! per-message compression flags.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::{HeaderName, HeaderValue};
use http_body::Frame;
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status, Streaming};

use crate::flags::{RecordingBody, SeenFlags};
use crate::proto::test_service_server::{TestService, TestServiceServer};
use crate::proto::{
    EchoStatus, Empty, Payload, ResponseParameters, SimpleRequest, SimpleResponse,
    StreamingInputCallRequest, StreamingInputCallResponse, StreamingOutputCallRequest,
    StreamingOutputCallResponse,
};

const ECHO_INITIAL: &str = "x-grpc-test-echo-initial";
const ECHO_TRAILING: &str = "x-grpc-test-echo-trailing-bin";

type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<StreamingOutputCallResponse, Status>> + Send>>;

#[derive(Clone, Default)]
pub struct Interop;

fn payload(size: i32) -> Option<Payload> {
    Some(Payload {
        r#type: 0,
        body: vec![0; size.max(0) as usize],
    })
}

fn echo_status(status: &Option<EchoStatus>) -> Result<(), Status> {
    match status {
        Some(status) if status.code != 0 => Err(Status::new(
            tonic::Code::from(status.code),
            status.message.clone(),
        )),
        _ => Ok(()),
    }
}

fn check_compressed(
    expected: Option<bool>,
    seen: Option<&SeenFlags>,
    index: usize,
) -> Result<(), Status> {
    if expected == Some(true) && seen.and_then(|s| s.get(index)) != Some(true) {
        return Err(Status::invalid_argument("expected a compressed message"));
    }
    Ok(())
}

/// Sends the responses a list of parameters asks for, spaced by `interval_us`.
async fn send_responses(
    parameters: Vec<ResponseParameters>,
    tx: &tokio::sync::mpsc::Sender<Result<StreamingOutputCallResponse, Status>>,
) -> bool {
    for parameter in parameters {
        if parameter.interval_us > 0 {
            tokio::time::sleep(Duration::from_micros(parameter.interval_us as u64)).await;
        }
        let response = StreamingOutputCallResponse {
            payload: payload(parameter.size),
        };
        if tx.send(Ok(response)).await.is_err() {
            return false;
        }
    }
    true
}

#[tonic::async_trait]
impl TestService for Interop {
    async fn empty_call(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        Ok(Response::new(Empty {}))
    }

    async fn unary_call(
        &self,
        request: Request<SimpleRequest>,
    ) -> Result<Response<SimpleResponse>, Status> {
        let seen = request.extensions().get::<SeenFlags>().cloned();
        let request = request.into_inner();
        check_compressed(request.expect_compressed.map(|b| b.value), seen.as_ref(), 0)?;
        echo_status(&request.response_status)?;
        let mut response = Response::new(SimpleResponse {
            payload: payload(request.response_size),
            ..Default::default()
        });
        if request.response_compressed.map(|b| b.value) != Some(true) {
            response.disable_compression();
        }
        Ok(response)
    }

    async fn cacheable_unary_call(
        &self,
        request: Request<SimpleRequest>,
    ) -> Result<Response<SimpleResponse>, Status> {
        self.unary_call(request).await
    }

    type StreamingOutputCallStream = ResponseStream;

    async fn streaming_output_call(
        &self,
        request: Request<StreamingOutputCallRequest>,
    ) -> Result<Response<ResponseStream>, Status> {
        let request = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            if send_responses(request.response_parameters, &tx).await
                && let Err(status) = echo_status(&request.response_status)
            {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn streaming_input_call(
        &self,
        request: Request<Streaming<StreamingInputCallRequest>>,
    ) -> Result<Response<StreamingInputCallResponse>, Status> {
        let seen = request.extensions().get::<SeenFlags>().cloned();
        let mut stream = request.into_inner();
        let mut total = 0;
        let mut index = 0;
        while let Some(message) = stream.next().await {
            let message = message?;
            check_compressed(
                message.expect_compressed.map(|b| b.value),
                seen.as_ref(),
                index,
            )?;
            total += message.payload.map_or(0, |p| p.body.len() as i32);
            index += 1;
        }
        Ok(Response::new(StreamingInputCallResponse {
            aggregated_payload_size: total,
        }))
    }

    type FullDuplexCallStream = ResponseStream;

    async fn full_duplex_call(
        &self,
        request: Request<Streaming<StreamingOutputCallRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let mut requests = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            while let Some(request) = requests.next().await {
                let request = match request {
                    Ok(request) => request,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                if let Err(status) = echo_status(&request.response_status) {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                if !send_responses(request.response_parameters, &tx).await {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type HalfDuplexCallStream = ResponseStream;

    async fn half_duplex_call(
        &self,
        request: Request<Streaming<StreamingOutputCallRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let mut requests = request.into_inner();
        let mut all = Vec::new();
        while let Some(request) = requests.next().await {
            all.push(request?);
        }
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            for request in all {
                if !send_responses(request.response_parameters, &tx).await {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn unimplemented_call(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        Err(Status::unimplemented(
            "UnimplementedCall is not implemented, by design",
        ))
    }
}

/// Serves the interop service on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener) -> Result<(), tonic::transport::Error> {
    serve_messages_up_to(listener, 16 << 20).await
}

/// [`serve`], taking and sending messages of up to `max_bytes`.
pub async fn serve_messages_up_to(
    listener: TcpListener,
    max_bytes: usize,
) -> Result<(), tonic::transport::Error> {
    let service = TestServiceServer::new(Interop)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max_bytes)
        .max_encoding_message_size(max_bytes);
    tonic::transport::Server::builder()
        .layer(tower::layer::layer_fn(|inner| InteropLayer { inner }))
        .add_service(service)
        .serve_with_incoming(
            tokio_stream::wrappers::TcpListenerStream::new(listener).map(|socket| {
                // As `Server::serve` would: no Nagle delay on small frames.
                socket.inspect(|s| {
                    let _ = s.set_nodelay(true);
                })
            }),
        )
        .await
}

/// Echoes the interop metadata and records request compression flags.
#[derive(Clone)]
pub struct InteropLayer<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> tower::Service<http::Request<Body>> for InteropLayer<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let deadline = request
            .headers()
            .get("grpc-timeout")
            .and_then(|value| grpc_web_bridge::codec::parse_grpc_timeout(value.as_bytes()))
            .map(|millis| tokio::time::Instant::now() + Duration::from_millis(millis));
        let initial = request.headers().get(ECHO_INITIAL).cloned();
        let trailing = request.headers().get(ECHO_TRAILING).cloned();
        let seen = SeenFlags::default();
        let mut request = request.map(|body| Body::new(RecordingBody::new(body, seen.clone())));
        request.extensions_mut().insert(seen);
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = match deadline {
                None => response.await?,
                Some(deadline) => match tokio::time::timeout_at(deadline, response).await {
                    Ok(response) => response?.map(|body| {
                        Body::new(WithDeadline {
                            inner: body,
                            deadline: Box::pin(tokio::time::sleep_until(deadline)),
                            expired: false,
                        })
                    }),
                    Err(_) => deadline_exceeded(),
                },
            };
            if let Some(value) = initial {
                response
                    .headers_mut()
                    .insert(HeaderName::from_static(ECHO_INITIAL), value);
            }
            if let Some(value) = trailing {
                if response.headers().contains_key("grpc-status") {
                    response
                        .headers_mut()
                        .insert(HeaderName::from_static(ECHO_TRAILING), value);
                } else {
                    response = response.map(|body| {
                        Body::new(WithTrailer {
                            inner: body,
                            value: Some(value),
                        })
                    });
                }
            }
            Ok(response)
        })
    }
}

/// The status a server sends when the call's deadline passes, as gRPC
/// servers do (grpc-go, grpcio): DEADLINE_EXCEEDED.
fn deadline_fields() -> http::HeaderMap {
    let mut fields = http::HeaderMap::new();
    fields.insert("grpc-status", HeaderValue::from_static("4"));
    fields.insert(
        "grpc-message",
        HeaderValue::from_static("Deadline Exceeded"),
    );
    fields
}

/// A trailers-only DEADLINE_EXCEEDED reply.
fn deadline_exceeded() -> http::Response<Body> {
    let mut response = http::Response::new(Body::empty());
    *response.headers_mut() = deadline_fields();
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

/// Ends a response body with DEADLINE_EXCEEDED if the call's deadline
/// passes first.
struct WithDeadline {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    expired: bool,
}

impl http_body::Body for WithDeadline {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.expired {
            return Poll::Ready(None);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.expired = true;
            return Poll::Ready(Some(Ok(Frame::trailers(deadline_fields()))));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.inner.is_end_stream()
    }
}

/// Adds the trailing echo to the body's trailers.
struct WithTrailer {
    inner: Body,
    value: Option<HeaderValue>,
}

impl http_body::Body for WithTrailer {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => {
                let mut trailers = frame.into_trailers().unwrap_or_default();
                if let Some(value) = self.value.take() {
                    trailers.insert(HeaderName::from_static(ECHO_TRAILING), value);
                }
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}
