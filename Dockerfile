# syntax=docker/dockerfile:1
# The agent as a container image: `docker build -t log-capturer .`
#
# Build stage: the Rust toolchain builds the release binary (glibc-dynamic, debug info
# stripped) and deploy/docker/rootfs.sh lays out the runtime's root filesystem: the binary, the
# glibc libraries it links (found with ldd), a non-root user 10001, /var/lib/log-capturer owned
# by it, and deploy/docker/config.yaml.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p log-capturer --bin log-capturer \
 && deploy/docker/rootfs.sh target/release/log-capturer /rootfs

# Runtime: nothing but that root filesystem (no shell, no package manager).
# scripts/build-agent-image makes the same image without a registry (docker import of the same
# rootfs, with the instructions below as --change); tests/container_e2e.rs runs it.
FROM scratch
COPY --from=build /rootfs/ /
COPY --from=build --chown=10001:10001 /rootfs/var/lib/log-capturer/ /var/lib/log-capturer/
# Non-root. Reading /var/run/docker.sock needs the group that owns it on the host: run with
# --group-add "$(stat -c %g /var/run/docker.sock)" (a number: the host's docker group does not
# exist in the image). The Docker API is root-equivalent on the host all the same.
USER 10001:10001
# The host's socket is mounted here (-v /var/run/docker.sock:/var/run/docker.sock:ro); the
# checkpoints, Loki buffer and dead letters live in the state volume.
VOLUME ["/var/lib/log-capturer"]
EXPOSE 8001
# `docker stop` sends SIGTERM (the default stop signal), which stops the agent cleanly (drain,
# final checkpoints, exit 0) within pipeline.shutdown_timeout (20 s) + 7 s: give it --time 30
# (docker's default is 10 s).
# The binary is its own health check client (no shell needed): `status` asks the status API
# and exits non-zero when a sink is failing, a stream has not rotated for twice its interval,
# or the agent does not answer. From outside, probe /health and /ready over HTTP.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s \
  CMD ["/usr/local/bin/log-capturer", "status", "--url", "http://127.0.0.1:8001"]
ENTRYPOINT ["/usr/local/bin/log-capturer"]
CMD ["run", "-c", "/etc/log-capturer/config.yaml"]
