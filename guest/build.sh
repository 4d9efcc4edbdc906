#!/bin/bash
# Build ferry's test guest: OUTDIR/vmlinuz (Debian cloud kernel) and
# OUTDIR/initramfs.cpio.gz (busybox + memload + /init).
#
# Usage: guest/build.sh OUTDIR
#
# Idempotent: the kernel package is downloaded and unpacked once into
# OUTDIR/cache (never installed on the host); memload and the initramfs
# are rebuilt only when one of their inputs is newer than the output.
# Needs: apt-get/apt-cache/dpkg-deb, gcc (static libc: libc6-dev),
# busybox-static, cpio, gzip; xz-utils/zstd only if the kernel ships
# compressed modules.
set -euo pipefail

die() { echo "build.sh: error: $*" >&2; exit 1; }
log() { echo "build.sh: $*" >&2; }

[ $# -eq 1 ] || die "usage: $0 OUTDIR"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$1/cache"
OUT=$(cd "$1" && pwd)
CACHE=$OUT/cache
META_PKG=linux-image-cloud-amd64
BUSYBOX=/bin/busybox
# Kernel config symbol -> module name needed for the ACPI power button to
# reach busybox acpid (the button driver and the evdev interface), and for
# memload's disk mode (virtio-blk).
NEEDED_DRIVERS="CONFIG_ACPI_BUTTON:button CONFIG_INPUT_EVDEV:evdev CONFIG_VIRTIO_PCI:virtio_pci CONFIG_VIRTIO_BLK:virtio_blk"
# The virtio NIC, loaded by /init only when the kernel command line asks
# for networking (ferry.ip=): virtio_pci and virtio_net pull in
# virtio_ring, virtio, virtio_pci_{modern,legacy}_dev, failover and
# net_failover through their .modinfo dependencies.
NET_DRIVERS="CONFIG_VIRTIO_PCI:virtio_pci CONFIG_VIRTIO_NET:virtio_net"

# ---- kernel -----------------------------------------------------------------

# Print the versioned kernel package the meta package depends on.
resolve_kernel_pkg() {
	apt-cache depends "$META_PKG" 2>/dev/null |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}

# Download package $1 into $CACHE; 0 on success.
download_pkg() {
	(cd "$CACHE" && apt-get download -q -o APT::Sandbox::User=root "$1")
}

KPKG=$(resolve_kernel_pkg || true)
if [ -z "$KPKG" ]; then
	log "$META_PKG unknown to apt, running apt-get update"
	apt-get update -qq
	KPKG=$(resolve_kernel_pkg || true)
fi
[ -n "$KPKG" ] || die "cannot resolve the kernel package behind $META_PKG"

if [ ! -f "$CACHE/$KPKG/.unpacked" ] &&
	! ls "$CACHE/${KPKG}"_*.deb >/dev/null 2>&1; then
	log "downloading $KPKG"
	if ! download_pkg "$KPKG"; then
		# Stale package lists name a version the archive no longer has.
		log "download failed, running apt-get update and retrying"
		apt-get update -qq
		KPKG=$(resolve_kernel_pkg || true)
		[ -n "$KPKG" ] || die "cannot resolve the kernel package behind $META_PKG"
		download_pkg "$KPKG" || die "apt-get download $KPKG failed"
	fi
fi
KVER=${KPKG#linux-image-}
KDIR=$CACHE/$KPKG

if [ ! -f "$KDIR/.unpacked" ]; then
	DEB=$(ls "$CACHE/${KPKG}"_*.deb | tail -n 1)
	log "unpacking $(basename "$DEB")"
	rm -rf "$KDIR"
	dpkg-deb -x "$DEB" "$KDIR"
	touch "$KDIR/.unpacked"
fi

VMLINUZ_SRC=$KDIR/boot/vmlinuz-$KVER
KCONFIG=$KDIR/boot/config-$KVER
MODDIR=$KDIR/lib/modules/$KVER
[ -f "$VMLINUZ_SRC" ] || die "$VMLINUZ_SRC missing from the package"
[ -f "$KCONFIG" ] || die "$KCONFIG missing from the package"
if [ ! -f "$OUT/vmlinuz" ] || ! cmp -s "$VMLINUZ_SRC" "$OUT/vmlinuz"; then
	log "installing vmlinuz ($KVER)"
	cp "$VMLINUZ_SRC" "$OUT/vmlinuz.tmp"
	mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
fi

# ---- memload ------------------------------------------------------------------

NETPROBE_SRC=$HERE/netprobe/netprobe.c
if [ ! -f "$OUT/netprobe" ] || [ "$NETPROBE_SRC" -nt "$OUT/netprobe" ]; then
	log "compiling netprobe"
	gcc -std=gnu11 -static -O2 -Wall -Wextra -Werror -s \
		-o "$OUT/netprobe.tmp" "$NETPROBE_SRC"
	mv "$OUT/netprobe.tmp" "$OUT/netprobe"
fi

MEMLOAD_SRCS=("$HERE/memload/memload.c" "$HERE/memload/params.c")
stale=0
[ -f "$OUT/memload" ] || stale=1
for f in "${MEMLOAD_SRCS[@]}" "$HERE"/memload/*.h; do
	[ "$f" -nt "$OUT/memload" ] && stale=1
done
if [ "$stale" -eq 1 ]; then
	log "compiling memload"
	gcc -std=gnu11 -static -O2 -Wall -Wextra -Werror -s \
		-o "$OUT/memload.tmp" "${MEMLOAD_SRCS[@]}"
	mv "$OUT/memload.tmp" "$OUT/memload"
fi

# ---- initramfs ----------------------------------------------------------------

# Print the path (relative to MODDIR) of the module called $1 ('-' and
# '_' are interchangeable in module names).
find_module() {
	local want=${1//-/_} f base
	while IFS= read -r f; do
		base=$(basename "$f")
		base=${base%%.ko*}
		if [ "${base//-/_}" = "$want" ]; then
			echo "${f#"$MODDIR"/}"
			return 0
		fi
	done < <(find "$MODDIR" -name '*.ko*' -type f)
	return 1
}

# Write module $2 (path in MODDIR) uncompressed to file $1.
extract_module() {
	local dst=$1 src=$MODDIR/$2
	case $src in
	*.ko) cp "$src" "$dst" ;;
	*.ko.xz) xz -dc "$src" >"$dst" ;;
	*.ko.gz) gzip -dc "$src" >"$dst" ;;
	*.ko.zst) zstd -q -dc "$src" >"$dst" ;;
	*) die "unsupported module format: $src" ;;
	esac
}

# Print the comma-separated dependency list of an uncompressed .ko.
module_depends() {
	tr '\0' '\n' <"$1" | sed -n 's/^depends=//p' | head -n 1
}

# Copy module $1 and its dependencies into $2/lib/modules, appending
# their file names to $2/lib/modules/$3 (default load-order) dependencies
# first.
add_module() {
	local name=${1//-/_} stage=$2 list=${3:-load-order} rel ko dep deps
	grep -qx "$name" "$stage/.modules-seen" 2>/dev/null && return 0
	echo "$name" >>"$stage/.modules-seen"
	rel=$(find_module "$name") || die "module $name not found under $MODDIR"
	ko=$stage/lib/modules/$name.ko
	extract_module "$ko" "$rel"
	deps=$(module_depends "$ko")
	for dep in ${deps//,/ }; do
		add_module "$dep" "$stage" "$list"
	done
	echo "$name.ko" >>"$stage/lib/modules/$list"
}

INITRAMFS=$OUT/initramfs.cpio.gz
INPUTS=("$HERE/init" "$HERE/build.sh" "$OUT/memload" "$OUT/netprobe"
	"$OUT/vmlinuz" "$BUSYBOX")
stale=0
[ -f "$INITRAMFS" ] || stale=1
for f in "${INPUTS[@]}"; do
	[ -e "$f" ] || die "missing input $f"
	[ "$f" -nt "$INITRAMFS" ] && stale=1
done

if [ "$stale" -eq 1 ]; then
	log "building initramfs"
	STAGE=$OUT/initramfs.d
	rm -rf "$STAGE"
	mkdir -p "$STAGE"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,var/log}
	mkdir -p "$STAGE"/{lib/modules,etc/acpi/PWRF}
	: >"$STAGE/lib/modules/load-order"
	: >"$STAGE/lib/modules/net-order"

	cp "$BUSYBOX" "$STAGE/bin/busybox"
	while IFS= read -r applet; do
		applet=${applet#/}
		[ "$applet" = bin/busybox ] && continue
		mkdir -p "$STAGE/$(dirname "$applet")"
		ln -sf /bin/busybox "$STAGE/$applet"
	done < <("$BUSYBOX" --list-full)

	install -m 0755 "$OUT/memload" "$STAGE/bin/memload"
	install -m 0755 "$OUT/netprobe" "$STAGE/bin/netprobe"
	install -m 0755 "$HERE/init" "$STAGE/init"

	# Power button -> acpid -> poweroff.  Built-in drivers need nothing.
	for pair in $NEEDED_DRIVERS; do
		sym=${pair%%:*}
		mod=${pair#*:}
		setting=$(sed -n "s/^$sym=//p" "$KCONFIG")
		case $setting in
		y) ;;
		m) add_module "$mod" "$STAGE" ;;
		*) die "$sym is not set in $KCONFIG: system_powerdown cannot work" ;;
		esac
	done
	for pair in $NET_DRIVERS; do
		sym=${pair%%:*}
		mod=${pair#*:}
		case $(sed -n "s/^$sym=//p" "$KCONFIG") in
		y) ;;
		m) add_module "$mod" "$STAGE" net-order ;;
		*) die "$sym is not set in $KCONFIG: no guest networking" ;;
		esac
	done
	rm -f "$STAGE/.modules-seen"
	cat >"$STAGE/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
echo "init: power button pressed, powering off" >/dev/console
poweroff -f
EOF
	chmod 0755 "$STAGE/etc/acpi/PWRF/00000080"

	# An initial console for the kernel to hand to /init (needs root;
	# /init re-opens /dev/console from devtmpfs anyway).
	if [ "$(id -u)" -eq 0 ]; then
		mknod -m 0600 "$STAGE/dev/console" c 5 1
	fi

	(cd "$STAGE" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
		cpio --null -o -H newc --owner=0:0 --quiet) |
		gzip -9n >"$INITRAMFS.tmp"
	mv "$INITRAMFS.tmp" "$INITRAMFS"
	log "initramfs: $(stat -c %s "$INITRAMFS") bytes;" \
		"modules: $(tr '\n' ' ' <"$STAGE/lib/modules/load-order")" \
		"network modules: $(tr '\n' ' ' <"$STAGE/lib/modules/net-order")"
	rm -rf "$STAGE"
fi

log "ok: $OUT/vmlinuz $OUT/initramfs.cpio.gz ($KVER)"
