# Test-only stand-in for the official prom/prometheus image, which cannot be pulled where
# .ci/images runs: a Debian base plus Debian's prometheus (and wget, for compose's health
# check). Not a product image: deployments use the official one.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        prometheus wget >/dev/null \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /prometheus \
    && chown prometheus:prometheus /prometheus
USER prometheus
WORKDIR /prometheus
# As in the official image: compose's `command` passes the flags only.
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
