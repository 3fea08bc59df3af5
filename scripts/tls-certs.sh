#!/bin/sh
# tls-certs.sh DIR [NAME...] - a private CA and certificates for crdtd's listeners, with openssl.
#
# Makes in DIR (created): ca.pem + ca.key (the CA, 10 years) and, for each NAME (default
# "localhost"), NAME.pem + NAME.key signed by the CA for 1 year, with subject CN=NAME and the
# subject alternative names DNS:NAME, DNS:localhost, IP:127.0.0.1 (and DNS:node-<id> for a NAME of
# that form, which peers' certificates must carry, docs/security.md). An existing ca.pem/ca.key in
# DIR is reused, so more names can be added later. Keys are EC P-256, unencrypted, mode 0600.
#
# TLS_EXTRA_SAN adds names ("DNS:crdtd.example.com,IP:10.0.0.5"); TLS_ONLY_SAN replaces them
# all (used by the tests for a certificate of the wrong host); TLS_START/TLS_END (YYYYMMDDHHMMSSZ)
# set the validity (the tests' expired certificate).
set -eu
dir=${1:?usage: tls-certs.sh DIR [NAME...]}
shift
[ $# -gt 0 ] || set -- localhost
mkdir -p "$dir"
umask 077
if [ ! -f "$dir/ca.pem" ] || [ ! -f "$dir/ca.key" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 -days 3650 \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" -subj "/CN=crdtd private CA $(basename "$dir")" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
fi
for name in "$@"; do
  san="DNS:$name,DNS:localhost,IP:127.0.0.1"
  [ -n "${TLS_EXTRA_SAN:-}" ] && san="$san,$TLS_EXTRA_SAN"
  [ -n "${TLS_ONLY_SAN:-}" ] && san="$TLS_ONLY_SAN"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$dir/$name.key" \
    -out "$dir/$name.csr" -subj "/CN=$name" 2>/dev/null
  cat > "$dir/$name.ext" <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=$san
EXT
  if [ -n "${TLS_START:-}" ]; then
    # openssl ca sets any dates; it wants a database and a serial file of its own
    db="$dir/.ca-$name"
    mkdir -p "$db"
    : > "$db/index.txt"
    echo 01 > "$db/serial"
    cat > "$db/ca.cnf" <<CNF
[ca]
default_ca = c
[c]
database = $db/index.txt
serial = $db/serial
new_certs_dir = $db
default_md = sha256
policy = p
unique_subject = no
[p]
commonName = supplied
CNF
    openssl ca -batch -config "$db/ca.cnf" -cert "$dir/ca.pem" -keyfile "$dir/ca.key" \
      -in "$dir/$name.csr" -out "$dir/$name.pem" -startdate "$TLS_START" \
      -enddate "${TLS_END:?TLS_END goes with TLS_START}" -extfile "$dir/$name.ext" -notext \
      2>/dev/null
    rm -rf "$db"
  else
    openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
      -CAcreateserial -days 365 -sha256 -extfile "$dir/$name.ext" -out "$dir/$name.pem" \
      2>/dev/null
  fi
  rm -f "$dir/$name.csr" "$dir/$name.ext"
done
