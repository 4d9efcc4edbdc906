"""System tests of the network-facing defences and identities (issue 18,
docs/security.md): the connection deadline and the caps counted from
accept() on both ports, request framing, identity classes (host vs user
certificates), revocation, and the JSON nesting bound.

Each test builds its own small cluster (ferrylib.Cluster). Connections of
an "attacker" come from 127.0.0.9; the operator's CLI and the hosts use
their own addresses.

Run with Debian's interpreter against the ASan build:
    FERRY_BUILD=build-asan /usr/bin/python3 -m pytest tests/system/test_hardnet.py
"""

import hashlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import time

import pytest

from ferrylib import (EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, client_hello,
                      expect_tls_refused, wait_until)

A, B = "host-a", "host-b"
ATTACKER = "127.0.0.9"
DEADLINE = 3  # limits.deadline_s of these clusters (the default is 10)


# --------------------------------------------------------------------------
# helpers


def audit_records(c, host):
    text = (c.hosts[host].state_dir / "audit.log").read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


def last_seq(c, host):
    recs = audit_records(c, host)
    return recs[-1]["seq"] if recs else 0


def wait_records(c, host, since, timeout=10, **fields):
    """Records after seq since whose top-level fields equal fields (the
    refusals are flushed once a second)."""
    def find():
        return [r for r in audit_records(c, host) if r["seq"] > since
                and all(r.get(k) == v for k, v in fields.items())]
    return wait_until(find, timeout, 0.2, f"audit records {fields} on {host}")


def refusal_counts(c, host, since, action):
    """{source: count} of the coalesced `action` refusals after seq since."""
    counts = {}
    for r in audit_records(c, host):
        if r["seq"] > since and r["action"] == action:
            for src, n in r["detail"]["sources"].items():
                counts[src] = counts.get(src, 0) + n
    return counts


def wait_counts(c, host, since, action, total, timeout=10):
    """Wait until the `action` refusals after since add up to total."""
    return wait_until(lambda: (lambda d: d if sum(d.values()) >= total else None)(
        refusal_counts(c, host, since, action)), timeout, 0.2,
        f"{total} {action} refusals on {host}")


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def ports(c, host):
    h = c.hosts[host]
    return {"api": (h.address, h.port), "data": (h.address, h.port + 1)}


def hello_bytes(c):
    """A TLS 1.3 ClientHello (no certificate needed to make one)."""
    ctx = c.ssl_context(cert=None)
    ctx.check_hostname = False
    return client_hello(ctx)


def closed_by_peer(sock, timeout):
    """Wait up to timeout s for the peer to close sock; True if it did."""
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(4096):
                return True
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
        return True
    except socket.timeout:
        return False


def trickle(sock, data, every=0.5, limit=60):
    """Send data one byte every `every` s until the peer cuts sock; the
    seconds it took, or None when it never did (within limit s)."""
    t0 = time.monotonic()
    for i in range(len(data)):
        try:
            sock.sendall(data[i:i + 1])
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            return time.monotonic() - t0
        if time.monotonic() - t0 > limit:
            return None
        # a closed peer shows as EOF before the next send fails
        sock.settimeout(every)
        try:
            if sock.recv(1) == b"":
                return time.monotonic() - t0
        except socket.timeout:
            pass
        except (ConnectionResetError, ssl.SSLError, OSError):
            return time.monotonic() - t0
    return None


def tls_connect(c, target, cert, source=None):
    """A TLS 1.3 connection to target presenting cert (crt, key), the
    handshake done (TLS 1.3: the server's verdict on the certificate comes
    after it, with the first read)."""
    ctx = c.ssl_context(cert=cert)
    ctx.check_hostname = False
    s = socket.create_connection(target, timeout=10,
                                 source_address=(source, 0) if source else None)
    return ctx.wrap_socket(s, server_hostname=target[0])


def issue_user_like_host(c, name):
    """A user certificate named like host `name`, from the cluster CA, as an
    older `ferry pki` (or a careless CA operator) could issue it: the host's
    files are moved aside while it is issued."""
    crt = c.pki / "hosts" / f"{name}.crt"
    aside = c.pki / f"{name}.crt.aside"
    crt.rename(aside)
    try:
        c.pki_run("user", name)
    finally:
        aside.rename(crt)
    return c.user_cert(name)


def file_identity(c, rel):
    """A shared-storage file as a source describes it in its prepare call
    (migrate.h: size and sha256, of the whole file up to 64 MiB)."""
    data = (c.shared / rel).read_bytes()
    assert len(data) <= 64 << 20, rel
    return {"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def mk_cluster(make_cluster, hosts=1, crl=False, limits=None, **kw):
    extra = {"limits": {"deadline_s": DEADLINE, **(limits or {})}}
    c = make_cluster(hosts=hosts, start=False, ferryd_extra=extra, **kw)
    if crl:
        for h in c.hosts:
            cfg = c.host_config(h)
            cfg["tls"]["crl"] = "../pki/crl.pem"
            c.write_host_config(h, tls=cfg["tls"])
    return c


# --------------------------------------------------------------------------
# 1. slow-loris clients on both ports are cut at the deadline


def test_slowloris_cut_at_deadline(make_cluster):
    c = mk_cluster(make_cluster)
    c.start_all()
    p = ports(c, A)
    hello = hello_bytes(c)
    seq = last_seq(c, A)
    pid = c.hosts[A].pid
    fds0 = fd_count(pid)

    # a ClientHello one byte every half second, on each port
    for name in ("api", "data"):
        s = socket.create_connection(p[name], timeout=10, source_address=(ATTACKER, 0))
        took = trickle(s, hello)
        s.close()
        assert took is not None, f"{name}: a trickled ClientHello was never cut"
        assert DEADLINE - 0.5 <= took <= DEADLINE + 2.5, (name, took)

    # authenticated, then the request headers one byte at a time
    t = tls_connect(c, p["api"], c.user_cert("admin"))
    took = trickle(t, b"GET /v1/host HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200)
    t.close()
    assert took is not None and took <= DEADLINE + 2.5, took

    # on the data plane: a host handshake, then the HELLO one byte at a time
    t = tls_connect(c, p["data"], (str(c.pki / "hosts" / f"{A}.crt"),
                                   str(c.pki / "hosts" / f"{A}.key")))
    took = trickle(t, b"FRYH" + b"\0" * 200)
    t.close()
    assert took is not None and took <= DEADLINE + 2.5, took

    # audited, coalesced, with the reason
    counts = wait_counts(c, A, seq, "conn.timeout", 4)
    # the authenticated client by name, the host's HELLO by its address
    assert counts == {ATTACKER: 2, "admin": 1, "127.0.0.1": 1}, counts
    reasons = {r["detail"]["first_reason"] for r in audit_records(c, A)
               if r["seq"] > seq and r["action"] == "conn.timeout"}
    assert any(f"no TLS handshake and request within {DEADLINE} s" in x
               for x in reasons), reasons
    assert any("not done by the handshake deadline" in x for x in reasons), reasons
    # nothing is left behind, and the host serves good clients
    wait_until(lambda: fd_count(pid) <= fds0, 10, 0.2, "the cut connections' fds to go")
    assert c.api(A, "GET", "/v1/host")[0] == 200


def test_keepalive_next_request_deadline(make_cluster):
    """On a kept-alive connection each request gets its own deadline from
    the previous reply: quick requests go on, an idle connection is cut."""
    c = mk_cluster(make_cluster)
    c.start_all()
    t = tls_connect(c, ports(c, A)["api"], c.user_cert("admin"))
    for _ in range(3):
        t.sendall(b"GET /v1/host HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += t.recv(4096)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        while len(body) < length:
            body += t.recv(4096)
        assert head.startswith(b"HTTP/1.1 200"), head[:80]
        assert len(body) == length, (len(body), length)
        time.sleep(DEADLINE / 2)
    t0 = time.monotonic()
    assert closed_by_peer(t, DEADLINE + 5)
    assert time.monotonic() - t0 <= DEADLINE + 2
    t.close()


# --------------------------------------------------------------------------
# 2. the caps count every connection from its accept()


def test_caps_counted_from_accept(make_cluster):
    per_addr = 4
    c = mk_cluster(make_cluster, limits={"conns_per_addr": per_addr})
    c.start_all()
    seq = last_seq(c, A)
    # one attacker address per port: the ports share the guard's counts
    attackers = {"api": ATTACKER, "data": "127.0.0.10"}
    for name, target in ports(c, A).items():
        socks = [socket.create_connection(target, timeout=10,
                                          source_address=(attackers[name], 0))
                 for _ in range(per_addr + 6)]
        # silent sockets: the ones over the cap are closed at once ...
        cut = [s for s in socks if closed_by_peer(s, 0.5)]
        assert len(cut) == 6, (name, len(cut))
        # ... while another source still gets in
        if name == "api":
            assert c.api(A, "GET", "/v1/host")[0] == 200
        # and the ones held are cut at the deadline
        held = [s for s in socks if s not in cut]
        assert all(closed_by_peer(s, DEADLINE + 3) for s in held), name
        for s in socks:
            s.close()
    counts = wait_counts(c, A, seq, "conn.limited", 12)
    assert counts == {a: 6 for a in attackers.values()}, counts
    reasons = [r["detail"]["first_reason"] for r in audit_records(c, A)
               if r["seq"] > seq and r["action"] == "conn.limited"]
    assert any(f"{ATTACKER} has {per_addr} unauthenticated connections" in x
               for x in reasons), reasons
    assert wait_counts(c, A, seq, "conn.timeout", 2 * per_addr) == \
        {a: per_addr for a in attackers.values()}


# --------------------------------------------------------------------------
# 3. request framing and nesting


def raw_request(c, host, data, cert=None, timeout=15):
    """Send raw bytes over TLS; everything the server sends until it closes
    (or timeout)."""
    t = tls_connect(c, ports(c, host)["api"], cert or c.user_cert("admin"))
    t.sendall(data)
    out = b""
    t.settimeout(timeout)
    try:
        while True:
            d = t.recv(4096)
            if not d:
                break
            out += d
    except (socket.timeout, ssl.SSLError, ConnectionResetError):
        pass
    t.close()
    return out


def test_content_length_overflow_is_400(make_cluster):
    c = mk_cluster(make_cluster)
    c.start_all()
    seq = last_seq(c, A)
    for length in (2 ** 64 + 1, 10 ** 30):
        t0 = time.monotonic()
        out = raw_request(c, A, b"POST /v1/vms HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Length: %d\r\n\r\n" % length)
        head, _, body = out.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 "), out[:200]
        err = json.loads(body)["error"]
        assert err == {"code": "invalid_request", "message":
                       "Content-Length is larger than 2^63-1: not a valid length"}, err
        # answered at once (the connection then ends at the deadline)
        assert time.monotonic() - t0 <= DEADLINE + 2
    assert wait_counts(c, A, seq, "request.refused", 2) == {"admin": 2}
    # a length that fits is read as usual
    status, reply = c.api(A, "POST", "/v1/vms/nosuch/start")
    assert status == 404, reply


def nest(n):
    """A JSON object with n levels of nesting in all."""
    return '{"a":' + "[" * (n - 1) + "1" + "]" * (n - 1) + "}"


def test_deep_json_refused(make_cluster):
    c = mk_cluster(make_cluster)
    c.start_all()
    for body in (nest(17), nest(1000)):
        status, reply = c.api(A, "POST", "/v1/vms", raw_body=body)
        assert status == 400, reply
        assert reply["error"]["message"] == \
            "request body: JSON nested deeper than 16 levels", reply
    # 16 levels pass the bound (and fail on the definition's own rules)
    status, reply = c.api(A, "POST", "/v1/vms", raw_body=nest(16))
    assert status == 400 and "nested" not in reply["error"]["message"], reply
    # a policy file nested too deep is refused on reload, naming the file
    path = c.policy_path(A)
    good = path.read_text()
    pol = json.loads(good)
    pol["hosts"] = {A: {"labels": json.loads(nest(15))}}
    path.write_text(json.dumps(pol))
    r = c.cli("policy", "reload", host=A, check=False)
    assert r.returncode != EXIT_OK, r
    assert f"{path}: JSON nested deeper than 16 levels" in r.stderr, r.stderr
    path.write_text(good)
    c.cli("policy", "reload", host=A)


# --------------------------------------------------------------------------
# 4. identity classes


def test_pki_refuses_names_across_classes(make_cluster):
    c = make_cluster(hosts=1, start=False)
    r = c.pki_run("user", A, check=False)
    assert r.returncode == EXIT_FAILED, r
    assert f"{A} already has a host certificate" in r.stderr, r.stderr
    assert not (c.pki / "users" / f"{A}.crt").exists()
    r = c.pki_run("host", "admin", "--ip", "127.0.0.50", check=False)
    assert r.returncode == EXIT_FAILED, r
    assert "admin already has a user certificate" in r.stderr, r.stderr
    assert not (c.pki / "hosts" / "admin.crt").exists()
    c.pki_run("user", "alice")  # a free name is fine


def test_user_cert_named_like_host_is_not_a_host(make_cluster):
    c = mk_cluster(make_cluster, hosts=2)
    c.start_all()
    fake = issue_user_like_host(c, A)
    seq = last_seq(c, B)
    # host-b's policy gives "host-a" the host role: the name is not enough.
    # A complete prepare body, as host-a would send it (what was accepted
    # before: host-b started an incoming QEMU and returned the session key)
    vm = c.vm_definition("stolen", memory_mib=128, mib=8)
    body = {"id": "ab" * 16, "source": A, "requester": "admin", "vm": vm,
            "files": {k: file_identity(c, vm[k]) for k in ("kernel", "initrd")}}
    status, reply = c.api(B, "POST", "/v1/incoming", body=body, cert=fake)
    assert status == 403, reply
    assert reply["error"]["message"] == (
        f"{A} lacks migration.peer: the host role needs a host certificate, "
        f"and {A} presented a user certificate"), reply
    assert [v["name"] for v in c.list_vms(B)] == []
    assert not c.qemu_pids(B)
    (d,) = [r for r in audit_records(c, B) if r["seq"] > seq
            and r["action"] == "policy.decision"]
    assert (d["actor"], d["outcome"], d["detail"]["permission"]) == \
        (A, "deny", "migration.peer"), d
    # the other routes of the host role too
    status, reply = c.api(B, "GET", "/v1/incoming/" + "ab" * 16, cert=fake)
    assert status == 403, reply

    # the data plane: refused right after the handshake, before any HELLO
    t = tls_connect(c, ports(c, B)["data"], fake)
    t0 = time.monotonic()
    assert closed_by_peer(t, DEADLINE + 5)
    assert time.monotonic() - t0 < DEADLINE - 1
    t.close()
    (x,) = wait_records(c, B, seq, action="migration.channel_refused")
    assert x["detail"]["first_reason"] == (
        f"{A} presented a user certificate: the data plane takes host "
        f"certificates only"), x
    # the real host-a still is one: the policy lets it ask
    status, reply = c.api(B, "GET", "/v1/incoming/" + "ab" * 16,
                          cert=(str(c.pki / "hosts" / f"{A}.crt"),
                                str(c.pki / "hosts" / f"{A}.key")))
    assert status in (200, 404), reply


# --------------------------------------------------------------------------
# 5. revocation


def host_cert(c, name):
    return (str(c.pki / "hosts" / f"{name}.crt"), str(c.pki / "hosts" / f"{name}.key"))


def revoked_cert(c, name):
    (crt,) = (c.pki / "revoked").glob(f"{name}.*.crt")
    return (str(crt), str(crt)[:-4] + ".key")


def crl_serials(path):
    out = subprocess.run(["openssl", "crl", "-in", str(path), "-noout", "-text"],
                         check=True, capture_output=True, text=True).stdout
    return [l.split(":", 1)[1].strip() for l in out.splitlines()
            if "Serial Number:" in l]


def cert_serial(path):
    out = subprocess.run(["openssl", "x509", "-in", str(path), "-noout", "-serial"],
                         check=True, capture_output=True, text=True).stdout
    return out.strip().split("=", 1)[1]


def refused_on_both_ports(c, host, cert, seq):
    """cert is refused at the TLS layer on host's API and data ports, each
    audited with "certificate revoked"."""
    p = ports(c, host)
    expect_tls_refused(lambda: c.api(host, "GET", "/v1/host", cert=cert))
    t = tls_connect(c, p["data"], cert)
    assert closed_by_peer(t, 5)
    t.close()
    (x,) = wait_records(c, host, seq, action="auth.failed")
    assert "certificate revoked" in x["detail"]["first_reason"], x
    (y,) = wait_records(c, host, seq, action="migration.channel_refused")
    assert "certificate revoked" in y["detail"]["first_reason"], y


def test_revocation(make_cluster):
    c = mk_cluster(make_cluster, hosts=2, crl=True, users=("admin", "mallory"))
    pol = c.default_policy()
    pol["roles"]["admin"] = ["admin", "mallory"]
    for h in c.hosts:
        c.write_policy(h, pol)
    c.start_all()
    crl = c.pki / "crl.pem"
    assert crl_serials(crl) == []
    mallory = c.user_cert("mallory")
    assert c.api(A, "GET", "/v1/host", cert=mallory)[0] == 200

    # -- a user certificate
    serial = cert_serial(mallory[0])
    r = c.pki_run("revoke", "mallory")
    assert f"revoked mallory (serial {serial})" in r.stdout, r.stdout
    assert crl_serials(crl) == [serial]
    assert not (c.pki / "users" / "mallory.crt").exists()
    mallory = revoked_cert(c, "mallory")
    # in force once reloaded: by the API on host-a ...
    assert c.api(A, "GET", "/v1/host", cert=mallory)[0] == 200
    seq = last_seq(c, A)
    r = c.cli("policy", "reload", host=A)
    assert f"host {A}: revocation list reloaded (1 revoked)" in r.stdout, r.stdout
    (x,) = [x for x in audit_records(c, A)
            if x["seq"] > seq and x["action"] == "crl.reload"]
    assert (x["actor"], x["outcome"], x["detail"]) == ("admin", "ok", {"revoked": 1}), x
    refused_on_both_ports(c, A, mallory, seq)
    # ... and by SIGHUP on host-b
    seq = last_seq(c, B)
    c.hosts[B].proc.send_signal(signal.SIGHUP)
    wait_records(c, B, seq, action="crl.reload", outcome="ok")
    refused_on_both_ports(c, B, mallory, seq)
    # the name is free again
    c.pki_run("user", "mallory")
    assert c.api(A, "GET", "/v1/host", cert=c.user_cert("mallory"))[0] == 200

    # -- a host certificate: host-b's is stolen
    r = c.pki_run("revoke", "host", B)
    assert len(crl_serials(crl)) == 2
    stolen = revoked_cert(c, B)
    seq = last_seq(c, A)
    c.cli("policy", "reload", host=A)
    refused_on_both_ports(c, A, stolen, seq)
    # host-a's own calls to host-b refuse it ...
    c.define_vm(A, "vm1", memory_mib=128, mib=8)
    c.start_vm(A, "vm1")
    r = c.migrate(A, "vm1", B)
    assert r.returncode == EXIT_FAILED, r
    assert "certificate revoked" in r.summary["error"], r.summary
    assert c.vm_info(A, "vm1")["state"] == "running"
    # ... and so does the CLI with the list
    cfg = json.loads(c.client_config.read_text())
    cfg["crl"] = str(crl)
    withcrl = c.dir / "client-crl.json"
    withcrl.write_text(json.dumps(cfg))
    r = c.cli("host", "info", host=B, config=withcrl, check=False)
    assert r.returncode == EXIT_UNREACHABLE, r
    assert "certificate revoked" in r.stderr, r.stderr
    c.cli("host", "info", host=A, config=withcrl)

    # -- a list the CA did not sign is refused; the old one stays
    foreign = c.dir / "foreign-pki"
    c.pki_run("init", "--cluster", "foreign", dir=foreign)
    good = crl.read_bytes()
    crl.write_bytes((foreign / "crl.pem").read_bytes())
    seq = last_seq(c, A)
    r = c.cli("policy", "reload", host=A, check=False)
    assert r.returncode != EXIT_OK, r
    assert "pki/crl.pem is not signed by the cluster CA" in r.stderr, r.stderr
    (x,) = [x for x in audit_records(c, A)
            if x["seq"] > seq and x["action"] == "crl.reload"]
    assert x["outcome"] == "error", x
    expect_tls_refused(lambda: c.api(A, "GET", "/v1/host", cert=mallory))
    crl.write_bytes(good)
    # a host whose list is unreadable does not start
    c.stop_host(A)
    crl.write_text("not a CRL\n")
    r = subprocess.run([str(c.ferryd_bin), "--config", str(c.hosts[A].config)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "is not a PEM certificate revocation list" in r.stderr, r
