#!/usr/bin/env bash
# Installs the pinned code generators and grpcurl into $(go env GOPATH)/bin,
# skipping any already there at the right version.
set -euo pipefail
bin="$(go env GOPATH)/bin"
mkdir -p "$bin"

want() { # name version module
  local name=$1 version=$2 module=$3
  if [ -x "$bin/$name" ] && go version -m "$bin/$name" 2>/dev/null | grep -q "[[:space:]]$version"; then
    return
  fi
  echo "installing $name $version"
  GOFLAGS= go install "$module@$version"
}

want protoc-gen-go v1.36.12 google.golang.org/protobuf/cmd/protoc-gen-go
want protoc-gen-go-grpc v1.6.2 google.golang.org/grpc/cmd/protoc-gen-go-grpc
want grpcurl v1.9.4 github.com/fullstorydev/grpcurl/cmd/grpcurl

# buf from npm ships a prebuilt binary: seconds instead of minutes of go install.
if ! { [ -x "$bin/buf" ] && "$bin/buf" --version 2>/dev/null | grep -qx 1.75.0; }; then
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
