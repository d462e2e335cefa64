#!/usr/bin/env bash
# build.sh: OCI images of bootchain's services, from this repository alone.
#
# Each image is one static binary (CGO_ENABLED=0) on an empty base (`buildah from
# scratch`): nothing is pulled from a registry, there is no shell or libc to patch,
# and the image is as large as the binary.
#
# Usage: deploy/oci/build.sh [-t TAG] [-o DIR] [SERVICE...]
#   SERVICE   artifactstore, bootapi, dhcpd, tftpd, bootchain (default: all five)
#   -t TAG    image tag (default: `git describe --always --dirty`)
#   -o DIR    also write each image as DIR/bootchain-<service>.tar (oci-archive), to
#             copy to hosts without a registry (`podman load -i`)
# Images are named localhost/bootchain-<service>:TAG in buildah's and podman's storage.
#
# The binaries' default data folders (/var/lib/bootchain/<service>) exist and belong to
# uid 65532, the images' user; dhcpd and tftpd need port 67/69 and run as root with
# only CAP_NET_BIND_SERVICE (and CAP_NET_RAW for dhcpd) granted: see
# deploy/kubernetes and docs/deploy.md.
set -euo pipefail

cd "$(dirname "$0")/../.."
tag=$(git describe --always --dirty 2>/dev/null || echo dev)
out=
while getopts "t:o:" opt; do
	case $opt in
	t) tag=$OPTARG ;;
	o) out=$OPTARG ;;
	*) exit 2 ;;
	esac
done
shift $((OPTIND - 1))
services=("$@")
[[ ${#services[@]} -gt 0 ]] || services=(artifactstore bootapi dhcpd tftpd bootchain)

command -v buildah >/dev/null || { echo "build.sh: buildah not found (apt-get install buildah)" >&2; exit 1; }

work=$(mktemp -d)
ctr=
cleanup() {
	[[ -z $ctr ]] || buildah rm "$ctr" >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
for svc in "${services[@]}"; do
	case $svc in
	artifactstore | bootapi | dhcpd | tftpd) pkg=./services/$svc/cmd/$svc ;;
	bootchain) pkg=./tools/bootchain ;;
	*) echo "build.sh: unknown service $svc" >&2; exit 2 ;;
	esac
	CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$work/$svc" "$pkg"
	mkdir -p "$work/empty"
	image=localhost/bootchain-$svc:$tag
	ctr=$(buildah from scratch)
	buildah copy --chmod 0755 "$ctr" "$work/$svc" /usr/local/bin/$svc >/dev/null
	buildah copy --chown 65532:65532 "$ctr" "$work/empty" /var/lib/bootchain/$svc >/dev/null
	# /tmp for anything that wants a temporary file; the root file system may be
	# mounted read-only.
	buildah copy --chmod 1777 "$ctr" "$work/empty" /tmp >/dev/null
	entry="[\"/usr/local/bin/$svc\"]"
	[[ $svc != bootchain ]] || entry='["/usr/local/bin/bootchain", "up"]'
	buildah config \
		--entrypoint "$entry" --cmd '' \
		--user 65532:65532 \
		--workingdir /var/lib/bootchain/$svc \
		--label org.opencontainers.image.title=bootchain-$svc \
		--label org.opencontainers.image.revision="$revision" \
		--label org.opencontainers.image.version="$tag" \
		"$ctr"
	# Only these have a --data-dir; the others would ignore the variable.
	case $svc in
	artifactstore | tftpd | dhcpd | bootchain) buildah config --env BOOTCHAIN_DATA_DIR=/var/lib/bootchain/$svc "$ctr" ;;
	esac
	buildah commit --quiet --rm "$ctr" "$image" >/dev/null
	ctr=
	echo "$image"
	if [[ -n $out ]]; then
		mkdir -p "$out"
		rm -f "$out/bootchain-$svc.tar"
		buildah push --quiet "$image" "oci-archive:$out/bootchain-$svc.tar:$image"
	fi
done
