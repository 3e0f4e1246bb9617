#!/usr/bin/env python3
"""walnut's benchmark harness (run it through scripts/bench, which installs and builds first).

Starts the backends once (4 redis-servers, 2 memcached), then for each alternation starts
nutcracker and walnut with the same YAML configs and measures every workload against the three
targets in turn -- direct (one backend), nutcracker, walnut -- round-robin. Reports throughput,
p50/p99 latency, the proxy's own CPU time per request and its RSS with 10,000 idle clients, and
writes a Markdown report (preserving the `## History` section of an existing one).

The TLS section (issue 20) runs in the same alternations: one more redis-server with a plaintext
and a TLS port, certificates made with openssl, and walnut (a plaintext pool and a `tls:` pool)
measured against that server's own TLS port with redis-benchmark --tls: SET/GET at depth 1 and 16,
and new connections per second (-k 0, checked against the contenders' connection counts).

Standard library only. Every process started here is stopped by its PID on exit, on failure and
on SIGINT/SIGTERM.
"""

import argparse
import csv
import datetime
import io
import os
import platform
import re
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = ["direct", "nutcracker", "walnut"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"

S3_KEYS = 100_000  # 3-byte values: s3:<12 digits>
K4_KEYS = 1_000  # 4 KB values: k4:<12 digits>
M1_KEYS = 20  # 1 MB values: key:<12 digits> (redis-benchmark -t set/get -d 1048576)
MGET_KEYS = 100  # m:0 .. m:99


T0 = time.time()


def log(msg):
    print(f"[{time.time() - T0:5.0f}s] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- processes


class Procs:
    """Every process this harness starts; stopped by PID in stop_all()."""

    def __init__(self):
        self.procs = []

    def start(self, name, argv, logfile):
        out = open(logfile, "wb")
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out.close()
        p.name = name
        p.logfile = logfile
        self.procs.append(p)
        return p

    def stop(self, p, timeout=5.0):
        if p.poll() is None:
            try:
                p.terminate()
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            except ProcessLookupError:
                pass
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self):
        for p in list(self.procs):
            self.stop(p)


PROCS = Procs()


def on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind((HOST, 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# --------------------------------------------------------------------------- tiny clients


def resp_cmd(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class RespReader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def _fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("connection closed")
        self.buf += chunk

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[: i + 2]
                return line
            self._fill()

    def reply(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t in (b"+", b"-", b":"):
            return line
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            data = bytes(self.buf[:n])
            del self.buf[: n + 2]
            return data
        if t == b"*":
            n = int(rest)
            return [self.reply() for _ in range(max(n, 0))]
        raise ConnectionError(f"bad reply {line[:40]!r}")


def wait_answers(port, proc=None, timeout=10.0, memcached=False):
    """True once something answers PING (redis) / version (memcached) on port."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((HOST, port), timeout=1) as s:
                if memcached:
                    s.sendall(b"get __bench_probe__\r\n")
                    data = b""
                    while not data.endswith(b"END\r\n"):
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    if data.endswith(b"END\r\n"):
                        return True
                else:
                    s.sendall(resp_cmd("PING"))
                    if RespReader(s).reply() == b"+PONG":
                        return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def seed_redis(port, items, batch=500):
    """SET every (key, value) in items on port, pipelined."""
    with socket.create_connection((HOST, port), timeout=30) as s:
        r = RespReader(s)
        for i in range(0, len(items), batch):
            chunk = items[i : i + batch]
            s.sendall(b"".join(resp_cmd("SET", k, v) for k, v in chunk))
            for _ in chunk:
                rep = r.reply()
                if rep != b"+OK":
                    raise RuntimeError(f"seeding port {port}: {rep!r}")


def redis_roundtrip(port, cli_args=()):
    """A SET then GET through redis-cli (cli_args: e.g. --tls --cacert FILE); returns None when
    fine, else the reason."""
    val = f"walnut-bench-{os.getpid()}-{port}"
    cli = ["redis-cli", "-h", HOST, "-p", str(port), *cli_args]
    try:
        a = subprocess.run(cli + ["SET", "bench:probe", val], capture_output=True, text=True, timeout=10)
        b = subprocess.run(cli + ["GET", "bench:probe"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "redis-cli timed out"
    if a.stdout.strip() != "OK" or b.stdout.strip() != val:
        return f"SET -> {a.stdout.strip() or a.stderr.strip()!r}, GET -> {b.stdout.strip() or b.stderr.strip()!r}"
    return None


def memcached_roundtrip(port):
    val = f"walnut-bench-{os.getpid()}"
    try:
        with socket.create_connection((HOST, port), timeout=5) as s:
            s.sendall(b"set bench:probe 0 0 %d\r\n%s\r\nget bench:probe\r\n" % (len(val), val.encode()))
            data = b""
            while not data.endswith(b"END\r\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError as e:
        return str(e)
    want = b"STORED\r\nVALUE bench:probe 0 %d\r\n%s\r\nEND\r\n" % (len(val), val.encode())
    return None if data == want else f"got {data[:80]!r}"


# --------------------------------------------------------------------------- /proc


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children_cpu_seconds():
    """User+system CPU of the children waited for so far (the load generators, in turn)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def nfds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


# --------------------------------------------------------------------------- workloads


class NA(Exception):
    """A measurement that cannot be made for this target (printed as n/a with the reason)."""


def log_tail(proc):
    text = ""
    for fn in (proc.logfile[: -len(".out")], proc.logfile):
        try:
            text += open(fn, errors="replace").read()
        except OSError:
            pass
    lines = text.strip().splitlines()
    return lines[-1][-200:] if lines else "no output"


def run_tool(argv, timeout):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise NA(f"{os.path.basename(argv[0])} timed out after {timeout}s")
    return p


def parse_rb_csv(out):
    rows = [r for r in csv.reader(io.StringIO(out)) if r]
    header = None
    for r in rows:
        if r[0] == "test":
            header = r
            continue
        if header:
            d = dict(zip(header, r))
            return {
                "rps": float(d["rps"]),
                "p50": float(d["p50_latency_ms"]) if "p50_latency_ms" in d else None,
                "p99": float(d["p99_latency_ms"]) if "p99_latency_ms" in d else None,
            }
    raise NA("no CSV result from redis-benchmark")


def redis_benchmark(port, args, n, timeout):
    argv = ["redis-benchmark", "-h", HOST, "-p", str(port), "-n", str(n), "--csv"] + args
    p = run_tool(argv, timeout)
    if p.returncode != 0:
        raise NA(f"redis-benchmark exited {p.returncode}: {p.stderr.strip()[-200:]}")
    res = parse_rb_csv(p.stdout)
    res["requests"] = n
    return res


MEMSLAP_RE = re.compile(r"Time to (get|set)\s+(\d+) keys by\s+(\d+) threads:\s+([\d.]+) seconds")


def memcslap(port, test, conc, execute, timeout):
    argv = ["memcslap", f"--servers={HOST}:{port}", f"--test={test}",
            f"--concurrency={conc}", f"--execute-number={execute}"]
    p = run_tool(argv, timeout)
    m = MEMSLAP_RE.search(p.stdout + p.stderr)
    if p.returncode != 0 or not m:
        raise NA(f"memcslap exited {p.returncode}: {(p.stdout + p.stderr).strip()[-200:]}")
    keys, secs = int(m.group(2)), float(m.group(4))
    # the get test first loads `execute` keys itself (sets), which the proxy also serves
    requests = keys + (execute if test == "get" else 0)
    return {"rps": keys / secs if secs > 0 else None, "p50": None, "p99": None, "requests": requests}


def idle_connections(port, pid, count, hold_timeout):
    """Open `count` idle client connections to port; return (rss_before_kb, rss_with_kb, accepted)."""
    before = rss_kb(pid)
    fds0 = nfds(pid)
    socks = []
    sel = selectors.DefaultSelector()
    try:
        pending = 0
        for _ in range(count):
            s = socket.socket()
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            err = s.connect_ex((HOST, port))
            socks.append(s)
            if err not in (0, 115):  # EINPROGRESS
                raise NA(f"connect failed after {len(socks) - 1} connections: {os.strerror(err)}")
            if err == 115:
                sel.register(s, selectors.EVENT_WRITE)
                pending += 1
            # don't outrun the proxy's accept loop and the listen backlog
            if len(socks) % 256 == 0:
                pending = _drain_connects(sel, pending, 10.0)
        _drain_connects(sel, pending, 10.0)
        for s in socks:
            e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if e:
                raise NA(f"a connection failed: {os.strerror(e)}")
        # wait until the proxy holds them (its descriptor count), then let RSS settle
        deadline = time.time() + hold_timeout
        while nfds(pid) - fds0 < count and time.time() < deadline:
            time.sleep(0.1)
        accepted = nfds(pid) - fds0
        time.sleep(0.5)
        # each connection must still be served: PING a sample of them
        sample = socks[:: max(1, count // 50)]
        for s in sample:
            s.setblocking(True)
            s.settimeout(10)
            s.sendall(resp_cmd("PING"))
            if RespReader(s).reply() != b"+PONG":
                raise NA("a held connection does not answer PING")
        with_conns = rss_kb(pid)
        if accepted < count:
            raise NA(f"proxy accepted only {accepted} of {count} connections")
        return before, with_conns, accepted
    finally:
        sel.close()
        for s in socks:
            s.close()  # SO_LINGER 0: RST, no TIME_WAIT left behind


def _drain_connects(sel, pending, timeout):
    deadline = time.time() + timeout
    while pending and time.time() < deadline:
        for key, _ in sel.select(0.5):
            sel.unregister(key.fileobj)
            pending -= 1
    return pending


# --------------------------------------------------------------------------- plan


def plan(quick):
    """Workloads: (id, label, kind, params)."""
    v4k = "x" * 4096
    if quick:
        n1, n16, n4k, n1m, nm, mc_exec, idle = 5_000, 20_000, 2_000, 100, 1_000, 1_000, 1_000
    else:
        n1, n16, n4k, n1m, nm, mc_exec, idle = 100_000, 600_000, 60_000, 2_000, 30_000, 10_000, 10_000
    w = []
    depths = [1, 16] if quick else [1, 16, 128]
    for p in depths:
        n = n1 if p == 1 else n16
        w.append((f"set3-P{p}", f"SET 3 B, pipeline {p}", "redis",
                  dict(pool="r2", n=n, args=["-c", "50", "-P", str(p), "-r", str(S3_KEYS), "SET", "s3:__rand_int__", "xxx"])))
        w.append((f"get3-P{p}", f"GET 3 B, pipeline {p}", "redis",
                  dict(pool="r2", n=n, args=["-c", "50", "-P", str(p), "-r", str(S3_KEYS), "GET", "s3:__rand_int__"])))
    w.append(("set4k", "SET 4 KB", "redis",
              dict(pool="r2", n=n4k, args=["-c", "50", "-r", str(K4_KEYS), "SET", "k4:__rand_int__", v4k])))
    w.append(("get4k", "GET 4 KB", "redis",
              dict(pool="r2", n=n4k, args=["-c", "50", "-r", str(K4_KEYS), "GET", "k4:__rand_int__"])))
    if not quick:
        w.append(("set1m", "SET 1 MB", "redis",
                  dict(pool="r2", n=n1m, args=["-c", "10", "-r", str(M1_KEYS), "-t", "set", "-d", "1048576"])))
        w.append(("get1m", "GET 1 MB", "redis",
                  dict(pool="r2", n=n1m, args=["-c", "10", "-r", str(M1_KEYS), "-t", "get"])))
    w.append(("mget100", "MGET 100 keys, 4 backends", "redis",
              dict(pool="r4", n=nm, args=["-c", "50", "MGET"] + [f"m:{i}" for i in range(MGET_KEYS)])))
    w.append(("mc-set", "memcached set", "memcached", dict(pool="mc", test="set", conc=8, execute=mc_exec)))
    w.append(("mc-get", "memcached get", "memcached", dict(pool="mc", test="get", conc=8, execute=mc_exec)))
    return w, idle


# --------------------------------------------------------------------------- TLS (issue 20)

# One redis-server with a plaintext and a TLS port; walnut in front of its plaintext port with a
# plaintext pool and a `tls:` pool (one process); and that server's own TLS port, direct.
TLS_TARGETS = ["walnut", "walnut-tls", "redis-tls"]
TLS_LABELS = {
    "walnut": "walnut, plaintext",
    "walnut-tls": "walnut, `tls:` listener",
    "redis-tls": "redis-server TLS port, direct",
}


def make_pki(d):
    """A throwaway CA and a server certificate (ECDSA P-256) for IP:127.0.0.1 and DNS:localhost,
    signed by it, in directory d."""
    os.makedirs(d, exist_ok=True)

    def openssl(*argv):
        p = subprocess.run(["openssl", *argv], cwd=d, capture_output=True, text=True, timeout=30)
        if p.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(argv[:2])}: {p.stderr.strip()[-200:]}")

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt",
            "-subj", "/CN=walnut-bench-ca", "-days", "2")
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-set_serial", "2", "-days", "2", "-extfile", "server.ext", "-out", "server.crt")


def tls_session(port, ca):
    """(protocol, cipher suite) that `openssl s_client` negotiates with port, verifying against
    ca; raises NA when the handshake or the verification fails."""
    p = run_tool(["openssl", "s_client", "-connect", f"{HOST}:{port}", "-CAfile", ca,
                  "-verify_return_error", "-brief"], 15)
    text = p.stdout + p.stderr
    proto = re.search(r"Protocol version: (\S+)", text)
    cipher = re.search(r"Ciphersuite: (\S+)", text)
    if not proto or not cipher or "CONNECTION ESTABLISHED" not in text:
        raise NA(f"openssl s_client: {text.strip()[-200:]}")
    return proto.group(1), cipher.group(1)


def walnut_total_connections(stats_port):
    """walnut's `total_connections` (its JSON stats): listeners, clients and servers ever made."""
    data = b""
    with socket.create_connection((HOST, stats_port), timeout=5) as s:
        try:
            while True:
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            pass
    m = re.search(rb'"total_connections":\s*(\d+)', data)
    if not m:
        raise NA(f"no total_connections in walnut's stats: {data[:80]!r}")
    return int(m.group(1))


def redis_connections_received(port):
    """INFO stats total_connections_received of the redis-server on (plaintext) port."""
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.sendall(resp_cmd("INFO", "stats"))
        info = RespReader(s).reply()
    m = re.search(rb"total_connections_received:(\d+)", info or b"")
    if not m:
        raise NA("no total_connections_received in INFO stats")
    return int(m.group(1))


def tls_plan(quick):
    """The TLS section's workloads: (id, label, params); SET/GET as the plaintext ones above."""
    n1, n16, nconn = (5_000, 20_000, 300) if quick else (100_000, 600_000, 3_000)
    w = []
    for p in [1, 16]:
        n = n1 if p == 1 else n16
        w.append((f"tls-set3-P{p}", f"SET 3 B, pipeline {p}",
                  dict(n=n, args=["-c", "50", "-P", str(p), "-r", str(S3_KEYS), "SET", "s3:__rand_int__", "xxx"])))
        w.append((f"tls-get3-P{p}", f"GET 3 B, pipeline {p}",
                  dict(n=n, args=["-c", "50", "-P", str(p), "-r", str(S3_KEYS), "GET", "s3:__rand_int__"])))
    # -k 0: every request on a new connection (with a TLS handshake of its own), so requests/s
    # is new connections/s
    w.append(("tls-connect", "new connection per request (-k 0), PING",
              dict(n=nconn, connect=True, args=["-c", "50", "-k", "0", "PING"])))
    return w


# --------------------------------------------------------------------------- the run


class Bench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.rounds = args.rounds if args.rounds else (1 if args.quick else 5)
        self.walnut = os.environ.get("WALNUT_BIN") or os.path.join(ROOT, "target/release/walnut")
        self.work = tempfile.mkdtemp(prefix="walnut-bench.")
        self.workloads, self.idle_count = plan(self.quick)
        self.results = {}  # (workload, target) -> list of dicts
        self.na = {}  # (workload, target) -> reason
        self.idle = {}  # target -> list of (before, with)
        self.failures = []  # contenders that should work and did not answer
        self.unavailable = {}  # (target, kind) -> reason
        self.timeout = 60 if self.quick else 180
        # sections: the plaintext comparison with nutcracker ("main") and TLS (issue 20)
        self.main = args.only is None
        self.tls = args.only in (None, "tls")
        if not (self.main or self.tls):
            self.rounds = 0  # `--only cluster`: its section runs on its own, after
        self.tls_workloads = tls_plan(self.quick) if self.tls else []
        self.tls_results = {}  # (workload, TLS target) -> list of dicts
        self.tls_na = {}  # (workload, TLS target) -> reason
        self.tls_sessions = {}  # TLS target -> (protocol, cipher suite)
        self.tls_walnut = None  # the walnut process of the TLS section, fresh each alternation
        self.tls_unavailable = None
        self.tls_dead = {}  # TLS target -> why it failed its round trip
        # the full run must stay under 10 minutes on a 2-core box, even a busy one: after the
        # third alternation, stop early if another one would pass this many seconds
        self.budget = 510

    # ---- backends (once)
    def start_backends(self):
        rports = free_ports(4)
        mports = free_ports(2)
        self.redis_ports = rports
        self.mc_ports = mports
        for i, port in enumerate(rports):
            p = PROCS.start(f"redis{i + 1}",
                            ["redis-server", "--bind", HOST, "--port", str(port), "--save", "",
                             "--appendonly", "no", "--loglevel", "warning", "--protected-mode", "no",
                             "--dir", self.work, "--dbfilename", f"unused-{port}.rdb"],
                            os.path.join(self.work, f"redis{i + 1}.log"))
            if not wait_answers(port, p):
                raise RuntimeError(f"redis-server on port {port} did not start")
        user = ["-u", "root"] if os.geteuid() == 0 else []
        for i, port in enumerate(mports):
            p = PROCS.start(f"memcached{i + 1}",
                            ["memcached", "-l", HOST, "-p", str(port), "-U", "0", "-m", "1024"] + user,
                            os.path.join(self.work, f"memcached{i + 1}.log"))
            if not wait_answers(port, p, memcached=True):
                raise RuntimeError(f"memcached on port {port} did not start")
        log(f"== backends: redis-server {rports}, memcached {mports}")
        # every backend holds every redis key the workloads read, so "direct" (backend 1) and both
        # proxies (whatever their placement) read existing values of the advertised sizes
        items = [(f"s3:{i:012d}", "xxx") for i in range(S3_KEYS)]
        items += [(f"k4:{i:012d}", "x" * 4096) for i in range(K4_KEYS)]
        items += [(f"m:{i}", "xxx") for i in range(MGET_KEYS)]
        if not self.quick:
            items += [(f"key:{i:012d}", "x" * 1048576) for i in range(M1_KEYS)]
        for port in rports:
            seed_redis(port, items, batch=20 if not self.quick else 500)
        log(f"== seeded {len(items)} keys into each redis-server")

    def start_tls_backend(self):
        """The TLS section's redis-server: a plaintext port (walnut's backend) and a TLS port
        (direct), the s3 keys seeded; and the certificates."""
        self.pki = os.path.join(self.work, "tls")
        make_pki(self.pki)
        self.ca = os.path.join(self.pki, "ca.crt")
        plain, tls = free_ports(2)
        self.tls_redis_ports = (plain, tls)
        p = PROCS.start("redis-tls",
                        ["redis-server", "--bind", HOST, "--port", str(plain), "--tls-port", str(tls),
                         "--tls-cert-file", os.path.join(self.pki, "server.crt"),
                         "--tls-key-file", os.path.join(self.pki, "server.key"),
                         "--tls-ca-cert-file", self.ca, "--tls-auth-clients", "no",
                         "--save", "", "--appendonly", "no", "--loglevel", "warning",
                         "--protected-mode", "no", "--dir", self.work, "--dbfilename", f"unused-{plain}.rdb"],
                        os.path.join(self.work, "redis-tls.log"))
        if not wait_answers(plain, p):
            raise RuntimeError(f"redis-server with --tls-port {tls} did not start: {log_tail(p)}")
        self.tls_redis = p
        seed_redis(plain, [(f"s3:{i:012d}", "xxx") for i in range(S3_KEYS)])
        log(f"== TLS backend: redis-server plaintext port {plain}, TLS port {tls}; seeded {S3_KEYS} keys")

    def start_tls_walnut(self, rnd):
        """One walnut with two pools in front of the TLS backend's plaintext port: plaintext, and
        with a `tls:` listener."""
        plain, tls, sport = free_ports(3)
        self.tls_listen = {"walnut": plain, "walnut-tls": tls}
        self.tls_stats_port = sport
        backend = self.tls_redis_ports[0]
        pools = []
        for name, port, tls_cfg in [("bench_plain", plain, ""),
                                    ("bench_tls", tls, f"  tls:\n    cert_file: {self.pki}/server.crt\n"
                                                       f"    key_file: {self.pki}/server.key\n")]:
            pools.append(f"{name}:\n  listen: {HOST}:{port}\n  hash: fnv1a_64\n  distribution: ketama\n"
                         f"  redis: true\n{tls_cfg}  servers:\n   - {HOST}:{backend}:1\n")
        self.tls_config_text = "".join(pools)
        conf = os.path.join(self.work, "walnut-tls.yml")
        with open(conf, "w") as f:
            f.write(self.tls_config_text)
        logf = os.path.join(self.work, f"walnut-tls-r{rnd}.log")
        p = PROCS.start("walnut-tls", [self.walnut, "-c", conf, "-s", str(sport), "-a", HOST, "-o", logf],
                        logf + ".out")
        # the plaintext pool answering means the process has bound both listeners
        if wait_answers(plain, p) and p.poll() is None:
            self.tls_walnut = p
            return
        PROCS.stop(p)
        self.tls_unavailable = f"walnut (TLS section) did not answer: {log_tail(p)}"
        self.failures.append(self.tls_unavailable)
        log(f"   {self.tls_unavailable}")

    def stop_tls_walnut(self):
        if self.tls_walnut is not None:
            PROCS.stop(self.tls_walnut)
            self.tls_walnut = None

    def tls_port(self, target):
        """(port, the client's TLS arguments) of a TLS-section target."""
        tls = ["--tls", "--cacert", self.ca]
        if target == "redis-tls":
            return self.tls_redis_ports[1], tls
        return self.tls_listen[target], (tls if target == "walnut-tls" else [])

    # ---- proxies (fresh each round)
    def write_configs(self, target):
        """The same pools for both proxies; only the listen ports differ (both run at once)."""
        listen = dict(zip(["r2", "r4", "mc"], free_ports(3)))
        self.listen[target] = listen
        r = self.redis_ports
        rcfg = f"""bench_r2:
  listen: {HOST}:{listen['r2']}
  hash: fnv1a_64
  distribution: ketama
  redis: true
  servers:
   - {HOST}:{r[0]}:1
   - {HOST}:{r[1]}:1
bench_r4:
  listen: {HOST}:{listen['r4']}
  hash: fnv1a_64
  distribution: ketama
  redis: true
  servers:
   - {HOST}:{r[0]}:1
   - {HOST}:{r[1]}:1
   - {HOST}:{r[2]}:1
   - {HOST}:{r[3]}:1
"""
        mcfg = f"""bench_mc:
  listen: {HOST}:{listen['mc']}
  hash: fnv1a_64
  distribution: ketama
  redis: false
  servers:
   - {HOST}:{self.mc_ports[0]}:1
   - {HOST}:{self.mc_ports[1]}:1
"""
        rconf = os.path.join(self.work, f"{target}-redis.yml")
        mconf = os.path.join(self.work, f"{target}-memcached.yml")
        with open(rconf, "w") as f:
            f.write(rcfg)
        with open(mconf, "w") as f:
            f.write(mcfg)
        self.config_text[target] = rcfg + "\n" + mcfg
        return {"redis": rconf, "memcached": mconf}

    def start_proxies(self, rnd):
        self.proxies = {}  # (target, kind) -> Popen
        self.listen = {}
        self.config_text = {}
        bins = {"nutcracker": "nutcracker", "walnut": self.walnut}
        for target in ["nutcracker", "walnut"]:
            confs = self.write_configs(target)
            for kind, conf in confs.items():
                key = (target, kind)
                (sport,) = free_ports(1)
                logf = os.path.join(self.work, f"{target}-{kind}-r{rnd}.log")
                p = PROCS.start(f"{target}-{kind}",
                                [bins[target], "-c", conf, "-s", str(sport), "-a", HOST, "-o", logf],
                                logf + ".out")
                lp = self.listen[target]
                ports = [lp["r2"], lp["r4"]] if kind == "redis" else [lp["mc"]]
                ok = all(wait_answers(pt, p, memcached=(kind == "memcached")) for pt in ports)
                if ok and p.poll() is None:
                    self.proxies[key] = p
                    continue
                text = ""
                for fn in (logf, logf + ".out"):
                    try:
                        text += open(fn, errors="replace").read()
                    except OSError:
                        pass
                PROCS.stop(p)
                last = text.strip().splitlines()[-1] if text.strip() else "no output"
                if target == "walnut" and kind == "memcached" and "not supported" in text:
                    self.unavailable[key] = f"walnut refuses memcached pools: {last[-160:]}"
                else:
                    self.unavailable[key] = f"{target} ({kind} pools) did not answer: {last[-160:]}"
                    self.failures.append(self.unavailable[key])
                log(f"   {key[0]} ({key[1]}): n/a -- {self.unavailable[key]}")

    def stop_proxies(self):
        for p in self.proxies.values():
            PROCS.stop(p)
        self.proxies = {}

    def port_for(self, target, kind, pool):
        if target == "direct":
            return self.mc_ports[0] if kind == "memcached" else self.redis_ports[0]
        return self.listen[target][pool]

    # ---- checks
    def check_contenders(self):
        """A GET/SET round trip through each contender (redis-cli for redis pools)."""
        log("== round trip through each contender")
        for target in TARGETS:
            for kind in ["redis", "memcached"]:
                if (target, kind) in self.unavailable:
                    continue
                pools = ["r2", "r4"] if kind == "redis" else ["mc"]
                for pool in pools:
                    port = self.port_for(target, kind, pool)
                    err = redis_roundtrip(port) if kind == "redis" else memcached_roundtrip(port)
                    status = "ok" if err is None else f"FAILED: {err}"
                    log(f"   {target:<10} {kind:<9} {pool}: {status}")
                    if err is not None:
                        self.failures.append(f"{target} {kind} pool {pool}: {err}")

    def check_tls_contenders(self):
        """A SET/GET round trip through each TLS-section contender (redis-cli --tls), and the
        protocol and cipher suite each TLS one negotiates (openssl s_client, verifying)."""
        log("== TLS: round trip through each contender")
        for target in TLS_TARGETS:
            if target != "redis-tls" and self.tls_walnut is None:
                continue  # already a failure
            port, cli = self.tls_port(target)
            err = redis_roundtrip(port, cli)
            if err is None and cli:
                try:
                    self.tls_sessions[target] = tls_session(port, self.ca)
                except NA as e:
                    err = str(e)
            session = " ".join(self.tls_sessions.get(target, ()))
            log(f"   {target:<10} port {port}: {'ok ' + session if err is None else 'FAILED: ' + err}")
            if err is not None:
                self.failures.append(f"{target} (TLS section), port {port}: {err}")
                self.tls_dead[target] = f"no round trip: {err}"  # not measured: it would time out

    def connections_seen(self, target):
        if target == "redis-tls":
            return redis_connections_received(self.tls_redis_ports[0])
        return walnut_total_connections(self.tls_stats_port)

    def measure_tls(self, wid, params, target):
        if target in self.tls_dead:
            raise NA(self.tls_dead[target])
        proc = None if target == "redis-tls" else self.tls_walnut
        if target != "redis-tls":
            if proc is None:
                raise NA(self.tls_unavailable or "walnut is not running")
            if proc.poll() is not None:
                raise NA(self.died("walnut", "TLS section", proc))
        port, tls = self.tls_port(target)
        connect = params.get("connect", False)
        conns0 = self.connections_seen(target) if connect else None
        cpu0 = cpu_seconds(proc.pid) if proc else None
        # on a box with few cores the three processes share them: where each request's CPU goes
        redis0 = cpu_seconds(self.tls_redis.pid)
        client0 = children_cpu_seconds()
        try:
            res = redis_benchmark(port, tls + params["args"], params["n"], self.timeout)
        except NA as e:
            self.failures.append(f"{target} (TLS section), {wid}: {e}")
            raise
        res["client_us"] = (children_cpu_seconds() - client0) * 1e6 / res["requests"]
        res["redis_us"] = (cpu_seconds(self.tls_redis.pid) - redis0) * 1e6 / res["requests"]
        if proc:
            if proc.poll() is not None:
                raise NA(self.died("walnut", "TLS section", proc))
            res["cpu_us"] = (cpu_seconds(proc.pid) - cpu0) * 1e6 / res["requests"]
        else:
            res["cpu_us"] = None
        if connect:
            # redis-benchmark also opens one connection of its own (to read CONFIG)
            res["conns"] = self.connections_seen(target) - conns0
            if res["conns"] < res["requests"]:
                self.failures.append(f"{target} (TLS section), {wid}: {res['conns']} connections counted "
                                     f"for {res['requests']} requests: -k 0 did not reconnect each time")
        return res

    def run_tls_round(self, rnd):
        order = TLS_TARGETS[rnd % 3:] + TLS_TARGETS[: rnd % 3]
        for wid, label, params in self.tls_workloads:
            for target in order:
                try:
                    res = self.measure_tls(wid, params, target)
                    self.tls_results.setdefault((wid, target), []).append(res)
                    conns = f"  ({res['conns']} connections counted)" if "conns" in res else ""
                    log(f"   TLS {label:<24} {target:<10} {fmt_rps(res['rps']):>10} req/s"
                        f"  p50 {fmt_ms(res['p50']):>6}  p99 {fmt_ms(res['p99']):>6}"
                        f"  cpu {fmt_us(res['cpu_us']):>6} us/req{conns}")
                except NA as e:
                    self.tls_na[(wid, target)] = str(e)
                    log(f"   TLS {label:<24} {target:<10} n/a: {e}")

    # ---- measurements
    def measure(self, wid, kind, params, target):
        if target != "direct" and (target, kind) in self.unavailable:
            raise NA(self.unavailable[(target, kind)])
        proc = self.proxies.get((target, kind)) if target != "direct" else None
        if target != "direct" and proc is None:
            raise NA(f"{target} is not running")
        if proc is not None and proc.poll() is not None:
            raise NA(self.died(target, kind, proc))
        port = self.port_for(target, kind, params.get("pool"))
        cpu0 = cpu_seconds(proc.pid) if proc else None
        try:
            if kind == "redis":
                res = redis_benchmark(port, params["args"], params["n"], self.timeout)
            else:
                res = memcslap(port, params["test"], params["conc"], params["execute"], self.timeout)
        except NA as e:
            # the contender is up but the load generator failed against it: it does not answer
            reason = f"{target} ({kind}), {wid}: {e}"
            self.failures.append(reason)
            raise
        if proc:
            if proc.poll() is not None:
                raise NA(self.died(target, kind, proc))
            res["cpu_us"] = (cpu_seconds(proc.pid) - cpu0) * 1e6 / res["requests"]
        else:
            res["cpu_us"] = None
        return res

    def died(self, target, kind, proc):
        """A proxy that answered at first has exited: a failure of a contender that should work."""
        reason = f"{target} ({kind}) exited during the run (status {proc.returncode}): {log_tail(proc)}"
        if reason not in self.failures:
            self.failures.append(reason)
        return reason

    def run_main_round(self, rnd):
        """One alternation of the plaintext comparison: idle clients, then every workload."""
        self.start_proxies(rnd)
        if rnd == 0:
            self.check_contenders()
        # rotate who goes first each alternation, so no target always runs first
        order = TARGETS[rnd % 3:] + TARGETS[: rnd % 3]
        for target in ["nutcracker", "walnut"]:
            key = (target, "redis")
            if key in self.unavailable or key not in self.proxies:
                self.na[("idle", target)] = self.unavailable.get(key, "not running")
                continue
            proc = self.proxies[key]
            try:
                b, w, acc = idle_connections(self.listen[target]["r2"], proc.pid, self.idle_count, 30)
                self.idle.setdefault(target, []).append((b, w))
                log(f"   idle {self.idle_count:>6} conns  {target:<10} RSS {b} kB -> {w} kB")
            except NA as e:
                self.na[("idle", target)] = str(e)
                log(f"   idle {self.idle_count:>6} conns  {target:<10} n/a: {e}")
        for wid, label, kind, params in self.workloads:
            for target in order:
                try:
                    res = self.measure(wid, kind, params, target)
                    self.results.setdefault((wid, target), []).append(res)
                    log(f"   {label:<28} {target:<10} {fmt_rps(res['rps']):>10} req/s"
                        f"  p50 {fmt_ms(res['p50']):>6}  p99 {fmt_ms(res['p99']):>6}"
                        f"  cpu {fmt_us(res['cpu_us']):>6} us/req")
                except NA as e:
                    self.na[(wid, target)] = str(e)
                    log(f"   {label:<28} {target:<10} n/a: {e}")
        self.stop_proxies()

    def run(self):
        self.started = time.time()
        self.load_before = open("/proc/loadavg").read().split()[:3]
        if self.main:
            self.start_backends()
        if self.tls:
            self.start_tls_backend()
        for rnd in range(self.rounds):
            log(f"== alternation {rnd + 1}/{self.rounds}")
            if self.main:
                self.run_main_round(rnd)
            if self.tls:
                self.start_tls_walnut(rnd)
                if rnd == 0:
                    self.check_tls_contenders()
                self.run_tls_round(rnd)
                self.stop_tls_walnut()
            done = rnd + 1
            spent = time.time() - self.started
            if done < self.rounds and done >= 3 and spent + spent / done > self.budget:
                log(f"== stopping after {done} alternations: another would pass the {self.budget} s budget")
                self.rounds = done
                break
        self.elapsed = time.time() - self.started
        self.load_after = open("/proc/loadavg").read().split()[:3]


# --------------------------------------------------------------------------- report


def fmt_rps(v):
    return "n/a" if v is None else f"{v:,.0f}"


def fmt_ms(v):
    return "n/a" if v is None else f"{v:.3f}"


def fmt_us(v):
    return "—" if v is None else f"{v:.2f}"


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def fmt_ratio(v):
    return "n/a" if v is None else f"{v:.2f}×"


def summarize(wids, targets, results, keys=("rps", "p50", "p99", "cpu_us")):
    """(workload id, target) -> medians of `keys`, `n` runs and the `requests` of one run."""
    s = {}
    for wid in wids:
        for t in targets:
            rs = results.get((wid, t), [])
            if rs:
                s[(wid, t)] = {k: med([r.get(k) for r in rs]) for k in keys}
                s[(wid, t)]["n"] = len(rs)
                s[(wid, t)]["requests"] = rs[0]["requests"]
    return s


def ratios_table(rows, s, columns):
    """Markdown: per workload (rows: (id, label)), the ratio of two targets' medians in s for
    each column (header, target, other target, key)."""
    lines = ["| workload | " + " | ".join(c[0] for c in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for wid, label in rows:
        cells = [fmt_ratio(ratio(s.get((wid, a), {}).get(k), s.get((wid, o), {}).get(k)))
                 for _h, a, o, k in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_table(rows, targets, s, name, cpu_header, extra=()):
    """Markdown: one line per (workload, target) of the medians in s; rows are (id, label),
    name(target) is the target's name in the table, extra more CPU columns (header, key)."""
    heads = "".join(f" {h} |" for h, _k in extra)
    lines = [f"| workload | target | req/s | p50 ms | p99 ms | {cpu_header} |{heads} runs |",
             "|---|---|---:|---:|---:|---:|" + "---:|" * len(extra) + "---:|"]
    for wid, label in rows:
        for t in targets:
            m = s.get((wid, t))
            if m:
                more = "".join(f" {fmt_us(m[k])} |" for _h, k in extra)
                lines.append(f"| {label} | {name(t)} | {fmt_rps(m['rps'])} | {fmt_ms(m['p50'])} "
                             f"| {fmt_ms(m['p99'])} | {fmt_us(m['cpu_us'])} |{more} {m['n']} |")
            else:
                lines.append(f"| {label} | {name(t)} | n/a | n/a | n/a | n/a |" + " n/a |" * len(extra) + " 0 |")
    return "\n".join(lines)


def sh(cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=20, shell=True)
        return (p.stdout + p.stderr).strip()
    except Exception as e:  # noqa: BLE001
        return f"? ({e})"


def machine(b):
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = sh(f"git -C {ROOT} rev-parse --short=12 HEAD")
    src = sh(f"git -C {ROOT} log -1 --format=%h -- src Cargo.toml Cargo.lock")
    commit += f" (walnut's code: src/ last changed in {src})"
    if sh(f"git -C {ROOT} status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock"):
        commit += ", with uncommitted changes in src/"
    return [
        ("nproc", str(os.cpu_count())),
        ("CPU", cpu),
        ("kernel", platform.release()),
        ("redis-server", sh("redis-server --version").split(" sha=")[0]),
        ("redis-benchmark", sh("redis-benchmark --version")),
        ("memcached", sh("memcached -V")),
        ("memcslap", sh("memcslap --version").splitlines()[0] if sh("memcslap --version") else "?"),
        ("nutcracker", sh("nutcracker --version").splitlines()[0].replace("This is ", "")),
        ("walnut", f"{'; '.join(sh(b.walnut + ' --version').splitlines())}, git {commit}, binary {b.walnut}"),
        ("walnut threads", f"default (one per core: {os.cpu_count()})"),
        ("RLIMIT_NOFILE", str(resource.getrlimit(resource.RLIMIT_NOFILE)[0])),
        ("load average (1/5/15 min)", f"{' / '.join(b.load_before)} before the run, "
                                      f"{' / '.join(b.load_after)} after (other work on the machine shows here)"),
    ]


def target_checks(b, s):
    """Issue 8's targets, each met / missed by how much."""
    rows = []
    labels = {w[0]: w[1] for w in b.workloads}

    def thr(label, wids, vs, factor):
        for wid in wids:
            w = s.get((wid, "walnut"), {}).get("rps")
            o = s.get((wid, vs), {}).get("rps")
            r = ratio(w, o)
            if r is None:
                rows.append((label, labels[wid], f"≥ {factor}× {vs}", "n/a", "n/a (not measured)"))
            elif r >= factor:
                rows.append((label, labels[wid], f"≥ {factor}× {vs}", f"{r:.2f}×", "met"))
            else:
                rows.append((label, labels[wid], f"≥ {factor}× {vs}", f"{r:.2f}×",
                             f"missed by {(factor - r) / factor * 100:.0f}% (needs {factor / r:.2f}× more)"))

    ids = [w[0] for w in b.workloads]
    p1 = [i for i in ids if i.endswith("-P1")]
    pN = [i for i in ids if i.endswith("-P16") or i.endswith("-P128")] + [i for i in ids if i == "mget100"]
    mc = [i for i in ids if i.startswith("mc-")]
    thr("throughput, depth 1", p1, "nutcracker", 1.1)
    thr("throughput, depth 16/128, MGET", pN, "nutcracker", 1.5)
    thr("throughput, memcached", mc, "nutcracker", 1.1)
    for wid in ids:
        w = s.get((wid, "walnut"), {}).get("p99")
        o = s.get((wid, "nutcracker"), {}).get("p99")
        if w is None or o is None:
            rows.append(("p99 latency", labels[wid], "≤ nutcracker", "n/a", "n/a (not measured)"))
        else:
            rows.append(("p99 latency", labels[wid], "≤ nutcracker", f"{w:.3f} vs {o:.3f} ms",
                         "met" if w <= o else f"missed by {(w - o) / o * 100:.0f}%"))
    for wid in ids:
        w = s.get((wid, "walnut"), {}).get("cpu_us")
        o = s.get((wid, "nutcracker"), {}).get("cpu_us")
        if w is None or o is None:
            rows.append(("CPU per request", labels[wid], "≤ nutcracker", "n/a", "n/a (not measured)"))
        else:
            rows.append(("CPU per request", labels[wid], "≤ nutcracker", f"{w:.2f} vs {o:.2f} µs",
                         "met" if w <= o else f"missed by {(w - o) / o * 100:.0f}%"))
    w = med([x[1] for x in b.idle.get("walnut", [])])
    o = med([x[1] for x in b.idle.get("nutcracker", [])])
    if w is None or o is None:
        rows.append(("RSS, idle clients", f"{b.idle_count:,} idle", "≤ nutcracker", "n/a", "n/a (not measured)"))
    else:
        rows.append(("RSS, idle clients", f"{b.idle_count:,} idle", "≤ nutcracker", f"{w / 1024:.1f} vs {o / 1024:.1f} MB",
                     "met" if w <= o else f"missed by {(w - o) / o * 100:.0f}%"))
    thr("stretch: depth 1 vs direct", p1, "direct", 0.9)
    thr("stretch: depth 16/128, MGET vs direct", pN, "direct", 0.7)
    return rows


def report(b, cmdline):
    s = summarize([w[0] for w in b.workloads], TARGETS, b.results)
    table = results_table([(w[0], w[1]) for w in b.workloads], TARGETS, s, str, "proxy CPU µs/req")

    ratios = ratios_table([(w[0], w[1]) for w in b.workloads], s, [
        ("walnut/nutcracker req/s", "walnut", "nutcracker", "rps"),
        ("walnut/direct req/s", "walnut", "direct", "rps"),
        ("nutcracker/direct req/s", "nutcracker", "direct", "rps"),
        ("p99 walnut/nutcracker", "walnut", "nutcracker", "p99"),
        ("CPU/req walnut/nutcracker", "walnut", "nutcracker", "cpu_us"),
    ])

    lines = []
    out = lines.append
    out(f"| target | RSS before | RSS with {b.idle_count:,} idle clients | per client |")
    out("|---|---:|---:|---:|")
    out("| direct | — | — | — |")
    for t in ["nutcracker", "walnut"]:
        xs = b.idle.get(t)
        if xs:
            bef, wit = med([x[0] for x in xs]), med([x[1] for x in xs])
            out(f"| {t} | {bef / 1024:.1f} MB | {wit / 1024:.1f} MB | {(wit - bef) / b.idle_count * 1024:,.0f} B |")
        else:
            out(f"| {t} | n/a | n/a | n/a |")
    idle = "\n".join(lines)
    checks = target_checks(b, s)
    return s, table, ratios, idle, checks


def tls_report(b):
    """The TLS section's tables: (results, ratios, connections, target rows), as Markdown."""
    s = summarize([w[0] for w in b.tls_workloads], TLS_TARGETS, b.tls_results,
                  keys=("rps", "p50", "p99", "cpu_us", "redis_us", "client_us", "conns"))
    table = results_table([(w[0], w[1]) for w in b.tls_workloads], TLS_TARGETS, s, TLS_LABELS.get,
                          "walnut CPU µs/req", extra=[("redis-server CPU µs/req", "redis_us"),
                                                     ("redis-benchmark CPU µs/req", "client_us")])

    def g(wid, t, k="rps"):
        return s.get((wid, t), {}).get(k)

    ratios = ratios_table([(w[0], w[1]) for w in b.tls_workloads], s, [
        ("walnut TLS / walnut plaintext", "walnut-tls", "walnut", "rps"),
        ("walnut TLS / redis TLS direct", "walnut-tls", "redis-tls", "rps"),
        ("redis TLS direct / walnut plaintext", "redis-tls", "walnut", "rps"),
        ("CPU/req walnut TLS / walnut plaintext", "walnut-tls", "walnut", "cpu_us"),
    ])

    lines = []
    out = lines.append
    out("| target | new connections/s | connections counted / requests (median) "
        "| CPU µs per connection: walnut | redis-server | redis-benchmark |")
    out("|---|---:|---:|---:|---:|---:|")
    for wid, _label, p in b.tls_workloads:
        if not p.get("connect"):
            continue
        for t in TLS_TARGETS:
            m = s.get((wid, t))
            if m:
                out(f"| {TLS_LABELS[t]} | {fmt_rps(m['rps'])} | {m['conns']:,.0f} / {m['requests']:,} "
                    f"| {fmt_us(m['cpu_us'])} | {fmt_us(m['redis_us'])} | {fmt_us(m['client_us'])} |")
            else:
                out(f"| {TLS_LABELS[t]} | n/a | n/a | n/a | n/a | n/a |")
    conns = "\n".join(lines)

    # where the CPU that TLS adds goes, per request: all three processes share the cores
    lines = []
    out = lines.append
    out("| workload | walnut | redis-server | redis-benchmark | all three: plaintext / TLS CPU "
        "| measured: TLS / plaintext req/s |")
    out("|---|---:|---:|---:|---:|---:|")
    for wid, label, p in b.tls_workloads:
        if p.get("connect"):
            continue
        keys = ("cpu_us", "redis_us", "client_us")
        plain = [g(wid, "walnut", k) for k in keys]
        tls = [g(wid, "walnut-tls", k) for k in keys]
        if None in plain or None in tls:
            out(f"| {label} | n/a | n/a | n/a | n/a | n/a |")
            continue
        added = [f"{t - q:+.2f}" for t, q in zip(tls, plain)]
        out(f"| {label} | {' | '.join(added)} | {fmt_ratio(ratio(sum(plain), sum(tls)))} "
            f"| {fmt_ratio(ratio(g(wid, 'walnut-tls'), g(wid, 'walnut')))} |")
    cost = "\n".join(lines)

    checks = []
    labels = {w[0]: w[1] for w in b.tls_workloads}
    for wid in [w[0] for w in b.tls_workloads if w[0].endswith("-P16")]:
        r = ratio(g(wid, "walnut-tls"), g(wid, "walnut"))
        if r is None:
            checks.append((labels[wid], "n/a", "n/a (not measured)"))
        elif r >= 0.8:
            checks.append((labels[wid], f"{r:.2f}×", "met"))
        else:
            checks.append((labels[wid], f"{r:.2f}×", f"missed by {(0.8 - r) / 0.8 * 100:.0f}% (needs {0.8 / r:.2f}× more)"))
    for wid in [w[0] for w in b.tls_workloads if w[0].endswith("-P16")]:
        r = ratio(g(wid, "walnut", "cpu_us"), g(wid, "walnut-tls", "cpu_us"))
        checks.append((f"{labels[wid]}: walnut's own CPU per request, plaintext / TLS (no target; reported)",
                       fmt_ratio(r), "reported"))
    for wid in [w[0] for w in b.tls_workloads if w[2].get("connect")]:
        r = ratio(g(wid, "walnut-tls"), g(wid, "redis-tls"))
        checks.append(("new TLS connections/s vs redis-server's TLS port (no target set; reported)",
                       "n/a" if r is None else f"{r:.2f}×", "reported"))
    return table, ratios, conns, cost, checks


def tls_markdown(b, cmdline):
    """The "TLS (issue 20)" section of the report."""
    table, ratios, conns, cost, checks = tls_report(b)
    check_rows = "\n".join(f"| {w} | {m} | {st} |" for w, m, st in checks)
    sessions = "; ".join(f"{TLS_LABELS[t]}: {' '.join(v)}" for t, v in b.tls_sessions.items()) or "not recorded"
    nas = {}
    for (wid, t), reason in b.tls_na.items():
        nas.setdefault((t, reason), []).append(wid)
    na_text = "\n".join(f"- **{TLS_LABELS[t]}**: n/a for {', '.join(w)} — {reason}" for (t, reason), w in nas.items())
    wl = "\n".join(f"| {label} | `redis-benchmark -n {p['n']} {' '.join(p['args'])}` |"
                    for _w, label, p in b.tls_workloads)
    rustls = sh(f"grep -A1 '^name = \"rustls\"$' {ROOT}/Cargo.lock | sed -n 's/^version = //p'").strip('"')
    return f"""## TLS (issue 20)

Reproduce (the whole report, this section included; the TLS section alone, for iterating:
`scripts/bench --only tls`, which writes a temp file unless `--out FILE` is given):

```sh
{cmdline}
```

Three contenders on one redis-server that listens on a plaintext port and a TLS port
(`--port P --tls-port P2 --tls-cert-file … --tls-key-file … --tls-ca-cert-file … --tls-auth-clients no`),
measured in the same alternations as above (started fresh each alternation, the starting target
rotating), medians over {b.rounds} alternation(s):

- **{TLS_LABELS['walnut']}**: a pool in front of the server's plaintext port;
- **{TLS_LABELS['walnut-tls']}**: a second pool of the same walnut process, with `tls:`, in front of
  the same plaintext port (TLS on the client side only);
- **{TLS_LABELS['redis-tls']}**: the server's own TLS port (OpenSSL inside redis-server).

Certificates: a throwaway CA and a server certificate (ECDSA P-256, subjectAltName IP:127.0.0.1 and
DNS:localhost), made with `openssl` in the run's temp directory; the load generator verifies them
(`redis-benchmark --tls --cacert ca.crt`). Negotiated with `openssl s_client`: {sessions}.
walnut uses rustls {rustls or "?"} (ring); redis-server and redis-benchmark use {sh("openssl version")}.
"walnut CPU µs/req" is the walnut process's user+system CPU over the run divided by the requests;
the redis-server's and the load generator's (`getrusage` of the waited-for child) likewise: the
three share the machine's cores, so a request's CPU anywhere costs throughput.

{table}

### Ratios (of the medians)

{ratios}

### Where the CPU that TLS adds goes

CPU µs per request of walnut with `tls:` minus plaintext walnut, for each process (medians
above). The box has {os.cpu_count()} cores for all three, so when they keep them busy the
throughput ratio follows the total CPU per request ("all three"), whichever process spends it;
the load generator's own TLS work (OpenSSL, in redis-benchmark) is part of what any TLS
contender is charged here.

{cost}

### New TLS connections per second

`redis-benchmark -k 0` closes and reopens its connection for every request, so requests/s is
new connections/s (each a TCP connect and a TLS handshake, then one PING, which each contender
answers itself). That it really reconnects is checked on every run by the contender's own count:
walnut's `total_connections` (its stats), redis-server's `INFO stats` `total_connections_received`,
read before and after (redis-benchmark adds one connection of its own, to read CONFIG).

{conns}

### Issue 20 target

Target: walnut with a `tls:` listener ≥ 0.8× plaintext walnut at pipeline depth 16.

| workload | walnut TLS / walnut plaintext | status |
|---|---:|---|
{check_rows}

{na_text or "Every TLS workload was measured for every contender."}

Load generators (against each contender's port, `-h 127.0.0.1 -p PORT --csv`, plus
`--tls --cacert ca.crt` for the TLS ones):

| workload | load generator |
|---|---|
{wl}

walnut's config for this section (ports of the last alternation):

```yaml
{getattr(b, "tls_config_text", "(walnut did not start)").rstrip()}
```

Machine: {os.cpu_count()} cores shared by the load generator (which does its own half of every
TLS handshake and record), walnut and redis-server; load average
{' / '.join(b.load_before)} before the run, {' / '.join(b.load_after)} after. The Setup table below
lists the versions. These are comparisons on one box, not capacity.
"""


def na_lines(b):
    seen = {}
    for (wid, t), reason in b.na.items():
        seen.setdefault((t, reason), []).append(wid)
    return [f"- **{t}**: n/a for {', '.join(w)} — {reason}" for (t, reason), w in seen.items()]


def write_tls_only(b, path, cmdline):
    """`--only tls`: the TLS section and the machine, nothing else."""
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mach = "\n".join(f"| {k} | {v} |" for k, v in machine(b))
    doc = f"""# walnut benchmarks: the TLS section only

Measured by `{cmdline}` on {when} (the measurements took {b.elapsed:.0f} s). The full report is
`scripts/bench` (docs/BENCHMARKS.md).
{"**This is a --quick smoke run (few requests, 1 alternation): its numbers are not meaningful.**" if b.quick else ""}

{tls_markdown(b, cmdline)}
## Setup

| | |
|---|---|
{mach}
"""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(doc)


def write_markdown(b, path, cmdline, table, ratios, idle, checks):
    history = None
    if os.path.exists(path):
        text = open(path).read()
        m = re.search(r"^## History\b.*", text, flags=re.M | re.S)
        if m:
            history = m.group(0).rstrip() + "\n"
    if history is None:
        history = ("## History\n\n"
                   "What each optimisation bought, newest first (date, commit, workload, before → after, "
                   "how measured). This section is kept as is when scripts/bench rewrites the file.\n")
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mach = "\n".join(f"| {k} | {v} |" for k, v in machine(b))
    nas = na_lines(b)
    wl = []
    for wid, label, kind, p in b.workloads:
        if kind == "redis":
            args = ["x" * 12 + "…(4096 B)" if len(a) > 100 else a for a in p["args"]]
            if "MGET" in args:
                i = args.index("MGET")
                args = args[: i + 1] + ["m:0", "…", f"m:{MGET_KEYS - 1}"]
            wl.append(f"| {label} | `redis-benchmark -n {p['n']} {' '.join(args)}` |")
        else:
            wl.append(f"| {label} | `memcslap --test={p['test']} --concurrency={p['conc']} "
                      f"--execute-number={p['execute']}` |")
    met = sum(1 for c in checks if c[4] == "met")
    na = sum(1 for c in checks if c[4].startswith("n/a"))
    check_summary = f"**{met} of {len(checks)} met, {len(checks) - met - na} missed, {na} not measured.**"
    check_rows = "\n".join(f"| {a} | {w} | {t} | {m} | {r} |" for a, w, t, m, r in checks)
    doc = f"""# walnut benchmarks

Measured by `scripts/bench` on {when}: walnut against nutcracker (twemproxy 0.5.0) and against
direct access to one backend (the physical bound), on the same backends in one run.
{"**This is a --quick smoke run (few requests, 1 alternation): its numbers are not meaningful.**" if b.quick else ""}

Reproduce (from the repository root; the measurements took {b.elapsed:.0f} s here, plus the build):

```sh
{cmdline}
```

## Results

Medians over {b.rounds} alternation(s). Within each alternation the three targets run one after the
other for each workload (direct → nutcracker → walnut, the starting target rotating each
alternation). "proxy CPU µs/req" is the proxy process's user+system CPU time (utime+stime from
`/proc/PID/stat`, all threads) over the run divided by the requests it served; "—" for direct.

{table}

### Ratios (of the medians)

{ratios}

### Memory with idle clients

VmRSS of the proxy process (`/proc/PID/status`), before and while {b.idle_count:,} idle client
connections are held open to its redis pool (measured on a freshly started proxy, first thing in each alternation; a sample of the connections is PINGed to check they are served).

{idle}

### Issue 8 targets

Targets set by issue 8: throughput ≥ 1.1× nutcracker at pipeline depth 1, ≥ 1.5× at depth 16/128
and for MGET, ≥ 1.1× for memcached; p99 ≤ nutcracker; CPU per request ≤ nutcracker; RSS with 10k
idle clients ≤ nutcracker; stretch: ≥ 0.9× direct at depth 1 and ≥ 0.7× direct at depth 16/128
and MGET. "missed by X%" is the shortfall relative to the target. {check_summary}

| target | workload | goal | measured (walnut vs other) | status |
|---|---|---|---|---|
{check_rows}

### Not measured

{chr(10).join(nas) if nas else "Every workload was measured for every target."}
- memcslap reports no latency distribution, only the total time: p50/p99 are n/a for memcached.
- memcslap's get test first stores its keys (`--execute-number` sets) and then reads them; the proxy's
  CPU per request for "memcached get" is over both (sets + gets).

{tls_markdown(b, cmdline) if b.tls else ""}
## Setup

| | |
|---|---|
{mach}

Backends, started once for all targets: 4 × redis-server (`--save "" --appendonly no`) and
2 × memcached (`-m 1024`), all on 127.0.0.1 on ports the kernel handed out. Every redis-server holds
every key the workloads read (seeded directly before the first run), so "direct" is backend 1 and
the proxies read existing values of the advertised size whatever their placement. The proxies are
restarted for each alternation. nutcracker and walnut run side by side with identical configs
except for the listen ports; stats on free ports; walnut with its default thread count. walnut's
config (ports of the last alternation):

```yaml
{b.config_text["walnut"].rstrip()}
```

Pools: `bench_r2` (2 servers) serves the SET/GET workloads, `bench_r4` (4 servers) the MGET one,
`bench_mc` the memcached ones. Direct: backend 1 of each kind.

Each load generator runs against the target's port (`redis-benchmark -h 127.0.0.1 -p PORT --csv …`,
`memcslap --servers=127.0.0.1:PORT …`):

| workload | load generator |
|---|---|
{chr(10).join(wl)}

Everything — load generator, proxy, backends — shares the machine's {os.cpu_count()} cores, so
the numbers are a comparison between targets on the same box, not absolute capacity.

{history}"""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(doc)


def run_cluster_section(b, quick):
    """The Redis Cluster section (scripts/bench_cluster.py, issue 18), after the others: its own
    cluster and walnut, stopped when it is done. Returns its Markdown and whether walnut answered."""
    # bench_cluster imports this module by name: let it share this run's PROCS and helpers.
    sys.modules.setdefault("bench", sys.modules[__name__])
    import bench_cluster
    results = bench_cluster.run(os.path.join(b.work, "cluster"), os.environ["WALNUT_BIN"], quick)
    return bench_cluster.markdown(results, "scripts/bench --only cluster"), results["answers"]


def insert_section(path, section):
    """Puts `section` before the report's `## Setup` (or at its end)."""
    text = open(path).read()
    at = text.find("\n## Setup")
    text = text + "\n" + section if at < 0 else text[:at + 1] + section + "\n" + text[at + 1:]
    with open(path, "w") as f:
        f.write(text)


def main():
    ap = argparse.ArgumentParser(prog="scripts/bench")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--only", choices=["tls", "cluster"], help="run one section; writes a temp file unless --out")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    raise_nofile()
    if args.out:
        out_path = args.out
    elif args.quick or args.only:
        fd, out_path = tempfile.mkstemp(prefix=f"walnut-bench-{'quick' if args.quick else args.only}.", suffix=".md")
        os.close(fd)
    else:
        out_path = os.path.join(ROOT, "docs/BENCHMARKS.md")
    cmd = ["scripts/bench"] + sys.argv[1:]
    cmdline = " ".join(cmd)
    if os.environ.get("WALNUT_BIN") and not os.environ.get("WALNUT_BUILT") and os.path.abspath(os.environ["WALNUT_BIN"]) != os.path.join(ROOT, "target/release/walnut"):
        cmdline = f"WALNUT_BIN={os.environ['WALNUT_BIN']} {cmdline}   # or without WALNUT_BIN: builds target/release/walnut"
    b = Bench(args)
    rc = 0
    try:
        b.run()
        if b.main:
            s, table, ratios, idle, checks = report(b, cmdline)
            print()
            print(table)
            print()
            print(ratios)
            print()
            print(idle)
            print()
            print("| target | workload | goal | measured | status |")
            print("|---|---|---|---|---|")
            for row in checks:
                print("| " + " | ".join(row) + " |")
            for line in na_lines(b):
                print(line)
        if b.tls:
            tls_table, tls_ratios, tls_conns, tls_cost, tls_checks = tls_report(b)
            print()
            print("TLS (issue 20)")
            print(tls_table)
            print()
            print(tls_ratios)
            print()
            print(tls_cost)
            print()
            print(tls_conns)
            print()
            for row in tls_checks:
                print("| " + " | ".join(row) + " |")
        if b.main:
            write_markdown(b, out_path, cmdline, table, ratios, idle, checks)
        elif b.tls:
            write_tls_only(b, out_path, cmdline)
        else:
            with open(out_path, "w") as f:
                f.write("# walnut benchmarks: the Redis Cluster section only\n\n")
        if args.only in (None, "cluster"):
            cluster_text, cluster_answers = run_cluster_section(b, args.quick)
            print()
            print(cluster_text)
            insert_section(out_path, cluster_text)
            if not cluster_answers:
                log("FAIL: walnut did not answer through the cluster")
                rc = 1
        log(f"== report written to {out_path} ({b.elapsed:.0f} s)")
        if (b.main and not table.strip()) or not os.path.getsize(out_path):
            log("FAIL: no table")
            rc = 1
        if b.tls and (not b.tls_results or "## TLS (issue 20)" not in open(out_path).read()):
            log("FAIL: no TLS table")
            rc = 1
        if b.failures:
            for f in b.failures:
                log(f"FAIL: {f}")
            rc = 1
    except KeyboardInterrupt as e:
        log(f"== interrupted ({e}); stopping everything")
        rc = 130
    except Exception as e:  # noqa: BLE001
        log(f"FAIL: {type(e).__name__}: {e}")
        rc = 1
    finally:
        PROCS.stop_all()
        subprocess.run(["rm", "-rf", b.work])
    return rc


if __name__ == "__main__":
    sys.exit(main())
