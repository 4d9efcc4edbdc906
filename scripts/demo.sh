#!/usr/bin/env bash
# demo.sh: two ferryd hosts on loopback (127.0.0.2 and 127.0.0.3, separate
# state dirs), a cluster PKI, a memload VM started on host-a whose heartbeat
# is shown, then migrated live and encrypted to host-b, where the heartbeat
# runs on. Run by `make demo` after the build and the guest.
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

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
  if [ "${FERRY_DEMO_KEEP:-0}" = 1 ]; then
    echo "hosts left running; stop them with: kill \$(cat $D/*/ferryd.pid)"
    return
  fi
  $FERRY --host host-a vm stop demo --force >/dev/null 2>&1 || true
  $FERRY --host host-b vm stop demo --force >/dev/null 2>&1 || true
  for h in host-a host-b; do
    [ -f "$D/$h/ferryd.pid" ] && kill "$(cat "$D/$h/ferryd.pid")" 2>/dev/null || true
  done
  sleep 0.5
  for h in host-a host-b; do
    [ -f "$D/$h/swtpm.pid" ] && kill "$(cat "$D/$h/swtpm.pid")" 2>/dev/null || true
  done
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
  sleep 0.5
  rm -rf "$D"
fi
mkdir -p "$D/shared/guest"
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

say "tamper-evident audit log of host-a (signed, hash-chained)"
$FERRY --host host-a audit show --limit 8
$FERRY --host host-a audit verify --key "$D/host-a/state/audit.pub"
say "demo done"
