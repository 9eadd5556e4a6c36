#!/bin/sh
# Make a local stand-in for the python:3.11-slim base image, for machines that reach Debian's
# package mirror but no image registry (the CI machines):
#   deploy/base-image.sh [NAME]        default NAME: raftka-base:bookworm
# then build with `docker build --build-arg BASE_IMAGE=NAME ...`. Debian bookworm's Python is
# 3.11, as in python:3.11-slim. The host's extra CA certificates (/usr/local/share/
# ca-certificates, e.g. a TLS-inspecting proxy's) are trusted inside, so pip in `docker build`
# reaches the package index as the host does. Needs root, mmdebstrap and a running engine;
# about 25 s and 220 MB.
#   DEBIAN_MIRROR   default: the first Debian mirror in /etc/apt/sources.list*
set -eu
name="${1:-raftka-base:bookworm}"
mirror="${DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
  # deb822 (.sources: "URIs: ...") first, then one-line "deb URI suite ..." lists
  mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
    sed -n 's/^URIs:[[:space:]]*//p' | tr ' ' '\n' | grep -v -e security -e '^$' | head -n 1 || true)
fi
if [ -z "$mirror" ]; then
  mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; exit } }')
fi
mirror="${mirror:-http://deb.debian.org/debian}"
set -- --variant=minbase --include=ca-certificates,python3,python3-venv \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*'
if [ -n "$(ls /usr/local/share/ca-certificates 2>/dev/null)" ]; then
  set -- "$@" --customize-hook='copy-in /usr/local/share/ca-certificates /usr/local/share' \
    --customize-hook='chroot "$1" update-ca-certificates'
fi
echo "base-image: bookworm from $mirror -> $name" >&2
mmdebstrap --quiet "$@" bookworm - "$mirror" |
  docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$name" >/dev/null
docker image inspect --format "base-image: {{.Id}} {{.Size}} bytes" "$name" >&2
