# An OCI registry (Debian's docker-registry, distribution 2.8) on the local
# Debian base, serving on :5000 like the official registry:2 image.
ARG BASE
FROM ${BASE}
RUN printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: /var/lib/registry\nhttp:\n  addr: :5000\n' \
      >/etc/registry.yml && mkdir -p /var/lib/registry
CMD ["docker-registry", "serve", "/etc/registry.yml"]
