# syntax=docker/dockerfile:1.7
# wharf: one image for every process; the command picks it (default: the web process).
#   docker build -t wharf .
#   docker run --rm -e DATABASE_URL=… wharf /app/wharf-dispatch
# The build stage needs the internet once: `deno compile` downloads the Deno runtime it embeds.

ARG DENO_VERSION=2.9.6

FROM denoland/deno:debian-${DENO_VERSION} AS build
WORKDIR /src
# Dependencies first, exactly as locked (a stale deno.lock fails the build), for layer caching.
COPY deno.json deno.lock ./
RUN deno install --frozen --allow-scripts
COPY . .
# One binary per process plus the health probe, in /out (see deploy/processes.ts).
RUN deno task compile --out /out

# glibc is needed (the Deno runtime links it dynamically): distroless "cc" is the smallest base that
# has it. No shell, no package manager; the nonroot user (65532).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build --chown=0:0 /out/ /app/
USER 65532:65532
ENV OPS_HOST=0.0.0.0 \
    WEB_HOST=0.0.0.0 \
    XDG_DATA_HOME=/tmp/wharf
EXPOSE 8000
# No shell and no curl: the compiled probe asks /healthz on the port the process listens on
# (OPS_PORT for workers, WEB_PORT for web).
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 CMD ["/app/wharf-healthcheck"]
CMD ["/app/wharf-web"]
