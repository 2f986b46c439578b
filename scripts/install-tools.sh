#!/usr/bin/env bash
# Installs the pinned code generators, grpcurl and nats-server (the
# cluster tests run it) into $(go env GOPATH)/bin, skipping any already
# there at the right version.
#   scripts/install-tools.sh              # all of them
#   scripts/install-tools.sh nats-server  # only the named ones
set -euo pipefail
bin="$(go env GOPATH)/bin"
mkdir -p "$bin"
only=" $* "

wanted() { # name: asked for, or everything is
  [ "$only" = "  " ] || [[ "$only" == *" $1 "* ]]
}

want() { # name version module
  local name=$1 version=$2 module=$3
  wanted "$name" || return 0
  if [ -x "$bin/$name" ] && go version -m "$bin/$name" 2>/dev/null | grep -q "[[:space:]]$version"; then
    return
  fi
  echo "installing $name $version"
  GOFLAGS= go install "$module@$version"
}

want protoc-gen-go v1.36.12 google.golang.org/protobuf/cmd/protoc-gen-go
want protoc-gen-go-grpc v1.6.2 google.golang.org/grpc/cmd/protoc-gen-go-grpc
want grpcurl v1.9.4 github.com/fullstorydev/grpcurl/cmd/grpcurl
want nats-server v2.15.2 github.com/nats-io/nats-server/v2

# buf from npm ships a prebuilt binary: seconds instead of minutes of go install.
if wanted buf && ! { [ -x "$bin/buf" ] && "$bin/buf" --version 2>/dev/null | grep -qx 1.75.0; }; then
  echo "installing buf 1.75.0"
  tmp=$(mktemp -d)
  if npm install --silent --no-audit --no-fund --prefix "$tmp" @bufbuild/buf@1.75.0 >/dev/null 2>&1 \
     && cp "$tmp"/node_modules/@bufbuild/buf-linux-*/bin/buf "$bin/buf.tmp" 2>/dev/null \
     && "$bin/buf.tmp" --version >/dev/null 2>&1; then
    mv "$bin/buf.tmp" "$bin/buf"
  else
    rm -f "$bin/buf.tmp"
    GOFLAGS= go install github.com/bufbuild/buf/cmd/buf@v1.75.0
  fi
  rm -rf "$tmp"
fi
