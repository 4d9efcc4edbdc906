#!/usr/bin/env bash
# demo.sh: two ferryd hosts on loopback (127.0.0.2 and 127.0.0.3, separate
# state dirs), a cluster PKI, a memload VM started on host-a whose heartbeat
# is shown, then migrated live and encrypted to host-b, where the heartbeat
# runs on; then checkpoint HA (one etcd member on 127.0.0.4): the VM is
# protected by host-a, its QEMU on host-b is killed, host-a runs it on
# from the last checkpoint and protects it again with host-b by itself
# (ha_peers); then (as root) a VM's firewall: a VM on a
# bridge in network namespaces the demo creates, its rules migrated with
# it and an open TCP connection kept across the move. Run by `make demo`
# after the build and the guest.
#
# FERRY_DEMO_DIR (default /tmp/ferry-demo) holds everything; it is wiped at
# the start. FERRY_DEMO_KEEP=1 leaves the hosts and the VM running.
#
# Each host has its own software TPM (swtpm on its address, port 2321):
# ferryd measures itself, QEMU and its policy into it and keeps its TLS and
# audit keys sealed to it; both hosts are enrolled, and the destination's
# verified quote is shown before the migration (docs/attestation.md).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${FERRY_BIN:-$ROOT/build}
GUEST=${FERRY_GUEST_DIR:-$ROOT/build/guest}
D=${FERRY_DEMO_DIR:-/tmp/ferry-demo}
FERRY="$BIN/ferry --config $D/client.json"
RAM=/dev/shm/ferry-demo-$(id -u)   # the VMs' RAM files (ferryd.json ram_dir)
ETCD_PORT=${FERRY_DEMO_ETCD_PORT:-12379}
# the VM LAN of the firewall part (root only): a switch, one namespace per
# host with its bridge br0, and an observer that talks to the VM
NS=fdemo
WEB_IP=10.231.0.100 OBS_IP=10.231.0.250
LAN=0
[ "$(id -u)" -eq 0 ] && LAN=1

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
  if [ "${FERRY_DEMO_KEEP:-0}" = 1 ]; then
    echo "hosts left running; stop them with: kill \$(cat $D/*/ferryd.pid)"
    return
  fi
  $FERRY --host host-a ha disable demo >/dev/null 2>&1 || true
  $FERRY --host host-b ha disable demo >/dev/null 2>&1 || true
  $FERRY --host host-a vm stop demo --force >/dev/null 2>&1 || true
  $FERRY --host host-b vm stop demo --force >/dev/null 2>&1 || true
  $FERRY --host host-a vm stop web --force >/dev/null 2>&1 || true
  $FERRY --host host-b vm stop web --force >/dev/null 2>&1 || true
  for h in host-a host-b; do
    [ -f "$D/$h/ferryd.pid" ] && kill "$(cat "$D/$h/ferryd.pid")" 2>/dev/null || true
  done
  sleep 0.5
  for h in host-a host-b; do
    [ -f "$D/$h/swtpm.pid" ] && kill "$(cat "$D/$h/swtpm.pid")" 2>/dev/null || true
  done
  bash "$ROOT/scripts/etcd-member.sh" stop "$D/etcd" || true
  rm -rf "$RAM"
  lan_down
}

lan_down() {
  [ "$LAN" = 1 ] || return 0
  for n in a b obs sw; do ip netns del "$NS-$n" 2>/dev/null || true; done
}

# The VM LAN: host-a's and host-b's bridges and the observer on a switch.
lan_up() {
  local n
  for n in sw a b obs; do
    ip netns add "$NS-$n"
    ip -n "$NS-$n" link set lo up
  done
  for n in sw a b; do
    ip -n "$NS-$n" link add br0 type bridge forward_delay 0 stp_state 0
    ip -n "$NS-$n" link set br0 up
  done
  for n in a b obs; do
    ip -n "$NS-$n" link add up0 type veth peer name "p-$n" netns "$NS-sw"
    ip -n "$NS-sw" link set "p-$n" master br0 up
    ip -n "$NS-$n" link set up0 up
  done
  ip -n "$NS-a" link set up0 master br0
  ip -n "$NS-b" link set up0 master br0
  ip -n "$NS-obs" addr add "$OBS_IP/24" dev up0
}

# Send "ping" to the VM's TCP port $1 from the observer: did it echo?
echoes() {
  echo ping | ip netns exec "$NS-obs" timeout 3 busybox nc "$WEB_IP" "$1" 2>/dev/null |
    grep -q ping
}

# stop anything a previous demo left behind
if [ -d "$D" ]; then
  for h in host-a host-b; do
    [ -f "$D/$h/ferryd.pid" ] && kill "$(cat "$D/$h/ferryd.pid")" 2>/dev/null || true
    [ -f "$D/$h/swtpm.pid" ] && kill "$(cat "$D/$h/swtpm.pid")" 2>/dev/null || true
  done
  for p in "$D"/host-*/state/run/*.pid; do
    [ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null || true
  done
  bash "$ROOT/scripts/etcd-member.sh" stop "$D/etcd" || true
  sleep 0.5
  rm -rf "$D" "$RAM"
fi
lan_down
mkdir -p "$D/shared/guest" "$RAM"
trap cleanup EXIT
if [ "$LAN" = 1 ]; then lan_up; fi

say "cluster PKI (ferry pki)"
$BIN/ferry pki init --dir "$D/pki" --cluster demo
$BIN/ferry pki host host-a --dir "$D/pki" --ip 127.0.0.2
$BIN/ferry pki host host-b --dir "$D/pki" --ip 127.0.0.3
$BIN/ferry pki user admin --dir "$D/pki"

cp "$GUEST/vmlinuz" "$GUEST/initramfs.cpio.gz" "$D/shared/guest/"

say "a software TPM per host (swtpm), EK certificates from a local 'manufacturer' CA"
mkdir -p "$D/tpm/ca"
cat > "$D/tpm/localca.conf" <<CONF
statedir = $D/tpm/ca
signingkey = $D/tpm/ca/signkey.pem
issuercert = $D/tpm/ca/issuercert.pem
certserial = $D/tpm/ca/serial
CONF
cat > "$D/tpm/setup.conf" <<CONF
create_certs_tool = /usr/bin/swtpm_localca
create_certs_tool_config = $D/tpm/localca.conf
create_certs_tool_options = /etc/swtpm-localca.options
active_pcr_banks = sha256
CONF
for h in host-a:127.0.0.2 host-b:127.0.0.3; do
  name=${h%%:*} addr=${h##*:}
  mkdir -p "$D/$name/tpm"
  swtpm_setup --tpm2 --tpmstate "$D/$name/tpm" --create-ek-cert \
    --create-platform-cert --config "$D/tpm/setup.conf" \
    --logfile "$D/$name/swtpm-setup.log" >/dev/null
  swtpm socket --tpm2 --tpmstate dir="$D/$name/tpm" \
    --server type=tcp,port=2321,bindaddr=$addr \
    --ctrl type=tcp,port=2322,bindaddr=$addr --flags startup-clear \
    >"$D/$name/swtpm.log" 2>&1 &
  echo $! > "$D/$name/swtpm.pid"
  for _ in $(seq 50); do
    (exec 3<>/dev/tcp/$addr/2321) 2>/dev/null && break
    sleep 0.1
  done
  echo "$name: swtpm on $addr:2321"
done
cp "$D/tpm/ca/swtpm-localca-rootca-cert.pem" "$D/tpm/ca/issuercert.pem" \
  "$D/pki/attest/manufacturers/"

say "one etcd member on 127.0.0.4 (owner leases for checkpoint HA)"
ETCD_URL=$(bash "$ROOT/scripts/etcd-member.sh" start "$D/etcd" "$D/pki" etcd-1 \
  127.0.0.4 "$ETCD_PORT" $((ETCD_PORT + 1)))
echo "$ETCD_URL"

# the policy both hosts enforce (docs/policy.md): admin may do anything,
# the two hosts are peers, and any VM may move between them, to an attested
# destination only; the reference values approve this build's ferryd, the
# system's QEMU and this policy (its digest leaves out "attestation")
policy_body='"roles": {"admin": ["admin"], "host": ["host-a", "host-b"]},
  "hosts": {"host-a": {"labels": {"site": "demo"}},
            "host-b": {"labels": {"site": "demo"}}},
  "rules": [{
    "name": "within-the-demo-site",
    "vms": {"all": true},
    "migrate_out": {"roles": ["admin", "controller"]},
    "to": {"labels": {"site": "demo"}},
    "accept_from": {"labels": {"site": "demo"}},
    "migrate_in": {"roles": ["admin", "controller"]},
    "attest": "required"
  }]'
echo "{ $policy_body }" > "$D/policy.json"
policy_digest=$($BIN/ferry policy digest "$D/policy.json")
cat > "$D/policy.json" <<JSON
{
  $policy_body,
  "attestation": {"reference": [{
    "hosts": {"labels": {"site": "demo"}},
    "ferryd": ["$(sha256sum "$BIN/ferryd" | cut -d' ' -f1)"],
    "qemu": ["$(sha256sum /usr/bin/qemu-system-x86_64 | cut -d' ' -f1)"],
    "policy": ["$policy_digest"]
  }]}
}
JSON

for h in host-a:127.0.0.2:host-b:127.0.0.3 host-b:127.0.0.3:host-a:127.0.0.2; do
  IFS=: read -r name addr peer peer_addr <<<"$h"
  mkdir -p "$D/$name"
  bridges=""
  [ "$LAN" = 1 ] && bridges="\"bridges\": {\"lan\": {\"device\": \"br0\", \"netns\": \"$NS-${name#host-}\"}},"
  cat > "$D/$name/ferryd.json" <<JSON
{
  "host": "$name",
  "listen": {"address": "$addr", "port": 8443},
  "tls": {"ca": "../pki/ca.crt", "cert": "../pki/hosts/$name.crt",
          "key": "../pki/hosts/$name.key"},
  "state_dir": "state",
  "qemu_user": "ferry-qemu",
  "shared_dir": "../shared",
  "accel": "auto",
  "policy": "../policy.json",
  "ram_dir": "$RAM/$name",
  $bridges
  "etcd": {"endpoints": ["$ETCD_URL"], "lease_ttl_s": 5},
  "ha_peers": [{"host": "$peer", "address": "$peer_addr", "port": 8443}],
  "attestation": {"mode": "required", "tcti": "swtpm:host=$addr,port=2321",
                  "registrar": "../pki/attest"}
}
JSON
done
cat > "$D/client.json" <<JSON
{
  "ca": "pki/ca.crt", "cert": "pki/users/admin.crt", "key": "pki/users/admin.key",
  "hosts": {"host-a": {"address": "127.0.0.2", "port": 8443},
            "host-b": {"address": "127.0.0.3", "port": 8443}},
  "default_host": "host-a"
}
JSON

say "starting ferryd on 127.0.0.2 (host-a) and 127.0.0.3 (host-b)"
for h in host-a host-b; do
  "$BIN/ferryd" --config "$D/$h/ferryd.json" >"$D/$h/ferryd.log" 2>&1 &
  echo $! > "$D/$h/ferryd.pid"
done
for h in host-a host-b; do
  for _ in $(seq 50); do
    $FERRY --host $h host info >/dev/null 2>&1 && break
    sleep 0.2
  done
  $FERRY --host $h host info
  echo
done
grep -h 'sealed tls-key' "$D"/host-*/ferryd.log || true

say "enrolment: each host's AK proven to live in its TPM (EK certificate + credential activation)"
for h in host-a host-b; do
  $FERRY host enroll $h --dir "$D/pki" --policy "$D/policy.json" | grep -E '^(enrolled|approved)'
done

say "defining and starting VM 'demo' on host-a"
cat > "$D/demo-vm.json" <<JSON
{
  "name": "demo",
  "memory_mib": 256,
  "vcpus": 1,
  "kernel": "guest/vmlinuz",
  "initrd": "guest/initramfs.cpio.gz",
  "cmdline": "console=ttyS0 quiet clocksource=hpet no_timer_check memload.mib=64 memload.rate=2000 memload.secret=FERRY-DEMO-SECRET"
}
JSON
$FERRY --host host-a vm define "$D/demo-vm.json"
$FERRY --host host-a vm start demo
$FERRY --host host-a vm list

say "memload heartbeat on host-a (serial console)"
for _ in $(seq 60); do
  $FERRY --host host-a vm console demo 2>/dev/null | grep -q 'memload: hb' && break
  sleep 0.5
done
sleep 3
$FERRY --host host-a vm console demo | grep 'memload:' | tail -5
last=$($FERRY --host host-a vm console demo | grep 'memload: hb' | tail -1)

say "attestation of the destination: host-b's quote, verified against its enrolled AK and the reference values"
$FERRY host attest host-b --dir "$D/pki" --policy "$D/policy.json"

say "secure live migration of 'demo' from host-a to host-b (TLS 1.3, AES-256-GCM); host-a attests host-b again in prepare, with a nonce bound to this migration and TLS session, before any memory moves"
$FERRY --host host-a migrate demo --to host-b
$FERRY --host host-b vm list

say "memload heartbeat on host-b: the sequence runs on, no page corrupted"
echo "last heartbeat on host-a: $last"
for _ in $(seq 40); do
  n=$($FERRY --host host-b vm console demo 2>/dev/null | grep -c 'memload: hb' || true)
  [ "${n:-0}" -ge 3 ] && break
  sleep 0.5
done
$FERRY --host host-b vm console demo | grep 'memload:' | tail -4
if $FERRY --host host-b vm console demo | grep -q CORRUPTION; then
  echo "demo: memload reported corruption" >&2
  exit 1
fi
$FERRY --host host-a migrate history

say "checkpoint HA: host-a keeps a checkpoint of 'demo' every 2 s"
$FERRY --host host-b ha enable demo --backup host-a --interval 2s
for _ in $(seq 60); do
  $FERRY --host host-b --json ha status demo | grep -q '"seq":[2-9]' && break
  sleep 0.5
done
$FERRY --host host-b ha status demo
$FERRY --host host-a vm list

say "kill -9 of the VM's QEMU on host-b: host-a runs it from the last checkpoint"
last=$($FERRY --host host-b vm console demo | grep 'memload: hb' | tail -1)
kill -9 "$($FERRY --host host-b --json vm info demo | sed -n 's/.*"pid":\([0-9]*\).*/\1/p')"
for _ in $(seq 100); do
  $FERRY --host host-a --json vm info demo 2>/dev/null | grep -q '"state":"running"' && break
  sleep 0.1
done
for _ in $(seq 40); do
  n=$($FERRY --host host-a vm console demo 2>/dev/null | grep -c 'memload: hb' || true)
  [ "${n:-0}" -ge 3 ] && break
  sleep 0.5
done
echo "last heartbeat on host-b: $last"
$FERRY --host host-a vm console demo | grep 'memload:' | tail -3
if $FERRY --host host-a vm console demo | grep -q CORRUPTION; then
  echo "demo: memload reported corruption after the failover" >&2
  exit 1
fi
$FERRY --host host-a vm list

say "host-a protects 'demo' again by itself (ferryd.json ha_peers): host-b, once its old copy is gone"
for _ in $(seq 120); do
  $FERRY --host host-a --json ha status demo 2>/dev/null |
    grep -q '"backup":"host-b".*"seq":[1-9]\|"seq":[1-9].*"backup":"host-b"' && break
  sleep 0.5
done
$FERRY --host host-a ha status demo

if [ "$LAN" = 1 ]; then
  say "a VM's firewall: 'web' on a bridge, default drop, tcp/5000 and icmp allowed (nftables on its tap, before its vCPUs run)"
  cat > "$D/web-vm.json" <<JSON
{
  "name": "web",
  "memory_mib": 128,
  "vcpus": 1,
  "kernel": "guest/vmlinuz",
  "initrd": "guest/initramfs.cpio.gz",
  "cmdline": "console=ttyS0 quiet clocksource=hpet no_timer_check memload.mib=16 memload.rate=100 ferry.ip=$WEB_IP/24 ferry.serve=5000,5001",
  "network": {"bridge": "lan", "mac": "52:54:00:de:00:01"},
  "firewall": {"default": "drop",
               "rules": [{"dir": "in", "proto": "tcp", "port": 5000},
                         {"dir": "in", "proto": "icmp"}]}
}
JSON
  $FERRY --host host-a vm define "$D/web-vm.json"
  $FERRY --host host-a vm start web
  for _ in $(seq 120); do echoes 5000 && break; sleep 0.5; done
  echoes 5000 && echo "tcp/5000 from the observer: answered"
  if echoes 5001; then echo "demo: tcp/5001 got through the firewall" >&2; exit 1; fi
  echo "tcp/5001 from the observer: dropped"

  say "an open TCP connection to 'web' while it migrates to host-b with its rules and its tracked flows"
  ip netns exec "$NS-obs" timeout 40 bash -c "exec 3<>/dev/tcp/$WEB_IP/5000 &&
    for i in \$(seq 100); do echo \"line \$i\" >&3; sleep 0.1; done &&
    head -n 100 <&3" > "$D/stream.out" 2>/dev/null &
  stream=$!
  sleep 2
  $FERRY --host host-a migrate web --to host-b
  wait "$stream" || true
  echo "the connection: $(grep -c '^line' "$D/stream.out") of 100 lines echoed, the last after the move"
  [ "$(grep -c '^line' "$D/stream.out")" = 100 ] || { echo "demo: the connection broke" >&2; exit 1; }
  if echoes 5001; then echo "demo: tcp/5001 got through on host-b" >&2; exit 1; fi
  $FERRY --host host-b vm firewall show web
  $FERRY --host host-b vm stop web --force >/dev/null
fi

say "tamper-evident audit log of host-a (signed, hash-chained)"
$FERRY --host host-a audit show --limit 8
$FERRY --host host-a audit verify --key "$D/host-a/state/audit.pub"
say "demo done"
