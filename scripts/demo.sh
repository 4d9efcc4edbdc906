#!/usr/bin/env bash
# demo.sh: two ferryd hosts on loopback (127.0.0.2 and 127.0.0.3, separate
# state dirs), a cluster PKI, a memload VM started on host-a whose heartbeat
# is shown, then migrated live and encrypted to host-b, where the heartbeat
# runs on; then checkpoint HA (one etcd member on 127.0.0.4): the VM is
# protected by host-a, its QEMU on host-b is killed, and host-a runs it on
# from the last checkpoint. Run by `make demo` after the build and the
# guest.
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
  for h in host-a host-b; do
    [ -f "$D/$h/ferryd.pid" ] && kill "$(cat "$D/$h/ferryd.pid")" 2>/dev/null || true
  done
  sleep 0.5
  for h in host-a host-b; do
    [ -f "$D/$h/swtpm.pid" ] && kill "$(cat "$D/$h/swtpm.pid")" 2>/dev/null || true
  done
  bash "$ROOT/scripts/etcd-member.sh" stop "$D/etcd" || true
  rm -rf "$RAM"
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
mkdir -p "$D/shared/guest" "$RAM"
trap cleanup EXIT

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

for h in host-a:127.0.0.2 host-b:127.0.0.3; do
  name=${h%%:*} addr=${h##*:}
  mkdir -p "$D/$name"
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
  "etcd": {"endpoints": ["$ETCD_URL"], "lease_ttl_s": 5},
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
$FERRY --host host-a ha status

say "tamper-evident audit log of host-a (signed, hash-chained)"
$FERRY --host host-a audit show --limit 8
$FERRY --host host-a audit verify --key "$D/host-a/state/audit.pub"
say "demo done"
