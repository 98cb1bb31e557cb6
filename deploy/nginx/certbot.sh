#!/bin/sh
# The certbot container's command (compose's proxy profile): Let's Encrypt certificates for the proxy.
#
# For each of APP_HOST, GRAFANA_HOST and MINIO_CONSOLE_HOST, one certificate named after the host
# (/etc/letsencrypt/live/<host>/) from the HTTP-01 challenge: certbot writes the token into ACME_WEBROOT,
# a volume nginx serves on port 80 under /.well-known/acme-challenge/. Then `certbot renew` every
# ACME_RENEW_SECONDS (12 hours); certbot renews what expires within 30 days and leaves the rest. nginx
# notices a new certificate within a minute and reloads (entrypoint/40-certificates.sh).
#
# Safe to restart at any time: a host that already has a certificate from the wanted CA is not asked for
# again. ACME_STAGING=1 uses Let's Encrypt's staging CA (certificates browsers do not trust, generous rate
# limits) to try a setup; going back to ACME_STAGING=0 replaces staging certificates with real ones. A
# production certificate is never replaced by a staging one: delete it with `certbot delete` first.
# ACME_EMAIL empty: no certificate is requested and nginx keeps its self-signed ones.
# A failed request (DNS not pointing here yet, port 80 unreachable) is tried again after
# ACME_RETRY_SECONDS (1 hour), well inside Let's Encrypt's limit of 5 failed validations per host per hour.
set -eu

ME=certbot.sh
webroot=${ACME_WEBROOT:-/var/www/certbot}
config_dir=${ACME_CONFIG_DIR:-/etc/letsencrypt}
renew_seconds=${ACME_RENEW_SECONDS:-43200}
retry_seconds=${ACME_RETRY_SECONDS:-3600}
email=${ACME_EMAIL:-}

log() {
    echo "$ME: $*"
}

fail() {
    echo "$ME: error: $*" >&2
    exit 64
}

# As PID 1 the shell would ignore `docker compose stop`'s SIGTERM; sleeping in the background lets the trap run.
trap 'exit 0' TERM INT
pause() {
    sleep "$1" &
    wait $! || true
}

case ${ACME_STAGING:-0} in
    1 | [Tt]rue | TRUE | [Yy]es) staging=1 ;;
    0 | [Ff]alse | FALSE | [Nn]o | "") staging=0 ;;
    *) fail "ACME_STAGING must be 1 (Let's Encrypt's staging CA) or 0, not '$ACME_STAGING'" ;;
esac
for seconds in "$renew_seconds" "$retry_seconds"; do
    case $seconds in
        "" | 0 | *[!0-9]*) fail "ACME_RENEW_SECONDS and ACME_RETRY_SECONDS must be whole numbers of seconds above 0" ;;
    esac
done
hosts=""
for name in APP_HOST GRAFANA_HOST MINIO_CONSOLE_HOST; do
    eval "host=\${$name:-}"
    case $host in
        "") fail "$name is not set" ;;
        .* | *..* | *[!A-Za-z0-9.-]*) fail "$name='$host' is not a host name" ;;
    esac
    hosts="$hosts $host"
done

if [ -z "$email" ]; then
    log "ACME_EMAIL is empty: no certificates are requested and nginx serves self-signed ones." \
        "Set ACME_EMAIL (and point the host names' DNS at this machine) to get Let's Encrypt's."
    while :; do
        pause 86400
    done
fi

# Which CA issued the host's certificate: staging, production, or none when there is none yet.
issuer_of() {
    renewal=$config_dir/renewal/$1.conf
    if [ ! -f "$renewal" ] || [ ! -e "$config_dir/live/$1/fullchain.pem" ]; then
        echo none
    elif grep -q 'acme-staging' "$renewal"; then
        echo staging
    else
        echo production
    fi
}

obtain() {
    host=$1
    wanted=production
    [ "$staging" = 1 ] && wanted=staging
    current=$(issuer_of "$host")
    set -- certonly --non-interactive --webroot -w "$webroot" --cert-name "$host" -d "$host" \
        --email "$email" --agree-tos --no-eff-email --keep-until-expiring
    [ "$staging" = 1 ] && set -- "$@" --staging
    case $current/$wanted in
        none/*)
            log "$host: asking Let's Encrypt ($wanted) for a certificate"
            ;;
        staging/production)
            log "$host: replacing the staging certificate with one from Let's Encrypt's production CA"
            # --break-my-certs: certbot refuses to replace a lineage across CAs without it.
            set -- "$@" --force-renewal --break-my-certs
            ;;
        production/staging)
            log "$host: keeps its production certificate although ACME_STAGING=1" \
                "(run \`certbot delete --cert-name $host\` to replace it with a staging one)"
            return 0
            ;;
        *)
            # Renewals are `certbot renew`'s.
            return 0
            ;;
    esac
    certbot "$@"
}

while :; do
    failed=0
    for host in $hosts; do
        if ! obtain "$host"; then
            failed=1
            log "$host: no certificate this time (certbot's messages above say why); trying again in ${retry_seconds}s"
        fi
    done
    if ! certbot renew --non-interactive; then
        failed=1
        log "renewal failed (certbot's messages above say why); trying again in ${retry_seconds}s"
    fi
    if [ "$failed" = 1 ]; then
        pause "$retry_seconds"
    else
        pause "$renew_seconds"
    fi
done
