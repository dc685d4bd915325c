# Stand-ins for the base images that CI cannot pull (scripts/test_docker.sh builds them on a
# Debian bookworm made offline with debootstrap, passed as ROOTFS):
#   os      for nvidia/cuda:...-ubuntu24.04: an apt-based OS without Python (Dockerfile.cuda);
#   python  for python:3.11.11-slim-bookworm: python3 and pip 24.0 on PATH, for root (Dockerfile).
# The host's CA certificates go in: pip on this kind of machine reaches the registry through
# a proxy whose certificate it must trust (PIP_CERT); a user's own base images need none.
ARG ROOTFS=featurex-ci/debian:bookworm
FROM ${ROOTFS} AS os
ENV LANG=C.UTF-8 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
COPY ca-certificates/ /usr/local/share/ca-certificates/
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

FROM os AS python
ENV PATH=/usr/local/python/bin:$PATH
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /usr/local/python \
    && pip install --no-cache-dir --disable-pip-version-check pip==24.0
