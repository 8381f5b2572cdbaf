"""Load test of `captioner serve`: throughput, latency, errors and server memory under concurrent clients.

The script starts the server itself (`python -m captioner.serve.command`, i.e. `captioner serve`, on
127.0.0.1 and a free port, in a subprocess), sends real Flickr8k JPEGs (default: the first
`--images` of `--data` (../shared/flickr8k)/Flicker8k_Dataset; examples/ when that is absent) from N client
threads over loopback, and stops every run by itself after `--requests` requests or
`--max-seconds`, whichever comes first. In one invocation it runs:

- two servers side by side: batching on (the server's default micro-batcher) and one request at a
  time (`--max-batch 1`). For 16 and 32 concurrent clients each gets `--rounds` runs, alternating
  A B B A ..., so that other jobs on a shared machine weigh on both alike (only one server is
  loaded at a time; the idle one sleeps);
- a soak of `--soak` requests (default 3,000) on the batching server, reading the server's resident
  memory (VmRSS in /proc/<pid>/status) before and after.

Each row also shows the CPU time per request of the server process and of the client threads
(this process), from /proc and `time.process_time`: on a machine of few cores both share it, so
they say where the cores went.

It prints the machine line, a Markdown table, and whether each target is met: zero errors at 32
clients, batching throughput at least 2x one-at-a-time, p95 latency under 1 s at 16 clients, and
RSS growth under 10 % over the soak. `--json PATH` also writes the results.

    python benchmarks/serve_load.py                                   # the full run (several minutes)
    python benchmarks/serve_load.py --requests 100 --rounds 1 --soak 300 --clients 16   # a quick one
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from _common import REPO_ROOT, base_parser, percentile, print_machine, print_table, write_json

TARGET_ERRORS_AT = 32
TARGET_SPEEDUP = 2.0
TARGET_P95_S = 1.0
TARGET_P95_CLIENTS = 16
TARGET_RSS_GROWTH = 0.10


@dataclass
class Run:
    """One load run: what was asked and what came back."""

    name: str
    server: str
    clients: int
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    error_examples: list[str] = field(default_factory=list)
    batches: int = 0
    images: int = 0
    rss_start_mib: float = 0.0
    rss_end_mib: float = 0.0
    client_cpu_s: float = 0.0  # CPU time of this process (the client threads) during the run
    server_cpu_s: float = 0.0  # CPU time of the server process during the run

    @property
    def throughput(self) -> float:
        return (self.requests - self.errors) / self.seconds if self.seconds else 0.0

    def latency(self, q: float) -> float:
        return percentile(self.latencies_ms, q) if self.latencies_ms else float("nan")

    def cpu_ms_per_request(self, seconds: float) -> float:
        return seconds / self.requests * 1000 if self.requests else float("nan")

    @property
    def mean_batch(self) -> float:
        return self.images / self.batches if self.batches else 0.0

    def summary(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "latencies_ms"}
        out.update(
            requests_per_s=round(self.throughput, 2),
            p50_ms=round(self.latency(50), 1),
            p95_ms=round(self.latency(95), 1),
            client_cpu_ms_per_request=round(self.cpu_ms_per_request(self.client_cpu_s), 2),
            server_cpu_ms_per_request=round(self.cpu_ms_per_request(self.server_cpu_s), 2),
            p99_ms=round(self.latency(99), 1),
            mean_batch=round(self.mean_batch, 2),
        )
        return out


# --- the server ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    """The process's resident memory (VmRSS) in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """`python -m captioner.serve.command` in a subprocess; its log goes to a file."""

    def __init__(self, flags: list[str], log_path: Path, model: str | None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        command = [sys.executable, "-m", "captioner.serve.command", "--port", str(self.port), "--no-access-log", *flags]
        if model:
            command += ["--model", model]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)

    def wait_ready(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}; see {self.log_path}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"the server did not come up within {timeout:g} s; see {self.log_path}")

    def worker_stats(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=10).json()["worker"]

    def rss(self) -> float:
        return rss_mib(self.process.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


# --- the clients ------------------------------------------------------------------------------------


def load(server: Server, run: Run, images: list[tuple[str, bytes]], total: int, max_seconds: float, request_timeout: float) -> Run:
    """`run.clients` threads post images until `total` requests were sent or `max_seconds` passed."""
    lock = threading.Lock()
    counter = iter(range(total))
    before = server.worker_stats()
    run.rss_start_mib = server.rss()
    server_cpu, client_cpu = server.cpu(), time.process_time()
    started = time.perf_counter()
    deadline = started + max_seconds

    def client() -> None:
        with httpx.Client(base_url=server.url, timeout=request_timeout) as http:
            while time.perf_counter() < deadline:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                name, data = images[index % len(images)]
                sent = time.perf_counter()
                try:
                    response = http.post("/caption", files={"image": (name, data, "image/jpeg")})
                    ok = response.status_code == 200 and bool(response.json().get("caption"))
                    problem = None if ok else f"HTTP {response.status_code}: {response.text[:120]}"
                except (httpx.HTTPError, ValueError) as err:
                    problem = f"{type(err).__name__}: {err}"
                elapsed = (time.perf_counter() - sent) * 1000
                with lock:
                    run.requests += 1
                    if problem is None:
                        run.latencies_ms.append(elapsed)
                    else:
                        run.errors += 1
                        if len(run.error_examples) < 5:
                            run.error_examples.append(problem)

    threads = [threading.Thread(target=client, name=f"client-{i}") for i in range(run.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run.seconds = time.perf_counter() - started
    run.server_cpu_s, run.client_cpu_s = server.cpu() - server_cpu, time.process_time() - client_cpu
    after = server.worker_stats()
    run.batches = after["batches"] - before["batches"]
    run.images = after["images"] - before["images"]
    run.rss_end_mib = server.rss()
    return run


def read_images(data: Path, count: int) -> list[tuple[str, bytes]]:
    folder = data / "Flicker8k_Dataset"
    if not folder.is_dir():
        folder = data if data.is_dir() and any(data.glob("*.jpg")) else REPO_ROOT / "examples"
    paths = sorted(folder.glob("*.jpg"))[:count]
    if not paths:
        raise SystemExit(f"no JPEGs found in {folder}")
    print(f"images: {len(paths)} JPEGs from {folder}", flush=True)
    return [(p.name, p.read_bytes()) for p in paths]


# --- main ----------------------------------------------------------------------------------------------


def combine(runs: list[Run]) -> Run:
    """The rounds of one setting as one run (requests, errors, time and latencies added up)."""
    total = Run(runs[0].name, runs[0].server, runs[0].clients)
    for r in runs:
        total.requests += r.requests
        total.client_cpu_s += r.client_cpu_s
        total.server_cpu_s += r.server_cpu_s
        total.errors += r.errors
        total.seconds += r.seconds
        total.latencies_ms += r.latencies_ms
        total.error_examples += r.error_examples
        total.batches += r.batches
        total.images += r.images
    total.rss_start_mib, total.rss_end_mib = runs[0].rss_start_mib, runs[-1].rss_end_mib
    return total


def main() -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="distinct JPEGs to cycle through")
    parser.add_argument("--requests", type=int, default=300, help="requests per throughput run")
    parser.add_argument("--rounds", type=int, default=2, help="throughput runs per server and client count, alternating between the servers")
    parser.add_argument("--clients", type=int, nargs="+", default=[16, 32], help="concurrent clients of the throughput runs")
    parser.add_argument("--soak", type=int, default=3000, help="requests in the memory soak (0 skips it)")
    parser.add_argument("--soak-clients", type=int, default=16)
    parser.add_argument("--max-seconds", type=float, default=240.0, help="time limit of each run (the soak gets 4x)")
    parser.add_argument("--warm-up", type=int, default=32, help="requests sent (and not counted) to each server before its runs")
    parser.add_argument("--max-batch", type=int, default=None, help="the batching server's --max-batch (default: the server's default)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the one-request-at-a-time server")
    parser.add_argument("--request-timeout", type=float, default=60.0, help="client-side limit per request, seconds")
    parser.add_argument("--model", default=None, help="model directory (default: the server's default)")
    parser.add_argument("--log-dir", type=Path, default=Path("/tmp"), help="where the servers' logs go")
    args = parser.parse_args()

    print_machine()
    images = read_images(args.data, args.images)
    setups = [("batching", [] if args.max_batch is None else ["--max-batch", str(args.max_batch)])]
    if not args.no_baseline:
        setups.append(("one at a time", ["--max-batch", "1"]))
    servers: dict[str, Server] = {}
    rounds: dict[tuple[str, int], list[Run]] = {}
    soak: Run | None = None
    try:
        for label, flags in setups:
            log_path = args.log_dir / f"serve_load_{label.replace(' ', '_')}.log"
            print(f"starting the server ({label}: {' '.join(flags) or 'defaults'}); log {log_path}", flush=True)
            servers[label] = Server(flags, log_path, args.model)
        for label, server in servers.items():
            server.wait_ready()
            load(server, Run("warm-up", label, max(args.clients)), images, args.warm_up, args.max_seconds, args.request_timeout)
            print(f"  {label}: up at {server.url}, warmed up, RSS {server.rss():.0f} MiB", flush=True)
        labels = list(servers)
        for clients in args.clients:
            for round_index in range(args.rounds):
                order = labels if round_index % 2 == 0 else labels[::-1]  # A B, B A, A B, ...
                for label in order:
                    run = load(servers[label], Run("throughput", label, clients), images, args.requests, args.max_seconds, args.request_timeout)
                    rounds.setdefault((label, clients), []).append(run)
                    print(
                        f"  {label}, {clients} clients: {run.requests} requests in {run.seconds:.1f} s, {run.throughput:.1f}/s, "
                        f"p95 {run.latency(95):.0f} ms, {run.errors} errors, mean batch {run.mean_batch:.1f}",
                        flush=True,
                    )
        if args.soak and "batching" in servers:
            soak = load(servers["batching"], Run("soak", "batching", args.soak_clients), images, args.soak, 4 * args.max_seconds, args.request_timeout)
            print(
                f"  soak: {soak.requests} requests in {soak.seconds:.1f} s, RSS {soak.rss_start_mib:.0f} -> {soak.rss_end_mib:.0f} MiB, {soak.errors} errors",
                flush=True,
            )
    finally:
        for server in servers.values():
            server.stop()

    runs = [combine(parts) for parts in rounds.values()] + ([soak] if soak else [])
    headers = [
        "run",
        "server",
        "clients",
        "requests",
        "errors",
        "seconds",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "mean batch",
        "server CPU ms/req",
        "client CPU ms/req",
        "RSS start MiB",
        "RSS end MiB",
    ]
    rows = [
        [
            r.name,
            r.server,
            r.clients,
            r.requests,
            r.errors,
            r.seconds,
            r.throughput,
            r.latency(50),
            r.latency(95),
            r.latency(99),
            r.mean_batch,
            r.cpu_ms_per_request(r.server_cpu_s),
            r.cpu_ms_per_request(r.client_cpu_s),
            r.rss_start_mib,
            r.rss_end_mib,
        ]
        for r in runs
    ]
    title = f"captioner serve under load (loopback, JPEGs posted as multipart; throughput rows: {args.rounds} alternating run(s) of {args.requests} requests)"
    print_table(headers, rows, title=title)

    def find(server: str, clients: int) -> Run | None:
        return next((r for r in runs if r.name == "throughput" and r.server == server and r.clients == clients), None)

    targets = []
    at_32 = [r for r in runs if r.clients == TARGET_ERRORS_AT and r.server == "batching"]
    if at_32:
        errors = sum(r.errors for r in at_32)
        targets.append((f"zero errors at {TARGET_ERRORS_AT} clients", errors == 0, f"{errors} errors in {sum(r.requests for r in at_32)} requests"))
    for clients in args.clients:
        batched, single = find("batching", clients), find("one at a time", clients)
        if batched and single and single.throughput:
            speedup = batched.throughput / single.throughput
            targets.append(
                (
                    f"batching >= {TARGET_SPEEDUP:g}x one at a time ({clients} clients)",
                    speedup >= TARGET_SPEEDUP,
                    f"{batched.throughput:.1f} vs {single.throughput:.1f} requests/s: {speedup:.2f}x",
                )
            )
    at_16 = find("batching", TARGET_P95_CLIENTS)
    if at_16:
        p95 = at_16.latency(95)
        targets.append((f"p95 < {TARGET_P95_S:g} s at {TARGET_P95_CLIENTS} clients", p95 < TARGET_P95_S * 1000, f"p95 {p95:.0f} ms"))
    if soak:
        growth = soak.rss_end_mib / soak.rss_start_mib - 1
        targets.append(
            (
                f"RSS growth < {TARGET_RSS_GROWTH:.0%} over {soak.requests} requests",
                growth < TARGET_RSS_GROWTH,
                f"{soak.rss_start_mib:.0f} -> {soak.rss_end_mib:.0f} MiB ({growth:+.1%})",
            )
        )
    print("\ntargets:")
    for name, met, measured in targets:
        print(f"  {'met' if met else 'MISSED'}: {name} ({measured})")
    for r in runs:
        for example in r.error_examples[:5]:
            print(f"  error ({r.name}, {r.server}, {r.clients} clients): {example}")
    write_json(
        args.json,
        {
            "benchmark": "serve_load",
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "runs": [r.summary() for r in runs],
            "rounds": [r.summary() for parts in rounds.values() for r in parts],
            "targets": [{"target": name, "met": met, "measured": measured} for name, met, measured in targets],
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
