#!/usr/bin/env bash
# etcd-member.sh: one etcd member with mutual TLS from ferry's cluster PKI,
# for the demo and for trying things by hand (tests use
# tests/system/etcdlib.py).
#
#   etcd-member.sh start DIR PKI NAME ADDRESS [CLIENT_PORT [PEER_PORT]]
#   etcd-member.sh stop DIR
#
# start issues PKI/hosts/NAME.{crt,key} with `ferry pki host NAME --ip
# ADDRESS --ip 127.0.0.1` when missing (etcd checks a peer's certificate
# against its source address, 127.0.0.1 on loopback), starts a one-member
# cluster with its data in DIR/data (log DIR/etcd.log, pid DIR/etcd.pid),
# waits until it is healthy (at most 30 s) and prints its client URL, the
# one to put into ferryd.json's etcd.endpoints. Ports default to 2379 and
# 2380. FERRY_BIN names the folder holding `ferry` (default build/).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${FERRY_BIN:-$ROOT/build}

usage() {
  sed -n '6,7p' "$0" >&2
  exit 2
}

[ $# -ge 2 ] || usage
cmd=$1 dir=$2

case $cmd in
start)
  [ $# -ge 5 ] || usage
  pki=$3 name=$4 addr=$5 cport=${6:-2379} pport=${7:-2380}
  mkdir -p "$dir"
  if [ ! -f "$pki/hosts/$name.crt" ]; then
    "$BIN/ferry" pki host "$name" --dir "$pki" --ip "$addr" --ip 127.0.0.1 >/dev/null
  fi
  crt=$pki/hosts/$name.crt key=$pki/hosts/$name.key ca=$pki/ca.crt
  url=https://$addr:$cport
  etcd --name "$name" --data-dir "$dir/data" \
    --listen-client-urls "$url" --advertise-client-urls "$url" \
    --listen-peer-urls "https://$addr:$pport" \
    --initial-advertise-peer-urls "https://$addr:$pport" \
    --initial-cluster "$name=https://$addr:$pport" \
    --cert-file "$crt" --key-file "$key" --trusted-ca-file "$ca" \
    --client-cert-auth \
    --peer-cert-file "$crt" --peer-key-file "$key" \
    --peer-trusted-ca-file "$ca" --peer-client-cert-auth \
    >>"$dir/etcd.log" 2>&1 </dev/null &
  echo $! >"$dir/etcd.pid"
  for _ in $(seq 300); do
    if ETCDCTL_API=3 etcdctl --endpoints "$url" --cacert "$ca" --cert "$crt" \
        --key "$key" --dial-timeout 1s endpoint health >/dev/null 2>&1; then
      echo "$url"
      exit 0
    fi
    kill -0 "$(cat "$dir/etcd.pid")" 2>/dev/null || break
    sleep 0.1
  done
  echo "etcd-member: $name did not become healthy; see $dir/etcd.log" >&2
  kill "$(cat "$dir/etcd.pid")" 2>/dev/null || true
  exit 1
  ;;
stop)
  [ -f "$dir/etcd.pid" ] || exit 0
  pid=$(cat "$dir/etcd.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
  rm -f "$dir/etcd.pid"
  ;;
*)
  usage
  ;;
esac
