# syntax=docker/dockerfile:1
# bmsgw in a container beside the inverter (docs/deployment.md, "Docker"):
#   docker build -t bmsgw .
#   docker run -d --name bmsgw --restart unless-stopped --network host \
#     -v /etc/bmsgw:/etc/bmsgw:ro -v bmsgw-state:/var/lib/bmsgw bmsgw
# --network host: SocketCAN interfaces exist only in the host's network namespace.
# Serial BMS/inverter links: add --device /dev/ttyUSB0 --group-add dialout (the device node, not a bind
# mount; use the host's numeric gid of the device if it differs: stat -c %g /dev/ttyUSB0).

# --- build: compiler and Cython live only here ---------------------------------------------------------
FROM python:3.11-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY bmsgw ./bmsgw
COPY dbc ./dbc
# The README's and CI's install step. REQUIRE_CYTHON=1 makes a failed compile fatal, and the build stops
# here unless the installed core reports itself compiled.
RUN python3 -m venv /opt/bmsgw && REQUIRE_CYTHON=1 /opt/bmsgw/bin/pip install . \
 && /opt/bmsgw/bin/bmsgw --version | grep "core: compiled"

# --- runtime: the venv only, a non-root user, state on a volume -----------------------------------------
FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 bmsgw \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/bmsgw \
      --shell /usr/sbin/nologin bmsgw \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/bmsgw && install -d /etc/bmsgw
COPY --from=build /opt/bmsgw /opt/bmsgw
ENV PATH=/opt/bmsgw/bin:$PATH PYTHONUNBUFFERED=1 \
    BMSGW_GATEWAY__STATE_DIR=/var/lib/bmsgw BMSGW_GATEWAY__LOG_FORMAT=json
USER 10001:10001
# Estimator state (SOC of every cell) survives container replacement on this volume.
VOLUME ["/var/lib/bmsgw"]
# No systemd watchdog in a container: the health check asks the daemon's /healthz instead.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
  CMD ["bmsgw", "healthcheck", "--config", "/etc/bmsgw/bmsgw.toml"]
# Python is PID 1: `bmsgw run` handles SIGTERM itself (clean stop, state saved) and SIGHUP (reload).
ENTRYPOINT ["bmsgw"]
CMD ["run", "--config", "/etc/bmsgw/bmsgw.toml"]
