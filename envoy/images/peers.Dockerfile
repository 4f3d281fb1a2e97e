# The interop server and client on the local Debian base, from the release
# binaries already built (target/release). envoy/peers.Dockerfile builds the
# same image from source, for machines that can pull the Rust image.
ARG BASE
FROM ${BASE}
COPY interop-server interop-client /usr/local/bin/
