# Test-only stand-in for the official redis image, which cannot be pulled where .ci/images
# runs: a Debian base plus Debian's redis-server (and redis-cli, for compose's health check).
# Not a product image: deployments use the official one.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        redis-server >/dev/null \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data \
    && chown redis:redis /data
USER redis
WORKDIR /data
CMD ["redis-server", "--protected-mode", "no"]
