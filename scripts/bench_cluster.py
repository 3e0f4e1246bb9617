"""The Redis Cluster section of scripts/bench (issue 18): walnut's `redis_cluster: true` pool
against `redis-benchmark --cluster` straight to the same 3-master cluster (one replica each),
GET/SET at pipeline depth 1 and 16 and MGET of 100 keys, with walnut's CPU per request; and
walnut's throughput, second by second, while `redis-cli --cluster reshard` moves 3000 slots
under it (the dip is reported, never asserted).

Run by scripts/bench (full, `--quick` and `--only cluster`); standalone for iterating:
    python3 scripts/bench_cluster.py [--quick] [--out FILE]
Every process started here is stopped by its PID (bench.PROCS).
"""

import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the harness's helpers: processes, ports, redis-benchmark, /proc)
from bench import HOST, NA, PROCS, cpu_seconds, free_ports, log, redis_benchmark, wait_answers  # noqa: E402


def cluster_ports(n):
    """Free ports whose cluster bus port (port + 10000) exists too."""
    ports = []
    while len(ports) < n:
        ports += [p for p in free_ports(n) if p + 10000 <= 65535 and p not in ports]
    return ports[:n]


def start_cluster(work, masters=3):
    """`masters` masters with one replica each, created by redis-cli --cluster create."""
    ports = cluster_ports(masters * 2)
    for port in ports:
        PROCS.start(
            f"redis-cluster-{port}",
            ["redis-server", "--port", str(port), "--bind", HOST, "--cluster-enabled", "yes",
             "--cluster-config-file", f"{work}/nodes-{port}.conf", "--cluster-node-timeout", "2000",
             "--dbfilename", f"dump-{port}.rdb", "--dir", work, "--save", "", "--appendonly", "no",
             "--protected-mode", "no", "--loglevel", "warning"],
            f"{work}/redis-cluster-{port}.out",
        )
    for port in ports:
        if not wait_answers(port):
            raise RuntimeError(f"cluster node {port} does not answer")
    create = subprocess.run(
        ["redis-cli", "--cluster", "create", *[f"{HOST}:{p}" for p in ports],
         "--cluster-replicas", "1", "--cluster-yes"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    if create.returncode != 0:
        raise RuntimeError(f"redis-cli --cluster create: {create.stdout[-300:]}{create.stderr[-300:]}")
    deadline = time.time() + 60
    while time.time() < deadline:
        infos = [subprocess.run(["redis-cli", "-p", str(p), "CLUSTER", "INFO"], capture_output=True,
                                text=True, timeout=5).stdout for p in ports]
        if all("cluster_state:ok" in i and "cluster_slots_ok:16384" in i for i in infos):
            return ports
        time.sleep(0.2)
    raise RuntimeError("the cluster never reached cluster_state:ok")


def master_ids(ports):
    """[(port, node id)] of the masters."""
    out = []
    for port in ports:
        role = subprocess.run(["redis-cli", "-p", str(port), "ROLE"], capture_output=True, text=True).stdout
        if role.startswith("master"):
            myid = subprocess.run(["redis-cli", "-p", str(port), "CLUSTER", "MYID"],
                                  capture_output=True, text=True).stdout.strip()
            out.append((port, myid))
    return sorted(out)


# One connection per node per worker thread: walnut runs a pool's sessions only on workers
# that own its connections (issue 23 changes that), so 2 spreads the cluster pool over both.
CONNECTIONS = int(os.environ.get("WALNUT_CLUSTER_CONNECTIONS", "2"))


def start_walnut(work, seeds, walnut_bin):
    (port, stats) = free_ports(2)
    conf = f"{work}/walnut-cluster.yml"
    with open(conf, "w") as f:
        f.write(f"cluster:\n  listen: {HOST}:{port}\n  redis_cluster: true\n  timeout: 5000\n  server_connections: {CONNECTIONS}\n  servers:\n")
        for seed in seeds[:2]:
            f.write(f"   - {HOST}:{seed}:1\n")
    p = PROCS.start("walnut-cluster", [walnut_bin, "-c", conf, "-s", str(stats), "-a", HOST, "--threads", "2"],
                    f"{work}/walnut-cluster.out")
    deadline = time.time() + 30
    while time.time() < deadline:
        r = subprocess.run(["redis-cli", "-p", str(port), "SET", "bench:probe", "1"], capture_output=True, text=True)
        if r.stdout.strip() == "OK":
            return p, port
        time.sleep(0.1)
    raise RuntimeError(f"walnut never served the cluster: {bench.log_tail(p)}")


def workloads(quick):
    n = 20_000 if quick else 200_000
    tag_keys = " ".join(f"{{bench}}:k{i}" for i in range(100))
    return [
        ("GET/SET 3 B, pipeline 1", ["-t", "get,set", "-c", "50", "-P", "1", "-d", "3"], n // 4),
        ("GET/SET 3 B, pipeline 16", ["-t", "get,set", "-c", "50", "-P", "16", "-d", "3"], n),
        ("MGET 100 keys (one slot)", ["-c", "50", "-P", "1", "--", "MGET", *tag_keys.split()], n // 20),
    ]


def measure(port, args, n, walnut_pid=None, cluster=False):
    before = cpu_seconds(walnut_pid) if walnut_pid else None
    extra = ["--cluster"] if cluster else []
    # redis-benchmark takes the command after its options; keep `--` and what follows last.
    if "--" in args:
        cut = args.index("--")
        argv = args[:cut] + extra + args[cut + 1:]
    else:
        argv = args + extra
    res = redis_benchmark(port, argv, n, timeout=300)
    if walnut_pid:
        used = cpu_seconds(walnut_pid) - before
        requests = n * (2 if "get,set" in args else 1)
        res["cpu_us"] = used / requests * 1e6
    return res


def reshard_dip(port, masters, seconds_before=2):
    """walnut's GET/SET throughput per second while 3000 slots move between two masters."""
    samples = []
    stop = threading.Event()

    def load():
        while not stop.is_set():
            t = time.time()
            try:
                r = redis_benchmark(port, ["-t", "set,get", "-c", "20", "-P", "16", "-d", "3", "-r", "100000"],
                                    20_000, timeout=60)
                samples.append((t, r["rps"]))
            except NA as e:
                samples.append((t, 0.0))
                log(f"cluster reshard load: {e}")

    worker = threading.Thread(target=load)
    worker.start()
    time.sleep(seconds_before)
    (src, src_id), (dst, dst_id) = masters[0], masters[1]
    t0 = time.time()
    r = subprocess.run(["redis-cli", "--cluster", "reshard", f"{HOST}:{src}", "--cluster-from", src_id,
                        "--cluster-to", dst_id, "--cluster-slots", "3000", "--cluster-yes"],
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    t1 = time.time()
    time.sleep(seconds_before)
    stop.set()
    worker.join()
    if r.returncode != 0:
        raise NA(f"reshard failed: {r.stderr[-200:]}")
    before = [rps for t, rps in samples if t < t0]
    during = [rps for t, rps in samples if t0 <= t <= t1]
    return {
        "before": sum(before) / len(before) if before else None,
        "during_min": min(during) if during else None,
        "during_mean": sum(during) / len(during) if during else None,
        "reshard_s": t1 - t0,
    }


def run(work, walnut_bin, quick=False):
    """Measures everything; returns the results the report needs. Stops only the processes it
    started (scripts/bench shares PROCS with it)."""
    os.makedirs(work, exist_ok=True)
    already = list(PROCS.procs)
    log("== cluster: starting 3 masters + 3 replicas")
    ports = start_cluster(work)
    masters = master_ids(ports)
    walnut, port = start_walnut(work, [p for p, _ in masters], walnut_bin)
    rows = []
    rounds = 1 if quick else 3
    for name, args, n in workloads(quick):
        log(f"== cluster: {name}")
        runs = {"walnut": [], "direct": []}
        row = {"name": name}
        # The two contenders alternate, and each figure is the median of its rounds.
        for _ in range(rounds):
            for contender in ("walnut", "direct"):
                try:
                    runs[contender].append(one_run(contender, name, args, n, walnut, port, masters))
                except NA as e:
                    row[contender] = {"na": str(e)}
        for contender, results in runs.items():
            if results and contender not in row:
                row[contender] = {k: median([r.get(k) for r in results]) for k in results[0]}
        rows.append(row)
    dip = None
    if not quick:
        log("== cluster: throughput during a live reshard")
        try:
            dip = reshard_dip(port, masters)
        except NA as e:
            dip = {"na": str(e)}
    errors = subprocess.run(["redis-cli", "-p", str(port), "GET", "bench:probe"], capture_output=True, text=True)
    ok = errors.stdout.strip() == "1"
    for p in [p for p in PROCS.procs if p not in already]:
        PROCS.stop(p)
    return {"rows": rows, "dip": dip, "answers": ok}


def median(values):
    values = sorted(v for v in values if v is not None)
    return values[len(values) // 2] if values else None


def one_run(contender, name, args, n, walnut, port, masters):
    if contender == "walnut":
        return measure(port, args, n, walnut_pid=walnut.pid)
    if "MGET" in name:
        # --cluster sends a custom command to a random node: the slot's owner is asked
        # straight instead (the node walnut forwards to).
        slot = subprocess.run(["redis-cli", "-p", str(masters[0][0]), "CLUSTER", "KEYSLOT", "{bench}:k0"],
                              capture_output=True, text=True).stdout.strip()
        return measure(slot_owner(masters[0][0], int(slot)), args, n)
    return measure(masters[0][0], args, n, cluster=True)


def slot_owner(any_port, slot):
    out = subprocess.run(["redis-cli", "-p", str(any_port), "CLUSTER", "SLOTS"], capture_output=True,
                         text=True).stdout.split("\n")
    # redis-cli prints the nested array flat: first, last, master ip, master port, id, ...
    vals = [v.strip() for v in out if v.strip()]
    i = 0
    while i + 3 < len(vals):
        try:
            first, last = int(vals[i]), int(vals[i + 1])
        except ValueError:
            i += 1
            continue
        if first <= slot <= last and vals[i + 2] == HOST:
            return int(vals[i + 3])
        i += 1
    raise NA(f"no owner found for slot {slot}")


def ratio(a, b):
    return a / b if a and b else None


def markdown(results, cmdline):
    lines = ["## Redis Cluster (issue 18)", "",
             f"walnut's `redis_cluster: true` pool (2 threads, `server_connections: {CONNECTIONS}`) against `redis-benchmark --cluster` straight to "
             "the same cluster of 3 masters with one replica each, on this machine, in one run. Targets: "
             "≥ 0.8× direct at pipeline 16, ≥ 0.7× at pipeline 1. MGET's 100 keys share one hash tag (a "
             "cluster refuses cross-slot MGET; walnut splits those by slot), and direct is the slot's owner.",
             "", f"Reproduce: `{cmdline}`", "",
             "| workload | walnut req/s | direct req/s | walnut / direct | walnut p99 ms | direct p99 ms | walnut CPU µs/req |",
             "|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        w, d = row.get("walnut", {}), row.get("direct", {})
        if "na" in w or "na" in d:
            lines.append(f"| {row['name']} | {w.get('na', w.get('rps'))} | {d.get('na', d.get('rps'))} | n/a | | | |")
            continue
        r = ratio(w["rps"], d["rps"])
        lines.append(
            f"| {row['name']} | {w['rps']:,.0f} | {d['rps']:,.0f} | {r:.2f}× | {w.get('p99') or 'n/a'} | "
            f"{d.get('p99') or 'n/a'} | {w.get('cpu_us', 0):.1f} |")
    goals = {"GET/SET 3 B, pipeline 16": 0.8, "GET/SET 3 B, pipeline 1": 0.7}
    verdicts = []
    for row in results["rows"]:
        goal = goals.get(row["name"])
        r = ratio(row.get("walnut", {}).get("rps"), row.get("direct", {}).get("rps"))
        if goal and r:
            verdicts.append(f"{row['name']}: {r:.2f}× against ≥ {goal}× ({'met' if r >= goal else 'missed'})")
    if verdicts:
        lines += ["", "Against the targets: " + "; ".join(verdicts) + "."]
    dip = results.get("dip")
    if dip and "na" not in dip:
        lines += ["", "During `redis-cli --cluster reshard … --cluster-slots 3000` between two masters, under "
                  "GET/SET at pipeline 16 through walnut (every MOVED and ASK followed): "
                  f"{dip['before']:,.0f} req/s before, {dip['during_mean']:,.0f} on average and "
                  f"{dip['during_min']:,.0f} at the lowest during the {dip['reshard_s']:.0f} s reshard "
                  f"({ratio(dip['during_min'], dip['before']):.2f}× of before at the lowest)."]
    elif dip:
        lines += ["", f"Reshard dip: n/a ({dip['na']})"]
    return "\n".join(lines) + "\n"


def main():
    import argparse
    import tempfile
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out")
    a = ap.parse_args()
    walnut_bin = os.environ.get("WALNUT_BIN", "target/release/walnut")
    work = tempfile.mkdtemp(prefix="walnut-bench-cluster.")
    try:
        results = run(work, walnut_bin, a.quick)
    finally:
        PROCS.stop_all()
        subprocess.run(["rm", "-rf", work])
    text = markdown(results, "scripts/bench --only cluster")
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    print(text)
    if not results["answers"]:
        print("FAIL: walnut did not answer through the cluster", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
