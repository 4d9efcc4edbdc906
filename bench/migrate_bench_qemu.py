"""QEMU's own transports for bench/migrate_bench.py: certificates for
QEMU's TLS, a QEMU started by hand, and one QEMU-direct run (source and
destination driven over QMP)."""

import subprocess
import time

from migrate_bench_common import (BenchError, CONFIGS, ProcTable, QMP, QMPError,
                                  UNLIMITED_BW, check_console, read_file, tail,
                                  wait_heartbeats)


# ---------------------------------------------------------------------------
# TLS certificates for QEMU (GnuTLS-compatible PEM via the openssl CLI)


def make_qemu_certs(d, ip="127.0.0.1"):
    """ca-cert.pem, server-cert.pem/-key.pem, client-cert.pem/-key.pem in d
    (RSA-2048, CN and SAN ip).  QEMU checks key usages strictly, so
    the CA gets CA:TRUE + keyCertSign and the leaves digitalSignature +
    keyEncipherment + the matching extendedKeyUsage."""
    d.mkdir(parents=True, exist_ok=True)

    def ossl(*args):
        r = subprocess.run(["openssl", *args], cwd=d, capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError(f"openssl {args[0]} failed: {r.stderr.strip()}")

    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca-key.pem",
         "-out", "ca-cert.pem", "-days", "3", "-subj", "/CN=ferry-bench CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for role, eku, serial in (("server", "serverAuth", "2"), ("client", "clientAuth", "3")):
        (d / f"{role}.ext").write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage={eku}\n"
            f"subjectAltName=IP:{ip},DNS:localhost\n")
        ossl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{role}-key.pem",
             "-out", f"{role}.csr", "-subj", f"/CN={ip}")
        ossl("x509", "-req", "-in", f"{role}.csr", "-CA", "ca-cert.pem",
             "-CAkey", "ca-key.pem", "-set_serial", serial, "-days", "3",
             "-extfile", f"{role}.ext", "-out", f"{role}-cert.pem")
    for f in list(d.iterdir()):
        if f.suffix in (".csr", ".ext") or f.name == "ca-key.pem":
            f.unlink()
        else:
            f.chmod(0o600 if "key" in f.name else 0o644)


def qemu_metrics(info):
    """QEMU's query-migrate answer -> the benchmark's metrics."""
    ram = info.get("ram", {})
    return {
        "status": info.get("status"),
        "total_ms": float(info.get("total-time", 0)),
        "downtime_ms": float(info.get("downtime", 0)),
        "ram_bytes": int(ram.get("transferred", 0)),
        "wire_bytes": None,
        "mbps": ram.get("mbps"),
        "iterations": ram.get("dirty-sync-count"),
        "setup_ms": info.get("setup-time"),
        "multifd_bytes": ram.get("multifd-bytes"),
        "normal_pages": ram.get("normal"),
        "duplicate_pages": ram.get("duplicate"),
        "dirty_pages_rate": ram.get("dirty-pages-rate"),
    }


# ---------------------------------------------------------------------------
# QEMU runs


class QemuVM:
    def __init__(self, bench, rundir, role, incoming=False, tls=None):
        self.dir = rundir / role
        self.dir.mkdir(parents=True)
        self.serial = self.dir / "serial.log"
        self.qmp_path = self.dir / "qmp.sock"
        self.log = self.dir / "qemu.log"
        a = bench.args
        argv = bench.netns_prefix("a" if role == "src" else "b")
        argv += [a.qemu, "-name", f"guest=bench-{role},debug-threads=on",
                "-machine", "pc", "-accel", a.accel,
                "-m", bench.qemu_mem_arg(), "-smp", "1",
                "-nodefaults", "-no-user-config", "-display", "none",
                "-chardev", f"socket,id=qmp,path={self.qmp_path},server=on,wait=off",
                "-mon", "chardev=qmp,mode=control",
                "-chardev", f"file,id=serial0,path={self.serial}",
                "-serial", "chardev:serial0",
                "-kernel", str(bench.kernel), "-initrd", str(bench.initrd),
                "-append", bench.cmdline()]
        if tls:
            argv += ["-object", f"tls-creds-x509,id=tls0,dir={bench.certdir},"
                     f"endpoint={tls},verify-peer=on"]
        if incoming:
            argv += ["-incoming", "defer"]
        self.proc = bench.procs.spawn(argv, self.log)
        try:
            self.qmp = QMP(self.qmp_path, self.proc)
        except BaseException as e:
            ProcTable.stop(self.proc, grace=1.0)
            if isinstance(e, BenchError):
                raise BenchError(f"{e}: {tail(self.log, 3)}") from None
            raise

    def alive(self):
        return self.proc.poll() is None

    def console(self):
        return read_file(self.serial)

    def close(self):
        try:
            if self.alive():
                self.qmp.cmd("quit")
        except Exception:
            pass
        self.qmp.close()
        ProcTable.stop(self.proc, grace=2.0)


def run_qemu(bench, config, workload, run_idx, rundir, res):
    """One QEMU migration; fills res (also partly, when it raises)."""
    _, _, multifd, tls, compression = CONFIGS[config]
    a = bench.args
    src = dst = None
    try:
        src = QemuVM(bench, rundir, "src", tls="client" if tls else None)
        wait_heartbeats(src.console, "source boot", count=1,
                        timeout=a.boot_timeout, alive=src.alive)
        res["boot_s"] = round(time.monotonic() - bench.run_t0, 2)
        time.sleep(a.settle)

        dst = QemuVM(bench, rundir, "dst", incoming=True, tls="server" if tls else None)
        for vm in (src, dst):
            if multifd:
                vm.qmp.cmd("migrate-set-capabilities",
                           capabilities=[{"capability": "multifd", "state": True}])
            p = {}
            if multifd:
                p["multifd-channels"] = a.channels
            if compression:
                p["multifd-compression"] = compression
            if tls:
                p["tls-creds"] = "tls0"
            if vm is src:
                p["max-bandwidth"] = UNLIMITED_BW
                p["downtime-limit"] = a.downtime_ms
            if p:
                vm.qmp.cmd("migrate-set-parameters", **p)
        port = bench.qemu_port()
        uri = f"tcp:{bench.host_addr('b')}:{port}"
        dst.qmp.cmd("migrate-incoming", uri=uri)
        t_mig = time.monotonic()
        src.qmp.cmd("migrate", uri=uri)

        deadline = time.monotonic() + a.migrate_timeout
        while True:
            info = src.qmp.cmd("query-migrate")
            st = info.get("status")
            if st in ("completed", "failed", "cancelled"):
                break
            if not dst.alive():
                raise BenchError(f"destination QEMU exited: {tail(dst.log, 3)}")
            if time.monotonic() > deadline:
                try:
                    src.qmp.cmd("migrate_cancel")
                except QMPError:
                    pass
                m = qemu_metrics(info)
                raise BenchError(f"not converged after {a.migrate_timeout:.0f}s "
                                 f"(status {st}, {m['iterations']} iterations, "
                                 f"{m['ram_bytes'] / 2**20:.0f} MiB sent)")
            time.sleep(0.05)
        res["wall_ms"] = round((time.monotonic() - t_mig) * 1000)
        res.update(qemu_metrics(info))
        res["raw"] = info
        if st != "completed":
            raise BenchError(f"migration {st}: {info.get('error-desc', '')}".strip())

        src_hbs = check_console(src.console(), "source")
        last = src_hbs[-1]["seq"] if src_hbs else 0
        # The source reports completed once everything is sent; the
        # destination may still be loading the last section ("inmigrate").
        deadline = time.monotonic() + a.verify_timeout
        while True:
            dst_status = dst.qmp.cmd("query-status").get("status")
            if dst_status == "running":
                break
            if time.monotonic() > deadline or dst_status not in ("inmigrate", "paused"):
                raise BenchError(f"destination not running after migration ({dst_status}): "
                                 f"{tail(dst.log, 3)}")
            time.sleep(0.05)
        res["dst_running_ms"] = round((time.monotonic() - t_mig) * 1000)
        dhb = wait_heartbeats(dst.console, "destination", count=2, after_seq=last,
                              timeout=a.verify_timeout, alive=dst.alive)
        res["src_last_seq"] = last
        res["dst_seq"] = [h["seq"] for h in dhb]
        res["verified"] = True
    except BaseException:
        if dst is not None:
            res["dst_console_tail"] = tail(dst.serial, 8)
        raise
    finally:
        for vm in (dst, src):
            if vm is not None:
                vm.close()
