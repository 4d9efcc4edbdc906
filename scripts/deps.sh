#!/usr/bin/env bash
# deps.sh: install, idempotently, every Debian package ferry needs to build,
# test and demo.  Both README commands (make demo, make check) call this.
# It only installs what is missing, and runs `apt-get update` only when an
# install needs it.
set -euo pipefail

PACKAGES=(
  # build
  gcc libc6-dev make meson ninja-build pkg-config clang libclang-rt-14-dev
  # systemd integration (sd_notify), man pages, and the tools the install
  # tests use: systemd-analyze, systemd-sysusers, systemd-tmpfiles (the
  # package installs them; nothing starts systemd), setpriv, man
  libsystemd-dev systemd scdoc util-linux man-db
  # Debian packages (make package, docs/install.md)
  debhelper dpkg-dev fakeroot lintian
  # libraries
  libssl-dev libjansson-dev libevent-dev libcmocka-dev libzstd-dev
  libcurl4-openssl-dev
  # a VM's firewall (docs/security.md, "Security context"): nftables through
  # libnftables' JSON API, connection tracking through libnetfilter_conntrack;
  # nft and conntrack for the tests
  libnftables-dev libnetfilter-conntrack-dev nftables conntrack
  # cluster state (docs/etcd.md): etcd server for tests and the demo, etcdctl
  etcd-server etcd-client
  # TPM 2.0: tss2 ESYS (ferryd), software TPMs for tests and the demo,
  # tpm2-tools for debugging by hand (docs/attestation.md)
  libtss2-dev swtpm swtpm-tools tpm2-tools
  # hypervisor and guest
  qemu-system-x86 qemu-utils busybox-static cpio gzip
  # system tests
  python3 python3-pytest iproute2 procps
  # ferry-detect's figure (bench/detect_plot.py, make bench-detect)
  python3-matplotlib
  # the dashboard's browser tests (tests/system/test_ui*.py): headless
  # Chromium driven by selenium through chromium-driver
  chromium chromium-driver python3-selenium
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

# The unprivileged user QEMU runs as (ferryd.json: qemu_user); in group kvm
# when the host has one, so that it may open /dev/kvm.
QEMU_USER=ferry-qemu
ensure_qemu_user() {
  if ! getent passwd "$QEMU_USER" >/dev/null; then
    echo "deps: creating the system user $QEMU_USER"
    $SUDO useradd --system --user-group --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin "$QEMU_USER"
  fi
  if getent group kvm >/dev/null && ! id -nG "$QEMU_USER" | grep -qw kvm; then
    $SUDO usermod -a -G kvm "$QEMU_USER"
  fi
}

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  ensure_qemu_user
  exit 0
fi

echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"; then
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
ensure_qemu_user
