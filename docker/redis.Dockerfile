# Redis for the lab's compose stack: Debian's redis-server (7.0 on bookworm) on the same base as
# the lab's image, so the stack needs no image but Debian's (docker-compose.yml builds it).
#
#   docker build -f docker/redis.Dockerfile -t kitten-and-puppy-lab:redis docker
#
# Runs as Debian's `redis` user; /data (the append-only file) is its. No password, and
# protected mode off so that the other containers may connect: the compose file never
# publishes its port on the host.

ARG BASE=debian:bookworm-slim
FROM ${BASE}

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data \
    && chown redis:redis /data

USER redis
WORKDIR /data
EXPOSE 6379
# No config file: the built-in defaults, with these changed (the compose file adds
# --appendonly yes). Logs go to stdout.
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--dir", "/data"]
