#!/bin/sh
# Lays out the runtime root filesystem of the keywarden image in $2 (used by the Dockerfile's
# build stage): the binary $1, the shared libraries it loads (ldd), the CA bundle, a passwd/group
# naming the unprivileged user 65532, and the writable mount points /var/lib/keywarden and /tmp.
set -eu
bin=$1 out=$2
mkdir -p "$out/usr/local/bin" "$out/etc/ssl/certs" "$out/var/lib/keywarden" "$out/tmp" "$out/etc/keywarden"
cp "$bin" "$out/usr/local/bin/keywarden"
# Every shared object the binary needs, and the dynamic loader, at their own paths.
ldd "$bin" | awk '/=> \// { print $3 } /^\t\// { print $1 }' | while read -r lib; do
  mkdir -p "$out$(dirname "$lib")"
  cp -L "$lib" "$out$lib"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/ca-certificates.crt"
echo 'keywarden:x:65532:65532:keywarden:/var/lib/keywarden:/sbin/nologin' > "$out/etc/passwd"
echo 'keywarden:x:65532:' > "$out/etc/group"
chown -R 65532:65532 "$out/var/lib/keywarden"
chmod 0700 "$out/var/lib/keywarden"
chmod 1777 "$out/tmp"
