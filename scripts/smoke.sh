#!/usr/bin/env bash
# Starts a real node from the binary in $1 on free loopback ports and runs
# the README's grpcurl examples against it, checking each answer.
set -euo pipefail
bin=${1:?usage: smoke.sh path/to/switchboard}
export PATH="$(go env GOPATH)/bin:$PATH"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http=127.0.0.1:$(free_port)
grpc=127.0.0.1:$(free_port)
log=$(mktemp)
SWITCHBOARD_HTTP_ADDR=$http SWITCHBOARD_GRPC_ADDR=$grpc "$bin" 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$log"' EXIT

for _ in $(seq 100); do curl -fs "http://$http/readyz" >/dev/null && break; sleep 0.1; done
curl -fs "http://$http/readyz" >/dev/null || { cat "$log"; echo "smoke: node never became ready"; exit 1; }

fail() { echo "smoke: $*"; cat "$log"; exit 1; }
expect() { # description, pattern, command...
  local what=$1 pattern=$2; shift 2
  local out
  out=$("$@" 2>&1) || fail "$what failed: $out"
  grep -qE "$pattern" <<<"$out" || fail "$what: want /$pattern/ in: $out"
  echo "ok: $what"
}

expect "list services" 'switchboard\.v1\.SwitchboardService' grpcurl -plaintext "$grpc" list
expect "describe" 'rpc WatchCount' grpcurl -plaintext "$grpc" describe switchboard.v1.SwitchboardService
expect "health" 'SERVING' grpcurl -plaintext -d '{"service":"switchboard.v1.SwitchboardService"}' "$grpc" grpc.health.v1.Health/Check
expect "emit" '"id": "[0-9a-v]+-[0-9a-z]+"' grpcurl -plaintext -d '{"event":"ShowMessage","data":{"text":"hi"}}' "$grpc" switchboard.v1.SwitchboardService/EmitMessage
expect "emit to a channel" '"recipients": "0"' grpcurl -plaintext -emit-defaults -d '{"event":"Quote","channel":"quotes","data":{"text":"Simplicity is prerequisite for reliability."}}' "$grpc" switchboard.v1.SwitchboardService/EmitMessage
expect "count" '"visitors": "0"' grpcurl -plaintext -emit-defaults "$grpc" switchboard.v1.SwitchboardService/GetOnlineCount
expect "presence" '"visitors": \[\]' grpcurl -plaintext -emit-defaults -d '{"page_size":100}' "$grpc" switchboard.v1.SwitchboardService/GetPresence
expect "bad page size is InvalidArgument" 'InvalidArgument' sh -c "grpcurl -plaintext -d '{\"page_size\":5000}' $grpc switchboard.v1.SwitchboardService/GetPresence || true"
if grpcurl -plaintext -d '{"event":""}' "$grpc" switchboard.v1.SwitchboardService/EmitMessage >/dev/null 2>&1; then
  fail "an empty event was accepted"
else
  code=$?
  [ "$code" -eq 67 ] || fail "empty event: exit code $code, want 67 (64 + InvalidArgument)"
  echo "ok: empty event is InvalidArgument"
fi

kill -TERM $pid
wait $pid || fail "exit code $? after SIGTERM, want 0"
echo "ok: SIGTERM exits 0"
trap - EXIT
rm -f "$log"
