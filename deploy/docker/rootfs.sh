#!/usr/bin/env bash
# Makes the root filesystem of the agent's container image: the binary, the shared libraries
# it is linked against (it is a glibc-dynamic executable; `ldd` lists them), a non-root user
# (uid/gid 10001), the state directory owned by it, and the config. Used by the Dockerfile's
# build stage and by scripts/build-agent-image (`docker import`, no registry needed), so both
# images hold the same files.
#
# usage: deploy/docker/rootfs.sh BINARY ROOTFS_DIR
set -euo pipefail
binary="$1"
root="$2"
here="$(cd "$(dirname "$0")" && pwd)"
[ -x "$binary" ] || { echo "rootfs.sh: $binary is not an executable" >&2; exit 1; }
mkdir -p "$root/usr/local/bin" "$root/etc/log-capturer" "$root/var/lib/log-capturer" "$root/tmp"
install -m 0755 "$binary" "$root/usr/local/bin/log-capturer"
# The dynamic loader and every library ldd resolves, at the same paths (symlinks followed).
# A static binary has none: ldd says "not a dynamic executable" (and fails), which is fine.
libs="$(ldd "$binary" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' || true)"
for lib in $libs; do
  cp -L --parents "$lib" "$root/"
done
cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
log-capturer:x:10001:10001:log-capturer:/var/lib/log-capturer:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
PASSWD
cat >"$root/etc/group" <<'GROUP'
root:x:0:
log-capturer:x:10001:
nogroup:x:65534:
GROUP
install -m 0644 "$here/config.yaml" "$root/etc/log-capturer/config.yaml"
chmod 1777 "$root/tmp"
chmod 0700 "$root/var/lib/log-capturer"
chown 10001:10001 "$root/var/lib/log-capturer"
