#!/bin/sh
# The certificates nginx serves, prepared by the nginx image's entrypoint before nginx starts.
#
# For each of APP_HOST, GRAFANA_HOST and MINIO_CONSOLE_HOST, NGINX_CERTS_DIR/<host>/fullchain.pem and
# privkey.pem (the files default.conf names) are links to Let's Encrypt's certificate in
# LETSENCRYPT_LIVE_DIR/<host>/ once certbot has one, and until then to a self-signed certificate made here,
# so that nginx can start and answer the ACME challenge that gets the real one. A background loop then looks
# every CERT_CHECK_SECONDS (60; 0: no loop) and reloads nginx when a certificate changed: certbot's first
# one, and each renewal. A Let's Encrypt pair is used only when its key matches its certificate.
#
# POSIX sh (BusyBox in the alpine image); needs the openssl command (deploy/nginx/Dockerfile installs it).
set -eu

ME=$(basename "$0")
certs_dir=${NGINX_CERTS_DIR:-/etc/nginx/certs}
live_dir=${LETSENCRYPT_LIVE_DIR:-/etc/letsencrypt/live}
# A leading dot: no host name can be this folder's name.
self_signed_dir=$certs_dir/.self-signed
interval=${CERT_CHECK_SECONDS:-60}

log() {
    echo "$ME: $*"
}

fail() {
    echo "$ME: error: $*" >&2
    exit 1
}

: "${APP_HOST:?APP_HOST is not set}" "${GRAFANA_HOST:?GRAFANA_HOST is not set}"
: "${MINIO_CONSOLE_HOST:?MINIO_CONSOLE_HOST is not set}"
hosts="$APP_HOST $GRAFANA_HOST $MINIO_CONSOLE_HOST"
case $interval in
    "" | *[!0-9]*) fail "CERT_CHECK_SECONDS must be a whole number of seconds, not '$interval'" ;;
esac
command -v openssl >/dev/null 2>&1 ||
    fail "the openssl command is missing (the nginx:alpine image has none: build deploy/nginx/Dockerfile)"

# Both files there and the key the certificate's: a half-written or mismatched pair would stop nginx.
pair_usable() {
    [ -s "$1/fullchain.pem" ] && [ -s "$1/privkey.pem" ] || return 1
    cert_key=$(openssl x509 -noout -pubkey -in "$1/fullchain.pem" 2>/dev/null) || return 1
    own_key=$(openssl pkey -pubout -in "$1/privkey.pem" 2>/dev/null) || return 1
    [ -n "$cert_key" ] && [ "$cert_key" = "$own_key" ]
}

# A self-signed certificate for $1, made again when it is missing or expires within a day.
self_signed_ensure() {
    dir=$self_signed_dir/$1
    if pair_usable "$dir" && openssl x509 -checkend 86400 -noout -in "$dir/fullchain.pem" >/dev/null 2>&1; then
        return 0
    fi
    mkdir -p "$dir"
    # umask: the new key is never readable by others, not even for a moment.
    (umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 90 \
        -subj "/CN=$1" -addext "subjectAltName=DNS:$1" -addext "basicConstraints=critical,CA:FALSE" \
        -addext "keyUsage=critical,digitalSignature" -addext "extendedKeyUsage=serverAuth" \
        -keyout "$dir/privkey.pem.new" -out "$dir/fullchain.pem.new" >/dev/null 2>&1) ||
        fail "openssl could not make a self-signed certificate for $1"
    mv -f "$dir/privkey.pem.new" "$dir/privkey.pem"
    mv -f "$dir/fullchain.pem.new" "$dir/fullchain.pem"
}

# Points $certs_dir/$1 at the certificate to serve; says so when that changes.
host_link() {
    if pair_usable "$live_dir/$1"; then
        source=$live_dir/$1
        kind="Let's Encrypt's certificate"
    else
        self_signed_ensure "$1"
        source=$self_signed_dir/$1
        kind="a self-signed certificate, until certbot obtains one"
    fi
    mkdir -p "$certs_dir/$1"
    for file in fullchain.pem privkey.pem; do
        if [ "$(readlink "$certs_dir/$1/$file" 2>/dev/null || true)" != "$source/$file" ]; then
            ln -sfn "$source/$file" "$certs_dir/$1/$file"
            changed=1
        fi
    done
    if [ "${changed:-0}" = 1 ]; then
        log "$1: serving $kind"
    fi
    changed=0
}

certificates_link() {
    for host in $hosts; do
        host_link "$host"
    done
}

# What nginx would load: the links' targets and the files' contents.
certificates_fingerprint() {
    for host in $hosts; do
        for file in fullchain.pem privkey.pem; do
            printf '%s %s\n' "$(readlink "$certs_dir/$host/$file")" "$(cksum <"$certs_dir/$host/$file")"
        done
    done
}

certificates_watch() {
    loaded=$(certificates_fingerprint)
    while :; do
        sleep "$interval"
        # A failed check (a volume briefly away) is tried again next time; the loop must not end.
        (certificates_link) || continue
        current=$(certificates_fingerprint 2>/dev/null) || continue
        [ "$current" = "$loaded" ] && continue
        if nginx -t -q && nginx -s reload; then
            log "certificates changed: nginx reloaded"
            loaded=$current
        else
            echo "$ME: error: certificates changed but nginx did not reload; trying again in ${interval}s" >&2
        fi
    done
}

mkdir -p "$certs_dir"
certificates_link
if [ "$interval" -gt 0 ]; then
    certificates_watch </dev/null &
    log "checking for new certificates every ${interval}s (pid $!)"
fi
