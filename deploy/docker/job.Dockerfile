# A job image and the same job's Lambda package, from one build. JOB_PACKAGE and JOB_BIN name
# the job (default: the demo's CSV-to-Parquet job).
#
#   docker buildx build --platform linux/arm64 -f deploy/docker/job.Dockerfile -t fleet-job .
#   docker buildx build --platform linux/arm64 -f deploy/docker/job.Dockerfile \
#     --target lambda --output type=local,dest=dist .      # dist/bootstrap, zip it for Lambda
#
# The container runs one job from FLEET_EVENT and exits (`run`): it serves nothing, and ECS
# judges it by its exit code (0 success, 1 job failure, 2 bad event, 3 permanent failure, 75
# throttled), so it declares no health check. Built without default features: the local
# Invoke API's record delivery (SQS) stays out of what runs on AWS.

FROM rust:1.95-bookworm AS build
ARG JOB_PACKAGE=fleet-csv-to-parquet
ARG JOB_BIN=fleet-csv-to-parquet
WORKDIR /src
COPY . .
RUN cargo build --release --locked --no-default-features -p "${JOB_PACKAGE}" --bin "${JOB_BIN}" \
 && cp "target/release/${JOB_BIN}" /job

# `bootstrap` for the provided.al2023 runtime.
FROM scratch AS lambda
COPY --from=build /job /bootstrap

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /job /usr/local/bin/job
USER nonroot
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/job"]
CMD ["run"]
