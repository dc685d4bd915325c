#!/usr/bin/env bash
# make test-docker: builds docker/'s images and runs them, offline from Docker Hub.
#  1. Docker from Debian's packages if missing; a Docker engine of its own if none runs
#     (no iptables, no IP forwarding, no default bridge; data and exec roots in a temp folder).
#  2. A Debian bookworm base made with debootstrap from Debian's repository (cached, keyed
#     by the suite's Release file), and on it stand-ins for the Dockerfiles' base images.
#  3. docker/Dockerfile built as users build it, with build args only: BASE_IMAGE (the
#     stand-in) and TORCH_INDEX (an index of what pip resolves on this machine: PyTorch's CPU
#     index cannot be reached here, so CI's image holds PyPI's CUDA build of torch).
#  4. The image: its size and layers, `featurex --version`, `featurex extract` over the samples
#     as uid 1000 into a folder that uid owns, again with --resume, a bad flag (exit 2).
#  5. docker/docker-compose.yml: a master, two workers, the job; a Parquet row per sample and
#     executors on both workers (the driver's event log); then `down -v`.
#  6. docker/Dockerfile.cuda's steps on the Debian stand-in (its base is on NVIDIA's registry).
# A trap removes every container, image and volume it made and the engine it started, also
# when a step fails, and checks that the host's network settings are as they were.
# Needs root. FEATUREX_DOCKER_MIN_FREE_GB (default 15: 12 GB measured at the peak) and FEATUREX_DOCKER_CACHE
# (default ~/.cache/featurex-docker) can be set.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PY:-$ROOT/.venv/bin/python}
MIN_FREE_GB=${FEATUREX_DOCKER_MIN_FREE_GB:-15}
CACHE=${FEATUREX_DOCKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/featurex-docker}
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
BASE_RECIPE=2 # bump when the base image's recipe below changes: the cached one is rebuilt
RUN_UID=1000  # the images' user, and the owner of the bind-mounted output folders

START=$SECONDS
STEP=""
STEP_START=$SECONDS
TIMINGS=()
say() { printf '[test-docker] %s\n' "$*"; }
fail() {
	printf '[test-docker] FAILED%s: %s\n' "${STEP:+ in \"$STEP\"}" "$*" >&2
	exit 1
}
step() {
	end_step
	STEP=$1
	STEP_START=$SECONDS
	say "== $STEP"
}
end_step() {
	if [ -n "$STEP" ]; then
		TIMINGS+=("$(printf '%5d s  %s' $((SECONDS - STEP_START)) "$STEP")")
		STEP=""
	fi
}

# ---- 0. where, and how much room --------------------------------------------------------
step "checks: root, free disk space"
[ "$(id -u)" = 0 ] || fail "needs root (it installs Docker, starts an engine and runs debootstrap)"
[ -x "$PY" ] || fail "$PY missing: run make setup"
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/featurex-docker.XXXXXX")
free_gb=$(df -Pk "$WORK" | awk 'NR == 2 {print int($4 / 1048576)}')
say "free: ${free_gb} GB on $(df -P "$WORK" | awk 'NR == 2 {print $6}') (needs ${MIN_FREE_GB} GB)"
if [ "$free_gb" -lt "$MIN_FREE_GB" ]; then
	rm -rf "$WORK"
	fail "only ${free_gb} GB free under $WORK, ${MIN_FREE_GB} GB needed (the image is ~7 GB, and a layer takes twice its size while it is committed); free space or set TMPDIR"
fi

net_state() {
	# What dockerd could change on the host's network: forwarding, firewall rules, links.
	sysctl -n net.ipv4.ip_forward net.ipv6.conf.all.forwarding 2>/dev/null || true
	if command -v iptables-save >/dev/null; then
		iptables-save 2>/dev/null | grep -v '^#' | sed 's/\[[0-9]*:[0-9]*\]//' || true
		ip6tables-save 2>/dev/null | grep -v '^#' | sed 's/\[[0-9]*:[0-9]*\]//' || true
	fi
	ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E '^(docker|br-|veth)' | sort || true
}

DOCKERD_PID=""
HTTP_PID=""
COMPOSE_UP=""
IMAGES=()
OWN_ENGINE=""
ENGINE_LEFTOVERS=()
NET_BEFORE=""
cleanup() {
	local rc=$?
	set +e
	end_step
	STEP="cleanup"
	STEP_START=$SECONDS
	say "== cleanup (exit status so far: $rc)"
	if [ -n "$COMPOSE_UP" ]; then
		"${COMPOSE[@]}" down -v --remove-orphans --timeout 10 >/dev/null 2>&1
	fi
	if [ -n "$OWN_ENGINE" ] && docker info >/dev/null 2>&1; then
		# Everything in this engine is this run's.
		containers=$(docker ps -aq)
		[ -z "$containers" ] || docker rm -f $containers >/dev/null
		images=$(docker images -aq)
		[ -z "$images" ] || docker rmi -f $images >/dev/null 2>&1
		docker volume prune -f >/dev/null
		docker network prune -f >/dev/null
		say "engine holds $(docker ps -aq | wc -l) containers, $(docker images -aq | wc -l) images, $(docker volume ls -q | wc -l) volumes"
	elif [ ${#IMAGES[@]} -gt 0 ]; then
		docker rmi -f "${IMAGES[@]}" >/dev/null 2>&1
	fi
	[ -z "$HTTP_PID" ] || kill "$HTTP_PID" 2>/dev/null
	if [ -n "$DOCKERD_PID" ]; then
		kill "$DOCKERD_PID" 2>/dev/null
		for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
		if kill -0 "$DOCKERD_PID" 2>/dev/null; then
			say "dockerd $DOCKERD_PID did not stop in 30 s: killed"
			kill -9 "$DOCKERD_PID" 2>/dev/null
		fi
		wait "$DOCKERD_PID" 2>/dev/null
		for path in "${ENGINE_LEFTOVERS[@]}"; do
			if [ -d "$path" ]; then rmdir "$path" 2>/dev/null; else rm -f "$path"; fi
		done
		say "dockerd $DOCKERD_PID stopped"
	fi
	# The logs stay for a look afterwards (out/ is git-ignored).
	mkdir -p "$ROOT/out/test-docker"
	find "$WORK" -maxdepth 2 -name '*.log' -size -20M -exec cp {} "$ROOT/out/test-docker/" \; 2>/dev/null
	# Mounts left under the work folder (debootstrap's /proc, an engine that was killed).
	findmnt -rn -o TARGET | grep -F "$WORK/" | sort -r | while read -r m; do umount -l "$m"; done
	rm -rf "$WORK"
	if [ -n "$NET_BEFORE" ]; then
		if [ "$(net_state)" != "$NET_BEFORE" ]; then
			say "the host's network settings differ from before the run:"
			diff <(printf '%s\n' "$NET_BEFORE") <(net_state) | sed 's/^/    /'
			[ "$rc" != 0 ] || rc=1
		else
			say "host network as before: forwarding, iptables rules, no docker/br-/veth link left"
		fi
	fi
	end_step
	say "timings:"
	printf '    %s\n' "${TIMINGS[@]}"
	say "total: $((SECONDS - START)) s, $([ "$rc" = 0 ] && echo passed || echo "FAILED (exit $rc)")"
	exit "$rc"
}
trap cleanup EXIT
trap 'say "failed at line $LINENO: $BASH_COMMAND"' ERR
trap 'exit 130' INT TERM

# ---- 1. Docker ---------------------------------------------------------------------------
step "install: docker.io, debootstrap, docker-compose from Debian (if missing)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || fail "apt-get update failed: Debian's repository is needed for Docker and debootstrap"
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
{ docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null; } || missing+=(docker-compose)
if [ ${#missing[@]} -gt 0 ]; then
	say "installing ${missing[*]}"
	apt-get install -y -qq "${missing[@]}" >"$WORK/apt.log" 2>&1 ||
		fail "apt-get install ${missing[*]} failed: $(tail -3 "$WORK/apt.log")"
fi
NET_BEFORE=$(net_state)

step "engine: an existing one, or dockerd started here"
if docker info >/dev/null 2>&1; then
	say "using the running engine ($(docker version -f '{{.Server.Version}}')): names get a suffix"
	SUFFIX="-test-$$"
else
	OWN_ENGINE=1
	SUFFIX=""
	# dockerd 20.10 also writes its trust key to /etc/docker and makes /run/docker/plugins:
	# removed at the end where they were not there before.
	for path in /etc/docker/key.json /run/docker/plugins /run/docker; do
		[ -e "$path" ] || ENGINE_LEFTOVERS+=("$path")
	done
	mkdir -p "$WORK/engine"
	echo '{}' >"$WORK/engine/daemon.json"
	dockerd --config-file "$WORK/engine/daemon.json" \
		--host "unix://$WORK/engine/docker.sock" --pidfile "$WORK/engine/docker.pid" \
		--data-root "$WORK/engine/data" --exec-root "$WORK/engine/exec" \
		--iptables=false --ip-forward=false --ip-masq=false --bridge=none \
		--storage-driver=overlay2 >"$WORK/engine/dockerd.log" 2>&1 &
	DOCKERD_PID=$!
	export DOCKER_HOST="unix://$WORK/engine/docker.sock"
	for _ in $(seq 120); do
		docker info >/dev/null 2>&1 && break
		kill -0 "$DOCKERD_PID" 2>/dev/null || fail "dockerd exited: $(tail -5 "$WORK/engine/dockerd.log")"
		sleep 0.5
	done
	docker info >/dev/null 2>&1 || fail "dockerd did not answer in 60 s: $(tail -5 "$WORK/engine/dockerd.log")"
	say "dockerd $(docker version -f '{{.Server.Version}}') pid $DOCKERD_PID, storage $(docker info -f '{{.Driver}}')"
fi
export DOCKER_BUILDKIT=0 # Debian's docker.io has no buildx: the classic builder
if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
PROJECT="featurex$SUFFIX"
COMPOSE+=(--ansi never -p "$PROJECT" -f docker/docker-compose.yml)
say "client: docker $(docker version -f '{{.Client.Version}}'), compose: ${COMPOSE[0]} $("${COMPOSE[@]}" version --short 2>/dev/null)"

# ---- 2. base images ----------------------------------------------------------------------
step "base: Debian $SUITE from debootstrap (or its cache)"
release=$(ls /var/lib/apt/lists/*debian_dists_${SUITE}_InRelease 2>/dev/null | head -1 || true)
if [ -n "$release" ]; then
	release_key=$(sed -n 's/^Date: //p' "$release" | head -1)
else
	release_key="week $(date +%G-%V)" # the host does not follow Debian's suite: weekly
fi
key=$(printf '%s\n' "$BASE_RECIPE" "$SUITE" "$MIRROR" "$(dpkg-query -W -f='${Version}' debootstrap)" "$release_key" |
	sha256sum | cut -c1-16)
tarball="$CACHE/$SUITE-minbase-$key.tar.gz"
say "key $key ($SUITE Release of $release_key)"
if [ -f "$tarball" ] && (cd "$CACHE" && sha256sum --quiet -c "$(basename "$tarball").sha256"); then
	say "cached: $tarball"
else
	rootfs="$WORK/rootfs"
	debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
		fail "debootstrap failed: $(tail -3 "$WORK/debootstrap.log")"
	cat >"$rootfs/etc/apt/sources.list" <<-EOF
		deb $MIRROR $SUITE main
		deb $MIRROR $SUITE-updates main
		deb http://deb.debian.org/debian-security $SUITE-security main
	EOF
	# As Debian's own images (debuerreotype) have it: apt keeps no .deb after installing.
	cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<-'EOF'
		DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
		APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
		Dir::Cache::pkgcache "";
		Dir::Cache::srcpkgcache "";
	EOF
	rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/*
	mkdir -p "$CACHE"
	chmod 700 "$CACHE"
	rm -f "$CACHE/$SUITE"-minbase-*
	tar -C "$rootfs" --numeric-owner -cf - . | gzip -1 >"$tarball.tmp"
	mv "$tarball.tmp" "$tarball"
	(cd "$CACHE" && sha256sum "$(basename "$tarball")" >"$(basename "$tarball").sha256")
	rm -rf "$rootfs"
	say "built and cached: $tarball ($(du -h "$tarball" | cut -f1))"
fi
ROOTFS_IMAGE="featurex-ci/debian:$SUITE-$key$SUFFIX"
docker import "$tarball" "$ROOTFS_IMAGE" >/dev/null
IMAGES+=("$ROOTFS_IMAGE")

step "base: stand-ins for python:3.11.11-slim-bookworm and nvidia/cuda (build)"
mkdir -p "$WORK/standin/ca-certificates"
find /usr/local/share/ca-certificates -name '*.crt' -exec cp {} "$WORK/standin/ca-certificates/" \; 2>/dev/null || true
PY_BASE="featurex-ci/python:3.11-slim-bookworm$SUFFIX"
OS_BASE="featurex-ci/os:$SUITE$SUFFIX"
for target in os python; do
	tag=$([ $target = os ] && echo "$OS_BASE" || echo "$PY_BASE")
	docker build --network host -q --build-arg "ROOTFS=$ROOTFS_IMAGE" --target "$target" \
		-f scripts/docker-standin.Dockerfile -t "$tag" "$WORK/standin" >"$WORK/standin.log" 2>&1 ||
		fail "building the stand-in $target failed: $(tail -5 "$WORK/standin.log")"
	IMAGES+=("$tag")
done
say "$PY_BASE: $(docker run --rm --network none "$PY_BASE" sh -c 'python3 --version; pip --version | cut -d" " -f1-2' | paste -sd' ')"

# Seconds since the start of the build on each line; the Dockerfile's steps, with theirs.
stamp() {
	local t0=$SECONDS line
	while IFS= read -r line; do printf '%4d %s\n' $((SECONDS - t0)) "$line"; done
}
steps() {
	awk '$2 == "Step" { if (name) printf "    %4d s  %s\n", $1 - t, name; t = $1; name = substr($0, index($0, "Step"), 100) }
		END { if (name) printf "    %4d s  %s\n", $1 - t, name }' "$1"
}

# ---- 3. the CPU image --------------------------------------------------------------------
step "torch index: pip's resolution on this machine, served on 127.0.0.1"
TORCH_VERSION=$(sed -n 's/^ARG TORCH_VERSION=//p' docker/Dockerfile)
TORCHVISION_VERSION=$(sed -n 's/^ARG TORCHVISION_VERSION=//p' docker/Dockerfile)
"$PY" scripts/docker_ci.py index "$WORK/index" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
port=$("$PY" scripts/docker_ci.py free-port)
"$PY" -m http.server --bind 127.0.0.1 --directory "$WORK/index" "$port" >"$WORK/index.log" 2>&1 &
HTTP_PID=$!
TORCH_INDEX="http://127.0.0.1:$port/simple/"
for _ in $(seq 50); do curl -fsS -o /dev/null "$TORCH_INDEX/torch/" 2>/dev/null && break; sleep 0.2; done
say "TORCH_INDEX=$TORCH_INDEX"

IMAGE="featurex:cpu$SUFFIX"
step "build: docker build -f docker/Dockerfile -t $IMAGE . (BASE_IMAGE, TORCH_INDEX)"
IMAGES+=("$IMAGE")
docker build --network host -f docker/Dockerfile -t "$IMAGE" \
	--build-arg "BASE_IMAGE=$PY_BASE" --build-arg "TORCH_INDEX=$TORCH_INDEX" . 2>&1 | stamp >"$WORK/build-cpu.log" ||
	fail "docker build failed: $(tail -15 "$WORK/build-cpu.log")"
steps "$WORK/build-cpu.log"

step "image: size, layers, contents"
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
say "$IMAGE: $(awk -v s="$size" 'BEGIN {printf "%.2f GB (%.0f bytes)", s / 1e9, s}'), $(docker history -q "$IMAGE" | wc -l) layers; the largest:"
docker history --no-trunc --format '{{.Size}}\t{{.CreatedBy}}' "$IMAGE" | sort -h -r | head -4 |
	cut -c1-140 | sed 's/^/    /'
docker run --rm --network none --user 0 "$IMAGE" sh -euc '
	cd /opt/featurex
	[ "$(ls -A | sort | paste -sd" ")" = "README.md featurex pyproject.toml" ] || { echo "/opt/featurex holds: $(ls -A)"; exit 1; }
	found=$(find / -xdev \( -name .git -o -name .venv -o -name tests -path "*featurex*" -o -name "*.egg-info" -path "/opt/*" \
		-o -name .pytest_cache -o -name .mypy_cache -o -name .ruff_cache -o -path "*/.cache/pip" -o -name "*.deb" -path "/var/cache/*" \) -print)
	[ -z "$found" ] || { echo "left in the image: $found"; exit 1; }
	[ -z "$(ls /var/lib/apt/lists | grep -v -e ^lock -e ^partial -e ^auxfiles)" ] || { echo "apt lists kept"; exit 1; }
	[ "$(id -u featurex)" = 1000 ]
	python3 -c "import torch, torchvision; print(\"torch\", torch.__version__, \"CUDA\", torch.version.cuda, \"torchvision\", torchvision.__version__)"
	echo "no .git, .venv, tests, build or pip caches, apt lists; user featurex is uid 1000"
' || fail "the image holds what it should not"

# ---- 4. the image, run -------------------------------------------------------------------
step "run: featurex --version"
want=$("$PY" -c 'import featurex; print(f"featurex {featurex.__version__}")')
got=$(docker run --rm --network none "$IMAGE" featurex --version)
[ "$got" = "$want" ] || fail "featurex --version in the image: '$got', the checkout's: '$want'"
[ "$(docker run --rm --network none "$IMAGE" id -u)" = "$RUN_UID" ] || fail "the image does not run as uid $RUN_UID"
say "$got, as uid $RUN_UID"

# Output folders as the host's uid-1000 user has them: owned by that uid, not world-writable.
out_folder() {
	mkdir -p "$1"
	chown "$RUN_UID:$RUN_UID" "$1"
	chmod 755 "$1"
}
run_extract() {
	docker run --rm --network none -e SPARK_LOCAL_IP=127.0.0.1 \
		-v "$ROOT/samples:/data:ro" -v "$WORK/run-out:/out" "$IMAGE" \
		featurex extract /data --output /out/features.parquet --model resnet18 --weights none \
		--master 'local[2]' "$@"
}
step "run: featurex extract /data (samples, read-only) as uid $RUN_UID into a bind-mounted folder"
out_folder "$WORK/run-out"
run_extract >"$WORK/extract.log" 2>&1 || fail "extract failed: $(tail -5 "$WORK/extract.log")"
grep -E '^featurex: [0-9]+ (images|files)' "$WORK/extract.log" | sed 's/^/    /' || true
"$PY" scripts/docker_ci.py outputs "$WORK/run-out" samples "$RUN_UID"

step "run: featurex extract --resume"
run_extract --resume >"$WORK/resume.log" 2>&1 || fail "extract --resume failed: $(tail -5 "$WORK/resume.log")"
grep -E '^featurex: [0-9]+ (images|files)' "$WORK/resume.log" | sed 's/^/    /' || true
n=$(ls samples | wc -l)
grep -qE "^featurex: 0 images, 0 failed, $n skipped as already done" "$WORK/resume.log" ||
	fail "--resume did not skip the $n images done: $(tail -2 "$WORK/resume.log")"
"$PY" scripts/docker_ci.py outputs "$WORK/run-out" samples "$RUN_UID"

step "run: a bad flag exits 2 with one line"
rc=0
docker run --rm --network none "$IMAGE" featurex extract /data --output /out/x --no-such-flag \
	>"$WORK/bad.out" 2>"$WORK/bad.err" || rc=$?
[ "$rc" = 2 ] || fail "a bad flag exited $rc, not 2"
[ ! -s "$WORK/bad.out" ] && [ "$(wc -l <"$WORK/bad.err")" = 1 ] ||
	fail "a bad flag printed more than one line: $(cat "$WORK/bad.out" "$WORK/bad.err")"
say "exit 2: $(cat "$WORK/bad.err")"

# ---- 5. the cluster ----------------------------------------------------------------------
step "compose: up --exit-code-from job (master, 2 workers, the job)"
out_folder "$WORK/compose-out"
out_folder "$WORK/compose-out/spark-events"
export FEATUREX_IMAGE="$IMAGE" FEATUREX_DATA="$ROOT/samples" FEATUREX_OUT="$WORK/compose-out" \
	FEATUREX_MODEL=resnet18 FEATUREX_WEIGHTS=none \
	FEATUREX_SPARK_OPTS="-Dspark.eventLog.enabled=true -Dspark.eventLog.dir=file:///out/spark-events -Dspark.eventLog.compress=false"
FEATUREX_MASTER_UI_PORT=$("$PY" scripts/docker_ci.py free-port)
FEATUREX_DRIVER_UI_PORT=$("$PY" scripts/docker_ci.py free-port)
export FEATUREX_MASTER_UI_PORT FEATUREX_DRIVER_UI_PORT
COMPOSE_UP=1
"${COMPOSE[@]}" up --no-build --exit-code-from job >"$WORK/compose.log" 2>&1 &
up_pid=$!
"$PY" scripts/docker_ci.py workers "http://127.0.0.1:$FEATUREX_MASTER_UI_PORT/json/" 2 240 ||
	say "(the master's UI did not list both workers; the job's checks decide)"
rc=0
wait "$up_pid" || rc=$?
grep -E '\| featurex: [0-9]+ (images|files)' "$WORK/compose.log" | sed 's/^/    /' || true
[ "$rc" = 0 ] || fail "compose up exited $rc: $(tail -12 "$WORK/compose.log")"
"$PY" scripts/docker_ci.py outputs "$WORK/compose-out" samples "$RUN_UID" | sed 's/^/    /'
"$PY" scripts/docker_ci.py events "$WORK/compose-out/spark-events" spark-worker-1 spark-worker-2 | sed 's/^/    /'

step "compose: down -v"
"${COMPOSE[@]}" down -v --remove-orphans --timeout 10 >"$WORK/down.log" 2>&1 || fail "down -v: $(tail -3 "$WORK/down.log")"
COMPOSE_UP=""
left=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT"; docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT"; docker network ls -q --filter "label=com.docker.compose.project=$PROJECT")
[ -z "$left" ] || fail "down -v left: $left"
say "no container, volume or network of project $PROJECT left"

step "remove the CPU image (room for the next)"
docker rmi "$IMAGE" >/dev/null

# ---- 6. the CUDA Dockerfile's steps on the stand-in --------------------------------------
CUDA_IMAGE="featurex:cuda-standin$SUFFIX"
step "build: docker/Dockerfile.cuda on $OS_BASE (BASE_IMAGE, TORCH_INDEX)"
IMAGES+=("$CUDA_IMAGE")
docker build --network host -f docker/Dockerfile.cuda -t "$CUDA_IMAGE" \
	--build-arg "BASE_IMAGE=$OS_BASE" --build-arg "TORCH_INDEX=$TORCH_INDEX" . 2>&1 | stamp >"$WORK/build-cuda.log" ||
	fail "docker build (cuda) failed: $(tail -15 "$WORK/build-cuda.log")"
steps "$WORK/build-cuda.log"
size=$(docker image inspect -f '{{.Size}}' "$CUDA_IMAGE")
say "$CUDA_IMAGE: $(awk -v s="$size" 'BEGIN {printf "%.2f GB", s / 1e9}')"

step "run: the CUDA stand-in (--version, uid, GPU discovery script, extract on the CPU)"
got=$(docker run --rm --network none "$CUDA_IMAGE" featurex --version)
[ "$got" = "$want" ] || fail "featurex --version in the CUDA stand-in: '$got'"
[ "$(docker run --rm --network none "$CUDA_IMAGE" id -u)" = "$RUN_UID" ] || fail "the CUDA stand-in does not run as uid $RUN_UID"
mkdir -p "$WORK/fake-smi"
printf '#!/bin/sh\nprintf "0\\n1\\n"\n' >"$WORK/fake-smi/nvidia-smi"
chmod 755 "$WORK/fake-smi/nvidia-smi"
gpus=$(docker run --rm --network none -v "$WORK/fake-smi/nvidia-smi:/usr/local/bin/nvidia-smi:ro" \
	"$CUDA_IMAGE" /opt/featurex/gpu-discovery.sh)
"$PY" -c 'import json, sys; assert json.loads(sys.argv[1]) == {"name": "gpu", "addresses": ["0", "1"]}' "$gpus" ||
	fail "gpu-discovery.sh printed: $gpus"
say "gpu-discovery.sh (a stand-in nvidia-smi): $gpus"
out_folder "$WORK/cuda-out"
docker run --rm --network none -e SPARK_LOCAL_IP=127.0.0.1 -v "$ROOT/samples:/data:ro" \
	-v "$WORK/cuda-out:/out" "$CUDA_IMAGE" featurex extract /data --output /out/features.parquet \
	--model resnet18 --weights none --master 'local[2]' >"$WORK/cuda-extract.log" 2>&1 ||
	fail "extract in the CUDA stand-in failed: $(tail -5 "$WORK/cuda-extract.log")"
grep -E '^featurex: [0-9]+ (images|files)' "$WORK/cuda-extract.log" | sed 's/^/    /' || true
"$PY" scripts/docker_ci.py outputs "$WORK/cuda-out" samples "$RUN_UID"

end_step
say "all checks passed"
