# The worker image: `fleet-worker run` as a non-root user, its /healthz as the health check.
#
#   docker buildx build --platform linux/arm64 -f deploy/docker/worker.Dockerfile -t fleet-worker .

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p fleet-worker --bin fleet-worker

# Distroless: glibc and CA certificates, no shell, no package manager; user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/fleet-worker /usr/local/bin/fleet-worker
USER nonroot
ENV FLEET_METRICS_LISTEN=0.0.0.0:9464
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/fleet-worker", "health"]
ENTRYPOINT ["/usr/local/bin/fleet-worker"]
CMD ["run"]
