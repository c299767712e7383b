# syntax=docker/dockerfile:1
# bmsgw in a container beside the inverter. SocketCAN needs the host's network namespace:
#   docker run --network host -v bmsgw-state:/var/lib/bmsgw -v /etc/bmsgw:/etc/bmsgw:ro bmsgw
# (serial BMS links: add --device /dev/ttyUSB0 --group-add dialout).

FROM python:3.11-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY bmsgw ./bmsgw
COPY dbc ./dbc
# Same install step as CI and the README, with a failed compile made fatal.
RUN python3 -m venv /opt/bmsgw && REQUIRE_CYTHON=1 /opt/bmsgw/bin/pip install --no-cache-dir . \
 && /opt/bmsgw/bin/bmsgw --version | grep -q "core: compiled"

FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --home-dir /var/lib/bmsgw bmsgw \
 && mkdir -p /var/lib/bmsgw /etc/bmsgw && chown bmsgw /var/lib/bmsgw
COPY --from=build /opt/bmsgw /opt/bmsgw
ENV PATH=/opt/bmsgw/bin:$PATH BMSGW_GATEWAY__STATE_DIR=/var/lib/bmsgw BMSGW_GATEWAY__LOG_FORMAT=json
USER bmsgw
VOLUME ["/var/lib/bmsgw"]
ENTRYPOINT ["bmsgw"]
CMD ["run", "--config", "/etc/bmsgw/bmsgw.toml"]
