#!/bin/sh
# compose.yaml's bootstrap, run as root before the services start (and exiting): prepare /data on the first run
# (a later run finds it done), then hand each service only what it needs.
#   /secrets (this container's volume alone): the CA and its key, every certificate, the admin key.
#   /tls/<service> (one volume per service, mounted read-only by that service): ca.pem, cert.pem, key.pem.
#   /data: the catalog (the API keys' hashes included), models and state, for the feedserve group.
set -eu
FEEDSERVE_SECRETS=/secrets feedserve up --home /data --prepare-only --no-generator "$@"

GROUP=10000
for pair in paramserver:10001 ranker:10002 generator:10003 gateway:10004; do
    name=${pair%%:*}
    uid=${pair##*:}
    install -o "$uid" -g "$GROUP" -m 0444 /secrets/tls/ca.pem "/tls/$name/ca.pem"
    install -o "$uid" -g "$GROUP" -m 0444 "/secrets/tls/$name.pem" "/tls/$name/cert.pem"
    install -o "$uid" -g "$GROUP" -m 0400 "/secrets/tls/$name.key" "/tls/$name/key.pem"
done

# shared data: group read-write (SQLite gives its -wal and -shm files the database's mode), others nothing;
# directories setgid, so that what a service creates stays in the group
chown -R "root:$GROUP" /data
chmod -R g+rwX,o-rwx /data
find /data -type d -exec chmod g+s {} +
echo "bootstrap: each service's certificate in its own volume; the CA key and the admin key stay in /secrets"
