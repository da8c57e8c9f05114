#!/usr/bin/env bash
# Builds a release, offline, into OUTDIR (default dist/release):
#   messagebuffer-VERSION-linux-ARCH.tar.gz   the executable, README.md, docs/, CHANGELOG.md,
#                                             LICENSE, an example config.json,
#                                             messagebuffer.service, SHA256SUMS
#   messagebuffer_VERSION_ARCH.deb            /usr/bin/messagebuffer, /etc/messagebuffer/config.json,
#                                             the systemd unit, a system user (see packaging/)
#   SHA256SUMS                                of both
# The executable's --version names the version, the commit, the runtime it was built with
# and the build date.
#
#   scripts/release.sh [OUTDIR]
#
# With MB_ORDER_BROKERS=HOST:PORT (a scratch broker, such as scripts/kafka.sh runs), the
# build's training run delivers as well as stores, and the executable holds 3-3.5 MiB fewer
# pages of its file, against 2-2.5 without (scripts/compile.ts). A release fails when no
# training run succeeds (MB_ORDER_REQUIRED=1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-dist/release}
command -v dpkg-deb >/dev/null || { echo "release.sh: dpkg-deb is needed (apt-get install dpkg)" >&2; exit 1; }

version=$(node_modules/.bin/bun -e 'console.log(require("./package.json").version)')
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [[ $commit != unknown ]] && ! git diff --quiet HEAD -- 2>/dev/null; then commit="$commit-dirty"; fi
date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
runtime="Bun $(node_modules/.bin/bun --version)"
case $(uname -m) in
  x86_64) arch=x64 debarch=amd64 ;;
  aarch64) arch=arm64 debarch=arm64 ;;
  *) arch=$(uname -m) debarch=$(dpkg --print-architecture) ;;
esac

umask 022 # the package's files and DEBIAN/ must be world-readable for dpkg-deb
mkdir -p "$out"
# Only what this script writes is replaced; the rest of OUTDIR is left alone.
rm -f "$out"/messagebuffer-*-linux-*.tar.gz "$out"/messagebuffer_*.deb "$out/SHA256SUMS"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

# The executable, with its build facts compiled in (scripts/compile.ts reads MB_BUILD_INFO).
MB_BUILD_INFO=$(printf '{"version":"%s","commit":"%s","runtime":"%s","date":"%s"}' \
  "$version" "$commit" "$runtime" "$date") MB_ORDER_REQUIRED=1 \
  bash scripts/compile.sh "$stage/messagebuffer"

# The tarball.
name=messagebuffer-$version-linux-$arch
mkdir -p "$stage/$name"
cp "$stage/messagebuffer" README.md LICENSE packaging/config.json packaging/messagebuffer.service \
  "$stage/$name/"
[[ -f CHANGELOG.md ]] && cp CHANGELOG.md "$stage/$name/"
[[ -d docs ]] && cp -r docs "$stage/$name/"
(cd "$stage/$name" && find . -type f ! -name SHA256SUMS | sort | xargs sha256sum >SHA256SUMS)
tar -C "$stage" -czf "$out/$name.tar.gz" --owner=0 --group=0 "$name"

# The Debian package. Its maintainer is DEBFULLNAME <DEBEMAIL> (Debian's convention), else the
# author of the commit built; a Homepage field only when MB_HOMEPAGE names one.
maintainer="${DEBFULLNAME:-$(git log -1 --format=%an 2>/dev/null || echo unknown)} <${DEBEMAIL:-$(git log -1 --format=%ae 2>/dev/null || echo unknown)}>"
homepage=${MB_HOMEPAGE:-}
root=$stage/deb
install -D -m 0755 "$stage/messagebuffer" "$root/usr/bin/messagebuffer"
install -D -m 0640 packaging/config.json "$root/etc/messagebuffer/config.json"
install -D -m 0644 packaging/messagebuffer.service "$root/usr/lib/systemd/system/messagebuffer.service"
install -D -m 0644 README.md "$root/usr/share/doc/messagebuffer/README.md"
install -D -m 0644 LICENSE "$root/usr/share/doc/messagebuffer/copyright"
# The reference the README links to, and the changelog (compressed, as Debian keeps it).
if [[ -d docs ]]; then
  (cd docs && find . -type f -print0 | xargs -0 -I{} install -D -m 0644 {} "$root/usr/share/doc/messagebuffer/docs/{}")
fi
if [[ -f CHANGELOG.md ]]; then
  gzip -9nc CHANGELOG.md >"$root/usr/share/doc/messagebuffer/changelog.gz"
  chmod 0644 "$root/usr/share/doc/messagebuffer/changelog.gz"
fi
size=$(du -sk "$root" | cut -f1)
mkdir -p "$root/DEBIAN"
install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$root/DEBIAN/"
echo /etc/messagebuffer/config.json >"$root/DEBIAN/conffiles"
cat >"$root/DEBIAN/control" <<CONTROL
Package: messagebuffer
Version: $version
Architecture: $debarch
Maintainer: $maintainer
Installed-Size: $size
Depends: adduser, libc6
Section: net
Priority: optional
${homepage:+Homepage: $homepage
}Description: local store-and-forward agent for Kafka (x86-64 with AVX2)
 Applications on a host hand messages to messagebuffer over a Unix socket; it stores each
 one at once in local segment files and delivers them, in order, to Kafka. Nothing
 acknowledged is lost when Kafka or the network is down, or when the agent restarts.
 Built from commit $commit with $runtime on $date.
CONTROL
dpkg-deb --root-owner-group -Zgzip --build "$root" "$out/messagebuffer_${version}_${debarch}.deb" >&2

(cd "$out" && sha256sum ./*.tar.gz ./*.deb | sed 's| \./| |' >SHA256SUMS)
"$stage/messagebuffer" --version >&2
ls -l "$out" >&2
