"""Software TPMs for system tests: one swtpm per simulated host, with EK
certificates from a local CA that plays the TPM manufacturer.

    tpms = TpmSet(cluster)           # the CA under DIR/tpm, certs copied to
                                     # DIR/pki/attest/manufacturers
    tpms.add("host-a")               # swtpm_setup + `swtpm socket` on two ports
    cluster.write_host_config("host-a", attestation=tpms.config("host-a"))
    ...
    tpms.reset("host-a")             # a reboot: PCRs back to zero
    tpms.close()                     # every swtpm stopped, waited for

Each TPM lives in DIR/tpm/<host> (state, logs). swtpm serves one client at
a time: only its host's ferryd talks to it (tpm2-tools are for debugging
by hand: TPM2TOOLS_TCTI=<tcti> with that ferryd stopped).
"""

import shutil
import subprocess
import time
from pathlib import Path

import ferrylib

SWTPM = "/usr/bin/swtpm"
SWTPM_SETUP = "/usr/bin/swtpm_setup"
START_TIMEOUT = 10.0


def available():
    """Are swtpm and swtpm_setup installed (scripts/deps.sh)?"""
    return Path(SWTPM).exists() and Path(SWTPM_SETUP).exists()


class Tpm:
    def __init__(self, name, dir, port):
        self.name, self.dir, self.port = name, Path(dir), port
        self.proc = None
        self.log = None

    @property
    def tcti(self):
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def start(self):
        assert self.proc is None or self.proc.poll() is not None
        self.log = open(self.dir / "swtpm.log", "ab")
        self.proc = subprocess.Popen(
            [SWTPM, "socket", "--tpm2", "--tpmstate", f"dir={self.dir / 'state'}",
             "--server", f"type=tcp,port={self.port},bindaddr=127.0.0.1",
             "--ctrl", f"type=tcp,port={self.port + 1},bindaddr=127.0.0.1",
             "--flags", "startup-clear"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        ferrylib.wait_until(lambda: not ferrylib.port_free("127.0.0.1", self.port)
                            or self.proc.poll() is not None,
                            START_TIMEOUT, 0.05, f"swtpm of {self.name}")
        assert self.proc.poll() is None, f"swtpm of {self.name} exited"

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self.log:
            self.log.close()
            self.log = None


class TpmSet:
    """The software TPMs of one cluster and their manufacturer CA."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.dir = Path(cluster.dir) / "tpm"
        self.ca = self.dir / "ca"
        self.ca.mkdir(parents=True, exist_ok=True)
        (self.dir / "localca.conf").write_text(
            f"statedir = {self.ca}\nsigningkey = {self.ca}/signkey.pem\n"
            f"issuercert = {self.ca}/issuercert.pem\ncertserial = {self.ca}/serial\n")
        (self.dir / "setup.conf").write_text(
            "create_certs_tool = /usr/bin/swtpm_localca\n"
            f"create_certs_tool_config = {self.dir}/localca.conf\n"
            "create_certs_tool_options = /etc/swtpm-localca.options\n"
            "active_pcr_banks = sha256\n")
        self.tpms = {}

    def add(self, name):
        """Manufacture and start host name's TPM; the manufacturer's CA
        certificates go to the registrar (pki/attest/manufacturers)."""
        d = self.dir / name
        (d / "state").mkdir(parents=True)
        subprocess.run([SWTPM_SETUP, "--tpm2", "--tpmstate", str(d / "state"),
                        "--create-ek-cert", "--create-platform-cert",
                        "--config", str(self.dir / "setup.conf"),
                        "--logfile", str(d / "setup.log")],
                       check=True, capture_output=True, timeout=60)
        mfr = Path(self.cluster.pki) / "attest" / "manufacturers"
        mfr.mkdir(parents=True, exist_ok=True)
        for f in ("swtpm-localca-rootca-cert.pem", "issuercert.pem"):
            shutil.copy(self.ca / f, mfr / f)
        port = ferrylib.alloc_ports(["127.0.0.1"], 2)
        t = Tpm(name, d, port)
        t.start()
        self.tpms[name] = t
        return t

    def config(self, name, mode="required", seal=None, **extra):
        """The "attestation" object of name's ferryd.json."""
        cfg = {"mode": mode, "tcti": self.tpms[name].tcti,
               "registrar": "../pki/attest"}
        if seal is not None:
            cfg["seal"] = seal
        cfg.update(extra)
        return cfg

    def reset(self, name):
        """Power-cycle name's TPM (like a reboot: PCRs start from zero).
        Its ferryd must be stopped."""
        t = self.tpms[name]
        t.stop()
        t.start()

    def close(self):
        for t in self.tpms.values():
            t.stop()


def file_sha256(path):
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def policy_digest(cluster, policy_path):
    """The measured digest of a policy file (`ferry policy digest`)."""
    return cluster.run([cluster.ferry_bin, "policy", "digest", policy_path]).stdout.strip()


def wait_gone(proc, timeout=30.0):
    """Wait for a Popen to exit; its exit code."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        assert time.monotonic() < deadline, "process did not exit"
        time.sleep(0.05)
    return proc.returncode
