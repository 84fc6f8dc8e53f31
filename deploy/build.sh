#!/bin/sh
# Builds the release binary of Portcullis: static, without cgo (the
# container image has no libc), paths trimmed, symbols stripped, the
# version stamped in. The Dockerfile's build stage runs it, and so does
# .ci/run, so that what CI checks is what ships.
#
#   deploy/build.sh OUT [VERSION]
#
# Run from the repository root. GOOS/GOARCH in the environment
# cross-compile as usual; the static check needs a Linux ELF.
set -eu

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: deploy/build.sh OUT [VERSION]" >&2
  exit 2
fi
out=$1
version=${2:-0.1.0}

CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${version}" -o "$out" ./cmd/portcullis

# Static: built without cgo, and the ELF asks for no dynamic loader.
if ! go version -m "$out" | grep -q 'CGO_ENABLED=0'; then
  echo "deploy/build.sh: $out was not built with CGO_ENABLED=0" >&2
  exit 1
fi
if [ "$(head -c 4 "$out" | od -An -c | tr -d ' ')" = '177ELF' ]; then
  # PT_INTERP is program header type 3; a static Go binary has none.
  # readelf is in binutils (the golang image has it); without it the
  # CGO_ENABLED check above stands alone.
  if command -v readelf >/dev/null 2>&1 && readelf -lW "$out" | grep -q 'INTERP'; then
    echo "deploy/build.sh: $out is dynamically linked:" >&2
    readelf -lW "$out" | grep -A1 INTERP >&2
    exit 1
  fi
fi
echo "deploy/build.sh: built $out (version $version, static)"
