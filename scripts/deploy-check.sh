#!/usr/bin/env bash
# deploy-check.sh: check deploy/ against the binaries of this tree (`make deploy-check`,
# part of `make test`).
#
#   systemd  every unit passes `systemd-analyze verify` (any warning fails) and
#            `systemd-analyze security --offline` under a threshold, and keeps the
#            hardening every unit must have;
#   env      every BOOTCHAIN_* variable in deploy/systemd/env names a flag of its binary;
#   oci      deploy/oci/build.sh builds the artifactstore image from scratch, and the
#            image runs: it serves /healthz against a real etcd (podman, or a chroot
#            into the image's root file system where podman cannot start containers);
#   kustomize  `kubectl kustomize` renders every overlay (deploy/kubernetes has its own
#            offline Go test, run by `go test ./deploy/...`).
# A part whose tool is absent is skipped with a line saying so.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "deploy-check: $*" >&2; }
fail() { log "FAIL: $*"; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
	[[ -z ${mnt_ctr:-} ]] || { buildah umount "$mnt_ctr" >/dev/null 2>&1 || true; buildah rm "$mnt_ctr" >/dev/null 2>&1 || true; }
	rm -rf "$work"
}
trap cleanup EXIT

services=(artifactstore bootapi dhcpd tftpd)
for s in "${services[@]}"; do
	CGO_ENABLED=0 go build -o "$work/bin/$s" "./services/$s/cmd/$s"
done
go build -o "$work/bin/bootchain" ./tools/bootchain

# --- systemd ---------------------------------------------------------------
if command -v systemd-analyze >/dev/null 2>&1; then
	mkdir -p "$work/units"
	for f in deploy/systemd/*.service; do
		# The units name the installed paths; verify runs them from this build.
		sed -e "s#/usr/local/bin/bootchain-\([a-z]*\)#$work/bin/\1#" \
			-e "s#/usr/local/bin/bootchain #$work/bin/bootchain #" "$f" >"$work/units/${f##*/}"
		for want in DynamicUser=yes NoNewPrivileges=yes ProtectSystem=strict \
			'EnvironmentFile=/etc/bootchain/' CapabilityBoundingSet= RestrictAddressFamilies= \
			SystemCallFilter=@system-service PrivateDevices=yes ProtectHome=yes; do
			grep -q "^$want" "$f" || fail "$f: no $want"
		done
	done
	out=$(cd "$work/units" && systemd-analyze verify --man=no ./*.service 2>&1) ||
		fail "systemd-analyze verify: $out"
	[[ -z $out ]] || fail "systemd-analyze verify warns:"$'\n'"$out"
	for f in "$work"/units/*.service; do
		# 2.0 of 10 ("OK"); the units score 1.6-1.7.
		systemd-analyze security --offline=yes --threshold=20 "$f" >/dev/null 2>&1 ||
			fail "${f##*/}: exposure above 2.0: $(systemd-analyze security --offline=yes "$f" 2>&1 | tail -1)"
	done
	# Capabilities: exactly what each binary needs.
	caps() { sed -n 's/^CapabilityBoundingSet=//p' "deploy/systemd/bootchain-$1.service"; }
	[[ $(caps dhcpd) == "CAP_NET_BIND_SERVICE CAP_NET_RAW" ]] || fail "dhcpd capabilities: $(caps dhcpd)"
	[[ $(caps tftpd) == "CAP_NET_BIND_SERVICE" ]] || fail "tftpd capabilities: $(caps tftpd)"
	[[ -z $(caps bootapi) && -z $(caps artifactstore) ]] || fail "bootapi/artifactstore need no capability"
	log "systemd: $(ls deploy/systemd/*.service | wc -l) units verified"
else
	log "systemd: skipped (no systemd-analyze)"
fi

# --- env files -------------------------------------------------------------
for f in deploy/systemd/env/*.env; do
	svc=$(basename "$f" .env)
	if [[ $svc == up ]]; then
		help=$("$work/bin/bootchain" up -h 2>&1 || true)
	else
		help=$("$work/bin/$svc" -h 2>&1 || true)
	fi
	n=0
	for v in $(grep -oE '^#?BOOTCHAIN_[A-Z0-9_]+=' "$f" | tr -d '#='); do
		flag=$(echo "${v#BOOTCHAIN_}" | tr 'A-Z_' 'a-z-')
		grep -qE "^  -$flag( |$)" <<<"$help" || fail "$f: $v names no flag --$flag of $svc"
		n=$((n + 1))
	done
	[[ $n -gt 0 ]] || fail "$f: no BOOTCHAIN_ variable"
done
log "env: every variable names a flag"

# --- oci -------------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # url seconds
	for _ in $(seq $(($2 * 10))); do
		curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}
if command -v buildah >/dev/null 2>&1 && command -v podman >/dev/null 2>&1 && command -v etcd >/dev/null 2>&1; then
	tag=check-$$
	image=$(deploy/oci/build.sh -t "$tag" artifactstore | tail -1)
	[[ $image == localhost/bootchain-artifactstore:$tag ]] || fail "oci: build.sh printed $image"
	trap 'podman rmi -f "$image" >/dev/null 2>&1 || true; cleanup' EXIT
	# An empty base: the image holds one layer, the binary and its folders.
	layers=$(podman image inspect "$image" --format '{{len .RootFS.Layers}}')
	[[ $layers == 1 ]] || fail "oci: $image has $layers layers, want 1 (scratch)"
	user=$(podman image inspect "$image" --format '{{.Config.User}}')
	[[ $user == 65532:65532 ]] || fail "oci: image user $user"

	cport=$(free_port) pport=$(free_port) hport=$(free_port) gport=$(free_port)
	etcd --name check --data-dir "$work/etcd" \
		--listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
		--listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
		--initial-cluster "check=http://127.0.0.1:$pport" >"$work/etcd.log" 2>&1 &
	pids+=($!)
	env_args=(BOOTCHAIN_ETCD_ENDPOINTS=127.0.0.1:$cport BOOTCHAIN_HTTP_ADDR=127.0.0.1:$hport
		BOOTCHAIN_GRPC_ADDR=127.0.0.1:$gport BOOTCHAIN_SITE=check)
	how=podman
	name=bootchain-check-$$
	# Some hosts (sandboxes, nested containers) forbid what crun does at start
	# (rlimits above the host's, cgroups in hybrid mode); then podman fails before
	# the binary runs, and the chroot below runs the same root file system.
	# A read-only root, as in deploy/kubernetes: the data folder is a volume.
	mkdir -p "$work/data" && chown 65532:65532 "$work/data"
	podman run -d --name "$name" --network host --read-only \
		-v "$work/data:/var/lib/bootchain/artifactstore" \
		--ulimit nofile="$(ulimit -Sn):$(ulimit -Hn)" --ulimit nproc=1024:1024 \
		$(printf -- '--env %s ' "${env_args[@]}") "$image" >"$work/podman.out" 2>&1 ||
		how=chroot
	if [[ $how == podman ]]; then
		trap 'podman rm -f "$name" >/dev/null 2>&1 || true; podman rmi -f "$image" >/dev/null 2>&1 || true; cleanup' EXIT
	else
		log "oci: podman cannot start containers here ($(grep -o 'crun: .*' "$work/podman.out" | head -1)); running the image's root file system in a chroot"
		podman rm -f "$name" >/dev/null 2>&1 || true
		mnt_ctr=$(buildah from "$image")
		mnt=$(buildah mount "$mnt_ctr")
		chroot_bin=$(command -v chroot)
		env -i "${env_args[@]}" BOOTCHAIN_DATA_DIR=/var/lib/bootchain/artifactstore \
			"$chroot_bin" --userspec=65532:65532 "$mnt" /usr/local/bin/artifactstore >"$work/artifactstore.log" 2>&1 &
		pids+=($!)
	fi
	if ! wait_http "http://127.0.0.1:$hport/healthz" 60; then
		[[ $how == podman ]] && podman logs "$name" >"$work/artifactstore.log" 2>&1
		tail -20 "$work/artifactstore.log" >&2
		fail "oci: the artifactstore image ($how) never answered /healthz"
	fi
	log "oci: $image (scratch, one layer) serves /healthz ($how)"
else
	log "oci: skipped (needs buildah, podman and etcd: scripts/install-deps.sh installs them)"
fi

# --- kustomize -------------------------------------------------------------
if command -v kubectl >/dev/null 2>&1; then
	for k in deploy/kubernetes/core deploy/kubernetes/overlays/*/; do
		kubectl kustomize "$k" >/dev/null || fail "kustomize $k"
	done
	log "kustomize: every overlay renders"
else
	log "kustomize: skipped (no kubectl; the Go test in deploy/kubernetes checks the overlays)"
fi
log "ok"
