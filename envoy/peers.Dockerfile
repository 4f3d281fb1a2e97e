# The interop server and client (tests/peers) for the compose topology.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p bridge-peers --bin interop-server --bin interop-client

FROM debian:bookworm-slim
COPY --from=build /src/target/release/interop-server /src/target/release/interop-client /usr/local/bin/
