"""System tests of the signed, hash-chained audit log (src/audit): every
kind of tampering `ferry audit verify` must name, and crash safety under
load.

Every test builds its own cluster (host-a 127.0.0.2, host-b 127.0.0.3,
host-c 127.0.0.4) with its own policy files instead of the permissive
default one, and checks both what a client sees (HTTP status, JSON error,
`ferry` exit code) and what the hosts recorded in their audit logs
(<state_dir>/audit.log, read straight from the file). Shared helpers:
policylib.py.

Run with Debian's interpreter against the ASan build:
    FERRY_BUILD=build-asan /usr/bin/python3 -m pytest tests/system/test_audit_tamper.py
"""

import http.client
import json
import shutil
import signal
import subprocess
import threading
import time

from ferrylib import EXIT_OK, wait_until
from policylib import (A, SMALL, KeepAlive, as_user, assert_error,
                       audit_log_path, audit_pub_path, audit_records,
                       client_config, host_roles, policy)


# --------------------------------------------------------------------------
# helpers


def verify_file(c, log, key):
    """`ferry --json audit verify --log LOG --key KEY` -> (exit code, report,
    stderr)."""
    r = c.cli("--json", "audit", "verify", "--log", str(log), "--key", str(key),
              check=False)
    lines = [l for l in r.stdout.splitlines() if l.strip()]
    assert len(lines) == 1, f"expected one JSON report: {r.stdout!r} {r.stderr!r}"
    return r.returncode, json.loads(lines[0]), r.stderr


# --------------------------------------------------------------------------
# tampering with the audit log


def tamper_cases(lines):
    """{kind: (tampered text, expected kind, bad line, bad seq)} from the
    lines of a good log (line i holds seq i)."""
    n = len(lines)
    assert n >= 12, n
    k = n // 2
    cases = {}
    # modify one field of record k (still canonical JSON: only the
    # signature catches it)
    rec = json.loads(lines[k - 1])
    assert rec["seq"] == k, rec
    rec["outcome"] = "deny" if rec["outcome"] != "deny" else "allow"
    mod = json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert mod != lines[k - 1]
    cases["modify"] = (lines[:k - 1] + [mod] + lines[k:], "modified", k, k)
    # the same record with a changed timestamp
    rec = json.loads(lines[k])
    rec["ts"] -= 3600 * 1000
    mod = json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    cases["modify-ts"] = (lines[:k] + [mod] + lines[k + 1:], "modified", k + 1, k + 1)
    # delete record k: found at the line that now holds seq k+1
    cases["delete"] = (lines[:k - 1] + lines[k:], "deleted", k, k + 1)
    # delete the first two records: the head is anchored at seq 1
    cases["delete-head"] = (lines[2:], "deleted", 1, 3)
    # insert a copy of record 3 after record k
    cases["insert"] = (lines[:k] + [lines[2]] + lines[k:], "inserted", k + 1, 3)
    # insert a copy of a later record early
    cases["insert-early"] = (lines[:3] + [lines[k]] + lines[3:], "inserted", 4, k + 1)
    # swap records k and k+2
    sw = list(lines)
    sw[k - 1], sw[k + 1] = sw[k + 1], sw[k - 1]
    cases["swap"] = (sw, "reordered", k, k + 2)
    # swap two adjacent records
    sw = list(lines)
    sw[2], sw[3] = sw[3], sw[2]
    cases["swap-adjacent"] = (sw, "reordered", 3, 4)
    out = {name: ("\n".join(ls) + "\n", kind, line, seq)
           for name, (ls, kind, line, seq) in cases.items()}
    # truncate in the middle of the last line
    full = "\n".join(lines) + "\n"
    cut = len(full) - 1 - len(lines[-1]) // 2
    out["truncate"] = (full[:cut], "truncated", n, 0)
    # truncate in the middle of a middle line (everything after is gone)
    cut = len("\n".join(lines[:k - 1])) + 1 + len(lines[k - 1]) // 2
    out["truncate-middle"] = (full[:cut], "truncated", k, 0)
    return out


def test_audit_tampering(make_cluster, tmp_path):
    c = make_cluster(hosts=1, start=False, users=("admin", "viewer", "ops"))
    c.write_policy(A, policy({"admin": ["admin"], "auditor": ["viewer"],
                              "operator": ["ops"], "host": host_roles(c)}, []))
    c.start_all()
    # records of several kinds: lifecycle, denials, a reload
    for i in range(6):
        c.define_vm(A, f"t{i}", **SMALL)
        status, reply = as_user(c, "viewer", A, "POST", f"/v1/vms/t{i}/start")
        assert status == 403, reply
        c.api_ok(A, "DELETE", f"/v1/vms/t{i}")
    c.cli("policy", "reload", host=A)
    log, pub = audit_log_path(c, A), audit_pub_path(c, A)
    copy, key = tmp_path / "audit.log", tmp_path / "audit.pub"
    shutil.copy(log, copy)
    shutil.copy(pub, key)
    text = copy.read_text()
    assert text.endswith("\n")
    lines = text.splitlines()
    assert [json.loads(l)["seq"] for l in lines] == list(range(1, len(lines) + 1))

    # the untouched copy verifies
    rc, rep, err = verify_file(c, copy, key)
    assert rc == EXIT_OK and rep["ok"] and rep["kind"] == "none", (rep, err)
    assert (rep["records"], rep["first_seq"], rep["last_seq"]) == (len(lines), 1, len(lines))
    r = c.cli("audit", "verify", "--log", str(copy), "--key", str(key))
    assert f"verified: {len(lines)} records (seq 1..{len(lines)})" in r.stdout, r.stdout

    for name, (bad, kind, line, seq) in tamper_cases(lines).items():
        f = tmp_path / f"audit-{name}.log"
        f.write_text(bad)
        rc, rep, err = verify_file(c, f, key)
        assert rc != EXIT_OK, (name, rep)
        assert not rep["ok"], (name, rep)
        assert (rep["kind"], rep["bad_line"]) == (kind, line), (name, rep)
        if seq:
            assert rep["bad_seq"] == seq, (name, rep)
            assert f"line {line} (seq {seq})" in rep["message"], (name, rep)
        else:
            assert rep["message"].startswith(f"line {line}"), (name, rep)
        assert rep["records"] == (line - 1 if name != "delete-head" else 0), (name, rep)
        if name.startswith("modify"):
            assert "signature does not match: the record was modified" in rep["message"], rep
        assert f"({kind})" in err and f"line {line}" in err, (name, err)
        # the plain output says the same
        r = c.cli("audit", "verify", "--log", str(f), "--key", str(key), check=False)
        assert r.returncode == rc and f"line {line}" in r.stderr and kind in r.stderr, \
            (name, r.stderr)

    # another host's key does not verify this log
    other = tmp_path / "other"
    other.mkdir()
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", other / "k"],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", other / "k", "-pubout", "-out", other / "pub"],
                   check=True, capture_output=True)
    rc, rep, err = verify_file(c, copy, other / "pub")
    assert rc != EXIT_OK and (rep["kind"], rep["bad_line"]) == ("modified", 1), rep

    # over the API: an auditor verifies the live log (key fetched, or pinned)
    viewer, ops = client_config(c, "viewer"), client_config(c, "ops")
    r = c.cli("audit", "verify", host=A, config=viewer)
    assert f"audit log of {A} verified:" in r.stdout and "records (seq 1.." in r.stdout, r
    r = c.cli("--json", "audit", "verify", "--key", str(pub), host=A, config=viewer)
    rep = json.loads(r.stdout)
    assert rep["ok"] and rep["records"] >= len(lines), rep
    # an identity without audit.read is refused
    for cfg in (ops,):
        r = c.cli("audit", "verify", host=A, config=cfg, check=False)
        assert r.returncode != EXIT_OK and "ops lacks audit.read" in r.stderr, r
        r = c.cli("audit", "show", host=A, config=cfg, check=False)
        assert r.returncode != EXIT_OK and "ops lacks audit.read" in r.stderr, r
    for path in ("/v1/audit/log", "/v1/audit/key", "/v1/audit"):
        status, reply = as_user(c, "ops", A, "GET", path)
        assert_error(status, reply, 403, "forbidden", "ops lacks audit.read")


# --------------------------------------------------------------------------
# crash safety


def hammer(c, host, users, stop, counts, nthreads=6):
    """Threads sending state-changing requests (define/delete loops, and
    denied requests) over persistent connections until stop is set; counts
    [ok, failed] requests."""
    lock = threading.Lock()

    def run(i):
        user = users[i % len(users)]
        n = 0
        conn = None
        while not stop.is_set():
            try:
                if conn is None:
                    conn = KeepAlive(c, host, user, timeout=5)
                name = f"h{i}-{n}"
                n += 1
                st1, _ = conn.request("POST", "/v1/vms", c.vm_definition(name, **SMALL))
                st2, _ = conn.request("DELETE", f"/v1/vms/{name}")
                with lock:
                    counts[0] += (st1 in (201, 403)) + (st2 in (200, 403, 404))
            except (OSError, http.client.HTTPException):
                with lock:
                    counts[1] += 1
                if conn:
                    conn.close()
                conn = None
                time.sleep(0.05)
        if conn:
            conn.close()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(nthreads)]
    for t in threads:
        t.start()
    return threads


def test_crash_safety(make_cluster, tmp_path):
    c = make_cluster(hosts=1, start=False, users=("admin", "viewer"),
                     ferryd_extra={"limits": {"requests_per_s": 100000,
                                              "request_burst": 100000}})
    c.write_policy(A, policy({"admin": ["admin"], "auditor": ["viewer"],
                              "host": host_roles(c)}, []))
    c.start_all()
    h = c.hosts[A]
    log, pub = audit_log_path(c, A), audit_pub_path(c, A)
    key = tmp_path / "audit.pub"
    shutil.copy(pub, key)
    torn_seen = 0
    for rnd in range(3):
        size0 = log.stat().st_size
        stop, counts = threading.Event(), [0, 0]
        threads = hammer(c, A, ("admin", "viewer"), stop, counts)
        # let records pile up, then kill -9 while they are being written
        wait_until(lambda: log.stat().st_size > size0 + 60000, 30, 0.02,
                   "the audit log to grow under load")
        c.kill_host(A, signal.SIGKILL)
        stop.set()
        for t in threads:
            t.join(10)
        assert counts[0] > 100, counts
        # the file as the crash left it: good records, at most a torn tail
        snap = tmp_path / f"crash-{rnd}.log"
        shutil.copy(log, snap)
        raw = snap.read_bytes()
        nlines = raw.count(b"\n") + (0 if raw.endswith(b"\n") else 1)
        rc, rep, err = verify_file(c, snap, key)
        if rep["ok"]:
            assert rc == EXIT_OK and raw.endswith(b"\n"), rep
            torn = False
        else:
            assert (rep["kind"], rep["bad_line"]) == ("truncated", nlines), (rnd, rep)
            assert rep["records"] == nlines - 1, rep
            torn = True
            torn_seen += 1
        saved_before = set(h.state_dir.glob("audit.torn.*"))
        c.start_host(A)
        # the restart recovered: a torn tail was saved and recorded
        recs = audit_records(c, A)
        torn_recs = [r for r in recs if r["action"] == "audit.torn_tail"]
        saved = set(h.state_dir.glob("audit.torn.*")) - saved_before
        if torn:
            tail_bytes = raw[raw.rfind(b"\n") + 1:]
            assert len(saved) == 1, saved
            f = saved.pop()
            assert f.read_bytes() == tail_bytes
            r = torn_recs[-1]
            assert r["detail"]["bytes"] == len(tail_bytes), r
            assert r["detail"]["offset"] == len(raw) - len(tail_bytes), r
            assert f.name in r["detail"]["saved_as"], r
        else:
            assert not saved, saved
        assert len(torn_recs) == torn_seen, torn_recs
        assert not [r for r in recs if r["action"] == "audit.tamper_suspected"], recs
        rc, rep, err = verify_file(c, log, key)
        assert rc == EXIT_OK and rep["ok"], (rnd, rep, err)

    # a torn write forced by hand (kill -9 rarely lands inside a write):
    # half a record without its newline at the end of the log
    c.kill_host(A, signal.SIGKILL)
    good = log.read_bytes()
    last = good.splitlines()[-1]
    half = last[: len(last) // 2]
    with open(log, "ab") as f:
        f.write(half)
    rc, rep, err = verify_file(c, log, key)
    assert (rep["kind"], rep["bad_line"]) == ("truncated", good.count(b"\n") + 1), rep
    c.start_host(A)
    saved = h.state_dir / f"audit.torn.{len(good)}"
    assert saved.read_bytes() == half
    assert log.read_bytes()[: len(good)] == good
    r = [r for r in audit_records(c, A) if r["action"] == "audit.torn_tail"][-1]
    assert r["detail"] == {"offset": len(good), "bytes": len(half),
                           "saved_as": r["detail"]["saved_as"]}, r
    assert r["detail"]["saved_as"].endswith(saved.name), r
    rc, rep, err = verify_file(c, log, key)
    assert rc == EXIT_OK and rep["ok"], rep
    r = c.cli("audit", "verify", "--key", str(key), host=A)
    assert "verified" in r.stdout, r
    print(f"crash safety: {torn_seen} of 3 kill -9 left a torn tail")
